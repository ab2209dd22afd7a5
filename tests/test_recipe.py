"""The training recipe of issue 3: TTA, EMA, every model learns, presets, ablation steps."""

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_real_data

from fmnist.ablate import STEPS
from fmnist.checkpoint import load_model
from fmnist.models import available, build_model
from fmnist.presets import PRESETS, preset_config
from fmnist.train import TrainConfig, param_groups, predict_logits, train


class Asymmetric(torch.nn.Module):
    """Logits that depend on which half of the image is bright, so a mirror image changes them."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        left = x[..., :14].mean((1, 2, 3))
        right = x[..., 14:].mean((1, 2, 3))
        return torch.stack([left, right] + [torch.zeros_like(left)] * 8, 1)


def test_flip_tta_averages_the_logits_of_image_and_mirror():
    m = Asymmetric()
    x = torch.zeros(3, 1, 28, 28)
    x[:, :, :, :14] = 100.0
    plain = predict_logits(m, x)
    tta = predict_logits(m, x, tta=True)
    torch.testing.assert_close(tta, 0.5 * (m(x) + m(x.flip(3))))
    assert plain[0, 0] == 100.0 and tta[0, 0] == 50.0 and tta[0, 1] == 50.0


@needs_real_data
def test_ema_weights_are_what_gets_saved(tmp_path):
    run = train(
        TrainConfig(
            model="mlp",
            epochs=1,
            subset=2048,
            batch_size=64,
            ema=0.9,
            optimizer="sgd",
            lr=0.05,
            out=str(tmp_path / "r"),
        )
    )
    saved, _ = load_model(tmp_path / "r")
    # The run's returned model is the EMA copy; the saved file holds exactly that.
    for a, b in zip(saved.state_dict().values(), run.model.state_dict().values()):
        torch.testing.assert_close(a, b.cpu(), rtol=0, atol=0)
    # ...and it differs from what plain training would have given.
    raw = train(
        TrainConfig(
            model="mlp", epochs=1, subset=2048, batch_size=64, optimizer="sgd", lr=0.05, out=str(tmp_path / "raw")
        )
    )
    w_ema = next(iter(run.model.state_dict().values()))
    w_raw = next(iter(raw.model.state_dict().values()))
    assert not torch.equal(w_ema, w_raw)


@pytest.mark.parametrize("name", sorted(available()))
def test_every_model_learns_on_a_fixed_batch(name):
    torch.manual_seed(0)
    kwargs = {"depth": 10, "width": 1} if name == "wrn" else {}
    m = build_model(name, **kwargs)
    x = torch.rand(64, 1, 28, 28) * 255
    y = torch.arange(64) % 10
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (name, losses[0], losses[-1])


def test_weight_decay_skips_norms_and_biases():
    m = build_model("cnn")
    decay, no_decay = param_groups(m, 5e-4, decay_all=False)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(m.parameters()))


def test_presets_are_valid_configs_and_flags_override_them():
    for name in PRESETS:
        cfg = preset_config(name)
        cfg.validate()
        build_model(cfg.model, **cfg.model_args)
    cfg = preset_config("quick", epochs=1, lr=None)
    assert cfg.epochs == 1 and cfg.lr == PRESETS["quick"]["lr"] and cfg.preset == "quick"


def test_ablation_adds_one_change_per_step():
    assert STEPS[0].config["model"] == "seed" and STEPS[1].config["model_args"] == {"normalize": "scale"}
    prev = None
    for step in STEPS:
        TrainConfig(**step.config).validate()
        build_model(step.config["model"], **step.config["model_args"])
        if prev is not None and not step.eval_only:
            assert step.config != prev, step.name
        prev = step.config
    assert STEPS[-1].eval_only == {"tta": True}


@needs_real_data
def test_augmented_recipe_runs_end_to_end(tmp_path):
    cfg = TrainConfig(
        model="resnet",
        model_args={"widths": [8, 16, 32], "stem": 8},
        epochs=2,
        subset=1024,
        batch_size=128,
        optimizer="sgd",
        schedule="onecycle",
        lr=0.05,
        label_smoothing=0.1,
        flip=True,
        translate=2,
        erase=0.5,
        mixup=0.2,
        cutmix=1.0,
        ema=0.9,
        tta=True,
        early_stop=1,
        out=str(tmp_path / "r"),
    )
    run = train(cfg)
    assert 1 <= len(run.history) <= 2 and run.info["tta"] is True
    assert all(h["train_loss"] == h["train_loss"] for h in run.history)  # no NaN
