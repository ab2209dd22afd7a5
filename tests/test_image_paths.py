"""`fmnist predict` on paths that are not files: a device, a named pipe, a socket, a folder.
Each is named for what it is, from ``stat`` alone: nothing is read (a FIFO would block the
read forever, /dev/zero would never end)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fmnist.core.errors import FmnistError
from fmnist.data import images as fimages
from fmnist.data.images import load_image

WAIT = 30  # seconds: far more than a stat takes; a blocked open would never return


def outcome(path: Path) -> str:
    """load_image's error message, from a thread that must finish within WAIT seconds."""
    result: list[str] = []

    def target() -> None:
        try:
            load_image(path)
            result.append("loaded")
        except FmnistError as e:
            result.append(str(e))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(WAIT)
    if thread.is_alive() and path.is_fifo():  # unblock it before failing
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    assert not thread.is_alive(), f"load_image({path}) blocked"
    return result[0]


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


def test_a_character_device_is_named():
    assert outcome(Path("/dev/zero")).startswith("/dev/zero: is a character device, not an image file; pass PNG")


def test_a_fifo_is_named_and_never_opened_for_a_blocking_read(fifo):
    assert (
        outcome(fifo)
        == f"{fifo}: is a named pipe (FIFO), not an image file; pass PNG, JPEG, GIF, BMP, TIFF or WebP files"
    )


def test_a_socket_and_a_folder_are_named(tmp_path):
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        assert outcome(path).startswith(f"{path}: is a socket, not an image file")
    assert outcome(tmp_path).startswith(f"{tmp_path}: is a folder, not an image file")


def test_a_path_that_becomes_a_fifo_after_the_check_is_refused_without_blocking(fifo, monkeypatch):
    monkeypatch.setattr(fimages, "_check_regular_file", lambda path: None)  # as if it changed after stat
    assert "changed into something other than a file" in outcome(fifo)


def test_predict_names_each_and_returns(synthetic_run, fifo):
    cmd = [sys.executable, "-m", "fmnist", "predict", str(synthetic_run), "/dev/zero", str(fifo)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: /dev/zero: is a character device, not an image file; pass PNG, JPEG, GIF, BMP, TIFF or WebP files",
        f"error: {fifo}: is a named pipe (FIFO), not an image file; pass PNG, JPEG, GIF, BMP, TIFF or WebP files",
    ]
