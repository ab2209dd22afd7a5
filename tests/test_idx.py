import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fmnist.core.errors import IdxError
from fmnist.data.idx import encode_idx, parse_idx, read_idx, write_idx

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@settings(max_examples=60, deadline=None)
@given(
    arr=st.sampled_from(DTYPES).flatmap(
        lambda dt: arrays(
            dt,
            st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple),
            elements={"allow_nan": False} if np.dtype(dt).kind == "f" else None,
        )
    )
)
def test_round_trip_any_dtype_and_shape(arr):
    back = parse_idx(encode_idx(arr))
    assert back.dtype == arr.dtype.newbyteorder("=")
    np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_write_read_raw_and_gzip(tmp_path, name):
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    path = write_idx(tmp_path / name, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    np.testing.assert_array_equal(read_idx(path), arr)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left behind


def test_gzip_detected_by_content_not_name(tmp_path):
    arr = np.ones((3, 4), np.uint8)
    (tmp_path / "plain-name").write_bytes(gzip.compress(encode_idx(arr)))
    np.testing.assert_array_equal(read_idx(tmp_path / "plain-name"), arr)


def test_wrong_magic(tmp_path):
    data = bytearray(encode_idx(np.zeros((2, 2), np.uint8)))
    data[0] = 0x42
    with pytest.raises(IdxError, match="not an IDX file"):
        parse_idx(bytes(data))


def test_unknown_dtype_code():
    data = bytearray(encode_idx(np.zeros((2, 2), np.uint8)))
    data[2] = 0x07
    with pytest.raises(IdxError, match="unknown IDX dtype code 0x07"):
        parse_idx(bytes(data))


def test_zero_dimensions():
    with pytest.raises(IdxError, match="zero dimensions"):
        parse_idx(b"\x00\x00\x08\x00")


def test_header_cut_short():
    with pytest.raises(IdxError, match="ends inside it"):
        parse_idx(b"\x00\x00\x08\x03\x00\x00\x00\x02")


def test_truncated_data():
    data = encode_idx(np.zeros((10, 28, 28), np.uint8))
    with pytest.raises(IdxError, match="truncated"):
        parse_idx(data[:-5])


def test_trailing_bytes():
    data = encode_idx(np.zeros((2, 2), np.uint8)) + b"junk"
    with pytest.raises(IdxError, match="trailing bytes"):
        parse_idx(data)


def test_too_short_and_empty(tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(IdxError, match="too short"):
        read_idx(tmp_path / "empty")


def test_truncated_gzip(tmp_path):
    blob = gzip.compress(encode_idx(np.arange(5000, dtype=np.uint8).reshape(50, 100)))
    (tmp_path / "cut.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(IdxError, match="truncated or damaged"):
        read_idx(tmp_path / "cut.gz")


def test_missing_file(tmp_path):
    with pytest.raises(IdxError, match="file not found"):
        read_idx(tmp_path / "nope")


def test_big_endian_values():
    arr = np.array([1, 256, -2], dtype=np.int32)
    data = encode_idx(arr)
    assert data[4:8] == b"\x00\x00\x00\x03"
    assert data[8:12] == b"\x00\x00\x00\x01"  # big-endian on disk, whatever the host
    np.testing.assert_array_equal(parse_idx(data), arr)
