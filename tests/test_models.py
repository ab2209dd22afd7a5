import pytest
import torch

from fmnist.errors import FmnistError
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
