"""Errors a user can cause.

Anything raised as :class:`FmnistError` is the user's to fix (a missing file, a bad
argument, a damaged model). The CLI prints its message as one line and exits with
code 2; library callers can catch it like any exception.
"""


class FmnistError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""


class TrainingDiverged(FmnistError):
    """The training loss became NaN or infinite (usually: the learning rate is too high)."""


class IdxError(FmnistError):
    """An IDX file is malformed, truncated or not what it claims to be."""


class DataNotFoundError(FmnistError):
    """The Fashion-MNIST files could not be found or fetched."""


class ChecksumError(FmnistError):
    """A data file's content is not the Fashion-MNIST file it is named after."""


class ModelFileError(FmnistError):
    """A model file is missing, damaged or not an fmnist model."""


class NotAnImageError(FmnistError):
    """A file or upload is not in any image format Pillow reads."""


class ImageTooLargeError(FmnistError):
    """An image declares more pixels than the limit (a decompression bomb, or a huge photo)."""
