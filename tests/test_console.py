"""What training prints, and that no line is wrapped when the output is not a terminal."""

import io

from fmnist.core.console import make_console
from fmnist.runtime.modelfile import ModelInfo
from fmnist.training.config import TrainConfig
from fmnist.training.progress import PlainProgress, epoch_line, start_line

ROW = {
    "epoch": 3,
    "train_loss": 0.51234,
    "train_accuracy": 0.9,
    "val_loss": 0.4,
    "val_accuracy": 0.91234,
    "seconds": 12.34,
}
INFO = ModelInfo(
    "seed",
    params=225_034,
    flops_per_image=5_262_080,
    train_images=55_000,
    val_images=5_000,
    device="cpu",
    precision="bfloat16",
)


def test_epoch_and_start_lines():
    assert epoch_line(ROW, 12) == ("epoch  3/12  train loss 0.5123 acc 90.00%  val loss 0.4000 acc 91.23%  12.3s")
    cfg = TrainConfig(out="runs/x")
    assert start_line(cfg, INFO) == (
        "training seed (225,034 params, 5.3 MFLOPs/image) on 55,000 images, validating on 5,000; "
        "5 epochs, batch 32, cpu bfloat16 -> runs/x"
    )
    assert "resuming at epoch 3 of 5" in start_line(cfg, INFO, 3)


def test_plain_progress_prints_one_line_per_event():
    buf = io.StringIO()
    p = PlainProgress(buf)
    p.on_train_start(TrainConfig(epochs=12, out="r"), INFO, 1)
    p.on_epoch_end(ROW)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("training seed") and lines[1].startswith("epoch  3/12")


def test_long_lines_are_not_wrapped_in_logs():
    buf = io.StringIO()  # not a terminal, as when `make run` is piped or logged
    console = make_console(buf)
    line = "test image 0: predicted 9 (Ankle boot), actual 9 (Ankle boot), match: yes, confidence 92.25% " * 2
    console.print(line.strip())
    assert buf.getvalue().count("\n") == 1
