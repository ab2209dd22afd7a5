"""Read and write the IDX format used by (Fashion-)MNIST; nothing else.

An IDX file is: two zero bytes, a dtype code, the number of dimensions, then one
big-endian uint32 per dimension, then the data in C order. Files may be gzipped; we
detect that from the content (the gzip magic), not from the file name.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from .errors import IdxError
from .files import atomic_write_bytes

# IDX dtype code -> big-endian NumPy dtype.
DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
CODES: dict[str, int] = {dt.kind + str(dt.itemsize): code for code, dt in DTYPES.items()}
GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | os.PathLike) -> bytes:
    """The file's content, decompressed if it is gzipped."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IdxError(f"{path}: file not found") from None
    except OSError as e:
        raise IdxError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise IdxError(
            f"{path}: the gzip stream is truncated or damaged ({e}); delete the file and fetch it again"
        ) from None


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX content (already decompressed) into a NumPy array in native byte order."""
    if len(data) < 4:
        raise IdxError(f"{name}: too short to be an IDX file ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise IdxError(f"{name}: not an IDX file (magic number starts with {data[:2].hex()}, expected 0000)")
    code, ndim = data[2], data[3]
    if code not in DTYPES:
        raise IdxError(f"{name}: unknown IDX dtype code 0x{code:02x}")
    if ndim == 0:
        raise IdxError(f"{name}: IDX file declares zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{name}: header declares {ndim} dimensions but the file ends inside it")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise IdxError(f"{name}: {what}: shape {shape} needs {expected:,} bytes, the file has {len(data):,}")
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzipped) into a NumPy array."""
    return parse_idx(read_bytes(path), str(path))


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array``."""
    array = np.asarray(array)
    key = array.dtype.kind + str(array.dtype.itemsize)
    if key not in CODES or array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"cannot store dtype {array.dtype} with {array.ndim} dims as IDX")
    code = CODES[key]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as IDX, atomically; gzipped if ``compress`` or the name ends in .gz."""
    path = Path(path)
    data = encode_idx(array)
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)
    return path
