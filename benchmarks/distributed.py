"""Training throughput with 1 and with several processes on this machine (torchrun, gloo).

Starts `torchrun --nproc-per-node N -m fmnist train ...` for each N given, with the machine's
cores split evenly between the processes (N × threads = cores), trains the same recipe on the
same images for the same number of epochs, and prints training images per second (from the
run's metrics.csv: images trained / seconds spent training, validation excluded) and the
speed-up over one process. The global batch is the same for every N, so every N runs the
same optimisation. Never run as a test:

    .venv/bin/python benchmarks/distributed.py [--preset quick] [--subset 10000] [--epochs 2] [--procs 1 2]

On a 2-core machine two processes can only share the same two cores: the figure says what
DDP's extra work (gradient all-reduce, one data loader per process) costs, not what a second
machine would add.
"""

from __future__ import annotations

import argparse
import csv
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fmnist.core.machine import cpu_name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(procs: int, args: argparse.Namespace, out: Path) -> dict:
    cores = os.cpu_count() or 1
    threads = max(1, cores // procs)
    run = out / f"p{procs}"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={procs}",
        f"--master-port={free_port()}",
        "-m",
        "fmnist",
        "train",
        "--preset",
        args.preset,
        "--epochs",
        str(args.epochs),
        "--subset",
        str(args.subset),
        "--val-size",
        str(args.val_size),
        "--threads",
        str(threads),
        "--out",
        str(run),
        "--overwrite",
        "--plain",
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"error: {procs} process(es) failed:\n{done.stderr[-2000:]}")
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    # The first epoch pays for warm-up (allocator, oneDNN kernel choice): report the later ones.
    timed = rows[1:] or rows
    train_s = sum(float(r["train_seconds"]) for r in timed)
    images = args.subset * len(timed)
    return {
        "procs": procs,
        "threads": threads,
        "img_s": images / train_s,
        "wall": wall,
        "val": float(rows[-1]["val_accuracy"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--subset", type=int, default=10000, help="training images per epoch")
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=2, help="the first is warm-up and not timed")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    print(f"{cpu_name()}, {os.cpu_count()} cores; preset {args.preset}, {args.subset} images/epoch")
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(n, args, Path(tmp)) for n in args.procs]
    base = results[0]["img_s"]
    print("| processes | threads each | train img/s | speed-up | wall s | last val acc % |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['procs']} | {r['threads']} | {r['img_s']:.0f} | {r['img_s'] / base:.2f}x "
            f"| {r['wall']:.0f} | {100 * r['val']:.2f} |"
        )


if __name__ == "__main__":
    main()
