"""Error lines that name the real cause: a symbolic link that loops or points nowhere is not
"no such file", a float image with values no photo has is not "one flat colour", and a file
named -dash.png is not only "No such option: -d"."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from fmnist.core.errors import FmnistError
from fmnist.data.images import load_image, preprocess_file, to_fashion_mnist


def garment(path, size: int = 60) -> None:
    """A light rectangle on black: an image in which a garment is found."""
    a = np.zeros((size, size), np.uint8)
    a[10:50, 20:40] = 220
    Image.fromarray(a).save(path)


def test_a_symlink_loop_and_a_dangling_link_say_so(tmp_path):
    loop, dangling = tmp_path / "loop.png", tmp_path / "dangling.png"
    os.symlink(loop, loop)
    os.symlink(tmp_path / "gone.png", dangling)
    with pytest.raises(FmnistError, match="loop.png: a loop of symbolic links"):
        load_image(loop)
    with pytest.raises(FmnistError, match=f"dangling.png: a symbolic link to {tmp_path / 'gone.png'}, which does not"):
        load_image(dangling)
    with pytest.raises(FmnistError, match="nothing.png: no such file$"):
        load_image(tmp_path / "nothing.png")


def test_cli_names_the_symlink_loop(monkeypatch, capsys, tmp_path, synthetic_run):
    loop = tmp_path / "loop.png"
    os.symlink(loop, loop)
    code, _, err = run_cli(monkeypatch, capsys, "predict", synthetic_run, loop)
    assert code == 2 and "a loop of symbolic links" in err and "no such file" not in err, err


def _float_tiff(path, values: np.ndarray) -> None:
    Image.fromarray(values.astype(np.float32), "F").save(path)


def test_a_float_image_beyond_16_bits_is_named_not_called_flat(tmp_path):
    rng = np.random.default_rng(0)
    values = 1e30 * (1 + 0.1 * rng.random((60, 60)))  # a garment in there, all of it beyond 65535
    values[10:50, 20:40] *= 2
    _float_tiff(tmp_path / "big.tif", values)
    with pytest.raises(FmnistError, match=r"big.tif: its pixel values reach 2\.\de\+30, beyond the 0-65535") as e:
        preprocess_file(tmp_path / "big.tif")
    assert "flat colour" not in str(e.value)
    nan = np.zeros((60, 60))
    nan[0, 0] = np.nan
    _float_tiff(tmp_path / "nan.tif", nan)
    with pytest.raises(FmnistError, match="nan.tif: its pixels include NaN or infinite values"):
        preprocess_file(tmp_path / "nan.tif")


@pytest.mark.parametrize("top", [1.0, 255.0, 65535.0])
def test_float_images_in_the_ranges_read_still_work(top):
    a = np.zeros((60, 60), np.float32)
    a[10:50, 20:40] = 0.9 * top
    assert to_fashion_mnist(Image.fromarray(a, "F")).max() == 255


def test_a_file_named_like_an_option_gets_the_way_to_pass_it(monkeypatch, capsys, tmp_path, synthetic_run):
    monkeypatch.chdir(tmp_path)
    garment(tmp_path / "-dash.png")
    code, _, err = run_cli(monkeypatch, capsys, "predict", synthetic_run, "-dash.png")
    assert code == 2 and err.count("\n") == 1
    assert err == "error: No such option: -d (-dash.png is a file: to pass it, write `-- -dash.png` or `./-dash.png`)\n"
    for args in (("--", "-dash.png"), ("./-dash.png",)):
        code, out, err = run_cli(monkeypatch, capsys, "predict", synthetic_run, *args)
        assert code == 0 and "predicted" in out, err
    code, _, err = run_cli(monkeypatch, capsys, "predict", synthetic_run, "-nothere.png")
    assert code == 2 and "predict --help`)" in err and "is a file" not in err
