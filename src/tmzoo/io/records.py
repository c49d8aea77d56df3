"""Molecule files (``.sdf``, ``.smi``, ``.csv``, each optionally gzipped) as streams of records.

The one reader of users' files and of the datasets' raw files:

- :func:`read_records` yields every record of a user's file as a :class:`Record`, in input
  order: parsed (``mol`` set) or not (``error`` says why). Nothing is skipped silently, so
  outputs keep one row per input record.
- :func:`count_records` counts them without parsing (the same framing, so counts match).
- :func:`iter_sdf_blocks` / :func:`count_sdf_records` frame SDF files the same way, for the
  datasets that parse records in worker processes; :func:`sd_fields` reads a record's data items.

Files are read in bounded chunks (:func:`tmzoo.io.files.open_binary`, gzip detected by its
magic bytes), so no record, line or field can exhaust memory: one over its bound is an error
record. Lines end at ``"\\n"`` (or ``"\\r\\n"``) only. A damaged compressed file raises
:class:`~tmzoo.io.files.DamagedInputError` after the records read before the damage.

SDF framing: a record ends at a line starting with ``$$$$`` (as in RDKit). A block that holds
several molecules (a ``$$$$`` line is missing) is split before each further counts line
(``... V2000``/``V3000``, three lines below the record's start); every molecule but the last
of such a block is an error record, so a missing ``$$$$`` never merges or drops a record.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, NamedTuple

from rdkit import Chem

from tmzoo.chem.molecule import MoleculeError, mol_from_smiles
from tmzoo.io.files import DamagedInputError, open_binary

SUPPORTED = (".sdf", ".smi", ".csv")
MAX_RECORD_BYTES = 1 << 22  # an SDF record or a line of .smi/.csv (4 MiB, ~50,000 atoms)
MAX_FIELD_CHARS = 100_000  # a SMILES or CSV field
_CHUNK = 1 << 20
_OVERSIZED = "\ue000oversized line\ue000"  # stands in for a line over the bound in the CSV stream
_WHITESPACE = re.compile(r"\s")
_MOL_END = re.compile(r"^M  END", re.MULTILINE)  # the molfile's end: SD data items follow


@dataclass
class Record:
    """One input record: its 0-based position, a name, the molecule or the reason it has none.

    ``fields``: the CSV row by column, or the SDF record's data items (``> <name>``).
    """

    index: int
    name: str
    mol: Chem.Mol | None = None
    smiles: str = ""
    error: str = ""
    fields: dict[str, str] = field(default_factory=dict)


class SdfBlock(str):
    """The text of one SDF record (without its ``$$$$`` line), with ``"\\n"`` line ends.

    ``error`` is set when the record cannot be read (too large, or no ``$$$$`` after it); the
    text is then its title line only or the molecule as framed. ``line``: its first line (1-based).
    """

    def __new__(cls, text: str, error: str = "", line: int = 0):
        block = super().__new__(cls, text)
        block.error, block.line = error, line
        return block


class _Frame(NamedTuple):
    data: bytes
    line: int
    error: str = ""


def file_kind(path: str | Path) -> str:
    """``.sdf``, ``.smi`` or ``.csv`` (a trailing ``.gz`` is allowed); ValueError otherwise."""
    path = Path(path)
    suffixes = Path(path.name.lower().removesuffix(".gz")).suffixes
    kind = suffixes[-1] if suffixes else ""
    if kind not in SUPPORTED:
        raise ValueError(f"{path}: unsupported input type {kind or '(none)'!r}; use one of {', '.join(SUPPORTED)}")
    return kind


def _shorten(text: str, size: int = 60) -> str:
    return repr(text) if len(text) <= size else repr(text[:size]) + f"... ({len(text):,} characters)"


# --------------------------------------------------------------------------- lines
def _lines(stream: BinaryIO, limit: int) -> Iterator[bytes | None]:
    """The lines of ``stream`` without their ``"\\n"``; ``None`` for a line over ``limit`` bytes.

    Only ``"\\n"`` ends a line; a line is never held whole when it is over the bound.
    """
    buf, pos, oversized = b"", 0, False
    while True:
        end = buf.find(b"\n", pos)
        if end >= 0:
            yield None if oversized or end - pos > limit else buf[pos:end]
            pos, oversized = end + 1, False
            continue
        chunk = stream.read1(_CHUNK)
        if not chunk:
            if oversized or len(buf) - pos > limit:
                yield None
            elif pos < len(buf):
                yield buf[pos:]
            return
        if len(buf) - pos > limit:
            oversized, pos = True, len(buf)
        buf, pos = buf[pos:] + chunk, 0


def _decode(data: bytes, first: bool) -> str:
    text = data.decode("utf-8", "replace")
    return text[1:] if first and text.startswith("\ufeff") else text


# --------------------------------------------------------------------------- SDF framing
def _is_counts_line(line: bytes) -> bool:
    line = line.rstrip()
    return line.endswith((b"V2000", b"V3000")) and line[:3].strip().isdigit() and line[3:6].strip().isdigit()


def _may_hold_several(data: bytes) -> bool:
    """Whether a block has a second ``M  END`` or a second ``V2000``/``V3000`` (cheap scans)."""
    end = data.find(b"M  END")
    if end >= 0 and data.find(b"M  END", end + 6) >= 0:
        return True
    for version in (b"V2000", b"V3000"):
        first = data.find(version, 0, 512)  # on the counts line, near the start
        if first >= 0:
            return data.find(version, first + 5) >= 0
    return data.find(b"V2000") >= 0 or data.find(b"V3000") >= 0  # no counts line where expected


def _split_molecules(data: bytes, line: int) -> Iterator[_Frame]:
    """The molecules of one ``$$$$``-delimited block (normally one)."""
    if not _may_hold_several(data):
        yield _Frame(data, line)
        return
    lines = data.split(b"\n")
    offsets = [0, *itertools.accumulate(len(text) + 1 for text in lines)]
    starts = [0]
    for number, text in enumerate(lines):
        if number - 3 >= starts[-1] + 4 and _is_counts_line(text):
            starts.append(number - 3)
    ends = starts[1:] + [len(lines)]
    for k, (start, end) in enumerate(zip(starts, ends)):
        piece = data[offsets[start]: min(offsets[end], len(data))]
        ends_mol = sum(text.startswith(b"M  END") for text in lines[start:end])
        if k + 1 < len(starts):
            error = f"no $$$$ line after this record (the next record starts at line {line + end})"
        elif ends_mol > 1:
            error = f"{ends_mol} 'M  END' lines in one record (is a $$$$ line missing?)"
        else:
            error = ""
        yield _Frame(piece, line + start, error)


def _sdf_frames(stream: BinaryIO, limit: int) -> Iterator[_Frame]:
    """Records of an SDF stream as bytes, split at ``$$$$`` lines, bounded by ``limit`` bytes."""
    buf, pos, line = b"", 0, 1
    at_line_start, in_terminator, eof = True, False, False
    oversized: tuple[bytes, int] | None = None  # (title, first line) of a record being skipped
    while True:
        if in_terminator:  # drop the rest of the $$$$ line
            end = buf.find(b"\n", pos)
            if end >= 0:
                pos, line, in_terminator, at_line_start = end + 1, line + 1, False, True
            elif eof:
                return
            else:
                pos = len(buf)
        if not in_terminator:
            if at_line_start and buf.startswith(b"$$$$", pos):
                stop = pos
            else:
                stop = buf.find(b"\n$$$$", pos)
                stop = stop + 1 if stop >= 0 else -1
            if stop >= 0 or eof:
                stop = len(buf) if stop < 0 else stop
                if oversized is None and stop - pos > limit:
                    oversized = (_title(buf, pos, limit), line)
                line_after = line + buf.count(b"\n", pos, stop)
                if oversized:
                    error = f"SDF record over {limit:,} bytes (lines {oversized[1]}-{line_after}); not read"
                    yield _Frame(*oversized, error)
                    oversized = None
                elif not eof or buf[pos:].strip():  # (at the end: a last record without its $$$$)
                    yield from _split_molecules(buf[pos:stop], line)
                if eof and stop == len(buf):
                    return
                line, pos, in_terminator = line_after, stop, True
                continue
            if oversized is None and len(buf) - pos > limit + 4:  # over, whatever "\n$$$$" may follow
                oversized = (_title(buf, pos, limit), line)
            if oversized and len(buf) - pos > 4:  # keep what may begin "\n$$$$"
                line += buf.count(b"\n", pos, len(buf) - 4)
                pos = len(buf) - 4
                at_line_start = buf[pos - 1] == 10
        chunk = stream.read1(_CHUNK)
        eof = not chunk
        buf, pos = buf[pos:] + chunk, 0


def _title(buf: bytes, pos: int, limit: int) -> bytes:
    """The first line of the record at ``pos``, at most ``min(limit, 1000)`` bytes (always in ``buf``)."""
    size = min(limit, 1000)
    end = buf.find(b"\n", pos, pos + size)
    return buf[pos: end if end >= 0 else pos + size]


def _block(frame: _Frame) -> SdfBlock:
    return SdfBlock(_decode(frame.data, frame.line == 1).replace("\r\n", "\n"), frame.error, frame.line)


def iter_sdf_blocks(path: str | Path, max_record_bytes: int = MAX_RECORD_BYTES) -> Iterator[SdfBlock]:
    """The records of an SDF file (gzipped or not) as :class:`SdfBlock` texts, in file order."""
    with open_binary(path) as stream:
        yield from map(_block, _sdf_frames(stream, max_record_bytes))


def count_sdf_records(path: str | Path, max_record_bytes: int = MAX_RECORD_BYTES) -> int:
    """How many records :func:`iter_sdf_blocks` yields for ``path``."""
    with open_binary(path) as stream:
        return sum(1 for _ in _sdf_frames(stream, max_record_bytes))


def block_name(block: str) -> str:
    """The title line (first line) of an SDF record."""
    return block.split("\n", 1)[0].strip()


def hill_formula(symbols: Iterable[str]) -> str:
    """Hill-ordered formula of atom ``symbols`` (carbon first, then alphabetical)."""
    counts = Counter(symbols)
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in sorted(counts, key=lambda s: (s != "C", s)))


def block_heavy_formula(block: str) -> str:
    """Heavy-atom formula read straight from a V2000 atom block (no RDKit, no sanitising)."""
    lines = block.split("\n")
    if len(lines) < 4 or "V3000" in lines[3]:
        raise ValueError("not a V2000 molfile record")
    symbols = (line[31:34].strip() for line in lines[4: 4 + int(lines[3][:3])])
    return hill_formula(symbol for symbol in symbols if symbol not in ("H", "D", "T"))


# --------------------------------------------------------------------------- records
def sd_fields(block: str) -> dict[str, str]:
    """The data items of an SDF record (``> <name>`` then value lines up to a blank line)."""
    end = _MOL_END.search(block)
    if end is None:
        return {}
    items: dict[str, str] = {}
    name, value = None, []
    for line in block[end.start():].split("\n")[1:]:
        if name is None:
            if line.startswith(">"):
                opened, closed = line.find("<"), line.rfind(">")
                name, value = (line[opened + 1: closed] if 0 < opened < closed else ""), []
        elif line.strip():
            value.append(line.rstrip("\r"))
        else:
            items[name], name = "\n".join(value), None
    if name is not None:
        items[name] = "\n".join(value)
    return items


def _mol_from_block(block: str) -> Chem.Mol:
    """Parse an SDF record, sanitised, keeping its explicit hydrogens; on failure find out why."""
    mol = Chem.MolFromMolBlock(block, sanitize=True, removeHs=False)
    if mol is not None:
        return mol
    raw = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False)
    if raw is None:
        raise MoleculeError("RDKit cannot read this SDF record (malformed mol block)")
    try:
        Chem.SanitizeMol(raw)
    except Exception as err:  # RDKit raises several sanitisation exception types
        raise MoleculeError(f"RDKit cannot sanitise this record: {err}") from None
    raise MoleculeError("RDKit cannot read this SDF record")


def _canonical_smiles(mol: Chem.Mol) -> str:
    """Canonical SMILES without explicit hydrogens (``mol`` is sanitised already: not again)."""
    try:
        return Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False))
    except Exception:  # RDKit raises several types; keep the hydrogens then
        return Chem.MolToSmiles(mol)


def _sdf_record(index: int, block: SdfBlock) -> Record:
    name = block_name(block) or str(index)
    try:
        if block.error:
            raise MoleculeError(block.error)
        if not block.strip():
            raise MoleculeError("empty SDF record")
        mol = _mol_from_block(block)
        return Record(index, name, mol, _canonical_smiles(mol), fields=sd_fields(block))
    except MoleculeError as err:
        return Record(index, name, None, "", str(err), sd_fields(block) if not block.error else {})


def _smiles_record(index: int, name: str, smiles: str, max_field_chars: int) -> Record:
    try:
        if len(smiles) > max_field_chars:
            raise MoleculeError(f"SMILES of {len(smiles):,} characters exceeds the limit of {max_field_chars:,}")
        return Record(index, name, mol_from_smiles(smiles), smiles)
    except MoleculeError as err:
        return Record(index, name, None, "" if len(smiles) > max_field_chars else smiles, str(err))


def _read_smi(
    stream: BinaryIO, limit: int, max_field_chars: int, select: Callable[[int], bool]
) -> Iterator[Record]:
    """One record a line: SMILES, whitespace, name; a first line ``smiles ...`` is a header."""
    index, blank = 0, 0  # blank lines are records only when a record follows them
    for number, raw in enumerate(_lines(stream, limit)):
        if number == 0 and raw is not None and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # a byte order mark
        if raw is not None and not raw.strip():
            blank += 1
            continue
        for k in range(index, index + blank):
            if select(k):
                yield Record(k, str(k), None, "", "empty SMILES")
        index, blank = index + blank, 0
        if raw is None:
            if select(index):
                yield Record(index, str(index), None, "", f"line {number + 1} is over {limit:,} bytes")
        elif b"\r" in raw.rstrip(b"\r"):  # old-Mac "\r" line ends: one line would hide several records
            if select(index):
                yield Record(index, str(index), None, "", f"line {number + 1} holds a carriage return "
                             "(\\r line ends are not read; save the file with \\n line ends)")
        elif number == 0 or select(index):
            parts = _decode(raw, number == 0).split(maxsplit=1) or [""]  # [""]: Unicode whitespace only
            if number == 0 and parts[0].lower() == "smiles":
                continue  # header line
            if select(index):
                name = parts[1].strip() if len(parts) > 1 else ""
                yield _smiles_record(index, name or str(index), parts[0], max_field_chars)
        index += 1


def _read_csv(
    stream: BinaryIO, path: Path, limit: int, max_field_chars: int, select: Callable[[int], bool]
) -> Iterator[Record]:
    """Rows of a CSV with a ``smiles`` column (name from ``name``/``id``/``mol_id``/``idx``).

    A row whose fields hold whitespace inside the SMILES, a line break (an unclosed quote?)
    or more than ``max_field_chars`` characters is an error record; blank lines are no rows.
    """
    fed = {"bytes": 0, "line": 0}

    def lines() -> Iterator[str]:
        for raw in _lines(stream, limit):
            fed["line"] += 1
            fed["bytes"] += len(raw) if raw is not None else 0
            if fed["bytes"] > limit:
                raise DamagedInputError(
                    f"{path}: the CSV record ending at line {fed['line']} runs over {limit:,} bytes "
                    "(an unclosed quote?); the records after it cannot be read")
            yield (_OVERSIZED if raw is None else _decode(raw, fed["line"] == 1)) + "\n"

    if csv.field_size_limit() <= limit:  # let the csv module read fields of limit + 1 characters
        csv.field_size_limit(min(limit + 1, 2**31 - 1))
    reader = csv.reader(lines())
    try:
        header = next(reader, None)
    except csv.Error as err:
        raise ValueError(f"{path}: cannot read the CSV header ({err})") from None
    if header is None:  # an empty file: no records, as an empty .smi
        return
    columns = {c.lower().strip(): i for i, c in enumerate(header or [])}
    if "smiles" not in columns:
        raise ValueError(f"{path}: CSV input needs a 'smiles' column (found {_shorten(str(header), 200)})")
    smiles_at = columns["smiles"]
    name_at = next((columns[c] for c in ("name", "id", "mol_id", "idx") if c in columns), None)
    index = 0
    while True:
        fed["bytes"], first = 0, fed["line"] + 1
        try:
            row = next(reader, None)
        except csv.Error as err:
            if select(index):
                yield Record(index, str(index), None, "", f"line {first}: unreadable CSV row ({err})")
            index += 1
            continue
        if row is None:
            return
        if not row:
            continue  # a blank line
        if not select(index):
            index += 1
            continue
        name = row[name_at].strip() if name_at is not None and name_at < len(row) else ""
        name = name if name and len(name) <= max_field_chars and "\n" not in name else str(index)
        smiles = row[smiles_at].strip() if smiles_at < len(row) else ""
        problem = _csv_row_problem(row, header, smiles, max_field_chars, limit)
        if problem:
            where = f"line {first}" if fed["line"] == first else f"lines {first}-{fed['line']}"
            shown = smiles if len(smiles) <= max_field_chars and _OVERSIZED not in smiles else ""
            yield Record(index, name, None, shown, f"{where}: {problem}")
        else:
            record = _smiles_record(index, name, smiles, max_field_chars)
            record.fields = dict(zip(header, row))
            yield record
        index += 1


def _csv_row_problem(row: list[str], header: list[str], smiles: str, max_field_chars: int, limit: int) -> str:
    for position, value in enumerate(row):
        column = repr(header[position]) if position < len(header) else f"#{position + 1}"
        if _OVERSIZED in value:
            return f"a line over {limit:,} bytes"
        if len(value) > max_field_chars:
            return f"field {column} of {len(value):,} characters exceeds the limit of {max_field_chars:,}"
        if "\n" in value or "\r" in value:
            return f"field {column} holds a line break (an unclosed quote?)"
    if _WHITESPACE.search(smiles):
        return f"SMILES {_shorten(smiles)} contains whitespace"
    return ""


def read_records(
    path: str | Path,
    *,
    max_field_chars: int = MAX_FIELD_CHARS,
    max_record_bytes: int = MAX_RECORD_BYTES,
    select: Callable[[int], bool] | None = None,
) -> Iterator[Record]:
    """Stream the records of ``path`` (``.sdf``, ``.smi`` or ``.csv``, gzipped or not).

    SDF molecules are sanitised with their explicit hydrogens kept (the consumer chooses the
    hydrogen policy); ``Record.smiles`` is their canonical SMILES without explicit hydrogens.
    ``select(index)``: when given, only those records are parsed and yielded (all are framed,
    so indices do not change). Raises ``FileNotFoundError``/``ValueError`` for the file
    itself, and :class:`~tmzoo.io.files.DamagedInputError` after the records before a damaged part.
    """
    path = Path(path)
    kind = file_kind(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    select = select or (lambda index: True)
    with open_binary(path) as stream:
        if kind == ".sdf":
            frames = enumerate(_sdf_frames(stream, max_record_bytes))
            yield from (_sdf_record(index, _block(frame)) for index, frame in frames if select(index))
        elif kind == ".smi":
            yield from _read_smi(stream, max_record_bytes, max_field_chars, select)
        else:
            yield from _read_csv(stream, path, max_record_bytes, max_field_chars, select)


def count_records(
    path: str | Path, *, max_field_chars: int = MAX_FIELD_CHARS, max_record_bytes: int = MAX_RECORD_BYTES
) -> int:
    """How many records :func:`read_records` yields for ``path`` (framed, not parsed)."""
    seen = 0

    def select(index: int) -> bool:
        nonlocal seen
        seen = max(seen, index + 1)
        return False

    for _ in read_records(path, select=select, max_field_chars=max_field_chars, max_record_bytes=max_record_bytes):
        pass
    return seen


__all__ = [
    "MAX_FIELD_CHARS", "MAX_RECORD_BYTES", "Record", "SdfBlock", "block_heavy_formula", "block_name", "count_records",
    "count_sdf_records", "file_kind", "iter_sdf_blocks", "read_records", "sd_fields",
]
