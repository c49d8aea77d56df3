"""Streaming readers for the raw files: plain or gzipped, one SDF record at a time.

SDF records are handed to worker processes as text and parsed there with
``Chem.MolFromMolBlock`` (the same parser, with the same defaults, as ``SDMolSupplier``).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO, Iterator

_GZIP_MAGIC = b"\x1f\x8b"


def find_file(folder: Path, name: str) -> Path | None:
    """``folder/name`` or ``folder/name.gz``, whichever exists."""
    for candidate in (Path(folder) / name, Path(folder) / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def is_gzip(path: Path) -> bool:
    """Whether a file starts with the gzip magic bytes."""
    with open(path, "rb") as handle:
        return handle.read(2) == _GZIP_MAGIC


def open_text(path: Path) -> IO[str]:
    """Opens a text file, gunzipping on the fly when it is gzipped."""
    if is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def iter_sdf_blocks(path: Path) -> Iterator[str]:
    """Yields the text of each record of an SDF file (up to, not including, ``$$$$``)."""
    lines: list[str] = []
    with open_text(path) as handle:
        for line in handle:
            if line.startswith("$$$$"):
                yield "".join(lines)
                lines = []
            else:
                lines.append(line)
    if any(line.strip() for line in lines):  # a last record without its terminator
        yield "".join(lines)


def count_sdf_records(path: Path) -> int:
    """Number of records of an SDF file (its ``$$$$`` lines, plus an unterminated last one)."""
    count, tail, last = 0, b"", b""
    opener = gzip.open if is_gzip(path) else open
    with opener(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            chunk = tail + block
            count += chunk.count(b"\n$$$$") + (chunk.startswith(b"$$$$") and not tail)
            tail = chunk[-4:]
            last = chunk
    end = last.rstrip()
    if end and not end.endswith(b"$$$$"):
        count += 1
    return count


def block_name(block: str) -> str:
    """The title line (first line) of an SDF record."""
    return block.split("\n", 1)[0].strip()


def block_heavy_formula(block: str) -> str:
    """Heavy-atom formula read straight from a V2000 atom block (no RDKit, no sanitising)."""
    lines = block.split("\n")
    if len(lines) < 4 or "V3000" in lines[3]:
        raise ValueError("not a V2000 molfile record")
    n_atoms = int(lines[3][:3])
    counts: dict[str, int] = {}
    for line in lines[4: 4 + n_atoms]:
        symbol = line[31:34].strip()
        if symbol not in ("H", "D", "T"):
            counts[symbol] = counts.get(symbol, 0) + 1
    order = sorted(counts, key=lambda s: (s != "C", s))
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)


__all__ = [
    "find_file",
    "is_gzip",
    "open_text",
    "iter_sdf_blocks",
    "count_sdf_records",
    "block_name",
    "block_heavy_formula",
]
