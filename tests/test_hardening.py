"""Hostile and mistaken input: memory bombs, damaged headers, full disks, read-only folders and
a failed --overwrite. Each ends in a correct answer or one `error:` line, with nothing lost."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import struct
import subprocess
import tracemalloc
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, synthetic_config, write_dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fmnist.data.idx
from fmnist.core.errors import FmnistError, IdxError
from fmnist.core.files import dumps
from fmnist.core.spec import FILES
from fmnist.data import load_split
from fmnist.data.idx import encode_idx, parse_idx, read_bytes
from fmnist.models import build_model
from fmnist.runtime.modelfile import ModelInfo, load_model, save_model
from fmnist.runtime.runs import REPLACED, RunFolder
from fmnist.training.trainer import Callback, Trainer, train

train_module = import_module("fmnist.training.trainer")  # the package's `fmnist.train` is the function


def one_error_line(code: int, err: str, *needles: str) -> str:
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@contextlib.contextmanager
def small_disk(path: Path, size: str, readonly: bool = False):
    """A tmpfs of ``size`` mounted at ``path`` (root only), optionally remounted read-only."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def make_readonly(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or "probe" in p.name)


# --- memory bombs --------------------------------------------------------------------------


def test_a_gzip_bomb_named_like_a_data_file_stops_at_the_known_size(tmp_path):
    d = write_dataset(tmp_path / "d")
    limit = FILES["t10k-images"].size
    (d / FILES["t10k-images"].name).write_bytes(gzip.compress(bytes(25 * limit), compresslevel=1))
    tracemalloc.start()
    try:
        with pytest.raises(IdxError, match="decompression bomb"):
            load_split("test", d)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * limit + (8 << 20), peak  # the output is cut at the limit, not at 25x it


def test_custom_data_without_a_known_size_is_capped_too(tmp_path, monkeypatch):
    d = write_dataset(tmp_path / "d")
    monkeypatch.setattr(fmnist.data.idx, "MAX_BYTES", 100_000)
    with pytest.raises(IdxError, match="more than 100,000 bytes"):
        load_split("train", d, verify=False)
    raw = tmp_path / "raw.idx"
    raw.write_bytes(bytes(100_001))
    with pytest.raises(IdxError, match="more than 100,000 bytes"):
        read_bytes(raw)


def test_gzip_members_padding_and_trailing_garbage(tmp_path):
    data = os.urandom(3 << 20)
    f = tmp_path / "f.gz"
    f.write_bytes(gzip.compress(data[:5]) + gzip.compress(data[5:]) + bytes(512))
    assert read_bytes(f) == data  # several members and zero padding, as gzip(1) accepts
    f.write_bytes(gzip.compress(data) + b"junk")
    with pytest.raises(IdxError, match="bytes after the end"):
        read_bytes(f)
    f.write_bytes(gzip.compress(data)[:-9])
    with pytest.raises(IdxError, match="ends early"):
        read_bytes(f)


@settings(max_examples=300, deadline=None)
@given(
    code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x07, 0xFF]),
    dims=st.lists(st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 1)), max_size=5),
    tail=st.binary(max_size=80),
)
def test_any_idx_header_is_parsed_exactly_or_refused(code, dims, tail):
    """Huge dimensions never overflow: the size arithmetic is exact, the answer an IdxError."""
    data = bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + tail
    try:
        arr = parse_idx(data)
    except IdxError as e:
        assert "-" not in str(e).split("needs")[-1].split("bytes")[0]  # never a negative size
    else:
        assert arr.shape == tuple(dims)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_are_refused_with_an_idx_error(data):
    with contextlib.suppress(IdxError):
        parse_idx(data)


@pytest.mark.parametrize(
    "images,match",
    [
        (np.full((400, 28, 28), 300, dtype=np.int32), "outside 0..255"),
        (np.full((400, 28, 28), -1, dtype=np.int16), "outside 0..255"),
        (np.full((400, 28, 28), 0.5, dtype=np.float32), "must be integers"),
    ],
)
def test_custom_images_out_of_byte_range_never_wrap(tmp_path, images, match):
    d = write_dataset(tmp_path / "d")
    (d / FILES["train-images"].name).write_bytes(gzip.compress(encode_idx(images)))
    with pytest.raises(IdxError, match=match):
        load_split("train", d, verify=False)
    images = np.full((400, 28, 28), 200, dtype=np.int32)  # wide integers with byte values are fine
    (d / FILES["train-images"].name).write_bytes(gzip.compress(encode_idx(images)))
    assert load_split("train", d, verify=False).images.max() == 200


# --- model-file metadata -------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def seed_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(path, build_model("seed"), ModelInfo("seed"))
    return path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(["model", "model_args", "tta", "params", "epoch", "class_names", "normalization", "format"]),
    value=json_values,
    raw=st.booleans(),
)
def test_any_metadata_value_loads_or_is_one_model_file_error(seed_file, tmp_path_factory, key, value, raw):
    blob = seed_file.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    head = json.loads(blob[8 : 8 + n])
    head["__metadata__"][key] = str(value) if raw else json.dumps(value)
    new = json.dumps(head).encode()
    new += b" " * (-len(new) % 8)
    path = tmp_path_factory.mktemp("fuzz") / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(new)) + new + blob[8 + n :])
    try:
        model, info = load_model(path)
    except FmnistError as e:
        assert "\n" not in str(e)
    else:
        assert isinstance(model, torch.nn.Module) and info.model == "seed"


def test_json_output_is_strict_json():
    text = dumps({"loss": float("nan"), "acc": [float("inf"), 0.5]})
    assert json.loads(text) == {"loss": None, "acc": [None, 0.5]}


# --- full disks, read-only folders, wrong places ----------------------------------------------


def train_args(data: Path) -> list:
    return ["train", "--model", "seed", "--epochs", "1", "--val-size", "200", "--data-dir", data, "--no-verify"]


def test_training_onto_a_full_disk_is_one_error_line_and_leaves_nothing(synthetic_dir, tmp_path, monkeypatch, capsys):
    with small_disk(tmp_path / "disk", "96k") as disk:  # the seed CNN's model file needs 0.9 MB
        code, _, err = run_cli(monkeypatch, capsys, *train_args(synthetic_dir), "--out", disk / "run", "--plain")
        one_error_line(code, err, str(disk / "run"), "disk is full")
        assert not (disk / "run").exists() and leftovers(disk) == []


def test_a_failed_overwrite_gives_the_old_run_back(synthetic_run, synthetic_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    (run / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in run.iterdir()}

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device", str(run / "model.safetensors"))

    monkeypatch.setattr(train_module, "save_model", full_disk)
    with pytest.raises(OSError, match="No space"):
        train(synthetic_config(synthetic_dir, run, overwrite=True))
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # every file back, byte for byte
    monkeypatch.undo()
    # A replacement that succeeds removes the old run, never the user's own file.
    train(synthetic_config(synthetic_dir, run, epochs=1, overwrite=True))
    assert (run / "notes.txt").read_text() == "mine" and not (run / REPLACED).exists()
    assert json.loads((run / "summary.json").read_text())["epochs_run"] == 1


def test_a_replacement_killed_after_its_first_epoch_keeps_the_old_run_aside(synthetic_run, synthetic_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(synthetic_run, run)
    old_model = (run / "model.safetensors").read_bytes()

    class Crash(Callback):
        def on_epoch_end(self, *a, **k):
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        Trainer(synthetic_config(synthetic_dir, run, epochs=2, overwrite=True), [Crash()]).run()
    assert RunFolder(run).status == "unfinished" and (run / REPLACED / "model.safetensors").read_bytes() == old_model


def test_evaluate_on_a_read_only_run_shows_the_results_then_says_why_not_saved(
    synthetic_run, synthetic_dir, tmp_path, monkeypatch, capsys
):
    with small_disk(tmp_path / "ro", "8m") as ro:
        shutil.copytree(synthetic_run, ro / "run")
        make_readonly(ro)
        args = ["--data-dir", synthetic_dir, "--no-verify"]
        code, out, err = run_cli(monkeypatch, capsys, "evaluate", ro / "run", *args)
        assert "test accuracy" in out
        one_error_line(code, err, "Read-only file system", "not saved")
        code, out, err = run_cli(monkeypatch, capsys, "evaluate", ro / "run", "--json", *args)
        assert json.loads(out)["test_accuracy"] > 0.5
        one_error_line(code, err, "Read-only")
        code, _, err = run_cli(monkeypatch, capsys, "report", ro / "run", *args)
        assert ".tmp" not in one_error_line(code, err, str(ro / "run"), "Read-only")  # the real name
        code, _, err = run_cli(monkeypatch, capsys, "export", ro / "run", *args)  # refused before the work
        one_error_line(code, err, str(ro / "run"), "Read-only")
        code, _, err = run_cli(monkeypatch, capsys, *train_args(synthetic_dir), "--out", ro / "new")
        one_error_line(code, err, str(ro / "new"), "read-only")


def test_paths_under_files_and_onto_folders_are_one_error_line(synthetic_dir, tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(monkeypatch, capsys, *train_args(synthetic_dir), "--out", tmp_path / "afile/run")
    one_error_line(code, err, "afile", "not a folder")
    code, _, err = run_cli(
        monkeypatch, capsys, "data", "show", "--out", tmp_path, "--data-dir", synthetic_dir, "--no-verify"
    )
    line = one_error_line(code, err, str(tmp_path), "folder")
    assert ".tmp" not in line and leftovers(tmp_path) == []
