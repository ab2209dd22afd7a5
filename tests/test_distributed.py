"""Training over several processes with torchrun (gloo, CPU, loopback): one run folder, the
same result as one process with the same global batch, two simulated machines, and resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fmnist.runtime.modelfile import load_model
from fmnist.runtime.runs import RunFolder
from fmnist.training.trainer import train

# Each test starts two or more Python processes that import torch: seconds apiece, so slow tier.
pytestmark = pytest.mark.slow

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# The seed CNN has no batch norm and no dropout: with the same global batch and seed, two
# processes compute the same mean gradient as one, up to the order of float additions.
# Measured difference: 0 to 0.5 points of validation accuracy on this data (200 images).
TOLERANCE = 0.02
# Three short epochs: enough for a Ctrl-C after the first to land inside the second.
EPOCHS, BATCH = 3, 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def args(data: Path, out: Path, *extra) -> list[str]:
    return [
        "-m",
        "fmnist",
        "train",
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        str(BATCH),
        "--val-size",
        "200",
        "--data-dir",
        str(data),
        "--no-verify",
        "--plain",
        "--out",
        str(out),
        *map(str, extra),
    ]


def torchrun(*argv, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*TORCHRUN, *argv], capture_output=True, text=True, timeout=300, env=env, **kw)


@pytest.fixture(scope="module")
def two_nodes(synthetic_dir, tmp_path_factory) -> tuple[Path, list[str]]:
    """Two simulated machines on loopback (two `torchrun --nnodes 2` launches, one process each,
    c10d rendezvous), training 3 epochs at global batch 32 uninterrupted: the reference run the
    tests below compare with. Returns (run folder, each launch's standard output)."""
    port = free_port()
    out = tmp_path_factory.mktemp("ddp") / "nodes"
    common = [
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        "fmnist-test",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [*TORCHRUN, *common, *args(synthetic_dir, out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in nodes]
    assert all(p.returncode == 0 for p in nodes), [r[1][-1500:] for r in results]
    return out, [r[0] for r in results]


def test_two_machines_simulated_on_loopback(two_nodes):
    out, stdouts = two_nodes
    assert sum("best epoch" in s for s in stdouts) == 1  # one writer in all
    assert sum(s.count(f"epoch {EPOCHS}/{EPOCHS}") for s in stdouts) == 1  # only rank 0 prints
    assert json.loads((out / "summary.json").read_text())["processes"] == 2


def test_two_processes_write_one_run_that_matches_one_process(two_nodes, synthetic_dir, tmp_path):
    from conftest import synthetic_config

    out, _ = two_nodes
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and RunFolder(out).status == "finished"
    assert len((out / "metrics.csv").read_text().splitlines()) == EPOCHS + 1
    assert not (out / "resume.safetensors").exists()
    model, info = load_model(out)
    assert info.train_images == 1800 and info.val_images == 200
    single = train(synthetic_config(synthetic_dir, tmp_path / "single", threads=1, epochs=EPOCHS, batch_size=BATCH))
    assert abs(summary["val_accuracy"] - single.best["val_accuracy"]) <= TOLERANCE
    # Validation counts are summed over the processes: exact, no padded duplicates.
    assert round(summary["val_accuracy"] * 200, 6) == int(round(summary["val_accuracy"] * 200))


def test_batch_that_does_not_split_is_refused(synthetic_dir, tmp_path):
    done = torchrun(
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
        *args(synthetic_dir, tmp_path / "odd", "--batch-size", "63"),
    )
    assert done.returncode != 0 and "does not split evenly over 2 processes" in done.stderr
    assert not (tmp_path / "odd").exists()


def test_a_distributed_run_resumes_to_the_same_model(two_nodes, synthetic_dir, tmp_path):
    """Two processes on one machine (`--nproc-per-node 2`), stopped with Ctrl-C after epoch 1 and
    resumed, end with the very model file of the uninterrupted two-machine run: same world size,
    same global batch, same seed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        *TORCHRUN,
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
        *args(synthetic_dir, tmp_path / "cut"),
    ]
    # A session of its own, so Ctrl-C reaches the launcher and both workers as from a terminal.
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    for line in proc.stdout:
        if line.startswith(f"epoch 1/{EPOCHS}"):
            os.killpg(proc.pid, signal.SIGINT)
            break
    _, err = proc.communicate(timeout=300)
    assert "fmnist train --resume" in err, err[-2000:]
    assert RunFolder(tmp_path / "cut").status == "unfinished"
    again = torchrun(
        "--nproc-per-node",
        "2",
        "--master-port",
        str(free_port()),
        "-m",
        "fmnist",
        "train",
        "--resume",
        str(tmp_path / "cut"),
        "--plain",
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "cut/model.safetensors").read_bytes() == (two_nodes[0] / "model.safetensors").read_bytes()
