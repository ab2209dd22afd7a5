"""Calibration: how far a model's confidence is from its accuracy (expected calibration error,
reliability-diagram bins), and temperature scaling, which divides the logits by one number T
fitted on held-out data so that the softmax's confidence matches the accuracy.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017) never
changes which class is most likely, so accuracy is untouched. Only NumPy: training, the
inference module and evaluation all use it without importing one another.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15
# Beyond these a model is either broken or its validation split is tiny; clamp rather than
# store an extreme number that would turn every answer into 0% or 100%.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def scaled_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / T) in float64, rows summing to 1."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / T)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, iterations: int = 60) -> float:
    """The T that minimizes the negative log-likelihood of ``labels`` under softmax(logits / T).

    With beta = 1/T the NLL is convex in beta (logits/T is linear in beta and log-sum-exp is
    convex), so its derivative, mean(E_p[z] - z_label), rises monotonically and one bisection
    on it (in log beta) finds the optimum exactly and deterministically: a resumed run fits
    the same T as an uninterrupted one. Returns 1.0 when there is nothing to fit on."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if len(z) == 0 or not np.isfinite(z).all() or np.ptp(z, axis=1).max() == 0:
        return 1.0  # nothing to fit on, or logits no temperature can change
    z_label = z[np.arange(len(y)), y]

    def slope(beta: float) -> float:
        p = scaled_softmax(z, 1.0 / beta)
        return float(((p * z).sum(1) - z_label).mean())

    lo, hi = np.log(1 / MAX_TEMPERATURE), np.log(1 / MIN_TEMPERATURE)
    if slope(np.exp(lo)) >= 0:
        return MAX_TEMPERATURE
    if slope(np.exp(hi)) <= 0:
        return MIN_TEMPERATURE
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if slope(np.exp(mid)) > 0:
            hi = mid
        else:
            lo = mid
    return float(1.0 / np.exp(0.5 * (lo + hi)))


def calibration_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Reliability-diagram data: per confidence bin (equal width, right edge included), the
    count, mean confidence and accuracy."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    acc_sum = np.bincount(which, weights=correct, minlength=bins)
    safe = np.maximum(count, 1)
    return {"edges": edges, "count": count, "confidence": conf_sum / safe, "accuracy": acc_sum / safe}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |accuracy - confidence| over confidence bins, weighted by how many images fall in each."""
    b = calibration_bins(probs, labels, bins)
    n = max(1, b["count"].sum())
    return float(np.sum(b["count"] / n * np.abs(b["accuracy"] - b["confidence"])))


def calibration_summary(logits: np.ndarray, labels: np.ndarray, temperature: float, split: str) -> dict[str, object]:
    """What a temperature fit measured on ``split``, as stored in the model file's metadata."""
    raw, scaled = scaled_softmax(logits), scaled_softmax(logits, temperature)
    return {
        "method": "temperature scaling",
        "split": split,
        "images": int(len(labels)),
        "nll_before": round(nll(logits, labels), 6),
        "nll_after": round(nll(logits, labels, temperature), 6),
        "ece_before": round(expected_calibration_error(raw, labels), 6),
        "ece_after": round(expected_calibration_error(scaled, labels), 6),
    }
