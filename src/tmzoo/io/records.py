"""Users' molecule files (``.sdf``, ``.smi``, ``.csv``) as a stream of numbered records.

Every record of the input comes out, in order: parsed (``mol`` set) or not (``error`` says
why). Nothing is skipped silently, so outputs can keep one row per input record.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rdkit import Chem

from tmzoo.chem.molecule import MoleculeError, mol_from_smiles

SUPPORTED = (".sdf", ".smi", ".csv")


@dataclass
class Record:
    """One input record: its 0-based position, a name, the molecule or the reason it has none."""

    index: int
    name: str
    mol: Chem.Mol | None = None
    smiles: str = ""
    error: str = ""


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace")
    return open(path, encoding="utf-8-sig", errors="replace", newline="")


def file_kind(path: str | Path) -> str:
    """``.sdf``, ``.smi`` or ``.csv`` (a trailing ``.gz`` is allowed); ValueError otherwise."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    if kind not in SUPPORTED:
        raise ValueError(f"{path}: unsupported input type {kind or '(none)'!r}; use one of {', '.join(SUPPORTED)}")
    return kind


def _sdf_blocks(handle) -> Iterator[str]:
    block: list[str] = []
    for line in handle:
        if line.strip() == "$$$$":
            yield "".join(block)
            block = []
        else:
            block.append(line)
    if "".join(block).strip():
        yield "".join(block)


def _mol_from_block(block: str) -> Chem.Mol:
    """Parse like ``SDMolSupplier`` (sanitise, remove Hs); on failure find out why."""
    mol = Chem.MolFromMolBlock(block)
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


def _read_sdf(handle) -> Iterator[Record]:
    for index, block in enumerate(_sdf_blocks(handle)):
        name = block.splitlines()[0].strip() if block.strip() else ""
        try:
            if not block.strip():
                raise MoleculeError("empty SDF record")
            mol = _mol_from_block(block)
            yield Record(index, name or str(index), mol, Chem.MolToSmiles(mol))
        except MoleculeError as err:
            yield Record(index, name or str(index), None, "", str(err))


def _read_smi(handle) -> Iterator[Record]:
    lines = handle.read().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    index = 0
    for number, line in enumerate(lines):
        fields = line.split(maxsplit=1)
        if number == 0 and fields and fields[0].lower() == "smiles":
            continue  # header line
        smiles = fields[0] if fields else ""
        name = fields[1].strip() if len(fields) > 1 else str(index)
        yield _smiles_record(index, name, smiles)
        index += 1


def _read_csv(handle, path: Path) -> Iterator[Record]:
    reader = csv.DictReader(handle)
    columns = {c.lower().strip(): c for c in (reader.fieldnames or [])}
    if "smiles" not in columns:
        raise ValueError(f"{path}: CSV input needs a 'smiles' column (found {reader.fieldnames})")
    name_col = next((columns[c] for c in ("name", "id", "mol_id", "idx") if c in columns), None)
    for index, row in enumerate(reader):
        smiles = (row.get(columns["smiles"]) or "").strip()
        name = (row.get(name_col) or "").strip() if name_col else ""
        yield _smiles_record(index, name or str(index), smiles)


def _smiles_record(index: int, name: str, smiles: str) -> Record:
    try:
        return Record(index, name, mol_from_smiles(smiles), smiles)
    except MoleculeError as err:
        return Record(index, name, None, smiles, str(err))


def read_records(path: str | Path) -> Iterator[Record]:
    """Stream the records of ``path``; raises ``FileNotFoundError``/``ValueError`` for the file itself."""
    path = Path(path)
    kind = file_kind(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    with _open_text(path) as handle:
        if kind == ".sdf":
            yield from _read_sdf(handle)
        elif kind == ".smi":
            yield from _read_smi(handle)
        else:
            yield from _read_csv(handle, path)
