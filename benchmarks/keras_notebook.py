"""The original Keras notebook, as written, timed epoch by epoch: the baseline that
benchmarks/time_to_accuracy.py compares fmnist's recipes with.

Runs in its own virtual environment with tensorflow-cpu (`make keras-venv` makes
`.venv-keras`); fmnist does not depend on TensorFlow. It reads the same training, validation
and test images that fmnist uses from an .npz file written by time_to_accuracy.py (so both
sides see the same 55,000 / 5,000 / 10,000 split), trains the notebook's network (Conv2D 32,
MaxPooling2D, Conv2D 64, MaxPooling2D, Flatten, Dense 128, Dense 10 softmax: 225,034
parameters) with Adam and batch 32 on pixels scaled to [0, 1], and prints one JSON object:
per-epoch training seconds and validation accuracy, and the final test accuracy.

    .venv-keras/bin/python benchmarks/keras_notebook.py DATA.npz [--epochs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time


def process_age() -> float:
    """Seconds since this process started (the kernel's start time, so the interpreter's own
    start-up and the imports count, as they do for a timed `fmnist train` call)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help=".npz with x_train, y_train, x_val, y_val, x_test, y_test (uint8 images)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--test-every-epoch",
        action="store_true",
        help="also measure test accuracy after each epoch (its time is not counted in since_start)",
    )
    args = ap.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    tf.keras.utils.set_random_seed(args.seed)

    d = np.load(args.data)

    def prep(x):
        return (x.astype("float32") / 255.0)[..., None]

    x_train, x_val, x_test = prep(d["x_train"]), prep(d["x_val"]), prep(d["x_test"])
    y_train, y_val, y_test = d["y_train"], d["y_val"], d["y_test"]

    layers = tf.keras.layers
    model = tf.keras.Sequential(
        [
            tf.keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    history = []
    elapsed = 0.0
    extra = 0.0  # seconds spent on the per-epoch test evaluations, which a plain run would not spend
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        model.fit(x_train, y_train, batch_size=32, epochs=1, verbose=0, shuffle=True)
        train_s = time.perf_counter() - t0
        _, val = model.evaluate(x_val, y_val, batch_size=1024, verbose=0)
        # Like fmnist's history: elapsed counts training and validation, every epoch.
        elapsed += time.perf_counter() - t0
        row = {"epoch": epoch, "train_seconds": train_s, "elapsed": elapsed, "val_accuracy": float(val)}
        row["since_start"] = process_age() - extra
        if args.test_every_epoch:
            t1 = time.perf_counter()
            row["test_accuracy"] = float(model.evaluate(x_test, y_test, batch_size=1024, verbose=0)[1])
            extra += time.perf_counter() - t1
        history.append(row)
    t0 = time.perf_counter()
    _, test = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)
    print(
        json.dumps(
            {
                "framework": f"tensorflow {tf.__version__}",
                "params": int(model.count_params()),
                "history": history,
                "test_accuracy": float(test),
                "eval_seconds": time.perf_counter() - t0,
            }
        )
    )


if __name__ == "__main__":
    main()
