"""ONNX export: it agrees with PyTorch on the test set, describes itself, is refused when
it would not agree, fails cleanly on a damaged run; prediction gives the same answers on
either backend and never trusts an ONNX file from other weights."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import copy_and_run_cli, needs_real_data, run_cli
from PIL import Image

from fmnist.core.errors import FmnistError
from fmnist.core.spec import CLASS_NAMES
from fmnist.runtime import export as fexport
from fmnist.runtime.inference import load_predictor, onnx_session
from fmnist.runtime.predict import predict, predict_files

pytestmark = needs_real_data
# The tests of an exported file share one `fmnist export --quantize` (about 15 s on 2 cores,
# most of it torch.export tracing the model): slow tier. The refusals below stay fast.
slow_export = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(smoke_run, tmp_path_factory):
    """A private copy of the smoke run (so other tests keep predicting with PyTorch),
    exported once through the CLI with --quantize; returns (run folder, measurements)."""
    run, out = copy_and_run_cli(smoke_run, tmp_path_factory, "export", "--quantize", "--json")
    return run, json.loads(out)


@slow_export
def test_onnx_agrees_with_pytorch_on_the_test_set(exported):
    from fmnist.runtime.modelfile import read_model_info

    run, r = exported
    assert r["path"] == str(run / "model.onnx") and (run / "model.onnx").is_file()
    assert r["test_images"] == 10_000
    assert r["top1_agreement"] >= 0.999
    assert r["max_abs_logit_diff"] < 1e-3
    assert r["onnx_accuracy"] == pytest.approx(r["torch_accuracy"], abs=0.001)
    # one forward pass: the run's flip TTA is added by whoever predicts, and the output says so
    assert r["tta"] is read_model_info(run).tta


@slow_export
def test_onnx_file_describes_itself_and_takes_any_batch(exported):
    from fmnist.runtime.modelfile import read_model_info

    run, r = exported
    session = onnx_session(run / "model.onnx")
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == list(CLASS_NAMES)
    assert meta["model"] == "seed"
    assert json.loads(meta["val_accuracy"]) == pytest.approx(read_model_info(run).val_accuracy)
    x = session.get_inputs()[0]
    assert x.type == "tensor(float)" and x.shape[1:] == [1, 28, 28] and not isinstance(x.shape[0], int)
    for n in (1, 7):
        out = session.run(None, {x.name: np.zeros((n, 1, 28, 28), np.float32)})[0]
        assert out.shape == (n, 10)


@slow_export
def test_int8_copy_is_written_with_its_accuracy(exported):
    run, r = exported
    q = r["int8"]
    assert (run / "model.int8.onnx").is_file() and q["bytes"] < r["bytes"]
    assert abs(q["accuracy_change"]) < 0.02
    assert q["top1_agreement_with_float"] > 0.95
    assert q["images_per_second"] > 0 and q["float_images_per_second"] > 0


@slow_export
def test_both_backends_give_the_same_answers(exported, tmp_path):
    run, _ = exported
    assert load_predictor(run).backend == "onnx"  # auto picks the up-to-date ONNX file
    idx = list(range(25))
    a = predict(run, idx, backend="onnx")
    b = predict(run, idx, backend="torch")
    assert [p.predicted for p in a] == [p.predicted for p in b]
    assert max(abs(p.confidence - q.confidence) for p, q in zip(a, b)) < 1e-4
    assert [p.to_dict()["match"] for p in a] == [p.to_dict()["match"] for p in b]
    img = tmp_path / "x.png"
    Image.fromarray(255 - np.eye(28, dtype=np.uint8) * 200).resize((100, 100)).save(img)
    (_, fa), (_, fb) = predict_files(run, [img], backend="onnx")[0], predict_files(run, [img], backend="torch")[0]
    assert fa.predicted == fb.predicted and abs(fa.confidence - fb.confidence) < 1e-4


@slow_export
def test_onnx_from_other_weights_is_never_used(exported, tmp_path):
    import torch

    from fmnist.runtime.modelfile import load_model, save_model

    run, _ = exported
    retrained = tmp_path / "retrained"
    shutil.copytree(run, retrained)
    model, info = load_model(retrained)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    save_model(retrained / "model.safetensors", model, info)  # as a retraining into the same folder would
    with pytest.warns(UserWarning, match="other weights"):
        assert load_predictor(retrained).backend == "torch"
    with pytest.raises(FmnistError, match="re-run `fmnist export`"):
        load_predictor(retrained, backend="onnx")


def test_disagreeing_export_is_refused_and_nothing_written(tmp_path, monkeypatch):
    from fmnist.models import build_model
    from fmnist.runtime.modelfile import ModelInfo, save_model

    # A tiny untrained model: the refusal path is the point, not the accuracy.
    save_model(tmp_path / "model.safetensors", build_model("mlp", hidden=8), ModelInfo("mlp", {"hidden": 8}))
    rng = np.random.default_rng(0)
    monkeypatch.setattr(fexport, "onnx_logits", lambda s, x, *a, **k: rng.normal(size=(len(x), 10)))
    with pytest.raises(FmnistError, match="agree on only"):
        fexport.export_onnx(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_damaged_run_fails_cleanly(smoke_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    code, out, err = run_cli(monkeypatch, capsys, "export", run)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (run / "model.onnx").exists()
    code, _, err = run_cli(monkeypatch, capsys, "export", smoke_run, "--format", "tflite")
    assert code == 2 and "onnx" in err


@slow_export
def test_onnx_probabilities_output_applies_the_temperature_exactly_as_pytorch(exported):
    """The graph's second output is softmax(logits / T) with the model file's temperature; it
    agrees with fmnist's own calibrated probabilities, and the metadata names T."""
    import torch

    from fmnist.data import load_split
    from fmnist.runtime.export import PROBS_NAME
    from fmnist.runtime.inference import softmax
    from fmnist.runtime.modelfile import read_model_info

    run, r = exported
    t = read_model_info(run).temperature
    assert t is not None and r["temperature"] == t  # training fitted one on the validation split
    assert r["max_abs_probability_diff"] < 1e-5
    session = onnx_session(run / "model.onnx")
    assert json.loads(session.get_modelmeta().custom_metadata_map["temperature"]) == t
    images = load_split("test", None).images[:64, None].astype(np.float32)
    logits, probs = session.run(None, {"pixels": images})
    assert [o.name for o in session.get_outputs()] == ["logits", PROBS_NAME]
    np.testing.assert_allclose(probs, softmax(logits, t), atol=1e-6)
    torch_probs = load_predictor(run, "torch").probabilities(torch.from_numpy(images), tta=False)
    np.testing.assert_allclose(probs, torch_probs, atol=1e-5)
    np.testing.assert_allclose(load_predictor(run, "onnx").probabilities(images, tta=False), torch_probs, atol=1e-5)
