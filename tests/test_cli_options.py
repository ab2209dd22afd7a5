"""Every command keeps the option names it had before the options were generated from the
settings schema (issue 20), except the renamed ones, whose old spelling still works; and the
root lists the commands without importing them, with each command's own first sentence."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from conftest import run_cli

from fmnist.cli.main import COMMANDS, root

try:
    from typer._click import Context
except ImportError:  # pragma: no cover - older Typer with Click installed
    from click import Context

# `fmnist <command> --help` at 9b4167b, before the schema drove every command.
BEFORE = {
    "ablate": ["--budget", "--data-dir", "--list", "--out", "--seeds", "--steps"],
    "transfer-study": [
        *("--data-dir", "--freeze", "--model", "--model-arg", "--no-verify", "--out", "--pretrain-epochs"),
        *("--seeds", "--sizes", "--steps"),
    ],
    "train": [
        *("--batch-size", "--channels-last", "--compile", "--config", "--cutmix", "--data-dir"),
        *("--decay-norm-and-bias", "--device", "--early-stop", "--ema", "--epochs", "--erase", "--eval-batch-size"),
        *("--flip", "--freeze", "--head-lr", "--init-from", "--label-smoothing", "--lr", "--mixup", "--model"),
        *("--model-arg", "--momentum", "--no-channels-last", "--no-compile", "--no-decay-norm-and-bias"),
        *("--no-flip", "--no-overwrite", "--no-reset-head", "--no-tta", "--no-verify", "--optimizer", "--out"),
        *("--overwrite", "--plain", "--precision", "--preset", "--quiet", "--reset-head", "--resume", "--save-every"),
        *("--schedule", "--seed", "--show-config", "--split-seed", "--subset", "--threads", "--translate", "--tta"),
        *("--val-size", "--verify", "--warmup-epochs", "--weight-decay", "-q"),
    ],
    "tune": [
        *("--budget", "--data-dir", "--epochs-per-trial", "--no-verify", "--out", "--pruner", "--seed", "--show"),
        *("--space", "--storage", "--study", "--subset", "--threads", "--timeout", "--trials", "--val-size"),
    ],
    "evaluate": ["--data-dir", "--device", "--json", "--no-calibrate", "--no-tta", "--no-verify", "--tta"],
    "predict": [
        *("--backend", "--data-dir", "--index", "--json", "--no-calibrate", "--no-tta", "--no-verify"),
        *("--save-preprocessed", "--top", "--tta", "-i"),
    ],
    "report": ["--data-dir", "--no-calibrate", "--no-verify"],
    "calibrate": ["--data-dir", "--device", "--json", "--no-verify"],
    "audit": [
        *("--batch-size", "--data-dir", "--device", "--epochs", "--folds", "--grid", "--lr", "--model"),
        *("--no-verify", "--preset", "--seed", "-k"),
    ],
    "export": ["--data-dir", "--format", "--json", "--no-verify", "--out", "--quantize"],
    "serve": [
        *("--access-log", "--backend", "--data-dir", "--host", "--max-batch", "--max-body-bytes", "--max-pixels"),
        *("--no-access-log", "--no-verify", "--port", "--threads", "--top-k", "--workers"),
    ],
    "data fetch": ["--data-dir", "--no-download"],
    "data info": ["--data-dir", "--no-verify"],
    "data show": ["--data-dir", "--no-verify", "--out", "--per-class", "--seed", "--split"],
    "model list": [],
    "model summary": [],
}
# Misleading names, renamed (old -> new); the old spelling still works, with a note on stderr.
RENAMED = {
    "ablate": {"--budget": "--epochs", "--steps": "--only"},
    "tune": {"--budget": "--epochs-per-trial"},
}
# The data options are one group now: --verify/--no-verify everywhere (it was --no-verify alone
# outside `train`, and ablate had neither).
ADDED = {cmd: {"--verify"} for cmd, names in BEFORE.items() if "--no-verify" in names and cmd != "train"}
ADDED["ablate"] = {"--verify", "--no-verify"}
# Options added by later issues: the connection bounds (25), heartbeats (26), the time budget (21).
ADDED["serve"] = ADDED.get("serve", set()) | {"--timeout-header", "--timeout-keep-alive", "--limit-concurrency"}
ADDED["tune"] = ADDED.get("tune", set()) | {"--heartbeat"}
ADDED["train"] = ADDED.get("train", set()) | {"--time-budget", "--tensorboard", "--no-tensorboard", "--mlflow"}
ADDED["tune"] |= {"--tensorboard", "--no-tensorboard", "--mlflow", "--trial-budget"}
ADDED["serve"] |= {"--batching", "--no-batching", "--batch-size", "--batch-wait", "--batch-queue"}  # issue 22
for cmd in ("evaluate", "predict", "serve"):  # the packaged model (issue 24)
    ADDED[cmd] = ADDED.get(cmd, set()) | {"--pretrained"}
NEW_COMMANDS = {"preset list", "runs compare", "version"}


def commands(group=root, path: tuple[str, ...] = ()) -> dict[str, object]:
    """Every leaf command by its path, e.g. "data show"."""
    ctx = Context(group, info_name=" ".join(("fmnist", *path)))
    found = {}
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if hasattr(command, "commands"):
            found.update(commands(command, (*path, name)))
        else:
            found[" ".join((*path, name))] = command
    return found


def option_names(command, hidden: bool) -> set[str]:
    return {
        name
        for p in command.params
        if getattr(p, "param_type_name", "") == "option" and bool(getattr(p, "hidden", False)) == hidden
        for name in (*p.opts, *p.secondary_opts)
        if name != "--help"
    }


@pytest.mark.parametrize("path", sorted(BEFORE))
def test_every_command_keeps_its_option_names(path):
    command = commands()[path]
    renamed = RENAMED.get(path, {})
    expected = (set(BEFORE[path]) - set(renamed)) | set(renamed.values()) | ADDED.get(path, set())
    assert option_names(command, hidden=False) == expected
    assert option_names(command, hidden=True) == set(renamed)  # the old spellings, out of --help


def test_the_only_new_commands_are_preset_list_and_runs():
    assert set(commands()) - set(BEFORE) == NEW_COMMANDS


def test_the_root_lists_each_command_by_its_own_first_sentence():
    ctx = Context(root, info_name="fmnist")
    for name, entry in COMMANDS.items():
        text = " ".join(inspect.cleandoc(root.get_command(ctx, name).help or "").split())
        assert text.startswith(entry.help), name
        assert entry.help.endswith("."), name  # click stops a short help at a sentence's end


@pytest.mark.parametrize("path", sorted(set(BEFORE) | NEW_COMMANDS))
def test_every_help_shows(monkeypatch, capsys, path):
    code, out, err = run_cli(monkeypatch, capsys, *path.split(), "--help")
    first = out.splitlines()[0]
    # `fmnist runs DIR...` is a group that lists too: its usage line names the folders before `compare`
    assert code == 0 and (f"fmnist {path} [OPTIONS]" in first or f"{path.split()[-1]} [OPTIONS]" in first), err


def test_preset_list_names_model_epochs_and_purpose(monkeypatch, capsys):
    from fmnist.training.presets import ABOUT, PRESETS, preset_config

    code, out, _ = run_cli(monkeypatch, capsys, "preset", "list")
    assert code == 0
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    for line, name in zip(lines, PRESETS):
        config = preset_config(name)
        assert line.split()[1:4] == [config.model, str(config.epochs), "epochs"]
        assert ABOUT[name] in " ".join(line.split())


def test_a_mistyped_command_gets_a_suggestion(monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "trian")
    assert code == 2 and err.startswith("error: No such command 'trian'. Did you mean 'train'? (see `")


@pytest.mark.parametrize(
    "blocked,argv,message",
    [
        (
            "optuna",
            ["tune", "--study", "s"],
            "error: fmnist tune needs optuna: pip install 'fmnist[tune]'",
        ),
        ("fastapi", ["serve", "nothing"], "error: the server needs fastapi: pip install 'fmnist[serve]'"),
    ],
)
def test_a_missing_extra_is_one_line_that_says_how_to_install_it(blocked, argv, message):
    code = f"import sys; sys.modules[{blocked!r}] = None; sys.argv = {['fmnist', *argv]!r}; "
    code += "from fmnist.cli import main; main()"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == message
