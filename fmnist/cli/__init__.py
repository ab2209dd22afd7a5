"""The `fmnist` command: a thin layer of Typer commands over the library."""

from __future__ import annotations

import dataclasses
import errno
import inspect
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from typer import Abort

from fmnist.cli_runs import app as runs_app
from fmnist.core.console import make_console
from fmnist.core.errors import FmnistError
from fmnist.core.files import dumps
from fmnist.serve.settings import FIELDS as SERVE_FIELDS
from fmnist.serve.settings import ServeSettings

try:  # recent Typer vendors its own copy of Click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - older Typer with Click installed
    from click.exceptions import ClickException, UsageError

app = typer.Typer(
    help="Train, understand, improve and use a Fashion-MNIST classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
data_app = typer.Typer(help="Locate, verify, describe and draw the data set.", no_args_is_help=True)
model_app = typer.Typer(help="The model architectures.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(model_app, name="model")
app.add_typer(runs_app, name="runs")
out = make_console()

DataDir = typer.Option(
    None, "--data-dir", help="Folder with the four files (default: $FMNIST_DATA_DIR, cache, Debian's, download)."
)
NoVerify = typer.Option(
    False, "--no-verify", help="Skip the SHA-256 check: ONLY for custom IDX data sets laid out like Fashion-MNIST."
)
NoCalibrate = typer.Option(
    False,
    "--no-calibrate",
    help="Report the raw softmax, not the probabilities scaled by the temperature fitted on the validation split.",
)


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


# --- data ------------------------------------------------------------------------------


@data_app.command("fetch")
def data_fetch(
    data_dir: Optional[Path] = DataDir,
    no_download: bool = typer.Option(False, "--no-download", help="Never download; fail if no local copy exists."),
):
    """Find the four files (or download them into the cache) and verify their checksums."""
    from fmnist.core.spec import FILES
    from fmnist.data import locate, verify_file

    src = locate(data_dir, download=False if no_download else None)
    for key, spec in FILES.items():
        verify_file(src.paths[key], spec)
    out.print(f"Fashion-MNIST verified in {src.directory} (source: {src.origin})")


@data_app.command("info")
def data_info(data_dir: Optional[Path] = DataDir, no_verify: bool = NoVerify):
    """Where the files came from, whether they verified, counts per class, pixel mean/std."""
    from fmnist.core.spec import CLASS_NAMES
    from fmnist.data import load_split, pixel_stats, validation_split

    train = load_split("train", data_dir, verify=not no_verify)
    test = load_split("test", data_dir, verify=not no_verify)
    out.print(f"source: {train.source.origin} ({train.source.directory})")
    for key, path in train.source.paths.items():
        out.print(f"  {key:<13} {path}")
    out.print(
        f"checksums: {'verified (SHA-256 of decompressed content)' if train.verified else 'NOT verified (--no-verify)'}"
    )
    mean, std = pixel_stats(train.images)
    out.print(f"images: {len(train):,} train + {len(test):,} test, 28×28 grayscale, 10 classes")
    out.print(f"training pixels after scaling to [0, 1]: mean {mean:.4f}, std {std:.4f}")
    tr_idx, val_idx = validation_split(train.labels)
    table = Table(title="images per class")
    for col in ("label", "class", "train", "of which validation", "test"):
        table.add_column(col, justify="right" if col not in ("class",) else "left")
    for c, name in enumerate(CLASS_NAMES):
        table.add_row(
            str(c),
            name,
            f"{(train.labels == c).sum():,}",
            f"{(train.labels[val_idx] == c).sum():,}",
            f"{(test.labels == c).sum():,}",
        )
    out.print(table)


@data_app.command("show")
def data_show(
    out_path: Path = typer.Option(Path("grid.png"), "--out", help="PNG file to write."),
    split: str = typer.Option("train", help="train or test."),
    per_class: int = typer.Option(8, "--per-class", min=1, max=30, help="Examples per class (one row per class)."),
    seed: int = typer.Option(0, help="Which random examples."),
    data_dir: Optional[Path] = DataDir,
    no_verify: bool = NoVerify,
):
    """Draw a grid of sample images, one row per class, labelled with class names."""
    from fmnist.core.files import atomic_write_bytes
    from fmnist.data import load_split
    from fmnist.reporting.plots import sample_grid_png

    s = load_split(split, data_dir, verify=not no_verify)
    atomic_write_bytes(out_path, sample_grid_png(s.images, s.labels, per_class, seed, f"Fashion-MNIST {split} samples"))
    out.print(f"wrote {out_path}")


# --- model -----------------------------------------------------------------------------


@model_app.command("list")
def model_list():
    """The architectures you can train."""
    from fmnist.models import available

    for name, about in available().items():
        out.print(f"{name:<8} {about}")


@model_app.command("summary")
def model_summary(
    name: str = typer.Argument(..., help="Model name (see `fmnist model list`) or a run folder / model file."),
):
    """A Keras-style table: each layer, what it does, output shape, parameters, FLOPs."""
    from fmnist.models import available, summary_table

    if name in available():
        out.print(summary_table(name))
        return
    from fmnist.runtime.modelfile import load_model

    model, info = load_model(name)
    out.print(summary_table(info.model, model))


# --- ablation --------------------------------------------------------------------------


@app.command("ablate")
def ablate_cmd(
    budget: int = typer.Option(3, help="Epochs per training run (more: slower, closer to converged)."),
    seeds: int = typer.Option(3, help="Seeds per step; the table shows mean ± std."),
    out_dir: Path = typer.Option(Path("runs/ablation"), "--out", help="Folder for the runs, table and chart."),
    steps: Optional[str] = typer.Option(None, help="Only these steps, e.g. 0-3 or 7,8 (default: all)."),
    list_steps: bool = typer.Option(False, "--list", help="List the steps and exit."),
    data_dir: Optional[Path] = DataDir,
):
    """Add one improvement at a time to the notebook's recipe and measure each over seeds."""
    from fmnist.studies.ablate import STEPS, ablate

    if list_steps:
        for i, s in enumerate(STEPS):
            out.print(f"{i:2d} {s.name:<16} {s.change}")
        return
    chosen = _parse_steps(steps, len(STEPS)) if steps else None
    ablate(budget, seeds, out_dir, str(data_dir) if data_dir else None, chosen, log=lambda m: out.print(m))
    out.print(f"wrote {out_dir / 'ablation.md'}, {out_dir / 'ablation.png'} and {out_dir / 'ablation.json'}")


@app.command("transfer-study")
def transfer_study_cmd(
    out_dir: Path = typer.Option(
        Path("runs/transfer-study"), "--out", help="Folder for the data subsets, runs and table."
    ),
    sizes: str = typer.Option("10,100,1000", help="Labelled images per target class, comma-separated."),
    seeds: int = typer.Option(3, min=1, help="Seeds per size; the table shows mean ± std."),
    model: str = typer.Option("cnn", help="Architecture for both the pretrained and the scratch networks."),
    model_arg: Optional[list[str]] = typer.Option(
        None, "--model-arg", help="KEY=VALUE (default widths=16,32,64 for cnn)."
    ),
    pretrain_epochs: int = typer.Option(3, min=1, help="Epochs on the five source classes."),
    steps: int = typer.Option(200, min=1, help="Optimizer steps per fine-tuning run (the same for every size)."),
    freeze: str = typer.Option("", help="Parts of the pretrained network kept fixed (see `fmnist train --help`)."),
    data_dir: Optional[Path] = DataDir,
    no_verify: bool = NoVerify,
):
    """Pretrain on five classes, fine-tune on the other five with few labels, against training from scratch."""
    from fmnist.studies.transfer_study import StudyPlan, run_study
    from fmnist.training.config import parse_model_args

    try:
        sizes_t = tuple(int(v) for v in sizes.split(","))
    except ValueError:
        raise FmnistError(f"--sizes {sizes!r}: give whole numbers separated by commas, e.g. 10,100,1000") from None
    if not sizes_t or min(sizes_t) < 1 or max(sizes_t) > 5000:
        raise FmnistError(
            "--sizes: each size must be between 1 and 5000 images per class (the smallest class has 6,000)"
        )
    args = parse_model_args(model_arg) if model_arg else ({"widths": [16, 32, 64]} if model == "cnn" else {})
    plan = StudyPlan(sizes_t, seeds, model, args, pretrain_epochs, steps, freeze)
    run_study(out_dir, plan, str(data_dir) if data_dir else None, not no_verify, log=lambda m: out.print(m))
    out.print(f"wrote {out_dir / 'transfer.md'} and {out_dir / 'transfer.json'}")


def _parse_steps(text: str, n: int) -> list[int]:
    chosen: list[int] = []
    try:
        for part in text.split(","):
            a, _, b = part.partition("-")
            chosen += list(range(int(a), int(b) + 1)) if b else [int(a)]
    except ValueError:
        raise FmnistError(f"--steps {text!r}: use numbers, ranges and commas, e.g. 0-3,7") from None
    return chosen


# --- train / evaluate / predict --------------------------------------------------------


def _train_parameters() -> list[inspect.Parameter]:
    """One option per TrainConfig field, from the schema (help text, allowed values,
    default), plus the options that say where the values come from."""
    from fmnist.training.config import TrainConfig, cli_fields, describe_rules
    from fmnist.training.presets import PRESETS

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(
            "preset",
            kw,
            default=typer.Option(
                None,
                "--preset",
                help=TrainConfig.__dataclass_fields__["preset"].metadata["help"] + f" [one of {', '.join(PRESETS)}]",
            ),
            annotation=Optional[str],
        ),
        inspect.Parameter(
            "config_file",
            kw,
            default=typer.Option(
                None,
                "--config",
                help="Start from a JSON or TOML file of settings (a run's config.json too); flags override it.",
            ),
            annotation=Optional[Path],
        ),
    ]
    for f in cli_fields():
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else "{}"
        text = f.metadata["help"] + describe_rules(f) + (f" (default: {default})" if default is not None else "")
        kind = str(f.type).split("|")[0].strip().split("[")[0]
        if f.name == "model_args":
            opt, annotation, name = (
                typer.Option(None, "--model-arg", metavar="KEY=VALUE", help=f.metadata["help"]),
                Optional[list[str]],
                "model_arg",
            )
        elif kind == "bool":
            opt, annotation, name = typer.Option(None, f"{flag}/--no-{flag[2:]}", help=text), Optional[bool], f.name
        else:
            annotation = {"int": Optional[int], "float": Optional[float]}.get(kind, Optional[str])
            opt, name = typer.Option(None, flag, help=text), f.name
        params.append(inspect.Parameter(name, kw, default=opt, annotation=annotation))
    params += [
        inspect.Parameter(
            "resume",
            kw,
            default=typer.Option(
                None, "--resume", help="Continue the unfinished run in this folder, with its own settings."
            ),
            annotation=Optional[Path],
        ),
        inspect.Parameter(
            "show_config",
            kw,
            default=typer.Option(False, "--show-config", help="Print the resolved settings as JSON and exit."),
            annotation=bool,
        ),
        inspect.Parameter(
            "quiet",
            kw,
            default=typer.Option(False, "--quiet", "-q", help="Print only the final line."),
            annotation=bool,
        ),
        inspect.Parameter(
            "plain",
            kw,
            default=typer.Option(False, "--plain", help="Plain lines, no progress bar (for logs)."),
            annotation=bool,
        ),
    ]
    return params


def train_cmd(**options):
    """Train a model; writes config.json, metrics.csv, model.safetensors and summary.json.

    Settings come from, in order: the defaults (the original notebook's recipe), --preset,
    --config FILE, then the flags. Ctrl-C (or SIGTERM) stops after the current step and
    saves, and --resume RUN continues; under torchrun it trains on several processes.
    """
    from fmnist.training.config import TrainConfig, load_config_file, parse_model_args
    from fmnist.training.presets import preset_config
    from fmnist.training.progress import PlainProgress, RichProgress
    from fmnist.training.trainer import Interrupted, Trainer

    preset, config_file, resume = options.pop("preset"), options.pop("config_file"), options.pop("resume")
    show_config, quiet, plain = options.pop("show_config"), options.pop("quiet"), options.pop("plain")
    model_args = options.pop("model_arg")
    overrides = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items() if v is not None}
    if model_args:
        overrides["model_args"] = parse_model_args(model_args)
    if resume is not None:
        given = [f"--{k.replace('_', '-')}" for k in overrides] + (["--preset"] if preset else [])
        given += ["--config"] if config_file else []
        if given:
            raise FmnistError(
                f"--resume continues a run with its own settings; leave out {', '.join(given)} (or start a new run)"
            )
        trainer = Trainer(None, resume=resume)
    else:
        file_values = load_config_file(config_file) if config_file else {}
        name = preset or file_values.get("preset")
        config = preset_config(name) if isinstance(name, str) else TrainConfig()
        config = config.merged(file_values, str(config_file)).merged(overrides)
        if preset:
            config.preset = preset
        config.validate()
        if show_config:
            print(dumps(config.to_dict()))
            return
        trainer = Trainer(config)
    if show_config:
        print(dumps(trainer.config.to_dict()))
        return
    progress = None if quiet else PlainProgress() if plain or not sys.stdout.isatty() else RichProgress(out)
    trainer.callbacks = [progress] if progress else []
    try:
        run = trainer.run()
    except Interrupted as e:
        if isinstance(progress, RichProgress):
            progress.stop()
        print(str(e), file=sys.stderr)
        raise typer.Exit(130) from None
    if quiet:
        print(f"{run.out_dir}: best val acc {_pct(run.best['val_accuracy'])} at epoch {run.best['epoch']}")


train_cmd.__signature__ = inspect.Signature(_train_parameters())
train_cmd.__annotations__ = {p.name: p.annotation for p in train_cmd.__signature__.parameters.values()}
app.command("train")(train_cmd)


@app.command("tune")
def tune_cmd(
    study: str = typer.Option(
        ..., "--study", help="Study name; run the same command again (or on more workers) to continue it."
    ),
    show: bool = typer.Option(False, "--show", help="Print the trial table of the existing study and exit."),
    storage: Optional[str] = typer.Option(
        None,
        "--storage",
        help="SQLAlchemy URL, e.g. postgresql://USER:PASS@HOST/DB (default: a journal file in --out).",
    ),
    trials: int = typer.Option(20, "--trials", min=1, help="Trials in the whole study (over all workers and runs)."),
    timeout: Optional[float] = typer.Option(
        None, "--timeout", min=0, help="Start no new trial after this many seconds."
    ),
    epochs_per_trial: int = typer.Option(
        3, "--epochs-per-trial", "--budget", min=1, help="Most epochs one trial trains."
    ),
    subset: int = typer.Option(0, "--subset", min=0, help="Train each trial on this many images (0: all)."),
    space: Optional[Path] = typer.Option(
        None, "--space", help="JSON or TOML file narrowing or widening the search space."
    ),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Study folder (default tunes/STUDY)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the sampler and of every trial's training."),
    pruner: str = typer.Option("median", "--pruner", help="median, halving (successive halving) or none."),
    threads: int = typer.Option(0, "--threads", min=0, help="PyTorch CPU threads per worker (0: default)."),
    val_size: int = typer.Option(5000, "--val-size", min=1, help="Training images held out to score each trial."),
    data_dir: Optional[Path] = DataDir,
    no_verify: bool = NoVerify,
):
    """Search hyperparameters with Optuna (TPE, pruning on validation accuracy; never the test set).

    Ctrl-C stops after the current trial (twice: at once); the study stays and the same
    command continues it. Writes best_config.json (for `fmnist train --config`), summary.md
    and history.png into the study folder.
    """
    try:
        from fmnist.studies.tune import TuneOptions, tune
        from fmnist.studies.tune import show as show_study
    except ModuleNotFoundError as e:
        if e.name not in ("optuna", "sqlalchemy"):
            raise
        raise FmnistError(f"fmnist tune needs {e.name}: pip install -c constraints.txt -e '.[tune]'") from None

    if show:
        print(show_study(study, storage, str(out_dir) if out_dir else None))
        return
    opts = TuneOptions(
        study=study,
        storage=storage,
        trials=trials,
        timeout=timeout,
        epochs_per_trial=epochs_per_trial,
        subset=subset,
        space_file=str(space) if space else None,
        out=str(out_dir) if out_dir else None,
        seed=seed,
        pruner=pruner,
        data_dir=str(data_dir) if data_dir else None,
        verify=not no_verify,
        threads=threads,
        val_size=val_size,
    )
    tune(opts, log=lambda m: print(m, flush=True))


@app.command("evaluate")
def evaluate_cmd(
    run: Path = typer.Argument(..., help="Run folder or model file."),
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help="Flip TTA (default: as trained)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    no_calibrate: bool = NoCalibrate,
    data_dir: Optional[Path] = DataDir,
    no_verify: bool = NoVerify,
):
    """Test-set accuracy and loss, per-class precision/recall/F1, the confusion matrix, and
    the expected calibration error (ECE) before and after temperature scaling."""
    from fmnist.core.spec import CLASS_NAMES
    from fmnist.reporting.evaluate import evaluate, save_evaluation

    # Compute, show, then save: a read-only run folder or a full disk still shows the results.
    r = evaluate(run, data_dir, tta=tta, device=device, verify=not no_verify, write=False, calibrate=not no_calibrate)
    folder = run if run.is_dir() else run.parent
    if as_json:
        print(dumps(r.to_dict()))
        _save_or_explain(lambda: save_evaluation(folder, r))
        return
    d = r.to_dict()
    out.print(
        f"test accuracy {_pct(r.accuracy)} ({d['test_images'] - d['errors']:,}/{d['test_images']:,}), "
        f"loss {r.loss:.4f}, macro F1 {d['macro_f1']:.4f}" + (", flip TTA" if r.tta else "")
    )
    out.print(_calibration_line(r))
    table = Table(title="per class")
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c in r.per_class:
        table.add_row(
            f"{c['class']} {c['name']}",
            f"{c['precision']:.3f}",
            f"{c['recall']:.3f}",
            f"{c['f1']:.3f}",
            str(c["support"]),
        )
    out.print(table)
    cm = Table(title="confusion matrix (rows: actual, columns: predicted)")
    cm.add_column("")
    for i in range(len(CLASS_NAMES)):
        cm.add_column(str(i), justify="right")
    for i, row in enumerate(r.confusion):
        cm.add_row(f"{i} {CLASS_NAMES[i]}", *[str(v) for v in row])
    out.print(cm)
    written = _save_or_explain(lambda: save_evaluation(folder, r))
    out.print(f"wrote {written[0]} and {written[1]}")


def _calibration_line(r) -> str:
    """ECE before and after temperature scaling, and which of them the figures above use."""
    t = r.info.temperature
    if t is None:
        return f"ECE {r.ece:.4f} (raw softmax; this model file has no fitted temperature: run `fmnist calibrate`)"
    after = r.ece if r.calibrated else None
    if after is None:
        from fmnist.runtime.calibration import expected_calibration_error
        from fmnist.runtime.inference import softmax

        after = expected_calibration_error(softmax(r.logits, t), r.labels)
    shown = "calibrated" if r.calibrated else "raw softmax (--no-calibrate)"
    return f"ECE {r.ece_raw:.4f} raw softmax -> {after:.4f} with temperature {t:.3f} (probabilities shown: {shown})"


def _save_or_explain(save):
    """Run ``save``; if the disk refuses, one `error:` line that says the results shown were not saved."""
    try:
        return save()
    except OSError as e:
        print(f"error: {os_error_line(e)}; the results above were not saved", file=sys.stderr)
        sys.exit(2)


@app.command("predict")
def predict_cmd(
    run: Path = typer.Argument(..., help="Run folder or model file."),
    files: Optional[list[Path]] = typer.Argument(
        None, help="Your own image files (PNG, JPEG, GIF, ...), one garment each. Omit to predict test images."
    ),
    index: list[int] = typer.Option(None, "--index", "-i", help="Test image index (repeatable). Default 0."),
    top: int = typer.Option(3, help="How many of the most likely classes to show."),
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help="Flip TTA (default: as trained)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    save_preprocessed: Optional[Path] = typer.Option(
        None, "--save-preprocessed", help="Folder for the 28×28 PNG the model saw of each file."
    ),
    backend: str = typer.Option(
        "auto", help="auto (ONNX Runtime if an up-to-date model.onnx is beside the model, else PyTorch), torch, onnx."
    ),
    no_calibrate: bool = NoCalibrate,
    data_dir: Optional[Path] = DataDir,
    no_verify: bool = NoVerify,
):
    """Predicted vs actual label of test images, whether they match, and the confidence (the
    calibrated probability: temperature-scaled softmax); or the predicted class of your own
    images (exit code 1 if some could not be read, 2 if none)."""
    from fmnist.runtime.predict import predict

    if files:
        if index:
            raise FmnistError("pass image FILES or --index, not both")
        raise typer.Exit(_predict_files(run, files, top, tta, as_json, save_preprocessed, backend, not no_calibrate))
    preds = predict(
        run,
        index or [0],
        data_dir,
        top_k=top,
        tta=tta,
        verify=not no_verify,
        backend=backend,
        calibrate=not no_calibrate,
    )
    if as_json:
        items = [p.to_dict() for p in preds]
        print(dumps(items[0] if len(items) == 1 else items))
        return
    for p in preds:
        verdict = "yes" if p.match else "NO"
        out.print(
            f"test image {p.index}: predicted {p.predicted} ({p.predicted_name}), actual {p.actual} ({p.actual_name}), "
            f"match: {verdict}, confidence {p.confidence * 100:.2f}%"
        )
        out.print("  top: " + ", ".join(f"{t['name']} {t['probability'] * 100:.2f}%" for t in p.top))


def _predict_files(run, files, top, tta, as_json, save_preprocessed, backend, calibrate) -> int:
    """Prints each file's prediction (errors on stderr); returns the exit code."""
    from fmnist.runtime.predict import predict_files

    results = predict_files(
        run, files, top_k=top, save_preprocessed=save_preprocessed, tta=tta, backend=backend, calibrate=calibrate
    )
    failed = sum(isinstance(r, FmnistError) for _, r in results)
    if as_json:
        items = [
            r.to_dict() if not isinstance(r, FmnistError) else {"source": str(p), "error": str(r)} for p, r in results
        ]
        print(dumps(items[0] if len(items) == 1 else items))
    for path, r in results:
        if isinstance(r, FmnistError):
            print(f"error: {r}", file=sys.stderr)
        elif not as_json:
            out.print(f"{path}: predicted {r.predicted} ({r.predicted_name}), confidence {r.confidence * 100:.2f}%")
            out.print("  top: " + ", ".join(f"{t['name']} {t['probability'] * 100:.2f}%" for t in r.top))
            if r.preprocessed:
                out.print(f"  the model saw: {r.preprocessed}")
    return 0 if not failed else 2 if failed == len(results) else 1


@app.command("report")
def report_cmd(
    run: Path = typer.Argument(..., help="Run folder (or its model file)."),
    no_calibrate: bool = NoCalibrate,
    data_dir: Optional[Path] = DataDir,
    no_verify: bool = NoVerify,
):
    """Write one self-contained HTML page (curves, confusion matrix, mistakes, calibration
    before and after temperature scaling, model, configuration) into the run folder; prints its path."""
    from fmnist.reporting.report import write_report

    print(write_report(run, data_dir, verify=not no_verify, calibrate=not no_calibrate))


@app.command("calibrate")
def calibrate_cmd(
    run: Path = typer.Argument(..., help="Run folder from `fmnist train`."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    as_json: bool = typer.Option(False, "--json", help="Print what was fitted as JSON."),
    data_dir: Optional[Path] = DataDir,
    no_verify: bool = NoVerify,
):
    """Fit (or refit) the run's temperature on its validation split and store it in its model
    file. Training does this itself; use it on model files from before temperature scaling.
    The weights are unchanged; re-run `fmnist export` afterwards if the run has an ONNX file."""
    from fmnist.reporting.evaluate import calibrate

    c = calibrate(run, data_dir, verify=not no_verify, device=device)
    if as_json:
        print(dumps({"path": str(c.path), "temperature": c.temperature, "previous": c.previous, **c.summary}))
        return
    s = c.summary
    before = f" (was {c.previous:.3f})" if c.previous is not None else " (the file had none: raw softmax)"
    out.print(
        f"temperature {c.temperature:.3f}{before}, fitted on {s['images']:,} validation images: "
        f"ECE {s['ece_before']:.4f} -> {s['ece_after']:.4f}, NLL {s['nll_before']:.4f} -> {s['nll_after']:.4f}; "
        f"wrote {c.path}"
    )


@app.command("audit")
def audit_cmd(
    run: Path = typer.Argument(
        ..., help="Run folder from `fmnist train` (its model gives the test set's probabilities)."
    ),
    folds: int = typer.Option(5, "--folds", "-k", min=2, max=20, help="K of the cross-validation on the training set."),
    preset: str = typer.Option("notebook", "--preset", help="Recipe of each fold's model (a preset's values)."),
    epochs: int = typer.Option(
        2, "--epochs", min=1, help="Epochs per fold model (cheap: it only needs probabilities)."
    ),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Batch of the fold models."),
    lr: float = typer.Option(3e-3, "--lr", min=0, help="Learning rate of the fold models."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the fold assignment and the fold models."),
    model: Optional[str] = typer.Option(
        None, "--model", help="Architecture of the fold models (default: the preset's)."
    ),
    grid: int = typer.Option(40, "--grid", min=1, max=200, help="Suspects per split shown in the grids and the page."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or mps."),
    data_dir: Optional[Path] = DataDir,
    no_verify: bool = NoVerify,
):
    """Likely label errors in the training and test sets, by confident learning (cleanlab) on
    out-of-sample probabilities: K-fold cross-validation on the training set, the run's model on
    the test set. Writes label_audit.csv (ranked), label_audit_{train,test}.png and
    label_audit.html into the run folder; the fold runs go to RUN/audit/. Flagged images are
    suspects, not proven errors. Needs `pip install 'fmnist[audit]'`."""
    from fmnist.core.spec import CLASS_NAMES
    from fmnist.studies.audit import audit, options_from

    opts = options_from(
        folds=folds,
        preset=preset,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        grid=grid,
        device=device,
        data_dir=str(data_dir) if data_dir else None,
        verify=not no_verify,
        overrides={"model": model, "model_args": {}} if model else {},
    )
    r = audit(run, opts, log=lambda m: print(m, flush=True))
    for split in ("train", "test"):
        n, size = len(r.suspects[split]), r.sizes[split]
        out.print(f"{split}: {n:,} of {size:,} images flagged as likely label errors ({n / size:.2%})")
        for s in r.suspects[split][:5]:
            out.print(
                f"  #{s.index}: given {s.given} ({CLASS_NAMES[s.given]}), "
                f"suggested {s.suggested} ({CLASS_NAMES[s.suggested]}) {s.probability:.0%}"
            )
    share = r.test_errors_flagged / r.test_errors if r.test_errors else 0.0
    out.print(
        f"{r.test_errors_flagged:,} of the model's {r.test_errors:,} test mistakes ({share:.0%}) fall on flagged test images"
    )
    out.print("wrote " + ", ".join(str(p) for p in r.written))


@app.command("export")
def export_cmd(
    run: Path = typer.Argument(..., help="Run folder or model file."),
    format: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
    quantize: bool = typer.Option(
        False, "--quantize", help="Also write model.int8.onnx (static int8, calibrated on training images)."
    ),
    out_path: Optional[Path] = typer.Option(None, "--out", help="ONNX file to write (default <run>/model.onnx)."),
    as_json: bool = typer.Option(False, "--json", help="Print what was measured as JSON."),
    data_dir: Optional[Path] = DataDir,
    no_verify: bool = NoVerify,
):
    """Export to ONNX, checked against PyTorch on all 10,000 test images before it is written."""
    from fmnist.runtime.export import export_onnx

    if format != "onnx":
        raise FmnistError(f"--format {format!r} is not supported; use onnx")
    r = export_onnx(run, out_path, quantize=quantize, data_dir=data_dir, verify=not no_verify)
    if as_json:
        print(dumps(r))
        return
    out.print(
        f"wrote {r['path']} ({r['bytes'] / 1e6:.2f} MB, {r['exporter']} exporter, opset {r['opset']}); "
        f"ONNX Runtime agrees with PyTorch on {_pct(r['top1_agreement'])} of {r['test_images']:,} test images, "
        f"max logit difference {r['max_abs_logit_diff']:.2g}; test accuracy {_pct(r['onnx_accuracy'])}"
        + (" (one pass; predict, evaluate and serve add flip TTA on top)" if r["tta"] else "")
        + "; "
        f"its probabilities output uses temperature {r['temperature']:.3f} (max difference {r['max_abs_probability_diff']:.2g})"
    )
    q = r.get("int8")
    if q:
        out.print(
            f"wrote {q['path']} ({q['bytes'] / 1e6:.2f} MB): test accuracy {_pct(q['accuracy'])} "
            f"({q['accuracy_change'] * 100:+.2f} points), same answer as float on {_pct(q['top1_agreement_with_float'])}; "
            f"{q['images_per_second']:,.0f} vs {q['float_images_per_second']:,.0f} images/s float at batch 64 "
            f"({q['speedup']:.2f}×)"
        )
        if q["accuracy_change"] < -0.01:
            print("warning: int8 costs more than 1 point of accuracy; prefer the float model", file=sys.stderr)


_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free some space (or choose another --out) and run the command again",
    errno.EDQUOT: "the disk quota is used up: free some space and run the command again",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.EACCES: "permission denied: choose a folder you may write to, or fix its permissions",
    errno.EPERM: "permission denied: choose a folder you may write to, or fix its permissions",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder; give a file name",
    errno.EEXIST: "something of that name is already there",
}


def os_error_line(e: OSError) -> str:
    """One line for an operating-system error: the path, the cause, and what to do."""
    where = e.filename if e.filename is not None else "(no path)"
    if e.filename2 is not None:
        where = f"{where} -> {e.filename2}"
    cause = e.strerror or str(e)
    hint = _OS_HINTS.get(e.errno)
    return f"{where}: {cause}" + (f" ({hint})" if hint else "")


def _serve_option(name: str):
    """A `fmnist serve` option whose default and help come from ServeSettings."""
    f = SERVE_FIELDS[name]
    flag = "--" + name.replace("_", "-")
    decls = [f"{flag}/--no-{flag[2:]}"] if isinstance(f.default, bool) else [flag]
    return typer.Option(f.default, *decls, help=f.metadata["help"])


@app.command("serve")
def serve_cmd(
    run: Path = typer.Argument(..., help="Run folder or model file."),
    host: str = _serve_option("host"),
    port: int = _serve_option("port"),
    workers: int = _serve_option("workers"),
    backend: str = _serve_option("backend"),
    threads: int = _serve_option("threads"),
    max_body_bytes: int = _serve_option("max_body_bytes"),
    max_batch: int = _serve_option("max_batch"),
    max_pixels: int = _serve_option("max_pixels"),
    top_k: int = _serve_option("top_k"),
    access_log: bool = _serve_option("access_log"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=SERVE_FIELDS["data_dir"].metadata["help"]),
    no_verify: bool = NoVerify,
):
    """A REST API and a web page for the model (FastAPI on Uvicorn): open http://HOST:PORT/
    for the page, /docs for the API. Needs `pip install 'fmnist[serve]'`."""
    try:
        from fmnist.serve.server import serve
    except ImportError as e:
        raise FmnistError(f"the server needs {e.name}: pip install 'fmnist[serve]'") from None

    settings = ServeSettings(
        host=host,
        port=port,
        workers=workers,
        backend=backend,
        threads=threads,
        max_body_bytes=max_body_bytes,
        max_batch=max_batch,
        max_pixels=max_pixels,
        top_k=top_k,
        access_log=access_log,
        data_dir=str(data_dir) if data_dir else None,
        verify=not no_verify,
    )
    serve(run, settings)


def main() -> None:
    """Entry point: user mistakes end in one line on stderr and exit code 2."""
    import warnings

    # Our warnings (e.g. --no-verify) as one plain line, not a source listing.
    warnings.showwarning = lambda message, category, *a, **k: print(f"warning: {message}", file=sys.stderr)
    try:
        code = app(standalone_mode=False)
    except FmnistError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except UsageError as e:
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx else ""
        print(f"error: {e.format_message()}{hint}", file=sys.stderr)
        sys.exit(2)
    except ClickException as e:
        print(f"error: {e.format_message()}", file=sys.stderr)
        sys.exit(e.exit_code)
    except OSError as e:
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        sys.exit(2)
    except MemoryError:
        print(
            "error: out of memory; use a smaller --batch-size or --eval-batch-size, or a smaller model", file=sys.stderr
        )
        sys.exit(2)
    except (Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
