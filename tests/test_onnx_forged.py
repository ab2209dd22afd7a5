"""A model.onnx is used only when its graph is the one exported from the model file beside
it: another run's graph under this run's metadata (all of it, or only the weights' hash) is
refused under --backend onnx and replaced by PyTorch, with a warning, under auto."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed: pip install 'fmnist[onnx]'")
pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install 'fmnist[onnx]'")
from onnx import helper, numpy_helper  # noqa: E402

from fmnist.core.errors import FmnistError  # noqa: E402
from fmnist.runtime import export as fexport  # noqa: E402
from fmnist.runtime.inference import ONNX_FILE, SOURCE_HASH_KEY, load_predictor  # noqa: E402
from fmnist.runtime.modelfile import load_model, read_model_info, resolve_model_path, save_model  # noqa: E402
from fmnist.runtime.onnx_graph import GRAPH_HASH_KEY, graph_sha256  # noqa: E402


def tiny_graph(seed: int) -> bytes:
    """A stand-in for an exported classifier (pixels -> logits) with weights of its own."""
    w = numpy_helper.from_array(np.random.default_rng(seed).normal(size=(784, 10)).astype(np.float32), "w")
    nodes = [helper.make_node("Flatten", ["pixels"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"])]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("pixels", onnx.TensorProto.FLOAT, ["n", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["n", 10])],
        [w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def exported(run, raw: bytes) -> bytes:
    """``raw`` with the metadata `fmnist export` writes for ``run``'s model file."""
    meta = fexport._metadata(read_model_info(run), resolve_model_path(run), "test", 0.5)
    return fexport._with_metadata(raw, meta)


def with_props(raw: bytes, props, **changes) -> bytes:
    proto = onnx.load_from_string(raw)
    del proto.metadata_props[:]
    for p in props:
        proto.metadata_props.add(key=p.key, value=changes.get(p.key, p.value))
    return proto.SerializeToString()


def props_of(raw: bytes):
    return list(onnx.load_from_string(raw).metadata_props)


@pytest.fixture
def runs(synthetic_run, tmp_path):
    """Two runs, a and b, with different weights; each with its own honest model.onnx."""
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(synthetic_run, a)
    shutil.copytree(synthetic_run, b)
    model, info = load_model(b)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.7)
    save_model(b / "model.safetensors", model, info)
    (a / ONNX_FILE).write_bytes(exported(a, tiny_graph(0)))
    (b / ONNX_FILE).write_bytes(exported(b, tiny_graph(1)))
    return a, b


def _refused(run, match: str) -> None:
    with pytest.raises(FmnistError, match=match):
        load_predictor(run, backend="onnx")
    with pytest.warns(UserWarning, match="using PyTorch: .*" + match):
        assert load_predictor(run).backend == "torch"


def test_an_honest_export_is_used(runs):
    a, b = runs
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_predictor(a).backend == "onnx" and load_predictor(b, backend="onnx").backend == "onnx"


def test_another_runs_graph_with_this_runs_metadata_is_refused(runs):
    a, b = runs
    forged = with_props((a / ONNX_FILE).read_bytes(), props_of((b / ONNX_FILE).read_bytes()))
    (b / ONNX_FILE).write_bytes(forged)
    _refused(b, "holds another graph than the one exported from")


def test_another_runs_export_with_only_the_weights_hash_copied_is_refused(runs):
    a, b = runs
    raw = (a / ONNX_FILE).read_bytes()
    b_source = {p.key: p.value for p in props_of((b / ONNX_FILE).read_bytes())}[SOURCE_HASH_KEY]
    (b / ONNX_FILE).write_bytes(with_props(raw, props_of(raw), **{SOURCE_HASH_KEY: b_source}))
    _refused(b, "holds another graph than the one exported from")


def test_an_export_without_a_graph_hash_and_a_damaged_file_are_refused(runs):
    a, b = runs
    raw = (a / ONNX_FILE).read_bytes()
    (a / ONNX_FILE).write_bytes(with_props(raw, [p for p in props_of(raw) if p.key != GRAPH_HASH_KEY]))
    _refused(a, "has no hash of its graph")
    (b / ONNX_FILE).write_bytes((b / ONNX_FILE).read_bytes()[:2000])
    _refused(b, "not a readable ONNX model")


def test_the_graph_hash_ignores_the_metadata_and_sees_every_weight_and_the_source():
    proto = onnx.load_from_string(tiny_graph(0))
    bare = graph_sha256(proto, "s" * 64)
    proto.metadata_props.add(key="model", value="seed")
    proto.doc_string = "described"
    assert graph_sha256(proto, "s" * 64) == bare
    assert graph_sha256(proto, "t" * 64) != bare
    w = numpy_helper.to_array(proto.graph.initializer[0]).copy()
    w[3, 4] += 1e-3
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w"))
    assert graph_sha256(proto, "s" * 64) != bare


@pytest.mark.slow  # two real exports (torch.export tracing: seconds each)
def test_a_real_export_swapped_between_runs_is_refused(runs, synthetic_dir):
    a, b = runs
    for run in (a, b):
        fexport.export_onnx(run, data_dir=synthetic_dir, verify=False)
    assert load_predictor(b).backend == "onnx"
    # Run a's graph under run b's metadata: the attack of the issue, answering with a's weights.
    forged = with_props((a / ONNX_FILE).read_bytes(), props_of((b / ONNX_FILE).read_bytes()))
    (b / ONNX_FILE).write_bytes(forged)
    _refused(b, "holds another graph")
    images = torch.zeros(2, 1, 28, 28)
    with pytest.warns(UserWarning):
        got = load_predictor(b).probabilities(images)
    np.testing.assert_allclose(got, load_predictor(b, backend="torch").probabilities(images))
