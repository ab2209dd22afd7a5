"""Hyperparameter search with Optuna: ``fmnist tune``.

Each trial is one ordinary training run (:func:`fmnist.train.Trainer`) of the ``quick``
recipe with the values the sampler picked from :data:`SPACE`, on the training split only:
the trial's score is its best validation accuracy, and the test set is never read. A
callback reports every epoch's validation accuracy to Optuna, whose pruner may stop the
trial early.

Trials are asked for and told by hand (``study.ask`` / ``study.tell``) rather than through
``study.optimize``, for three reasons: ``--trials`` counts the trials of the whole study
(so several workers, or a second run of the command, share one total); Ctrl-C can stop
*after* the current trial; and the sampler is re-seeded from each trial's number, so a
search is reproducible and two workers started with the same ``--seed`` never draw the
same values.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from fmnist.core.errors import FmnistError, TrainingDiverged
from fmnist.core.schema import data_dir_param, param, verify_param
from fmnist.core.spec import VALIDATION_SIZE
from fmnist.studies.tune_results import BEST_CONFIG, HISTORY_PNG, SUMMARY, fmt_value, trial_table, write_results
from fmnist.studies.tune_space import Dim, load_space, space_key
from fmnist.studies.tune_storage import HEARTBEAT_SECONDS, Claims, claims_for, open_database, open_journal
from fmnist.tracking import StudyTracking
from fmnist.training.budget import parse_duration
from fmnist.training.config import TrainConfig
from fmnist.training.presets import preset_config
from fmnist.training.trainer import Callback, Trainer, signal_handlers

JOURNAL = "journal.log"
SPACE_ATTR = "fmnist_space"
PRUNERS = ("median", "halving", "none")
EPOCHS_PER_TRIAL = 3


# --- one trial ---------------------------------------------------------------------------------


def suggest(trial: optuna.Trial, space: dict[str, Dim]) -> dict[str, Any]:
    """The trial's training settings (define-by-run: the width only for the ResNet)."""

    def pick(name: str) -> Any:
        dim = space[name]
        if dim.kind == "fixed":
            return dim.fixed
        if dim.kind == "choice":
            return trial.suggest_categorical(name, list(dim.choices))
        if dim.kind == "int":
            return trial.suggest_int(name, dim.low, dim.high, log=dim.log)
        return trial.suggest_float(name, dim.low, dim.high, log=dim.log)

    values: dict[str, Any] = {"model": pick("model")}
    if values["model"] == "resnet":
        w = pick("resnet_width")
        values["model_args"] = {"widths": [w, 2 * w, 4 * w], "stem": 16}
    else:
        values["model_args"] = {}
    for name in space:  # SPACE's order; under --trial-budget no epochs, and the budget
        if name not in ("model", "resnet_width"):
            values[name] = pick(name)
    return values


def trial_config(base: TrainConfig, values: dict[str, Any], out: Path) -> TrainConfig:
    cfg = base.merged({k: v for k, v in values.items() if k != "model_args"})
    return dataclasses.replace(cfg, model_args=values["model_args"], out=str(out), overwrite=True)


class TrialPruned(optuna.TrialPruned):
    """Raised from the epoch callback when the pruner says stop; ends the training run."""


class ReportToOptuna(Callback):
    """Each epoch's validation accuracy to Optuna, whose pruner may stop the trial.

    Trials of epochs report at their epoch. Trials of a time budget report at the tenth of
    their plan reached (1..10): their epochs last different times (a wider network fits fewer
    in the budget) and their schedules anneal over the budget, so the pruner compares trials
    at the same fraction of the time, never at the same epoch number."""

    def __init__(self, trial: optuna.Trial, epochs: int):
        self.trial, self.epochs = trial, epochs
        self.plan: dict[str, Any] = {}
        self.reported: set[int] = set()

    def on_train_start(self, config: TrainConfig, info, start_epoch: int) -> None:
        self.plan = dict(config.plan) if config.time_budget is not None else {}

    def on_epoch_end(self, row: dict[str, float]) -> None:
        epoch = int(row["epoch"])
        if self.plan:
            done = min(1.0, epoch * self.plan["steps_per_epoch"] / self.plan["steps"])
            step, last = int(done * 10 + 1e-9), done >= 1.0
            if step < 1 or step in self.reported:  # the pruner reads one value per tenth
                return
            self.reported.add(step)
        else:
            step, last = epoch, epoch >= self.epochs
        self.trial.report(row["val_accuracy"], step)
        # After the last epoch there is nothing left to save by stopping.
        if not last and self.trial.should_prune():
            raise TrialPruned(f"pruned after epoch {epoch}")


# --- storage -----------------------------------------------------------------------------------


def open_storage(url: str | None, folder: Path, heartbeat: int | None = None) -> optuna.storages.BaseStorage:
    """No URL: a journal file in the study folder (no server; several processes on one
    machine share it through a file lock). A URL: an SQLAlchemy database (PostgreSQL for
    several machines), with ``heartbeat``: one whose workers record that they are alive."""
    if url is None:
        folder.mkdir(parents=True, exist_ok=True)
        return open_journal(folder / JOURNAL)
    shown = _hide_password(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("postgresql"):
        kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    try:
        return open_database(url, kwargs, heartbeat)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, optuna.exceptions.StorageInternalError) as e:
        raise FmnistError(f"--storage {shown}: {_first_line(e)}") from None


def _hide_password(url: str) -> str:
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return url


def _first_line(e: BaseException) -> str:
    cause = getattr(e, "orig", None) or e.__cause__ or e
    text = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return f"{text[:300]} (check the URL, e.g. postgresql://USER:PASSWORD@HOST:5432/DB, and that the server runs)"


def open_study(name: str, storage, space: dict[str, Dim], seed: int, pruner: str) -> optuna.Study:
    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=make_pruner(pruner),
            load_if_exists=True,
        )
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        raise FmnistError(f"--storage: {_first_line(e)}") from None
    key = space_key(space)
    stored = study.user_attrs.get(SPACE_ATTR)
    if stored is None:
        study.set_user_attr(SPACE_ATTR, key)
    elif stored != key:
        raise FmnistError(
            f"study {name!r} exists with a different search space (or --epochs-per-trial or --trial-budget); "
            "run it with the same --space and trial length, or choose another --study name"
        )
    return study


def load_existing(name: str, storage) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise FmnistError(f"no study {name!r} in that storage; check --study, --storage and --out") from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        raise FmnistError(f"--storage: {_first_line(e)}") from None


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        # Five trials run to the end before any is compared with the median of the others
        # at the same epoch.
        return optuna.pruners.MedianPruner(n_startup_trials=5)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise FmnistError(f"--pruner {name!r}: choose median, halving or none")


# --- the search --------------------------------------------------------------------------------


@dataclass
class TuneSettings:
    """What `fmnist tune` searches, for how long, and where it keeps the study."""

    study: str = param(help="Study name; run the same command again (or on more workers) to continue it.")
    storage: str | None = param(
        None, "SQLAlchemy URL, e.g. postgresql://USER:PASS@HOST/DB (default: a journal file in --out)."
    )
    trials: int = param(20, "Trials in the whole study (over all workers and runs).", min=1)
    timeout: float | None = param(None, "Start no new trial after this many seconds.", min=0)
    # Called --budget until 2026-12: a budget sounded like time, but it counts epochs.
    epochs_per_trial: int | None = param(
        None, f"Most epochs one trial trains (default {EPOCHS_PER_TRIAL}).", min=1, formerly=("--budget",)
    )
    trial_budget: str | None = param(
        None,
        "Train each trial for this long instead of for epochs, e.g. 30s or 2m (the whole trial, as "
        "`fmnist train --time-budget`: its schedule anneals to the end of the time).",
    )
    subset: int = param(0, "Train each trial on this many images (0: all).", min=0)
    space_file: str | None = param(
        None, "JSON or TOML file narrowing or widening the search space.", flags=("--space",), path=True
    )
    out: str | None = param(None, "Study folder (default tunes/STUDY).", path=True)
    seed: int = param(0, "Seed of the sampler and of every trial's training.", min=0)
    pruner: str = param("median", "median, halving (successive halving) or none.", choices=PRUNERS)
    threads: int = param(0, "PyTorch CPU threads per worker (0: default).", min=0)
    val_size: int = param(VALIDATION_SIZE, "Training images held out to score each trial.", min=1)
    data_dir: str | None = data_dir_param()
    verify: bool = verify_param()
    heartbeat: int = param(
        HEARTBEAT_SECONDS,
        "With --storage: seconds between a worker's heartbeats; a trial silent for 4 is re-run elsewhere.",
        min=1,
    )
    tensorboard: bool = param(
        False, "One TensorBoard event folder per trial, in STUDY/tensorboard/ (needs fmnist[track])."
    )
    mlflow: str | None = param(
        None,
        "Log each trial as a nested run to this MLflow store (alone, or 'default': $FMNIST_MLFLOW_URI, "
        "else sqlite:///mlruns.db).",
        flag_value="default",
        metavar="[URI]",
    )

    @property
    def folder(self) -> Path:
        return Path(self.out) if self.out else Path("tunes") / self.study

    @property
    def epochs(self) -> int:
        return EPOCHS_PER_TRIAL if self.epochs_per_trial is None else self.epochs_per_trial

    def length(self) -> dict[str, Any]:
        """How long each trial trains, as the study's tracking records it."""
        if self.trial_budget:
            return {"trial_budget": self.trial_budget}
        return {"epochs_per_trial": self.epochs}


TuneOptions = TuneSettings  # the name before the settings schema


def base_config(opts: TuneSettings) -> TrainConfig:
    """What every trial shares: the `quick` recipe on the training split (never the test set)."""
    if opts.epochs < 1:
        raise FmnistError(f"--epochs-per-trial must be >= 1, got {opts.epochs_per_trial}")
    if opts.trial_budget is not None:
        if opts.epochs_per_trial is not None:
            raise FmnistError(
                "--trial-budget and --epochs-per-trial both say how long a trial trains; give one "
                "(a budget plans each trial's own steps)"
            )
        parse_duration(opts.trial_budget, "--trial-budget")  # a typo is one line, before any trial
    cfg = preset_config(
        "quick",
        data_dir=opts.data_dir,
        verify=opts.verify,
        subset=opts.subset,
        seed=opts.seed,
        threads=opts.threads,
        val_size=opts.val_size,
    )
    if cfg.val_size < 1:
        raise FmnistError("--val-size must be >= 1: trials are scored on the validation split")
    cfg = dataclasses.replace(cfg, preset=None, save_every=0)
    cfg.validate()
    return cfg


class _StopRequest:
    """First Ctrl-C: finish the current trial, then stop. Second: stop at once."""

    def __init__(self, log: Callable[[str], None]):
        self.requested, self.log = False, log

    def installed(self):
        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            self.log("stopping after this trial (Ctrl-C again to stop at once)")

        return signal_handlers(handler, signal.SIGINT)


def _sampler_seed(seed: int, number: int) -> int:
    return int(np.random.SeedSequence([seed, number]).generate_state(1, np.uint32)[0])


def tune(opts: TuneSettings, log: Callable[[str], None] = print) -> optuna.Study:
    """Run trials until the study holds ``opts.trials`` of them or ``opts.timeout`` seconds
    have passed; then write the best config, the summary and the history plot."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial instead
    base = base_config(opts)
    space = load_space(opts.space_file, opts.epochs, base, opts.trial_budget)
    make_pruner(opts.pruner)  # a wrong name is refused before anything is written
    folder = opts.folder
    tracking = StudyTracking(folder, opts.study, opts.tensorboard, opts.mlflow, stopped=(optuna.TrialPruned,))
    storage = open_storage(opts.storage, folder, opts.heartbeat)
    study = open_study(opts.study, storage, space, opts.seed, opts.pruner)
    claims = claims_for(storage, folder, log)
    tracking.start({"trials": opts.trials, **opts.length(), "pruner": opts.pruner})
    stop = _StopRequest(log)
    start = time.monotonic()

    def timed_out() -> bool:
        return opts.timeout is not None and time.monotonic() - start >= opts.timeout

    interrupted = False
    with stop.installed():
        try:
            while not stop.requested:
                if timed_out():
                    log(f"--timeout {opts.timeout:g} s reached")
                    break
                # Also finds (and queues again) the trials of workers that died.
                if claims.study_done(study, opts.trials, lambda: stop.requested or timed_out()):
                    break
                try:
                    run_trial(study, space, base, folder, opts.seed, log, claims, tracking)
                finally:
                    claims.release()
        except KeyboardInterrupt:
            interrupted = True
        except BaseException:
            tracking.close("FAILED")
            raise
    tracking.close("KILLED" if interrupted or stop.requested else "FINISHED")
    if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        write_results(study, folder)
        log(f"wrote {folder / BEST_CONFIG}, {folder / SUMMARY} and {folder / HISTORY_PNG}")
    if interrupted or stop.requested:
        log(f"stopped; the study is intact. Continue with the same command (fmnist tune --study {opts.study} ...)")
    if interrupted:
        raise KeyboardInterrupt
    return study


def run_trial(
    study: optuna.Study, space, base: TrainConfig, folder: Path, seed: int, log, claims=None, tracking=None
) -> None:
    trial = (claims or Claims(folder, log)).ask(study)
    # The trial's number is unique in the study (over all workers): seed from it.
    study.sampler = optuna.samplers.TPESampler(seed=_sampler_seed(seed, trial.number))
    values = suggest(trial, space)
    out = folder / "trials" / f"{trial.number:04d}"
    cfg = trial_config(base, values, out)
    trial.set_user_attr("config", settings_of(cfg))
    t0 = time.perf_counter()
    try:
        # Ctrl-C is the search's (it stops after the trial), not the trial's to save and stop.
        with (tracking or StudyTracking(folder, "")).trial(trial.number) as trackers:
            run = Trainer(cfg, [*trackers, ReportToOptuna(trial, cfg.epochs)], handle_signals=False).run()
    except (optuna.TrialPruned, TrainingDiverged) as e:
        # A recipe that diverges is a (bad) result of the search, not a reason to stop it:
        # pruned, so it counts as a trial and TPE ranks it below every completed one.
        note = str(e)
        if isinstance(e, TrainingDiverged):
            trial.set_user_attr("diverged", True)
            note = "diverged (NaN loss)"
        study.tell(trial, state=TrialState.PRUNED)
        shutil.rmtree(out, ignore_errors=True)
        _progress(study, trial.number, "PRUNED", trial, time.perf_counter() - t0, note, log)
        return
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        shutil.rmtree(out, ignore_errors=True)
        raise
    if run.config.plan:  # the steps its budget bought: best_config.json repeats the trial step for step
        trial.set_user_attr("config", settings_of(run.config))
    trial.set_user_attr("seconds", run.seconds)
    trial.set_user_attr("epochs_run", len(run.history))
    study.tell(trial, run.best["val_accuracy"])
    _progress(study, trial.number, "COMPLETE", trial, time.perf_counter() - t0, "", log)


def settings_of(cfg: TrainConfig) -> dict[str, Any]:
    """The config a user trains with `fmnist train --config`: everything but where it was written."""
    d = cfg.to_dict()
    d["out"], d["overwrite"] = None, False
    return d


def _progress(study, number: int, state: str, trial, seconds: float, note: str, log) -> None:
    frozen = study.get_trials(deepcopy=False)
    done = [t for t in frozen if t.state == TrialState.COMPLETE]
    value = next((t.value for t in done if t.number == number), None)
    best = max(done, key=lambda t: t.value) if done else None
    params = " ".join(f"{k}={fmt_value(v)}" for k, v in trial.params.items())
    acc = f"val {value * 100:.2f}%" if value is not None else note
    best_text = f"best {best.value * 100:.2f}% (#{best.number})" if best else "best -"
    log(f"trial {number:4d} {state:<8} {acc:<20} {best_text}  {seconds:6.1f} s  {params}")


def show(study_name: str, storage_url: str | None, out: str | None) -> str:
    folder = Path(out) if out else Path("tunes") / study_name
    if storage_url is None and not (folder / JOURNAL).is_file():
        raise FmnistError(f"no study journal at {folder / JOURNAL}; pass --out FOLDER or --storage URL")
    study = load_existing(study_name, open_storage(storage_url, folder))
    return trial_table(study)
