"""Shared fixtures. Tests never touch the network: FMNIST_NO_DOWNLOAD is set for the whole
session, and the cache is redirected to a temporary folder."""

from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from postgres import debian_postgres_version, throwaway_cluster

from fmnist.data import sources as fsources
from fmnist.data.idx import encode_idx

REAL_DIR = fsources.DEBIAN_DIR

# Under pytest-xdist the cores are shared between the workers: PyTorch threads per worker, for
# this process and (through OMP_NUM_THREADS) for the fmnist processes and notebook kernels that
# tests start. Oversubscribed (two 2-thread workers on 2 cores) the suite ran 25% slower.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


def real_data_available() -> bool:
    return all((REAL_DIR / s.name).is_file() for s in fsources.FILES.values())


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


def synthetic(n: int, seed: int = 0, noisy: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Tiny learnable images: class c is a bright bar at a class-specific position.

    ``noisy``: a harder set, where a bar's brightness and length vary, the background is
    noisier and 10% of the labels are wrong, so accuracy stays below 100% and two training
    runs can be told apart by it."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 90 if noisy else 40, size=(n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        if noisy:
            start, length = rng.integers(2, 12), rng.integers(6, 16)
            images[i, 2 + 2 * c : 4 + 2 * c, start : start + length] = rng.integers(100, 200)
        else:
            images[i, 2 + 2 * c : 4 + 2 * c, 4:24] = 230
    if noisy:
        wrong = rng.random(n) < 0.1
        labels[wrong] = rng.integers(0, 10, wrong.sum())
    return images, labels.astype(np.uint8)


def write_dataset(
    folder: Path, n_train: int = 400, n_test: int = 100, compress: bool = True, noisy: bool = False
) -> Path:
    """A Fashion-MNIST-shaped folder of tiny synthetic IDX files (fails checksum checks by design)."""
    folder.mkdir(parents=True, exist_ok=True)
    tr, trl = synthetic(n_train, 0, noisy)
    te, tel = synthetic(n_test, 1, noisy)
    for key, arr in (("train-images", tr), ("train-labels", trl), ("t10k-images", te), ("t10k-labels", tel)):
        name = fsources.FILES[key].name
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
def synthetic_dir(tmp_path_factory) -> Path:
    """A session-wide synthetic data set: 2,000 training and 500 test images, noisy."""
    return write_dataset(tmp_path_factory.mktemp("synthetic") / "data", 2000, 500, noisy=True)


def synthetic_config(data_dir: Path, out: Path, **overrides):
    """A fast training configuration on the synthetic data (200 images held out)."""
    from fmnist.training.config import TrainConfig

    values = dict(
        model="seed", epochs=2, batch_size=64, val_size=200, data_dir=str(data_dir), verify=False, out=str(out)
    )
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="session")
def synthetic_run(synthetic_dir, tmp_path_factory) -> Path:
    """A finished two-epoch run of the seed CNN on the synthetic data (shared: copy before changing it)."""
    from fmnist.training.trainer import train

    out = tmp_path_factory.mktemp("runs") / "synthetic"
    train(synthetic_config(synthetic_dir, out))
    return out


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """One short epoch of the seed CNN on 2,048 real training images (1,000 held out): a
    complete run folder that tests of evaluation, prediction, reports and export can share."""
    if not real_data_available():
        pytest.skip("real data missing")
    from fmnist.training.config import TrainConfig
    from fmnist.training.trainer import train

    out = tmp_path_factory.mktemp("runs") / "smoke"
    mp = pytest.MonkeyPatch()
    mp.setenv("FMNIST_NO_DOWNLOAD", "1")
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    try:
        train(TrainConfig(model="seed", epochs=1, subset=2048, val_size=1000, batch_size=64, out=str(out)))
    finally:
        mp.undo()
    return out


@pytest.fixture(scope="session")
def pg_url():
    """$FMNIST_TEST_POSTGRES, else a throwaway cluster; in CI a missing server is a failure.
    Shared by the modules that need one (fmnist tune's storage, MLflow's store): one cluster per process."""
    url = os.environ.get("FMNIST_TEST_POSTGRES")
    if url:
        yield url
        return
    version = debian_postgres_version()
    if version is None:
        if os.environ.get("CI"):
            pytest.fail("CI: no PostgreSQL (set FMNIST_TEST_POSTGRES or run as root with Debian's postgresql)")
        pytest.skip("no PostgreSQL: set FMNIST_TEST_POSTGRES or run as root with Debian's postgresql installed")
    with throwaway_cluster(version) as url:
        yield url


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


# The longest test modules first: pytest-xdist hands out whole modules (--dist loadscope) in
# collection order, and one that starts last would run alone at the end (the notebook's
# execution alone takes about two minutes on one core).
LONGEST_FIRST = ["test_notebook.py", "test_distributed.py", "test_tune.py", "test_train.py", "test_serve.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
