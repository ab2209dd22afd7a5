"""Calibration: temperature scaling recovers a known temperature, ECE matches a plain
reference, training stores the temperature, every consumer applies it (and --no-calibrate
does not), old model files without one still load, and `fmnist calibrate` fits one and
fails in one line on a missing run, a damaged model file or a read-only folder."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess

import numpy as np
import pytest
import torch
from conftest import run_cli

from fmnist.data import load_split
from fmnist.reporting.evaluate import calibrate, evaluate
from fmnist.runtime.calibration import (
    calibration_bins,
    expected_calibration_error,
    fit_temperature,
    nll,
    scaled_softmax,
)
from fmnist.runtime.inference import load_predictor, predict_logits, softmax
from fmnist.runtime.modelfile import load_model, read_model_info, save_model
from fmnist.runtime.predict import predict


def sample_labels(logits: np.ndarray, temperature: float, seed: int = 0) -> np.ndarray:
    """Labels drawn from softmax(logits / T): data for which T is the true temperature."""
    p = scaled_softmax(logits, temperature)
    u = np.random.default_rng(seed).random((len(p), 1))
    return (p.cumsum(1) < u).sum(1).clip(0, p.shape[1] - 1)


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_temperature_scaling_recovers_a_known_temperature(true_t):
    logits = np.random.default_rng(1).normal(size=(10_000, 10)) * 4
    labels = sample_labels(logits, true_t)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(true_t, rel=0.05)
    # It is the minimum of the NLL: a little either way is worse.
    assert nll(logits, labels, t) <= min(nll(logits, labels, t * 0.97), nll(logits, labels, t * 1.03))
    # And it never changes the predicted class.
    assert (scaled_softmax(logits, t).argmax(1) == logits.argmax(1)).all()


def test_temperature_fit_is_deterministic_and_safe_on_degenerate_input():
    logits = np.random.default_rng(2).normal(size=(500, 10))
    labels = sample_labels(logits, 1.7)
    assert fit_temperature(logits, labels) == fit_temperature(logits.copy(), labels.copy())
    assert fit_temperature(np.zeros((0, 10)), np.zeros(0, int)) == 1.0
    assert fit_temperature(np.ones((5, 10)), np.arange(5)) == 1.0  # no temperature changes a flat row


def reference_ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Guo et al.'s ECE written out plainly: bins (lo, hi] of width 1/n_bins, the first one
    also taking confidence 0; sum over bins of |bin| / N * |accuracy - mean confidence|."""
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = []
        for p, y in zip(probs, labels):
            conf = max(p)
            if (lo < conf <= hi) or (b == 0 and conf == 0):
                members.append((conf, int(np.argmax(p)) == y))
        if members:
            accuracy = sum(ok for _, ok in members) / len(members)
            confidence = sum(c for c, _ in members) / len(members)
            total += len(members) / len(probs) * abs(accuracy - confidence)
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_equals_a_reference_implementation(seed):
    rng = np.random.default_rng(seed)
    probs = scaled_softmax(rng.normal(size=(3000, 10)) * rng.uniform(0.5, 6), 1.0)
    probs[:5] = np.eye(10)[:5]  # confidence exactly 1: the last bin
    labels = rng.integers(0, 10, 3000)
    assert expected_calibration_error(probs, labels) == pytest.approx(reference_ece(probs, labels), abs=1e-12)
    b = calibration_bins(probs, labels)
    assert b["count"].sum() == 3000


# --- the temperature through the product -------------------------------------------------------


def with_temperature(src, dst, temperature):
    """A copy of run ``src`` whose model file holds ``temperature`` (None: the key removed,
    as in a file written before temperature scaling)."""
    shutil.copytree(src, dst)
    path = dst / "model.safetensors"
    model, info = load_model(path)
    info.temperature, info.calibration = temperature, {}
    save_model(path, model, info)
    if temperature is None:
        blob = path.read_bytes()
        (n,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8 : 8 + n])
        for key in ("temperature", "calibration"):
            del header["__metadata__"][key]
        raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + blob[8 + n :])
    return dst


def test_training_fits_and_stores_a_temperature_on_the_validation_split(synthetic_run, synthetic_dir):
    info = read_model_info(synthetic_run)
    assert info.temperature is not None and 0.05 <= info.temperature <= 20
    fit = info.calibration
    assert fit["split"] == "validation" and fit["images"] == 200 and fit["nll_after"] <= fit["nll_before"]
    assert json.loads((synthetic_run / "summary.json").read_text())["temperature"] == info.temperature


def test_an_old_model_file_without_a_temperature_loads_and_reports_the_raw_softmax(
    synthetic_run, synthetic_dir, tmp_path
):
    run = with_temperature(synthetic_run, tmp_path / "old", None)
    assert "temperature" not in (run / "model.safetensors").read_bytes()[:4000].decode("latin-1")
    info = read_model_info(run)
    assert info.temperature is None and info.softmax_temperature == 1.0
    model, _ = load_model(run)
    r = evaluate(run, synthetic_dir, verify=False, write=False)
    assert not r.calibrated and r.ece == r.ece_raw
    np.testing.assert_allclose(r.probs, r.raw_probs)


def test_every_consumer_applies_the_temperature_and_no_calibrate_gives_the_raw_softmax(
    synthetic_run, synthetic_dir, tmp_path, monkeypatch, capsys
):
    run = with_temperature(synthetic_run, tmp_path / "hot", 2.0)
    test = load_split("test", synthetic_dir, verify=False)
    model, _ = load_model(run)
    logits = predict_logits(model, torch.from_numpy(test.images[:3]).unsqueeze(1)).numpy()
    raw, scaled = softmax(logits), softmax(logits, 2.0)
    np.testing.assert_allclose(scaled, scaled_softmax(logits, 2.0), atol=1e-12)

    got = [p.top for p in predict(run, [0, 1, 2], synthetic_dir, top_k=10, verify=False)]
    got_raw = [p.top for p in predict(run, [0, 1, 2], synthetic_dir, top_k=10, verify=False, calibrate=False)]
    for i in range(3):
        np.testing.assert_allclose([t["probability"] for t in got[i]], np.sort(scaled[i])[::-1], atol=1e-6)
        np.testing.assert_allclose([t["probability"] for t in got_raw[i]], np.sort(raw[i])[::-1], atol=1e-6)

    args = ["--data-dir", synthetic_dir, "--no-verify", "--json"]
    code, out, _ = run_cli(monkeypatch, capsys, "predict", run, "--index", "0", "--no-calibrate", *args)
    assert code == 0 and json.loads(out)["confidence"] == pytest.approx(raw[0].max(), abs=1e-6)

    code, out, _ = run_cli(monkeypatch, capsys, "evaluate", run, *args)
    d = json.loads(out)
    assert d["temperature"] == 2.0 and d["calibrated"] is True and d["ece"] != d["ece_uncalibrated"]
    code, out, _ = run_cli(monkeypatch, capsys, "evaluate", run, "--no-calibrate", *args[:-1])
    assert f"ECE {d['ece_uncalibrated']:.4f} raw softmax -> {d['ece']:.4f} with temperature 2.000" in out
    assert "probabilities shown: raw softmax (--no-calibrate)" in out
    assert f"test accuracy {d['test_accuracy'] * 100:.2f}%" in out  # the argmax is the same either way

    p = load_predictor(run, "torch")
    assert p.temperature == 2.0
    np.testing.assert_allclose(p.probabilities(test.images[:3, None]), scaled, atol=1e-12)


def test_fmnist_calibrate_fits_a_temperature_into_an_old_model_file(
    synthetic_run, synthetic_dir, tmp_path, monkeypatch, capsys
):
    run = with_temperature(synthetic_run, tmp_path / "old", None)
    code, out, err = run_cli(
        monkeypatch, capsys, "calibrate", run, "--data-dir", synthetic_dir, "--no-verify", "--json"
    )
    assert code == 0, err
    d = json.loads(out)
    info = read_model_info(run)
    assert d["previous"] is None and info.temperature == d["temperature"]
    # The same validation split and logits as training's fit: the same temperature.
    assert info.temperature == pytest.approx(read_model_info(synthetic_run).temperature, rel=1e-6)
    c = calibrate(run, synthetic_dir, verify=False)  # refitting changes nothing
    assert c.previous == c.temperature == info.temperature


def one_error_line(code, err, *needles):
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("command", ["calibrate", "audit"])
def test_a_missing_run_or_a_damaged_model_file_is_one_error_line(
    command, synthetic_run, synthetic_dir, tmp_path, monkeypatch, capsys
):
    args = ["--data-dir", synthetic_dir, "--no-verify"]
    code, _, err = run_cli(monkeypatch, capsys, command, tmp_path / "nowhere", *args)
    one_error_line(code, err, "nowhere")
    run = tmp_path / "damaged"
    shutil.copytree(synthetic_run, run)
    blob = bytearray((run / "model.safetensors").read_bytes())
    blob[-100:] = bytes(100)
    (run / "model.safetensors").write_bytes(bytes(blob))
    code, _, err = run_cli(monkeypatch, capsys, command, run, *args)
    one_error_line(code, err, "damaged")
    assert not (run / "audit").exists() and not (run / "label_audit.csv").exists()


@pytest.mark.parametrize("command", ["calibrate", "audit"])
def test_a_read_only_run_folder_is_one_error_line(command, synthetic_run, synthetic_dir, tmp_path, monkeypatch, capsys):
    import os

    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a read-only tmpfs needs root")
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        shutil.copytree(synthetic_run, ro / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        code, _, err = run_cli(monkeypatch, capsys, command, ro / "run", "--data-dir", synthetic_dir, "--no-verify")
        one_error_line(code, err, str(ro / "run"), "read-only")
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
