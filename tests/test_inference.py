"""Inference: device choice, flip TTA, probabilities and the predictor."""

import numpy as np
import pytest
import torch

from fmnist.core.errors import FmnistError
from fmnist.runtime.inference import load_predictor, predict_logits, probabilities, resolve_device, softmax


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


def test_predict_logits_batches_and_empty_input():
    m = Asymmetric()
    x = torch.rand(7, 1, 28, 28) * 255
    torch.testing.assert_close(predict_logits(m, x, batch_size=3), predict_logits(m, x, batch_size=100))
    assert predict_logits(m, x[:0]).shape == (0, 10)


def test_probabilities_are_a_distribution():
    p = probabilities(Asymmetric(), torch.rand(4, 1, 28, 28) * 255)
    assert p.dtype == np.float64 and p.shape == (4, 10)
    np.testing.assert_allclose(p.sum(1), 1.0)
    # softmax in float64: a logit gap of 800 still gives exact 0/1, never NaN
    s = softmax(torch.tensor([[800.0, 0.0] + [0.0] * 8]))
    assert s[0, 0] == 1.0 and np.isfinite(s).all()


@pytest.mark.parametrize(
    "name,match",
    [("gpu0", "unknown device"), ("cuda", "no CUDA GPU"), ("meta", "unsupported device"), ("cuda:7", "CUDA")],
)
def test_bad_devices_are_user_errors(name, match):
    if torch.cuda.is_available() and name.startswith("cuda"):
        pytest.skip("this machine has a GPU")
    with pytest.raises(FmnistError, match=match):
        resolve_device(name)
    assert resolve_device("cpu") == torch.device("cpu")


def test_predictor_from_a_loaded_model_and_a_run(synthetic_run):
    p = load_predictor(synthetic_run)
    assert p.backend == "torch" and p.info.model == "seed" and p.tta is False
    x = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    # A bare model has no model file, so no temperature: its probabilities are the raw softmax.
    bare = load_predictor(p.model)
    assert bare.temperature == 1.0 and p.temperature == p.info.temperature
    np.testing.assert_allclose(p.probabilities(x, calibrate=False), bare.probabilities(x))
    np.testing.assert_allclose(p.probabilities(x), softmax(bare.logits(x), p.temperature))
    with pytest.raises(FmnistError, match="--backend"):
        load_predictor(synthetic_run, backend="tensorrt")
    with pytest.raises(FmnistError, match="needs a run folder"):
        load_predictor(p.model, backend="onnx")


def test_channels_last_prediction_equals_the_default_layout():
    from fmnist.models import build_model

    torch.manual_seed(0)
    reference = build_model("seed").eval()
    converted = build_model("seed").eval()
    converted.load_state_dict(reference.state_dict())
    x = torch.rand(20, 1, 28, 28) * 255
    plain = predict_logits(reference, x, channels_last=False)
    fast = predict_logits(converted, x)  # the default on CPU: weights converted in place, once

    def second_conv(model):  # 32 input channels: channels-last differs from the default there
        return [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][1].weight

    assert second_conv(converted).is_contiguous(memory_format=torch.channels_last)
    assert not second_conv(reference).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
