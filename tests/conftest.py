"""Shared fixtures. Tests never touch the network: FMNIST_NO_DOWNLOAD is set for the whole
session, and the cache is redirected to a temporary folder."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

from fmnist import data as fdata
from fmnist.idx import encode_idx

REAL_DIR = fdata.DEBIAN_DIR


def real_data_available() -> bool:
    return all((REAL_DIR / s.name).is_file() for s in fdata.FILES.values())


needs_real_data = pytest.mark.skipif(
    not real_data_available(),
    reason="real Fashion-MNIST files missing: apt-get install dataset-fashion-mnist (CI installs them)",
)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    """No downloads, and an empty private cache, in every test."""
    monkeypatch.setenv("FMNIST_NO_DOWNLOAD", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("FMNIST_DATA_DIR", raising=False)


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tiny learnable images: class c is a bright bar at a class-specific position."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 + 2 * c : 4 + 2 * c, 4:24] = 230
    return images, labels.astype(np.uint8)


def write_dataset(folder: Path, n_train: int = 400, n_test: int = 100, compress: bool = True) -> Path:
    """A Fashion-MNIST-shaped folder of tiny synthetic IDX files (fails checksum checks by design)."""
    folder.mkdir(parents=True, exist_ok=True)
    tr, trl = synthetic(n_train, 0)
    te, tel = synthetic(n_test, 1)
    for key, arr in (("train-images", tr), ("train-labels", trl), ("t10k-images", te), ("t10k-labels", tel)):
        name = fdata.FILES[key].name
        raw = encode_idx(arr)
        if compress:
            (folder / name).write_bytes(gzip.compress(raw))
        else:
            (folder / name[:-3]).write_bytes(raw)
    return folder


@pytest.fixture
def tiny_dir(tmp_path) -> Path:
    return write_dataset(tmp_path / "tiny")


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """One short epoch of the seed CNN on 2,048 real training images: a complete run folder
    that tests of evaluation, prediction, reports and export can share."""
    if not real_data_available():
        pytest.skip("real data missing")
    from fmnist.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "smoke"
    mp = pytest.MonkeyPatch()
    mp.setenv("FMNIST_NO_DOWNLOAD", "1")
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    try:
        train(TrainConfig(model="seed", epochs=1, subset=2048, batch_size=64, out=str(out)))
    finally:
        mp.undo()
    return out


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """Run `fmnist ARGS...` in-process; return (exit code, stdout, stderr)."""
    from fmnist.cli import main

    monkeypatch.setattr(sys, "argv", ["fmnist", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def copy_and_run_cli(smoke_run: Path, tmp_path_factory, command: str, *args) -> tuple[Path, str]:
    """For module-scoped fixtures: copy the smoke run (so other tests keep an untouched one),
    run `fmnist COMMAND COPY ARGS...` with the test isolation, and return (copy, stdout)."""
    import contextlib
    import io
    import shutil

    from fmnist.cli import main

    run = tmp_path_factory.mktemp(command) / "run"
    shutil.copytree(smoke_run, run)
    mp = pytest.MonkeyPatch()
    mp.setenv("FMNIST_NO_DOWNLOAD", "1")
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    mp.setattr(sys, "argv", ["fmnist", command, str(run), *map(str, args)])
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as e:
            main()
    finally:
        mp.undo()
    assert e.value.code == 0
    return run, buf.getvalue()
