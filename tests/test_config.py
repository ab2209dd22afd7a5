"""The one configuration schema: checks, files, and the CLI generated from it."""

import dataclasses
import json
import math

import pytest
from conftest import run_cli

from fmnist.core.errors import FmnistError
from fmnist.training.config import TrainConfig, check_model, load_config_file, parse_model_args


def test_every_field_is_a_train_option_with_its_help(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "train", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for f in dataclasses.fields(TrainConfig):
        if f.name == "plan":  # written by fmnist from a --time-budget, never typed: no option
            continue
        flag = (
            "--model-arg"
            if f.name == "model_args"
            else "--preset"
            if f.name == "preset"
            else f"--{f.name.replace('_', '-')}"
        )
        assert flag in flat, flag
        assert " ".join(f.metadata["help"].split()[:4]) in flat, f.name
    for extra in ("--config", "--resume", "--show-config", "[one of adam, adamw, sgd]", "[> 0]"):
        assert extra in flat


@pytest.mark.parametrize(
    "values,match",
    [
        ({"lr": math.inf}, "--lr must be a finite number"),
        ({"lr": 0.0}, "--lr must be > 0"),
        ({"epochs": 0}, "--epochs must be >= 1"),
        ({"seed": -1}, "--seed must be >= 0"),
        ({"translate": 1000}, "--translate must be <= 14"),
        ({"early_stop": -1}, "--early-stop must be >= 0"),
        ({"optimizer": "lbfgs"}, "--optimizer must be one of adam, adamw, sgd"),
        ({"epochs": 2.5}, "--epochs must be an integer"),
        ({"flip": "yes"}, "--flip must be true or false"),
        ({"model": "vgg"}, "--model must be one of"),
        ({"model_args": {"widths": [32, 64, 128]}}, "--model-args do not fit model 'seed'"),
        ({"model": "cnn", "model_args": {"dropout": math.nan}}, "must be finite"),
        ({"device": "tpu"}, "unknown device"),
    ],
)
def test_bad_values_are_one_line_naming_the_setting(values, match):
    with pytest.raises(FmnistError, match=match) as e:
        TrainConfig(**values).validate()
    assert "\n" not in str(e.value)


def test_a_model_too_big_for_this_machine_is_refused_without_building_it():
    with pytest.raises(FmnistError, match="GiB to train"):
        check_model("resnet", {"widths": [100_000, 100_000, 100_000]})
    assert check_model("seed", {}) == 225_034


def test_config_files_json_and_toml(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"epochs": 3, "lr": 0.01, "model_args": {}}))
    (tmp_path / "b.toml").write_text('model = "resnet"\nepochs = 4\n[model_args]\nwidths = [8, 16, 32]\n')
    a = TrainConfig.from_mapping(load_config_file(tmp_path / "a.json"), "a.json")
    b = TrainConfig.from_mapping(load_config_file(tmp_path / "b.toml"), "b.toml")
    assert (a.epochs, a.lr) == (3, 0.01) and (b.model, b.epochs, b.model_args) == ("resnet", 4, {"widths": [8, 16, 32]})
    b.validate()


@pytest.mark.parametrize(
    "text,suffix,match",
    [
        ('{"epochs": 3, "learning_rate": 0.1}', ".json", "unknown key 'learning_rate'"),
        ('{"epochs": "3"}', ".json", "key 'epochs' must be an integer"),
        ("epochs = [", ".toml", "not valid TOML"),
        ("[1, 2]", ".json", "expected a table"),
        ("{", ".json", "not valid JSON"),
    ],
)
def test_bad_config_files_name_the_file_and_the_key(tmp_path, text, suffix, match):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(FmnistError, match=match) as e:
        TrainConfig.from_mapping(load_config_file(path), str(path))
    assert "\n" not in str(e.value)


def test_model_args_from_the_command_line():
    assert parse_model_args(["widths=48,96,192", "stem=16", "dropout=0.1", "normalize=scale", "x=[1,2]"]) == {
        "widths": [48, 96, 192],
        "stem": 16,
        "dropout": 0.1,
        "normalize": "scale",
        "x": [1, 2],
    }
    with pytest.raises(FmnistError, match="KEY=VALUE"):
        parse_model_args(["widths"])


def test_flags_override_the_file_which_overrides_the_preset(monkeypatch, capsys, tmp_path):
    (tmp_path / "c.toml").write_text("epochs = 9\nlr = 0.05\n")
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "train",
        "--preset",
        "quick",
        "--config",
        tmp_path / "c.toml",
        "--lr",
        "0.3",
        "--model-arg",
        "stem=32",
        "--show-config",
    )
    assert code == 0, err
    c = json.loads(out)
    assert (c["preset"], c["epochs"], c["lr"], c["model"]) == ("quick", 9, 0.3, "resnet")
    assert c["model_args"] == {"widths": [32, 64, 128], "stem": 32}


def test_a_runs_own_config_json_is_a_config_file(monkeypatch, capsys, synthetic_run):
    code, out, err = run_cli(monkeypatch, capsys, "train", "--config", synthetic_run / "config.json", "--show-config")
    assert code == 0, err
    stored = json.loads((synthetic_run / "config.json").read_text())
    assert json.loads(out) == {k: v for k, v in stored.items() if k not in ("format", "resolved")}


def test_cli_errors_are_one_line(monkeypatch, capsys, tmp_path):
    for args, needle in [
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--config", tmp_path / "nope.json"], "no such file"),
        (["--model-arg", "oops"], "KEY=VALUE"),
        (["--resume", tmp_path, "--lr", "0.1"], "leave out --lr"),
    ]:
        code, _, err = run_cli(monkeypatch, capsys, "train", *args)
        assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and needle in err, err
