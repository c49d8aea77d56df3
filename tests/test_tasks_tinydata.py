"""A tiny in-memory datamodule (SMILES + ETKDG coordinates) for the task and CLI tests.

Importable as ``test_tasks_tinydata.TinyMolecules`` (tests/ is on ``sys.path`` under pytest;
subprocesses get it through ``PYTHONPATH``).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from rdkit import Chem
from rdkit.Chem import AllChem, Descriptors

from tmzoo.chem.molecule import mol_to_data
from tmzoo.data.transforms import transformer_m_transform
from tmzoo.datamodules.base import MoleculeDataModule, target_statistics
from tmzoo.data.resumable import ResumableDataLoader

SMILES = [
    "CCO", "CC(=O)O", "c1ccccc1", "CCN", "CC(C)O", "C1CCCCC1", "CC#N", "OC(=O)CN",
    "c1ccncc1", "CCOC", "C=CC=C", "CC(=O)N", "Oc1ccccc1", "CCCCO", "NC(=O)N", "C1CCOC1",
]


@lru_cache(maxsize=4)
def tiny_records(with_coordinates: bool = True, max_hops: int = 5) -> tuple:
    """Featurised molecules; ``y = [gap-like, logP]`` made up from RDKit descriptors (learnable)."""
    transform = transformer_m_transform(max_hops=max_hops)
    records = []
    for i, smi in enumerate(SMILES):
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        AllChem.EmbedMolecule(mol, randomSeed=i)
        mol = Chem.RemoveHs(mol)
        data = mol_to_data(mol, use_coordinates=with_coordinates)
        gap = 8.0 - 0.4 * mol.GetNumAtoms() + 0.5 * Descriptors.NumHDonors(mol)
        data.y = torch.tensor([[gap, Descriptors.MolLogP(mol)]], dtype=torch.float32)
        data.idx = torch.tensor([i])
        records.append(transform(data))
    return tuple(records)


class TinyMolecules(MoleculeDataModule):
    """16 small molecules: 12 train, 4 val (also test/predict); targets ``gap`` (eV) and ``logp``."""

    def __init__(
        self, batch_size: int = 4, num_targets: int = 1, with_coordinates: bool = True, gap_offset: float = 0.0, **kwargs
    ):
        super().__init__(batch_size=batch_size, **kwargs)
        self._num_targets = num_targets
        self.with_coordinates = with_coordinates
        self.gap_offset = gap_offset  # subtracted from the gap (the overfit test centres it)

    @property
    def target_names(self) -> list[str]:
        return ["gap", "logp"][: self._num_targets]

    @property
    def target_units(self) -> list[str]:
        return ["eV", ""][: self._num_targets]

    def _records(self):
        out = []
        for r in tiny_records(self.with_coordinates, self.featurization["max_hops"]):
            r = r.clone()
            r.y = r.y[:, : self._num_targets] - torch.tensor([self.gap_offset, 0.0][: self._num_targets])
            out.append(r)
        return out

    @property
    def target_mean(self) -> list[float]:
        return target_statistics(torch.cat([r.y for r in self._records()[:12]]))[0]

    @property
    def target_std(self) -> list[float]:
        return target_statistics(torch.cat([r.y for r in self._records()[:12]]))[1]

    @property
    def has_coordinates(self) -> bool:
        return self.with_coordinates

    def setup(self, stage: str | None = None) -> None:
        records = self._records()
        self.splits = {"train": records[:12], "val": records[12:], "test": records[12:], "predict": records[12:]}

    def train_dataloader(self):
        return ResumableDataLoader(self.splits["train"], batch_size=self.batch_size, shuffle=True)


def test_tiny_molecules_have_targets_and_coordinates():
    dm = TinyMolecules(num_targets=2)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch.y.shape == (4, 2) and torch.isfinite(batch.y).all()
    assert bool(batch.has_pos.all()) and batch.pos.abs().sum() > 0
    assert dm.target_names == ["gap", "logp"] and len(dm.target_mean) == 2


def write_properties_csv(path, with_missing: bool = True) -> str:
    """A CSV of the tiny molecules' SMILES with ``gap`` (eV) and ``logp`` columns (one ``logp``
    left empty when ``with_missing``); returns the path."""
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["smiles", "name", "gap", "logp"])
        for i, (smi, record) in enumerate(zip(SMILES, tiny_records())):
            gap, logp = record.y[0].tolist()
            writer.writerow([smi, f"mol{i}", f"{gap:.6g}", "" if with_missing and i == 3 else f"{logp:.6g}"])
    return str(path)
