import csv
import json

import pytest
import torch
from conftest import needs_real_data

from fmnist.checkpoint import load_model, read_model_info, save_model
from fmnist.errors import FmnistError, ModelFileError
from fmnist.models import build_model
from fmnist.train import EMA, TrainConfig, lr_factor, train

pytestmark = needs_real_data


def test_smoke_run_writes_a_complete_loadable_run_folder(smoke_run):
    names = {p.name for p in smoke_run.iterdir()}
    assert {"config.json", "metrics.csv", "model.safetensors", "summary.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    config = json.loads((smoke_run / "config.json").read_text())
    assert config["model"] == "seed" and config["subset"] == 2048 and config["resolved"]["params"] == 225_034
    rows = list(csv.DictReader((smoke_run / "metrics.csv").open()))
    assert len(rows) == 1 and {"train_loss", "val_accuracy", "seconds"} <= set(rows[0])
    info = read_model_info(smoke_run)
    assert info["model"] == "seed" and len(info["class_names"]) == 10
    assert info["normalization"]["mean"] == pytest.approx(0.2860, abs=1e-4)
    assert "torch" in info["versions"] and 0 < info["val_accuracy"] <= 1
    model, _ = load_model(smoke_run / "model.safetensors")
    assert not model.training


def test_same_seed_same_metrics(tmp_path):
    cfg = dict(model="seed", epochs=1, subset=1024, batch_size=64)
    a = train(TrainConfig(**cfg, out=str(tmp_path / "a")))
    b = train(TrainConfig(**cfg, out=str(tmp_path / "b")))
    strip = [{k: v for k, v in r.items() if "seconds" not in k and k != "elapsed"} for r in a.history]
    assert strip == [{k: v for k, v in r.items() if "seconds" not in k and k != "elapsed"} for r in b.history]
    c = train(TrainConfig(**cfg, seed=1, out=str(tmp_path / "c")))
    assert c.history[0]["train_loss"] != a.history[0]["train_loss"]


def test_refuses_to_overwrite_a_run_unless_asked(smoke_run, tmp_path):
    before = (smoke_run / "model.safetensors").read_bytes()
    with pytest.raises(FmnistError, match="already holds a run.*--overwrite"):
        train(TrainConfig(epochs=1, subset=256, out=str(smoke_run)))
    assert (smoke_run / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("epochs", 0, "--epochs must be a positive"),
        ("batch_size", -1, "--batch-size must be a positive"),
        ("lr", 0, "--lr must be positive"),
        ("model", "vgg", "unknown model"),
        ("optimizer", "lbfgs", "--optimizer"),
    ],
)
def test_bad_arguments_fail_before_anything_is_written(tmp_path, field, value, match):
    with pytest.raises(FmnistError, match=match):
        train(TrainConfig(**{field: value}, out=str(tmp_path / "r")))
    assert not (tmp_path / "r").exists()


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x89PNG not a model at all" * 10)
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_damaged_model_file_is_refused(smoke_run, tmp_path, how):
    copy = tmp_path / "model.safetensors"
    copy.write_bytes((smoke_run / "model.safetensors").read_bytes())
    _damage(copy, how)
    with pytest.raises(ModelFileError, match="model.safetensors"):
        load_model(copy)


def test_foreign_safetensors_and_unknown_model_are_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFileError, match="not an fmnist model file"):
        load_model(tmp_path / "other.safetensors")
    save_model(tmp_path / "odd.safetensors", build_model("mlp"), {"model": "transformer9000", "model_args": {}})
    with pytest.raises(ModelFileError, match="cannot rebuild model 'transformer9000'"):
        load_model(tmp_path / "odd.safetensors")
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing")


def test_model_file_round_trip_is_exact(tmp_path):
    m = build_model("seed")
    save_model(tmp_path / "m.safetensors", m, {"model": "seed", "model_args": {}})
    back, info = load_model(tmp_path / "m.safetensors")
    x = torch.rand(5, 1, 28, 28) * 255
    torch.testing.assert_close(back(x), m.eval()(x), rtol=0, atol=0)
    assert b"__reduce__" not in (tmp_path / "m.safetensors").read_bytes()  # no pickle inside


def test_schedules():
    cfg = TrainConfig(schedule="onecycle")
    f = [lr_factor(cfg, s, 100, 10) for s in range(100)]
    assert max(f) == pytest.approx(1.0) and f[0] < 0.1 and f[-1] < 0.05 and f.index(max(f)) == 24
    cos = TrainConfig(schedule="cosine", warmup_epochs=1)
    g = [lr_factor(cos, s, 100, 10) for s in range(100)]
    assert g[0] == pytest.approx(0.1) and g[9] == pytest.approx(1.0) and g[-1] < 0.01
    assert all(a >= b for a, b in zip(g[10:], g[11:]))


def test_ema_tracks_but_differs_from_raw_weights():
    m = build_model("mlp")
    ema = EMA(m, 0.9)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    for _ in range(3):
        ema.update()
    raw = next(m.parameters())
    avg = next(ema.model.parameters())
    assert not torch.equal(raw, avg)
    assert (avg - (raw - 1)).abs().max() > 0  # moved towards the new weights
