import numpy as np
import pytest
import torch

from fmnist.data import augment


def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 28, 28), generator=g).float()
    y = torch.arange(n) % 10
    return x, y


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, g: augment.flip(x, g),
        lambda x, g: augment.translate(x, g, 2),
        lambda x, g: augment.erase(x, g, 1.0),
    ],
    ids=["flip", "translate", "erase"],
)
def test_shape_dtype_and_seeded_reproducibility(fn):
    x, _ = batch()
    a = fn(x, gen(1))
    b = fn(x, gen(1))
    c = fn(x, gen(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flip_mirrors_some_images_and_keeps_others_in_place():
    x, _ = batch(64)
    out = augment.flip(x, gen())
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept))  # each image is itself or its mirror: labels stay aligned
    assert 10 < sum(flipped) < 54


def test_translate_is_a_shift_with_zero_fill():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10, 12] = 255.0
    for seed in range(20):
        out = augment.translate(x, gen(seed), 2)
        (r, c) = torch.nonzero(out[0, 0]).tolist()[0]
        assert abs(r - 10) <= 2 and abs(c - 12) <= 2 and out.sum() == 255.0
    assert torch.equal(augment.translate(x, gen(), 0), x)


def test_translate_moves_each_image_by_its_own_offset():
    x = torch.zeros(32, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0
    out = augment.translate(x, gen(3), 2)
    positions = {tuple(torch.nonzero(out[i, 0]).tolist()[0]) for i in range(32)}
    assert len(positions) > 5


def test_erase_blanks_one_rectangle_per_image():
    x = torch.full((8, 1, 28, 28), 200.0)
    out = augment.erase(x, gen(), p=1.0, value=0.0)
    for i in range(8):
        zero = (out[i, 0] == 0).nonzero()
        assert len(zero) > 0
        r0, c0 = zero.min(0).values.tolist()
        r1, c1 = zero.max(0).values.tolist()
        assert len(zero) == (r1 - r0 + 1) * (c1 - c0 + 1)  # a filled rectangle
    assert torch.equal(augment.erase(x, gen(), p=0.0), x)


def test_mixup_and_cutmix_keep_labels_aligned():
    x, y = batch(16)
    rng = np.random.default_rng(0)
    out, ya, yb, lam = augment.mix(x, y, rng, gen(), mixup_alpha=0.4)
    assert out.shape == x.shape and torch.equal(ya, y) and 0 <= lam <= 1
    # MixUp: each output is lam * its own image + (1 - lam) * its partner (the one whose label is yb).
    perm = torch.randperm(16, generator=gen())
    torch.testing.assert_close(out, x * lam + x[perm] * (1 - lam))
    assert torch.equal(yb, y[perm])
    out, ya, yb, lam = augment.mix(x, y, np.random.default_rng(1), gen(), cutmix_alpha=1.0)
    differs = (out != x).float().mean().item()
    assert abs(differs - (1 - lam)) < 0.05 and torch.equal(ya, y)
    same, *_ = augment.mix(x, y, rng, gen())
    assert same is x
