"""Model files: self-describing, exact round trips, reproducible bytes, and every kind of
damage refused before any large allocation."""

import json
import struct

import pytest
import torch
from safetensors.torch import save as save_safetensors
from safetensors.torch import save_file

from fmnist.core.errors import ModelFileError
from fmnist.models import build_model
from fmnist.runtime.modelfile import DATA_HASH_KEY, ModelInfo, load_model, read_model_info, save_model


def saved(tmp_path, name="seed", args=None, **info) -> tuple[torch.nn.Module, object]:
    m = build_model(name, **(args or {}))
    path = tmp_path / "model.safetensors"
    save_model(path, m, ModelInfo(name, args or {}, **info))
    return m, path


def header(path) -> dict:
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + n])


def rewrite(path, state, meta) -> None:
    """A file with these tensors and metadata, as a hand-edited or hostile file would be."""
    path.write_bytes(save_safetensors(state, metadata=meta))


def test_round_trip_is_exact_and_unpickled(tmp_path):
    m, path = saved(tmp_path, val_accuracy=0.5, epoch=3, tta=True)
    back, info = load_model(path)
    x = torch.rand(5, 1, 28, 28) * 255
    torch.testing.assert_close(back(x), m.eval()(x), rtol=0, atol=0)
    assert not back.training and info.model == "seed" and info.epoch == 3 and info.tta is True
    assert info.val_accuracy == 0.5 and len(info.class_names) == 10 and "torch" in info.versions
    assert b"__reduce__" not in path.read_bytes()  # no pickle inside
    assert read_model_info(tmp_path) == info  # a folder means its model.safetensors


def test_the_same_model_always_gives_the_same_bytes(tmp_path):
    m = build_model("seed")
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_model(a, m, ModelInfo("seed", extra={"x": 1, "y": 2}))
    save_model(b, m, ModelInfo("seed", extra={"y": 2, "x": 1}))
    assert a.read_bytes() == b.read_bytes()
    keys = list(header(a)["__metadata__"])
    assert keys == sorted(keys) and DATA_HASH_KEY in keys


def test_unknown_metadata_keys_survive_a_round_trip(tmp_path):
    _, path = saved(tmp_path, extra={"written_by_the_future": [1, 2]})
    assert read_model_info(path).extra == {"written_by_the_future": [1, 2]}


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_damaged_files_are_refused(tmp_path, how):
    _, path = saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x89PNG not a model" * 10, "empty": b""}[how])
    with pytest.raises(ModelFileError, match="model.safetensors"):
        load_model(path)


def test_a_flipped_bit_in_the_weights_is_caught_by_the_hash(tmp_path):
    _, path = saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="SHA-256"):
        load_model(path)


def test_foreign_unknown_and_newer_files_are_refused(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFileError, match="not an fmnist model file"):
        load_model(tmp_path / "other.safetensors")
    save_model(tmp_path / "odd.safetensors", build_model("mlp"), ModelInfo("transformer9000"))
    with pytest.raises(ModelFileError, match="cannot rebuild model 'transformer9000'"):
        load_model(tmp_path / "odd.safetensors")
    rewrite(tmp_path / "new.safetensors", {"w": torch.zeros(1)}, {"format": "fmnist-model/99", "model": '"seed"'})
    with pytest.raises(ModelFileError, match="upgrade fmnist"):
        load_model(tmp_path / "new.safetensors")
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing")


def test_metadata_asking_for_a_huge_model_is_refused_before_building_it(tmp_path):
    """A 1 MB file whose metadata asks for widths of a million: the shapes are compared on
    the meta device, so no gigabytes are allocated."""
    m, path = saved(tmp_path, "resnet", {"widths": [8, 16, 32], "stem": 8})
    meta = header(path)["__metadata__"]
    meta["model_args"] = json.dumps({"widths": [1_000_000, 1_000_000, 1_000_000], "stem": 8})
    rewrite(path, m.state_dict(), meta)
    with pytest.raises(ModelFileError, match="has shape .* the model needs"):
        load_model(path)


def test_wrongly_typed_or_non_finite_weights_are_refused(tmp_path):
    m, path = saved(tmp_path, "mlp")
    meta = header(path)["__metadata__"]
    state = {k: v.clone() for k, v in m.state_dict().items()}
    state["4.bias"] = state["4.bias"].to(torch.int64)
    rewrite(path, state, {k: v for k, v in meta.items() if k != DATA_HASH_KEY} | {"format": "fmnist-model/1"})
    with pytest.raises(ModelFileError, match="'4.bias' is I64, the model needs F32"):
        load_model(path)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    state["2.weight"][0, 0] = float("nan")
    save_model(path, m, ModelInfo("mlp"))  # a valid file...
    good = header(path)["__metadata__"]
    rewrite(path, state, {k: v for k, v in good.items() if k != DATA_HASH_KEY} | {"format": "fmnist-model/1"})
    with pytest.warns(UserWarning, match="without a data hash"), pytest.raises(ModelFileError, match="NaN"):
        load_model(path)


@pytest.mark.parametrize(
    "key,value",
    [("model", "42"), ("model_args", '"widths"'), ("tta", '"yes"'), ("params", "true"), ("epoch", "1.5"), ("x", "{")],
)
def test_metadata_of_the_wrong_type_is_refused(tmp_path, key, value):
    m, path = saved(tmp_path)
    meta = header(path)["__metadata__"] | {key: value}
    rewrite(path, m.state_dict(), meta)
    with pytest.raises(ModelFileError):
        read_model_info(path)


def test_a_version_1_file_still_loads_with_a_note(tmp_path):
    m, path = saved(tmp_path)
    meta = {k: v for k, v in header(path)["__metadata__"].items() if k != DATA_HASH_KEY}
    rewrite(path, m.state_dict(), meta | {"format": "fmnist-model/1"})
    with pytest.warns(UserWarning, match="fmnist 0.1 model file"):
        back, info = load_model(path)
    assert info.model == "seed"
