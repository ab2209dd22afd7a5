"""Names that said the wrong thing were renamed (issue 20); the old ones still work, with a
note: `fmnist tune --budget` (epochs per trial), `fmnist ablate --budget` and `--steps` (which
steps; transfer-study's --steps counts optimizer steps), and the `fast` model behind `sprint`."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli

from fmnist.models import available, build_model, canonical_name
from fmnist.runtime.modelfile import ModelInfo, load_model, save_model
from fmnist.training.config import TrainConfig
from fmnist.training.presets import PRESETS


def test_tune_budget_still_sets_the_epochs_per_trial(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "tune", "--study", "s", "--out", tmp_path, "--budget", 0)
    assert code == 2
    assert "warning: --budget is deprecated, use --epochs-per-trial" in err
    assert "error: --epochs-per-trial must be >= 1, got 0" in err


def test_ablate_budget_and_steps_still_work(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "ablate", "--out", tmp_path, "--budget", 0)
    assert code == 2 and "--budget is deprecated, use --epochs" in err and "--epochs must be >= 1" in err
    code, _, err = run_cli(monkeypatch, capsys, "ablate", "--out", tmp_path, "--steps", "99")
    assert code == 2 and "--steps is deprecated, use --only" in err and "--only: no step 99" in err
    code, _, err = run_cli(monkeypatch, capsys, "ablate", "--out", tmp_path, "--only", "1-x")
    assert code == 2 and "warning" not in err and "--only '1-x': use numbers, ranges and commas" in err
    assert not any(tmp_path.iterdir())


def test_the_sprint_model_has_a_name_that_says_what_it_is():
    assert PRESETS["sprint"]["model"] == "poolfirst" and "poolfirst" in available() and "fast" not in available()
    with pytest.warns(FutureWarning, match="model 'fast' is now called 'poolfirst'"):
        assert canonical_name("fast") == "poolfirst"
    assert canonical_name("seed") == "seed"


def test_model_fast_still_trains_as_poolfirst(monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "train", "--model", "fast", "--show-config")
    assert code == 0 and json.loads(out)["model"] == "poolfirst"
    assert "warning: model 'fast' is now called 'poolfirst'" in err
    with pytest.warns(FutureWarning):
        assert TrainConfig.from_mapping({"model": "fast"}, "old/config.json").model == "poolfirst"
    with pytest.warns(FutureWarning):
        sprint = TrainConfig(model="fast", model_args={"widths": [8]})
    assert sprint.merged({"model": "poolfirst"}).model_args == {"widths": [8]}  # the same model: args kept


def test_old_model_files_that_say_fast_still_load(monkeypatch, capsys, tmp_path):
    args = {"widths": [8, 16]}
    model = build_model("poolfirst", **args)
    path = tmp_path / "model.safetensors"
    save_model(path, model, ModelInfo(model="fast", model_args=args))
    with pytest.warns(FutureWarning, match="now called 'poolfirst'"):
        loaded, info = load_model(path)
    assert info.model == "fast"
    x = torch.rand(2, 1, 28, 28) * 255
    model.eval()
    torch.testing.assert_close(loaded(x), model(x))
    code, out, err = run_cli(monkeypatch, capsys, "model", "summary", path)
    assert code == 0 and "poolfirst" in out and "warning: model 'fast' is now called 'poolfirst'" in err
