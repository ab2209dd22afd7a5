"""Names that said the wrong thing were renamed (issue 20); the old ones still work, with a
note: the `fast` model behind `sprint`."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli

from fmnist.models import available, build_model, canonical_name
from fmnist.runtime.modelfile import ModelInfo, load_model, save_model
from fmnist.training.config import TrainConfig
from fmnist.training.presets import PRESETS


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
