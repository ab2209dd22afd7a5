"""A request's images as pixels: JSON arrays of numbers 0-255, or image files (a multipart
upload or a raw image body) through the same preprocessing as ``fmnist predict FILE``.

Every way a request can be wrong ends in :class:`BadRequest` with its HTTP status and one
line that says what to send instead: 413 too large, 415 not an image, 422 the wrong shape
or values. Nothing here is a 5xx.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import numpy as np
from PIL import Image

from fmnist.core.errors import FmnistError, ImageTooLargeError, NotAnImageError
from fmnist.core.spec import IMAGE_SIZE
from fmnist.data.images import preprocess_bytes

SHAPE = (IMAGE_SIZE, IMAGE_SIZE)
# Pillow refuses to even open an image declaring more than twice its limit (~179 MP).
BEYOND_PILLOW = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485) + 1
JSON_HINT = 'send {"pixels": [[28 numbers 0-255], ... 28 rows]}'
BATCH_HINT = 'send {"images": [[[28 numbers 0-255], ... 28 rows], ...]}'


class BadRequest(Exception):
    """A client's mistake: ``status`` (4xx) and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _no_constants(name: str) -> Any:
    raise BadRequest(422, f"{name} is not a pixel value (and not standard JSON); send numbers from 0 to 255")


def parse_json(body: bytes, batch: bool, max_batch: int) -> np.ndarray:
    """float32 N×28×28 from ``{"pixels": 28×28}`` or, for a batch, ``{"images": [28×28, ...]}``."""
    key, hint = ("images", BATCH_HINT) if batch else ("pixels", JSON_HINT)
    try:
        obj = json.loads(body, parse_constant=_no_constants)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise BadRequest(422, f"the body is not valid JSON ({reason}); {hint}") from None
    if not isinstance(obj, dict) or key not in obj:
        raise BadRequest(422, f'expected a JSON object with "{key}"; {hint}')
    value = obj[key]
    if not batch:
        return pixel_stack([value], ['"pixels"'])
    if not isinstance(value, list) or not value:
        raise BadRequest(422, f'"images" must be a non-empty list of 28×28 arrays; {BATCH_HINT}')
    if len(value) > max_batch:
        raise BadRequest(422, f"{len(value):,} images in one batch; this server takes at most {max_batch}")
    return pixel_stack(value, [f"images[{i}]" for i in range(len(value))])


def pixel_stack(items: list[Any], names: list[str]) -> np.ndarray:
    """The items as one float32 array N×28×28, every value a finite number in [0, 255]."""
    try:
        a = np.asarray(items)
    except (ValueError, OverflowError):
        a = None
    if a is None or a.dtype.kind not in "iuf" or a.shape[1:] != SHAPE:
        for item, name in zip(items, names):
            _check_one(item, name)
        raise BadRequest(422, f"{names[0]}: expected 28 rows of 28 numbers from 0 to 255")
    if not (a.min() >= 0 and a.max() <= 255):  # NaN fails both comparisons
        i, row, col = (int(x) for x in np.argwhere(~((a >= 0) & (a <= 255)))[0])
        raise BadRequest(
            422,
            f"{names[i]}: pixel values must be numbers from 0 to 255; found {a[i, row, col]} at row {row}, column {col}",
        )
    return a.astype(np.float32, copy=False)


def _check_one(item: Any, name: str) -> None:
    """Raise the specific error for one item that spoiled the whole array."""
    try:
        a = np.asarray(item)
    except (ValueError, OverflowError):
        raise BadRequest(422, f"{name}: rows of different lengths; expected 28 rows of 28 numbers") from None
    if a.shape != SHAPE:
        got = "a single value" if a.ndim == 0 else f"shape {'×'.join(map(str, a.shape))}"
        raise BadRequest(422, f"{name}: expected 28 rows of 28 numbers, got {got}")
    if a.dtype.kind not in "iuf":
        raise BadRequest(
            422, f"{name}: pixel values must be numbers from 0 to 255 (found text, true/false, null or a huge number)"
        )


def declared_pixels(data: bytes) -> int:
    """Width × height from the image's header (0 when Pillow cannot read it: decoding will
    say why; :data:`BEYOND_PILLOW` past the size Pillow refuses to open); nothing is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                return w * h
    except Image.DecompressionBombError:
        return BEYOND_PILLOW
    except Exception:  # any unreadable header: decode_image names the problem
        return 0


def preprocess_files(files: list[tuple[str, bytes]], max_pixels: int) -> np.ndarray:
    """uint8 N×28×28, each file through ``fmnist predict FILE``'s preprocessing. The
    pixel limit holds for the whole request, checked on the headers before any decoding."""
    sizes = [declared_pixels(data) for _, data in files]
    total = sum(sizes)
    if total > max_pixels:
        what = "the images declare" if len(files) > 1 else f"{files[0][0]} declares"
        count = f"over {BEYOND_PILLOW - 1:,}" if BEYOND_PILLOW in sizes else f"{total:,}"
        raise BadRequest(
            413,
            f"{what} {count} pixels, more than this server's limit of {max_pixels:,} "
            "(a decompression bomb, or a very large photo); scale it down first",
        )
    out = []
    for name, data in files:
        try:
            out.append(preprocess_bytes(data, name, max_pixels))
        except ImageTooLargeError as e:
            raise BadRequest(413, str(e)) from None
        except NotAnImageError as e:
            raise BadRequest(415, str(e)) from None
        except FmnistError as e:  # damaged, no garment, unsupported mode
            raise BadRequest(422, str(e)) from None
        except (MemoryError, Image.DecompressionBombError):
            raise BadRequest(413, f"{name}: too large to decode; scale it down first") from None
    return np.stack(out)
