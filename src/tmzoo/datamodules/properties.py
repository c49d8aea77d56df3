"""Training on your own labelled molecules: a CSV (``smiles`` + property columns) or an SDF
whose records carry the properties.

    tmzoo fit --config experiments/finetune/own_data.yaml --data.path props.csv \\
              --data.targets [solubility] --model.init_args.pretrained model.ckpt
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from rdkit import Chem
from rdkit.Chem.Scaffolds import MurckoScaffold

from tmzoo.chem.molecule import MoleculeError, mol_to_data
from tmzoo.datamodules.base import MoleculeDataModule
from tmzoo.datamodules.splits import random_split, save_split
from tmzoo.io.featurize import apply_hydrogens
from tmzoo.io.files import FAILURES_FILE, write_failures
from tmzoo.io.records import file_kind, read_records

log = logging.getLogger(__name__)


class PropertiesDataModule(MoleculeDataModule):
    """Molecules and their properties from one file, split and standardised for fine-tuning.

    Args:
        path: ``.csv`` (a ``smiles`` column and the target columns) or ``.sdf`` (properties as
            SD data items); gzipped files are read too.
        targets: the property columns to learn (one model, several targets).
        split: ``random`` (seeded) or ``scaffold`` (Bemis–Murcko scaffolds kept within one
            split; large scaffold groups go to train, the rest in seeded order).
        split_fractions: train / validation / test fractions.
        seed: seed of the split.
        target_units: one unit per target (``eV`` energies are reported in meV); default none.
        max_atoms: records with more atoms are reported, not used.
        dense_batches: padded batches (Transformer-M); the CLI sets ``False`` for PyG-batch encoders.
        hydrogens: read explicit hydrogens as atoms (added from SMILES, kept from SDF); recorded
            in the checkpoint so inference does the same.

    An empty or ``nan`` label is unknown and masked out of loss and metrics; a label that is
    not a number, or a record RDKit cannot read, is listed with the reason in ``failures.csv``
    in the run folder, and the other records go on. The split (record indices in the file) is
    saved as ``split.json`` beside the run; mean and std come from the train split.
    """

    def __init__(
        self,
        path: str,
        targets: Sequence[str],
        split: Literal["random", "scaffold"] = "random",
        split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        target_units: Sequence[str] | None = None,
        max_atoms: int = 512,
        batch_size: int = 32,
        num_workers: int = 0,
        max_hops: int = 5,
        reference_compatible: bool = False,
        dense_batches: bool = True,
        hydrogens: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, max_hops=max_hops,
                         reference_compatible=reference_compatible, dense_batches=dense_batches)
        self.hydrogens = hydrogens
        self.path = Path(path)
        self.kind = file_kind(self.path)
        self.target_names = [targets] if isinstance(targets, str) else [str(t) for t in targets]
        if not self.target_names:
            raise ValueError("give at least one target column (--data.targets [name, ...])")
        if split not in ("random", "scaffold"):
            raise ValueError(f"split must be 'random' or 'scaffold', got {split!r}")
        fractions = [float(f) for f in split_fractions]
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6 or fractions[0] == 0:
            raise ValueError(f"split_fractions must be 3 non-negative numbers summing to 1, got {list(split_fractions)}")
        self.split = split
        self.split_fractions = fractions
        self.seed = seed
        self._units = list(target_units) if target_units is not None else [""] * self.num_targets
        if len(self._units) != self.num_targets:
            raise ValueError(f"{len(self._units)} target_units for {self.num_targets} targets")
        self.max_atoms = max_atoms
        self.failures: list[tuple[int, str, str]] = []

    @property
    def target_units(self) -> list[str]:
        return list(self._units)

    @property
    def has_coordinates(self) -> bool:
        return self.kind == ".sdf"

    def train_targets(self) -> torch.Tensor:
        self._ensure_ready()
        train = self.splits["train"]
        return torch.cat([d.y for d in train]) if train else super().train_targets()

    def _read(self) -> list:
        transform = self.transform()
        graphs, self.failures, self._scaffolds = [], [], []
        for record in read_records(self.path):
            fields = _fields(record)
            if self.kind == ".csv" and record.index == 0:
                missing = [t for t in self.target_names if t not in fields]
                if missing:
                    raise ValueError(f"{self.path}: no column {missing} (columns: {list(fields)})")
            try:
                if record.mol is None:
                    raise MoleculeError(record.error or "no molecule")
                y = [_label(fields, t) for t in self.target_names]
                data = transform(mol_to_data(apply_hydrogens(record.mol, self.hydrogens), max_atoms=self.max_atoms))
                data.y = torch.tensor([y], dtype=torch.float32)
                data.idx = torch.tensor([record.index])
                graphs.append(data)
                self._scaffolds.append(_scaffold(record.mol))
            except (MoleculeError, ValueError) as err:
                self.failures.append((record.index, record.name, str(err)))
        if self.failures:
            log.warning("%d of %d records of %s cannot be used; listed in %s of the run folder",
                        len(self.failures), len(graphs) + len(self.failures), self.path, FAILURES_FILE)
        if len(graphs) < 3:
            raise ValueError(f"{self.path}: {len(graphs)} usable records; at least 3 are needed to split")
        known = torch.isfinite(torch.cat([d.y for d in graphs])).any(0)
        empty = [t for t, k in zip(self.target_names, known.tolist()) if not k]
        if empty:
            where = "column" if self.kind == ".csv" else "SD data item"
            raise ValueError(f"{self.path}: no record has a value for the {where} {empty}")
        return graphs

    def _ensure_ready(self) -> None:
        if self.splits:
            return
        graphs = self._read()
        if self.split == "scaffold":
            positions = scaffold_split(self._scaffolds, self.split_fractions, self.seed)
        else:
            positions = random_split(len(graphs), _sizes(len(graphs), self.split_fractions), self.seed)
        self.splits = {name: [graphs[i] for i in pos] for name, pos in positions.items()}
        self.splits["predict"] = self.splits["test"]

    def setup(self, stage: str | None = None) -> None:
        self._ensure_ready()
        trainer = getattr(self, "trainer", None)
        log_dir = trainer.log_dir if trainer is not None else None
        if trainer is not None and trainer.is_global_zero and log_dir:
            self.save_split(log_dir)
            if self.failures:
                write_failures(Path(log_dir) / FAILURES_FILE, self.failures)

    def record_indices(self, split: str) -> np.ndarray:
        self._ensure_ready()
        return np.array([int(data.idx) for data in self.splits[split]], dtype=np.int64)

    def save_split(self, folder: str | Path, filename: str = "split.json") -> Path:
        split = {name: self.record_indices(name) for name in ("train", "val", "test")}
        return save_split(Path(folder) / filename, split, dataset=str(self.path),
                          split_kind=self.split, seed=self.seed, fractions=self.split_fractions)


def _fields(record) -> dict[str, str]:
    """The record's CSV row or SD data items."""
    fields = getattr(record, "fields", None)
    if fields is None and record.mol is not None:
        fields = {k: str(v) for k, v in record.mol.GetPropsAsDict(includePrivate=False).items()}
    return fields or {}


def _label(fields: dict, name: str) -> float:
    """A label as float; empty / ``nan`` / missing is unknown (NaN); anything else is an error."""
    text = "" if fields.get(name) is None else str(fields.get(name)).strip()
    if text.lower() in ("", "nan", "na", "n/a", "none", "null"):
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"property {name!r} is not a number: {text[:40]!r}") from None
    if math.isinf(value):
        raise ValueError(f"property {name!r} is infinite")
    return value


def _scaffold(mol: Chem.Mol) -> str:
    try:
        return MurckoScaffold.MurckoScaffoldSmiles(mol=Chem.RemoveHs(mol), includeChirality=False)
    except Exception:  # noqa: BLE001 - RDKit raises several types; an odd molecule is its own group
        return Chem.MolToSmiles(mol)


def _sizes(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    val, test = round(n * fractions[1]), round(n * fractions[2])
    if n >= 3:  # at least one molecule in each split asked for
        val, test = max(val, int(fractions[1] > 0)), max(test, int(fractions[2] > 0))
    return n - val - test, val, test


def scaffold_split(scaffolds: Sequence[str], fractions: Sequence[float], seed: int) -> dict[str, list[int]]:
    """Bemis–Murcko scaffold split of molecules with ``scaffolds`` (chemprop's balanced
    variant): no scaffold in two splits; groups larger than half the validation or test size
    go to train, the rest in seeded order."""
    groups: dict[str, list[int]] = {}
    for i, scaffold in enumerate(scaffolds):
        groups.setdefault(scaffold, []).append(i)
    train_size, val_size, test_size = _sizes(len(scaffolds), fractions)
    big = [g for g in groups.values() if len(g) > max(val_size, test_size) / 2]
    small = [g for g in groups.values() if len(g) <= max(val_size, test_size) / 2]
    small = [small[i] for i in np.random.default_rng(seed).permutation(len(small))]
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for group in sorted(big, key=len, reverse=True) + small:
        if len(out["train"]) + len(group) <= train_size:
            out["train"] += group
        elif len(out["val"]) + len(group) <= val_size:
            out["val"] += group
        else:
            out["test"] += group
    return {name: sorted(pos) for name, pos in out.items()}


__all__ = ["PropertiesDataModule", "scaffold_split"]
