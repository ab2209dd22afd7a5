import pytest
import torch

from fmnist.core.errors import FmnistError
from fmnist.models import available, build_model, count_params, flops_per_image, summarize


def test_seed_matches_the_keras_notebook():
    m = build_model("seed")
    assert count_params(m) == 225_034  # Keras' model.summary() total
    rows = summarize(m)
    shapes = [(r.kind, r.output_shape) for r in rows]
    assert ("Conv2d", (32, 26, 26)) in shapes and ("Conv2d", (64, 11, 11)) in shapes
    assert ("MaxPool2d", (64, 5, 5)) in shapes and ("Flatten", (1600,)) in shapes
    assert [r.params for r in rows if r.kind == "Linear"] == [204_928, 1_290]
    assert m(torch.zeros(4, 1, 28, 28)).shape == (4, 10)


def test_every_model_maps_a_batch_to_ten_logits():
    for name in available():
        m = build_model(name).eval()
        with torch.no_grad():
            assert m(torch.rand(3, 1, 28, 28) * 255).shape == (3, 10), name
        assert flops_per_image(m) > 0


@pytest.mark.parametrize("name", sorted(available()))
def test_summary_rows_describe_each_layer_of_every_model(name):
    rows = summarize(build_model(name))
    assert rows and all(r.description for r in rows), [r.kind for r in rows if not r.description]
    assert sum(r.params for r in rows) == count_params(build_model(name))


def test_flops_of_the_seed_model_by_hand():
    conv1 = 2 * 1 * 9 * 32 * 26 * 26
    conv2 = 2 * 32 * 9 * 64 * 11 * 11
    dense = 2 * (1600 * 128 + 128 * 10)
    assert flops_per_image(build_model("seed")) == conv1 + conv2 + dense


def test_unknown_model_is_a_user_error():
    with pytest.raises(FmnistError, match="unknown model 'nope'"):
        build_model("nope")


@pytest.mark.parametrize("name", sorted(available()))
def test_every_model_learns_on_a_fixed_batch(name):
    import torch.nn.functional as F

    torch.manual_seed(0)
    kwargs = {"depth": 10, "width": 1} if name == "wrn" else {}
    m = build_model(name, **kwargs)
    x = torch.rand(10, 1, 28, 28) * 255  # one image per class: every model can memorise it
    y = torch.arange(10)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], (name, losses[0], losses[-1])


def _smooth_images(n: int, seed: int = 0) -> torch.Tensor:
    """Images with strongly correlated neighbouring pixels, like real ones."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 5, 1, 2)
    return (x - x.min()) / (x.max() - x.min()) * 255


def test_patch_whitening_decorrelates_the_patches_it_was_fitted_on():
    from fmnist.models import PatchWhitening

    layer = PatchWhitening(kernel=4, stride=2, keep=8, eps=0.0)
    x = _smooth_images(500)
    layer.fit(x)
    w = layer.conv.weight
    assert w.shape == (16, 1, 4, 4) and not w.requires_grad
    assert torch.equal(w[8:], -w[:8])  # each filter and its negative
    # On the same patches (stride 1, as fitted), the kept components are uncorrelated with unit variance.
    pad = torch.nn.functional.pad(x, (1, 1, 1, 1))
    patches = pad.unfold(2, 4, 1).unfold(3, 4, 1).reshape(-1, 16).double()
    patches -= patches.mean(0)
    out = patches @ w[:8].reshape(8, 16).double().T
    cov = out.T @ out / len(out)
    assert torch.allclose(cov, torch.eye(8, dtype=torch.float64), atol=1e-3)
    # ... ordered by the variance they explain: the first filter is the smoothest (mean-like).
    first = w[0].flatten()
    assert (first > 0).all() or (first < 0).all()


def test_fast_with_a_whitening_stem_fits_on_data_and_runs_at_14x14_from_the_start():
    from fmnist.models import PatchWhitening, fit_to_data

    m = build_model("fast", widths=[16, 32], stem="whiten", stem_keep=4)
    before = m[1].conv.weight.clone()
    assert isinstance(m[1], PatchWhitening)
    assert fit_to_data(m, _smooth_images(64).to(torch.uint8)) is True
    assert not torch.equal(m[1].conv.weight, before)
    rows = summarize(m)
    assert rows[1].output_shape == (8, 14, 14)
    assert sum(r.params for r in rows) == count_params(m)
    assert m(torch.rand(2, 1, 28, 28) * 255).shape == (2, 10)
    assert fit_to_data(build_model("fast"), _smooth_images(8)) is False  # nothing to fit: untouched
    blank = build_model("fast", widths=[8], stem="whiten")
    fit_to_data(blank, torch.full((20, 1, 28, 28), 7, dtype=torch.uint8))  # no variance at all
    assert blank[1].conv.weight.isfinite().all() and blank(torch.zeros(2, 1, 28, 28)).isfinite().all()


@pytest.mark.parametrize(
    "args, match",
    [
        ({"stem": "pca"}, "stem must be conv or whiten"),
        ({"stem": "whiten", "stem_keep": 17}, "keep must be between"),
        ({"stem": "whiten", "stem_kernel": 1}, "kernel must be 2 to 8"),
    ],
)
def test_bad_stem_arguments_are_one_line_errors(args, match):
    with pytest.raises(FmnistError, match=match):
        build_model("fast", **args)
