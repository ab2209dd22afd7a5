"""Where the four Fashion-MNIST files come from, how they are verified, and the splits.

Sources are tried in a fixed order (see :func:`locate`). Every load checks the SHA-256
of each file's *decompressed* content, so Debian's re-compressed ``.gz`` files and the
official ones both pass, while MNIST digits or a damaged file cannot slip through.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fmnist.core.errors import ChecksumError, DataNotFoundError
from fmnist.core.spec import (
    DEBIAN_DIR,
    FILES,
    OFFICIAL_URL,
    FileSpec,
)
from fmnist.data.idx import read_bytes


def cache_dir() -> Path:
    """The user cache: ``$XDG_CACHE_HOME/fmnist`` or ``~/.cache/fmnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fmnist"


def _find_file(directory: Path, spec: FileSpec) -> Path | None:
    for candidate in (spec.name, spec.name[: -len(".gz")]):
        path = directory / candidate
        if path.is_file():
            return path
    return None


def _complete(directory: Path) -> dict[str, Path] | None:
    found = {key: _find_file(directory, spec) for key, spec in FILES.items()}
    if all(found.values()):
        return found  # type: ignore[return-value]
    return None


@dataclass
class DataSource:
    """Where the files were found: the directory, how it was chosen and the four paths."""

    directory: Path
    origin: str  # "--data-dir", "FMNIST_DATA_DIR", "cache", "debian" or "download"
    paths: dict[str, Path]


def _download_allowed(download: bool | None) -> bool:
    if download is not None:
        return download
    return os.environ.get("FMNIST_NO_DOWNLOAD", "") in ("", "0")


def locate(
    data_dir: str | os.PathLike | None = None,
    download: bool | None = None,
    progress: bool = True,
) -> DataSource:
    """Find the four files, trying in order: ``data_dir`` (or ``$FMNIST_DATA_DIR``), the
    user cache, Debian's ``/usr/share/datasets/fashion-mnist``, then a download into the
    cache. A directory the user names is authoritative: if it lacks the files we say so
    rather than silently reading some other copy.

    ``download=None`` means "allowed unless ``FMNIST_NO_DOWNLOAD=1``".
    """
    explicit = [("--data-dir", data_dir), ("FMNIST_DATA_DIR", os.environ.get("FMNIST_DATA_DIR"))]
    for origin, value in explicit:
        if value:
            directory = Path(value).expanduser()
            found = _complete(directory)
            if found:
                return DataSource(directory, origin, found)
            missing = [s.name for k, s in FILES.items() if _find_file(directory, s) is None]
            raise DataNotFoundError(
                f"{origin} {directory} lacks {', '.join(missing)} (plain or .gz); "
                "put the four Fashion-MNIST files there or leave it out to use the default sources"
            )

    tried: list[str] = []
    for origin, directory in (("cache", cache_dir()), ("debian", DEBIAN_DIR)):
        tried.append(f"{origin} {directory}")
        found = _complete(directory)
        if found:
            return DataSource(directory, origin, found)

    if not _download_allowed(download):
        tried.append("download (disabled)")
        raise _not_found(tried)
    tried.append(f"download from {OFFICIAL_URL}")
    try:
        paths = download_to(cache_dir(), progress=progress)
    except DataNotFoundError as e:
        raise _not_found(tried, str(e)) from None
    return DataSource(cache_dir(), "download", paths)


def _not_found(tried: list[str], reason: str = "") -> DataNotFoundError:
    because = f" ({reason})" if reason else ""
    return DataNotFoundError(
        f"Fashion-MNIST not found; tried: {'; '.join(tried)}{because}. Fix: pass --data-dir DIR "
        "(or set FMNIST_DATA_DIR) with the four files, or `apt-get install dataset-fashion-mnist`, "
        "or allow the download (unset FMNIST_NO_DOWNLOAD, drop --no-download, check the network)"
    )


def download_to(directory: Path, progress: bool = True, base_url: str = OFFICIAL_URL) -> dict[str, Path]:
    """Download each missing file into ``directory`` via a temporary file, verifying the
    official MD5 and the content SHA-256 before the file takes its final name."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for key, spec in FILES.items():
        final = directory / spec.name
        if final.is_file():
            paths[key] = final
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".part", dir=directory)
        try:
            md5 = hashlib.md5()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(base_url + spec.name, timeout=60) as resp:
                total = int(resp.headers.get("Content-Length") or 0)
                with _progress_bar(spec.name, total, progress) as advance:
                    while chunk := resp.read(1 << 16):
                        out.write(chunk)
                        md5.update(chunk)
                        advance(len(chunk))
            if md5.hexdigest() != spec.md5_gz:
                raise DataNotFoundError(f"{spec.name} downloaded with MD5 {md5.hexdigest()}, expected {spec.md5_gz}")
            verify_file(Path(tmp), spec)
            os.replace(tmp, final)
            paths[key] = final
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise DataNotFoundError(f"download of {spec.name} failed: {e}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return paths


class _progress_bar:
    """A Rich progress bar for one download (a no-op when ``enabled`` is false)."""

    def __init__(self, name: str, total: int, enabled: bool):
        self.name, self.total, self.enabled = name, total, enabled

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

        self.progress = Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn())
        self.progress.start()
        task = self.progress.add_task(f"download {self.name}", total=self.total or None)
        return lambda n: self.progress.advance(task, n)

    def __exit__(self, *exc):
        if self.enabled:
            self.progress.stop()


def verify_content(content: bytes, spec: FileSpec, where: str) -> None:
    digest = hashlib.sha256(content).hexdigest()
    if digest != spec.sha256:
        raise ChecksumError(
            f"{where}: SHA-256 of the decompressed content is {digest}, expected {spec.sha256} for "
            f"{spec.name}: this is not Fashion-MNIST (MNIST digits?) or it is damaged; replace the file, "
            "or pass --no-verify for a custom IDX data set"
        )


def verify_file(path: Path, spec: FileSpec) -> bytes:
    content = read_bytes(path, limit=spec.size)
    verify_content(content, spec, str(path))
    return content
