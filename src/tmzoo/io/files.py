"""Files on disk, the one way tmzoo opens and writes them.

- :func:`open_binary` / :func:`open_text` stream a file, gunzipping on the fly (gzip is
  detected by its magic bytes, not its name); a damaged compressed stream raises
  :class:`DamagedInputError` only after every byte before the damage has been handed out.
- :func:`atomic_write` writes to a temporary file beside the target and renames it into
  place, so a reader never sees half a file. The result has the permissions a plain ``open``
  would give (an existing file's mode, else ``0o666 & ~umask``), and a symlinked target is
  written *through*: the link stays and the file it points to is replaced.
- :func:`check_output` refuses an output that is one of the inputs.
- :func:`write_failures` writes the one failures schema (``index, name, error``) that every
  entry point uses, under the one file name :data:`FAILURES_FILE`.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import os
import stat
import tempfile
import zlib
from pathlib import Path
from typing import IO, BinaryIO, Iterable, Iterator

GZIP_MAGIC = b"\x1f\x8b"
FAILURES_FILE = "failures.csv"
FAILURE_COLUMNS = ("index", "name", "error")
_BUFFER = 1 << 16


class DamagedInputError(OSError):
    """An input cannot be read past some point (a truncated or corrupt compressed file, a
    record that never ends); everything before that point was read. The message names the file."""


def is_gzip(path: str | Path) -> bool:
    """Whether a file starts with the gzip magic bytes."""
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def find_file(folder: str | Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists."""
    return next((c for c in (Path(folder) / name, Path(folder) / f"{name}.gz") if c.is_file()), None)


class _Gunzip(io.RawIOBase):
    """Raw stream of a gzip file's content; zlib/EOF failures become :class:`DamagedInputError`.

    Each ``readinto`` makes one ``read1`` of the gzip file, which returns the data it has
    decompressed before failing on the next call, so nothing before the damage is lost.
    """

    def __init__(self, path: Path):
        self._path = path
        self._gzip = gzip.GzipFile(path, "rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._gzip.read1(len(buffer))
        except (EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise DamagedInputError(f"{self._path}: compressed file is truncated or corrupt ({err})") from None
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._gzip.close()
        super().close()


def open_binary(path: str | Path) -> BinaryIO:
    """A buffered binary handle on the content of ``path``, gunzipped when it is gzipped."""
    path = Path(path)
    if is_gzip(path):
        return io.BufferedReader(_Gunzip(path), _BUFFER)
    return open(path, "rb")


def open_text(path: str | Path, encoding: str = "utf-8-sig") -> IO[str]:
    """A text handle on ``path`` (gzipped or not), undecodable bytes replaced, newlines kept as is."""
    return io.TextIOWrapper(open_binary(path), encoding=encoding, errors="replace", newline="")


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask is process-wide, racing other threads)
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(os.path.realpath(a)) == Path(os.path.realpath(b))


def check_output(output: str | Path, *inputs: str | Path) -> Path:
    """``output`` as a ``Path``; ``ValueError`` when it is (or links to) one of ``inputs``."""
    output = Path(output)
    for source in inputs:
        if source is not None and _same_file(output, Path(source)):
            raise ValueError(f"output {output} is the input file {source}; choose another output path")
    return output


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    A symlink at ``path`` is followed: the file it points to is replaced and the link kept.
    The file gets the permissions a plain ``open`` would leave: those of the file it
    replaces, else ``0o666 & ~umask``. On an exception the target is left untouched.
    """
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    if "b" not in mode:
        open_kwargs.setdefault("newline", "")
        open_kwargs.setdefault("encoding", "utf-8")
    try:
        permissions = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        permissions = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            os.fchmod(handle.fileno(), permissions)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_failures(path: str | Path, failures: Iterable[tuple[int, str, str]]) -> Path:
    """Write ``(index, name, error)`` rows to ``path`` atomically (the one failures schema)."""
    with atomic_write(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(FAILURE_COLUMNS)
        writer.writerows(failures)
    return Path(path)


__all__ = [
    "DamagedInputError",
    "FAILURES_FILE",
    "FAILURE_COLUMNS",
    "atomic_write",
    "check_output",
    "find_file",
    "is_gzip",
    "open_binary",
    "open_text",
    "write_failures",
]
