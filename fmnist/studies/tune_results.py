"""The results of a search: the trial table, parameter importances, the optimisation-history
plot, and the files a study folder holds (best_config.json, summary.md, history.png)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from fmnist.core.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from fmnist.reporting.plots import subplots, to_png

BEST_CONFIG = "best_config.json"
SUMMARY = "summary.md"
HISTORY_PNG = "history.png"


def fmt_value(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def trial_table(study: optuna.Study) -> str:
    """The trials as a Markdown table, best first."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    names = list(dict.fromkeys(k for t in trials for k in t.params))
    head = ["trial", "state", "val acc", "epochs run", "seconds", *names]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = sorted(trials, key=lambda t: (t.value is None, -(t.value or 0), t.number))
    for t in order:
        epochs = t.user_attrs.get("epochs_run", t.last_step if t.last_step is not None else "")
        seconds = t.user_attrs.get("seconds")
        cells = [
            str(t.number),
            t.state.name,
            f"{t.value * 100:.2f}%" if t.value is not None else "",
            str(epochs),
            f"{seconds:.0f}" if seconds is not None else "",
            *(fmt_value(t.params[n]) if n in t.params else "" for n in names),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def importances(study: optuna.Study) -> dict[str, float] | str:
    """Parameter importances (fANOVA over the completed trials), or why there are none."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(done) < 3:
        return f"not enough completed trials ({len(done)}; at least 3 are needed)"
    try:
        return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError) as e:
        return f"not available ({_first_line_plain(e)})"


def _first_line_plain(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def history_png(study: optuna.Study) -> bytes:
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.PRUNED]
    fig, ax = subplots(figsize=(7, 4), dpi=100)
    xs = [t.number for t in done]
    ys = [t.value * 100 for t in done]
    ax.scatter(xs, ys, s=18, label="completed trial")
    if pruned:
        ax.scatter(
            [t.number for t in pruned],
            [max(t.intermediate_values.values()) * 100 if t.intermediate_values else np.nan for t in pruned],
            s=18,
            marker="x",
            color="grey",
            label="pruned (last reported)",
        )
    if done:
        ax.step(xs, np.maximum.accumulate(ys), where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"optimisation history: {study.study_name}")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return to_png(fig)


def write_results(study: optuna.Study, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    best = study.best_trial
    atomic_write_json(folder / BEST_CONFIG, best.user_attrs["config"])
    imp = importances(study)
    if isinstance(imp, dict):
        imp_text = "\n".join(f"| {k} | {v:.3f} |" for k, v in imp.items())
        imp_text = "| parameter | importance |\n|---|---|\n" + imp_text
    else:
        imp_text = f"Parameter importances: {imp}."
    counts = {s.name: 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    for t in study.get_trials(deepcopy=False):
        if t.state.name in counts:
            counts[t.state.name] += 1
    text = (
        f"# Study {study.study_name}\n\n"
        f"Best: trial {best.number}, validation accuracy {best.value * 100:.2f}%. "
        f"Train it with `fmnist train --config {folder / BEST_CONFIG}`.\n\n"
        f"Trials: {', '.join(f'{v} {k.lower()}' for k, v in counts.items())}.\n\n"
        f"![optimisation history]({HISTORY_PNG})\n\n"
        f"## Parameter importances\n\n{imp_text}\n\n"
        f"## Trials\n\n{trial_table(study)}\n"
    )
    atomic_write_text(folder / SUMMARY, text)
    atomic_write_bytes(folder / HISTORY_PNG, history_png(study))
