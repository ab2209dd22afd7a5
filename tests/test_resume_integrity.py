"""The resume state's SHA-256: a byte changed anywhere in it (the length, the tensor header,
the JSON state, the tensor data) is refused with one line before any of it is used, and the
run folder is left as it was."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import struct
from pathlib import Path

import pytest
import torch
from conftest import run_cli, synthetic_config
from safetensors.torch import save_file

from fmnist.core.errors import FmnistError
from fmnist.core.files import LOCK_NAME
from fmnist.training.state import load_state, state_digest
from fmnist.training.trainer import Callback, Interrupted, Trainer, resume


class StopAt(Callback):
    """Sends this process SIGINT at a given step, as Ctrl-C would."""

    wants_running_stats = True  # on_step is called only then

    def __init__(self, epoch: int, step: int):
        self.at = (epoch, step)

    def on_step(self, state):
        if (state["epoch"], state["step"]) == self.at:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(scope="module")
def interrupted(synthetic_dir, tmp_path_factory) -> Path:
    """A run stopped in its first epoch: config.json and resume.safetensors (copy before changing)."""
    out = tmp_path_factory.mktemp("interrupted") / "cut"
    with pytest.raises(Interrupted):
        Trainer(synthetic_config(synthetic_dir, out, epochs=2), [StopAt(1, 20)]).run()
    return out


def snapshot(folder: Path) -> dict[str, str]:
    """Every file's SHA-256, but only the lock file's presence (it records the last PID)."""
    return {
        p.name: "present" if p.name == LOCK_NAME else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
    }


def _header_end(b: bytes) -> int:
    return 8 + struct.unpack("<Q", b[:8])[0]


def _replace_once(b: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and b.count(old) >= 1, old
    return b.replace(old, new, 1)


DAMAGE = {
    # the issue's own: one byte in the middle of the file flipped
    "middle": lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 0xFF]) + b[len(b) // 2 + 1 :],
    "length": lambda b: bytes([b[0] ^ 0x01]) + b[1:],
    # still valid JSON, still a valid safetensors header: only the hash can tell
    "tensor name": lambda b: _replace_once(b, b'"model.', b'"modxl.'),
    "json state": lambda b: _replace_once(b, b'\\"epoch\\": 1,', b'\\"epoch\\": 2,'),
    "tensor data": lambda b: (
        b[: _header_end(b) + 100] + bytes([b[_header_end(b) + 100] ^ 0x01]) + b[_header_end(b) + 101 :]
    ),
}


@pytest.mark.parametrize("part", list(DAMAGE))
def test_a_byte_changed_in_any_part_is_refused_and_the_folder_left_as_it_was(interrupted, tmp_path, part):
    out = tmp_path / "cut"
    shutil.copytree(interrupted, out)
    state = out / "resume.safetensors"
    state.write_bytes(DAMAGE[part](state.read_bytes()))
    before = snapshot(out)
    with pytest.raises(FmnistError, match="resume state is damaged") as e:
        resume(out)
    assert str(state) in str(e.value) and "\n" not in str(e.value)
    assert snapshot(out) == before


def test_the_command_says_it_in_one_line(interrupted, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cut"
    shutil.copytree(interrupted, out)
    state = out / "resume.safetensors"
    state.write_bytes(DAMAGE["json state"](state.read_bytes()))
    code, _, err = run_cli(monkeypatch, capsys, "train", "--resume", out, "--plain")
    assert code == 2 and err.startswith(f"error: {state}: the resume state is damaged") and err.count("\n") == 1


def test_an_undamaged_state_matches_its_digest(interrupted):
    blob = (interrupted / "resume.safetensors").read_bytes()
    tensors, meta = load_state(interrupted / "resume.safetensors")
    assert meta["epoch"] == 1 and meta["step"] == 20 and any(k.startswith("model.") for k in tensors)
    assert f'"sha256":"{state_digest(blob)}"'.encode() in blob[: _header_end(blob)]


def test_a_state_from_before_the_checksum_is_refused_with_its_own_message(tmp_path):
    path = tmp_path / "resume.safetensors"
    save_file({"w": torch.zeros(3)}, str(path), metadata={"format": "fmnist-resume/1", "state": "{}"})
    with pytest.raises(FmnistError, match="older fmnist, without a checksum"):
        load_state(path)
