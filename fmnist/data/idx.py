"""Read and write the IDX format used by (Fashion-)MNIST; nothing else.

An IDX file is: two zero bytes, a dtype code, the number of dimensions, then one
big-endian uint32 per dimension, then the data in C order. Files may be gzipped; we
detect that from the content (the gzip magic), not from the file name.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from fmnist.core.errors import IdxError
from fmnist.core.files import atomic_write_bytes

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


# The most a file may hold (decompressed) when no exact size is known: custom IDX data sets read
# with --no-verify. 2 GiB is 2.7 million 28×28 images, 39 times Fashion-MNIST.
MAX_BYTES = 2 << 30
_CHUNK = 1 << 20


def read_bytes(path: str | os.PathLike, limit: int | None = None) -> bytes:
    """The file's content, decompressed if it is gzipped, never more than ``limit`` bytes.

    A file (or a gzip stream) whose content would exceed the limit is refused after reading at
    most ``limit + 1`` bytes of it, so a small file that inflates to gigabytes costs no memory.
    ``limit`` defaults to MAX_BYTES.
    """
    path = Path(path)
    limit = MAX_BYTES if limit is None else limit
    try:
        with path.open("rb") as f:
            head = f.read(2)
            if head != GZIP_MAGIC:
                raw = head + f.read(limit + 1 - len(head))
                if len(raw) > limit:
                    raise IdxError(_too_big(path, limit))
                return raw
            f.seek(0)
            return _gunzip(f, limit, path)
    except FileNotFoundError:
        raise IdxError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise IdxError(f"{path}: is a folder, not a data file") from None
    except OSError as e:
        raise IdxError(f"{path}: cannot read ({e.strerror})") from None


def _too_big(path: Path, limit: int) -> str:
    return (
        f"{path}: holds more than {limit:,} bytes once decompressed, more than a data file of this kind "
        "can; it is damaged or not a data file (a decompression bomb?): delete it"
    )


def _gunzip(f, limit: int, path: Path) -> bytes:
    """Decompress every gzip member of ``f``, stopping as soon as the output passes ``limit``."""
    out = bytearray()
    d = zlib.decompressobj(wbits=31)
    padding = False  # after the last member only zero bytes may follow, as gzip(1) allows
    try:
        while chunk := f.read(_CHUNK):
            data = chunk
            while data:
                if padding:
                    if data.strip(b"\0"):
                        raise IdxError(_damaged(path, "bytes after the end of the stream"))
                    break
                out += d.decompress(data, limit + 1 - len(out))
                if len(out) > limit:
                    raise IdxError(_too_big(path, limit))
                if d.unconsumed_tail:
                    data = d.unconsumed_tail
                elif d.eof and d.unused_data:
                    data = d.unused_data
                    if data[:1] == GZIP_MAGIC[:1]:
                        d = zlib.decompressobj(wbits=31)  # the next member
                    else:
                        padding = True
                else:
                    data = b""
    except zlib.error as e:
        raise IdxError(_damaged(path, str(e))) from None
    if not d.eof:
        raise IdxError(_damaged(path, "the stream ends early"))
    return bytes(out)


def _damaged(path: Path, why: str) -> str:
    return f"{path}: the gzip stream is truncated or damaged ({why}); delete the file and fetch it again"


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
    expected = header + math.prod(shape) * dtype.itemsize  # exact: Python integers never overflow
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise IdxError(f"{name}: {what}: shape {shape} needs {expected:,} bytes, the file has {len(data):,}")
    if math.prod(d for d in shape if d) * dtype.itemsize >= 2**63:
        # An empty array (one dimension 0) whose other dimensions NumPy cannot even describe.
        raise IdxError(f"{name}: shape {shape} is impossible; the header is damaged")
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
