"""QM9 from PyG's raw layout, with hydrogens, DFT coordinates and PyG's target units.

``root`` holds ``raw/gdb9.sdf``, ``raw/gdb9.sdf.csv`` and ``raw/uncharacterized.txt``
(each possibly gzipped; ``root`` itself may be the raw folder). Targets are converted as
``torch_geometric.datasets.QM9`` converts them (energies in eV). Unlike PyG, SDF records and
CSV rows are joined by molecule name (``gdb_N``) and the uncharacterised list is read as
molecule numbers, so subsets of QM9 keep the right labels and skip the right molecules.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rdkit import Chem
from torch_geometric.data import Data
from torch_geometric.datasets.qm9 import conversion as PYG_CONVERSION

from tmzoo.chem.molecule import MoleculeError, mol_to_data
from tmzoo.datamodules.base import positions_of
from tmzoo.datamodules.cache import FeatureCache, RecordMismatchError
from tmzoo.datamodules.datasets import MoleculeDataset
from tmzoo.datamodules.download import download_qm9
from tmzoo.datamodules.featurized import FeaturizedDataModule
from tmzoo.datamodules.readers import (
    block_name,
    count_sdf_records,
    find_file,
    iter_sdf_blocks,
    open_text,
)
from tmzoo.datamodules.splits import load_split, random_split, save_split, split_sizes

log = logging.getLogger(__name__)

READER_VERSION = 2  # part of the cache key: bump it when the reader's output changes

# The 19 targets in the column order of PyG's ``QM9.y`` (``PYG_CONVERSION`` applies to them).
QM9_TARGETS = [
    "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "u0", "u298", "h298", "g298", "cv",
    "u0_atom", "u298_atom", "h298_atom", "g298_atom", "A", "B", "C",
]
QM9_UNITS = {
    "mu": "D", "alpha": "a0^3", "r2": "a0^2", "cv": "cal/(mol K)", "A": "GHz", "B": "GHz",
    "C": "GHz", **{name: "eV" for name in (
        "homo", "lumo", "gap", "zpve", "u0", "u298", "h298", "g298",
        "u0_atom", "u298_atom", "h298_atom", "g298_atom")},
}
QM9_FILES = ("gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt")


def read_qm9_targets(csv_path: Path) -> pd.DataFrame:
    """The CSV's 19 targets in PyG's order and units, indexed by ``mol_id``."""
    with open_text(csv_path) as handle:
        table = pd.read_csv(handle)
    missing = set(QM9_TARGETS + ["mol_id"]) - set(table.columns)
    if missing:
        raise ValueError(f"{csv_path} lacks the columns {sorted(missing)}")
    for column in QM9_TARGETS:
        numbers = pd.to_numeric(table[column], errors="coerce")
        bad = np.flatnonzero(numbers.isna().to_numpy() & table[column].notna().to_numpy())
        if len(bad):
            row = int(bad[0])
            raise ValueError(
                f"{csv_path}, row {row + 1} (line {row + 2}, {table['mol_id'].iloc[row]}): "
                f"{column} is {table[column].iloc[row]!r}, not a number"
                + (f" ({len(bad)} such rows)" if len(bad) > 1 else "")
            )
        table[column] = numbers
    values = table[QM9_TARGETS].to_numpy(dtype=np.float64) * PYG_CONVERSION.numpy()
    frame = pd.DataFrame(values, index=table["mol_id"].astype(str), columns=QM9_TARGETS)
    duplicated = frame.index[frame.index.duplicated()]
    if len(duplicated):
        raise ValueError(f"{csv_path} lists {duplicated[0]} more than once")
    return frame


def read_uncharacterized(path: Path) -> set[int]:
    """Molecule numbers (the N of ``gdb_N``) listed in ``uncharacterized.txt``.

    The list is the block between the second and third ``====`` rule of the official file;
    text around it (the header, the placeholder's prose) is never read as molecule numbers.
    """
    with open_text(path) as handle:
        lines = handle.read().splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("=====")]
    if len(rules) < 2:
        raise ValueError(f"{path} is not in the official layout (no '=====' header rules)")
    end = rules[2] if len(rules) > 2 else len(lines)
    numbers = set()
    for number, line in enumerate(lines[rules[1] + 1: end], rules[1] + 2):
        if line.strip():
            try:
                numbers.add(int(line.split()[0]))
            except ValueError as err:
                raise ValueError(f"{path}:{number}: expected a molecule number") from err
    return numbers


def featurize_qm9(payload: tuple[str, list[float]], transform=None) -> Data:
    """SDF record (sanitised, hydrogens kept) + its targets -> ``Data`` (``transform`` applied if given)."""
    block, targets = payload
    if getattr(block, "error", ""):  # an SdfBlock the reader could not frame
        raise MoleculeError(block.error)
    mol = Chem.MolFromMolBlock(block, sanitize=True, removeHs=False)
    if mol is None:
        raise MoleculeError("RDKit cannot sanitise the SDF record")
    data = mol_to_data(mol)
    data.y = torch.tensor([targets], dtype=torch.float32)
    data.name = block_name(block)
    return data if transform is None else transform(data)


class QM9Dataset(MoleculeDataset):
    """QM9 as a PyG dataset: every characterised molecule with hydrogens, DFT coordinates and
    the 19 targets in PyG's column order and units (``y [1, 19]``).

    ``root`` as in the module docstring; ``None`` reads the embedded 5,000-molecule demo set.
    ``download=True`` fetches the raw files from PyG's URLs (SHA-256 checked). Other arguments:
    :class:`MoleculeDataset`.
    """

    name = "qm9"
    demo = "qm9"

    def __init__(self, root: str | Path | None = None, transform=None, pre_transform=None, **options):
        self.skipped_uncharacterized = 0
        super().__init__(root, transform, pre_transform, **options)

    @property
    def raw_file_names(self) -> list[str]:
        return list(QM9_FILES)

    @property
    def raw_dir(self) -> str:
        """``root/raw``, or ``root`` itself when it holds the raw files."""
        root = self.data_root
        for folder in (root / "raw", root):
            if all(find_file(folder, name) for name in QM9_FILES):
                return str(folder)
        return str(root / "raw")

    def download(self) -> None:
        download_qm9(self.raw_dir)

    def cache_settings(self) -> dict:  # bump READER_VERSION when reading changes
        return {"version": READER_VERSION, "sdf": {"sanitize": True, "removeHs": False},
                "targets": "pyg-v3-units",
                "join": "mol_id"}

    def featurizer(self):
        return functools.partial(featurize_qm9, transform=self.pre_transform)

    def job_count(self) -> int:
        return count_sdf_records(self.source_files()[0])

    def jobs(self):
        sdf, csv, uncharacterized = self.source_files()
        targets = read_qm9_targets(csv)
        skip = read_uncharacterized(uncharacterized)
        self.skipped_uncharacterized = 0
        rows = targets.to_numpy(dtype=np.float64)
        row_of = {name: i for i, name in enumerate(targets.index)}
        for index, block in enumerate(iter_sdf_blocks(sdf)):
            name = block_name(block)
            number = int(name[4:]) if name.startswith("gdb_") and name[4:].isdigit() else None
            if number is None:  # unnamed records: PyG's positional convention
                number, row = index + 1, index
                if row >= len(rows):
                    raise RecordMismatchError(f"SDF record {index} has no CSV row ({csv})")
            elif name in row_of:
                row = row_of[name]
            else:
                raise RecordMismatchError(f"SDF record {index} ({name}) has no row in {csv}")
            if number in skip:
                self.skipped_uncharacterized += 1
                continue
            yield index, name, (block, rows[row].tolist())
        log.info("skipped %d uncharacterised QM9 molecules", self.skipped_uncharacterized)

    def manifest_extra(self) -> dict:
        return {"skipped_uncharacterized": self.skipped_uncharacterized}

    @property
    def skipped(self) -> int:
        """Uncharacterised molecules left out (from the cache manifest)."""
        return int(self.load().manifest.get("skipped_uncharacterized", 0))


class QM9DataModule(FeaturizedDataModule):
    """QM9 for regression (and pretraining): targets by name, seeded paper-sized split.

    Args:
        root: QM9 folder (PyG layout); ``None`` reads the embedded 5,000-molecule demo set.
        targets: one name or a list, from ``QM9_TARGETS`` (energies in eV, see
            ``target_units``).
        seed: seed of the random split.
        split_sizes: ``[train, valid, test]``, one of them may be ``null`` for "the rest"
            (e.g. ``[30000, 5000, null]``); default the paper's (valid 10,000, test 10,831)
            when the data is large enough, else the same fractions.
        split_file: a ``split.json`` saved by an earlier run (record indices) to reuse.
        download: fetch the raw files into ``root`` when they are missing (:class:`QM9Dataset`).
    """

    hydrogens = True  # QM9's SDF is read with its explicit hydrogens

    def __init__(
        self,
        root: str | None = None,
        targets: str | list[str] = "gap",
        seed: int = 0,
        split_sizes: list[int | None] | None = None,
        split_file: str | None = None,
        download: bool = False,
        cache_dir: str | None = None,
        num_proc: int | None = None,
        verify_cache: str = "auto",
        batch_size: int = 32,
        num_workers: int = 0,
        max_hops: int = 5,
        reference_compatible: bool = False,
        cache_pairs: bool = False,
        batch_by_size: bool = True,
        max_atoms_per_batch: int | None = None,
        dense_batches: bool = True,
    ):
        super().__init__(root, cache_dir, num_proc, verify_cache, batch_size, num_workers,
                         max_hops, reference_compatible, cache_pairs, batch_by_size=batch_by_size,
                         max_atoms_per_batch=max_atoms_per_batch, dense_batches=dense_batches)
        self.target_names = [targets] if isinstance(targets, str) else list(targets)
        unknown = [t for t in self.target_names if t not in QM9_TARGETS]
        if unknown or not self.target_names:
            raise ValueError(f"unknown QM9 target(s) {unknown}; choose from {QM9_TARGETS}")
        self.seed = seed
        self.sizes = tuple(split_sizes) if split_sizes is not None else None
        self.split_file = Path(split_file) if split_file is not None else None
        self.dataset = QM9Dataset(root, download=download, **self.dataset_options())

    @property
    def target_units(self) -> list[str]:
        return [QM9_UNITS[t] for t in self.target_names]

    def target_columns(self) -> list[int]:
        return [QM9_TARGETS.index(t) for t in self.target_names]

    def split_positions(self, cache: FeatureCache) -> dict[str, np.ndarray]:
        records = self.dataset.record_indices()
        if self.split_file is not None:  # record indices -> cache positions
            out = {}
            for name, indices in load_split(self.split_file).items():
                out[name] = positions_of(records, indices)
                missing = indices[out[name] < 0]
                if len(missing):
                    raise ValueError(
                        f"split file {self.split_file}: {name} record {missing[0]} is not in the "
                        f"cache ({len(missing)} missing; skipped or failed molecules?)"
                    )
            return out
        sizes = self.sizes or split_sizes(len(cache))
        positions = random_split(len(cache), sizes, self.seed)
        path = cache.folder / "splits" / f"seed-{self.seed}-{'-'.join(map(str, sizes))}.json"
        if not path.is_file():  # else saved by an earlier run: a cache may be shared read-only
            try:
                save_split(path, {k: records[v] for k, v in positions.items()}, seed=self.seed)
            except OSError as err:  # a cache shared read-only: the split is still reproducible
                log.info("cannot save the split to %s: %s", path, err)
        return positions

    def split_info(self) -> dict:
        return {"seed": self.seed, "targets": self.target_names}

    @property
    def skipped(self) -> int:
        """Uncharacterised molecules left out (from the cache manifest)."""
        return self.dataset.skipped


__all__ = ["QM9DataModule", "QM9Dataset", "QM9_TARGETS", "QM9_UNITS", "read_qm9_targets", "featurize_qm9"]
