import hashlib

import numpy as np
import pytest
from conftest import needs_real_data, write_dataset

from fmnist import data as fdata
from fmnist.core import spec as fspec
from fmnist.core.errors import ChecksumError, DataNotFoundError, IdxError
from fmnist.data import sources as fsources
from fmnist.data.idx import encode_idx


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """Point the cache and Debian's folder at temporary folders."""
    cache = tmp_path / "xdg"
    debian = tmp_path / "debian"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(fsources, "DEBIAN_DIR", debian)
    return cache / "fmnist", debian


def test_explicit_dir_wins(tmp_path, sources):
    cache, debian = sources
    write_dataset(cache)
    write_dataset(debian)
    mine = write_dataset(tmp_path / "mine")
    src = fsources.locate(mine)
    assert (src.origin, src.directory) == ("--data-dir", mine)


def test_env_dir_then_cache_then_debian(tmp_path, sources, monkeypatch):
    cache, debian = sources
    write_dataset(debian)
    assert fsources.locate().origin == "debian"
    write_dataset(cache)
    assert fsources.locate().origin == "cache"
    env = write_dataset(tmp_path / "env")
    monkeypatch.setenv("FMNIST_DATA_DIR", str(env))
    src = fsources.locate()
    assert (src.origin, src.directory) == ("FMNIST_DATA_DIR", env)


def test_uncompressed_files_are_found(tmp_path, sources):
    d = write_dataset(tmp_path / "raw", compress=False)
    split = fdata.load_split("train", d, verify=False)
    assert split.images.shape == (400, 28, 28)


def test_explicit_dir_without_files_says_which(tmp_path, sources):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="--data-dir .*lacks train-images-idx3-ubyte.gz"):
        fsources.locate(tmp_path / "empty")


def test_nothing_found_lists_tries_and_fixes(sources):
    with pytest.raises(DataNotFoundError) as e:
        fsources.locate()
    msg = str(e.value)
    assert "cache" in msg and "debian" in msg and "download (disabled)" in msg
    assert "--data-dir" in msg and "apt-get install dataset-fashion-mnist" in msg and "download" in msg
    assert "\n" not in msg


def test_download_goes_through_a_verified_temporary_file(tmp_path, sources, monkeypatch):
    """A 'download' from a local mirror (file:// URL): verified, then moved into the cache."""
    mirror = write_dataset(tmp_path / "mirror")
    specs = {}
    for key, spec in fsources.FILES.items():
        blob = (mirror / spec.name).read_bytes()
        content = fsources.read_bytes(mirror / spec.name)
        specs[key] = fspec.FileSpec(
            key, spec.name, hashlib.sha256(content).hexdigest(), len(content), hashlib.md5(blob).hexdigest()
        )
    monkeypatch.setattr(fsources, "FILES", specs)
    paths = fsources.download_to(tmp_path / "dl", progress=False, base_url=mirror.as_uri() + "/")
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == sorted(s.name for s in specs.values())
    assert all(p.is_file() for p in paths.values())


def test_download_with_wrong_md5_leaves_nothing(tmp_path, sources):
    mirror = write_dataset(tmp_path / "mirror")  # synthetic files: the official MD5 cannot match
    with pytest.raises(DataNotFoundError, match="MD5"):
        fsources.download_to(tmp_path / "dl", progress=False, base_url=mirror.as_uri() + "/")
    assert list((tmp_path / "dl").iterdir()) == []


def test_checksum_mismatch_names_file_and_hashes(tiny_dir):
    with pytest.raises(ChecksumError) as e:
        fdata.load_split("train", tiny_dir)
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg
    assert fsources.FILES["train-images"].sha256 in msg
    assert "not Fashion-MNIST" in msg and "--no-verify" in msg


def test_no_verify_loads_custom_data_with_a_warning(tiny_dir):
    with pytest.warns(UserWarning, match="NOT verified"):
        split = fdata.load_split("test", tiny_dir, verify=False)
    assert len(split) == 100 and split.images.dtype == np.uint8 and not split.verified


def test_image_and_label_counts_must_agree(tiny_dir):
    (tiny_dir / "train-labels-idx1-ubyte.gz").unlink()
    (tiny_dir / "train-labels-idx1-ubyte").write_bytes(encode_idx(np.zeros(399, np.uint8)))
    with pytest.raises(IdxError, match="400 images but 399 labels"), pytest.warns(UserWarning):
        fdata.load_split("train", tiny_dir, verify=False)


def test_wrong_image_shape(tmp_path):
    d = write_dataset(tmp_path / "d")
    (d / "t10k-images-idx3-ubyte.gz").unlink()
    (d / "t10k-images-idx3-ubyte").write_bytes(encode_idx(np.zeros((100, 32, 32), np.uint8)))
    with pytest.raises(IdxError, match="expected N×28×28"), pytest.warns(UserWarning):
        fdata.load_split("test", d, verify=False)


def test_validation_split_is_stratified_disjoint_reproducible():
    labels = np.repeat(np.arange(10), 600)
    np.random.default_rng(3).shuffle(labels)
    tr, va = fdata.validation_split(labels, 500, seed=1)
    assert len(va) == 500 and len(tr) == 5500
    assert np.intersect1d(tr, va).size == 0 and np.union1d(tr, va).size == 6000
    assert (np.bincount(labels[va], minlength=10) == 50).all()
    tr2, va2 = fdata.validation_split(labels, 500, seed=1)
    np.testing.assert_array_equal(va, va2)
    _, va3 = fdata.validation_split(labels, 500, seed=2)
    assert not np.array_equal(va, va3)


def test_validation_split_rounds_to_the_exact_size_by_largest_remainder():
    labels = np.array([0] * 7 + [1] * 5 + [2] * 3)
    _, va = fdata.validation_split(labels, 4, seed=0)
    # Shares 4 * (7, 5, 3) / 15 = (1.87, 1.33, 0.8): floors (1, 1, 0), and the two remaining
    # images go to the largest remainders, classes 2 (0.8) and 0 (0.87).
    assert np.bincount(labels[va], minlength=3).tolist() == [2, 1, 1]
    labels = np.repeat(np.arange(10), [6000, 6000, 6000, 6000, 6000, 6000, 6000, 6000, 6001, 5999])
    _, va = fdata.validation_split(labels, 5000, seed=0)
    assert np.bincount(labels[va]).tolist() == [500] * 10


@needs_real_data
def test_real_data_loads_verified_with_the_documented_statistics():
    train, test = fdata.load_fashion_mnist()
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert train.verified and train.source.origin == "debian"
    assert (np.bincount(train.labels) == 6000).all() and (np.bincount(test.labels) == 1000).all()
    mean, std = fdata.pixel_stats(train.images)
    assert mean == pytest.approx(fspec.MEAN, abs=1e-6) and std == pytest.approx(fspec.STD, abs=1e-6)
    assert round(mean, 4) == 0.2860 and round(std, 4) == 0.3530
    assert test.labels[0] == 9  # the notebook's first test image is an ankle boot
    _, va = fdata.validation_split(train.labels)
    assert len(va) == 5000 and (np.bincount(train.labels[va]) == 500).all()


def test_pixel_stats_equal_the_float64_computation():
    images = np.random.default_rng(3).integers(0, 256, size=(300, 28, 28), dtype=np.uint8)
    mean, std = fdata.pixel_stats(images)
    x = images.astype(np.float64) / 255.0
    assert mean == pytest.approx(x.mean(), rel=1e-12) and std == pytest.approx(x.std(), rel=1e-12)
    assert all(np.isnan(fdata.pixel_stats(images[:0])))
    assert fdata.pixel_stats(images.astype(np.float32)) == pytest.approx((mean, std), rel=1e-6)
