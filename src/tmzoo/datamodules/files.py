"""Users' own molecule files (``.smi``, ``.csv``, ``.sdf``) as a datamodule for ``tmzoo predict``."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from tmzoo.chem.molecule import MoleculeError
from tmzoo.datamodules.base import MoleculeDataModule
from tmzoo.io.featurize import featurize_record
from tmzoo.io.records import file_kind, read_records

log = logging.getLogger(__name__)


class FilesDataModule(MoleculeDataModule):
    """Predict-only datamodule over one user file.

    Args:
        path: ``.sdf`` (coordinates used), ``.smi`` or ``.csv`` with a ``smiles`` column.
        mode: ``auto`` (2D+3D with coordinates, else 2D), ``2d``, ``3d`` or ``2d3d``.
        conformers: embed a seeded ETKDG+MMFF conformer for records without coordinates.
        max_atoms: records with more atoms are reported, not predicted.
        failures_csv: where records that cannot be featurised are listed (default beside ``path``).
    """

    def __init__(
        self,
        path: str,
        mode: str = "auto",
        conformers: bool = False,
        seed: int = 0,
        max_atoms: int = 512,
        failures_csv: str | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        max_hops: int = 5,
        reference_compatible: bool = False,
    ):
        super().__init__(batch_size, num_workers, max_hops, reference_compatible)
        self.path = Path(path)
        self.mode = mode
        self.conformers = conformers
        self.seed = seed
        self.max_atoms = max_atoms
        self.failures_csv = Path(failures_csv) if failures_csv else self.path.with_name(self.path.name + ".failures.csv")
        self.failures: list[tuple[int, str, str]] = []

    @property
    def has_coordinates(self) -> bool:
        return self.mode != "2d" and (self.conformers or file_kind(self.path) == ".sdf")

    def setup(self, stage: str | None = None) -> None:
        if "predict" in self.splits:
            return
        transform = self.transform()
        graphs, self.failures = [], []
        for record in read_records(self.path):
            try:
                graphs.append(featurize_record(record, transform, self.mode, True, self.max_atoms, self.conformers, self.seed))
            except MoleculeError as err:
                self.failures.append((record.index, record.name, str(err)))
            except Exception as err:  # an unexpected failure stays with its record
                self.failures.append((record.index, record.name, f"featurisation failed: {type(err).__name__}: {err}"))
        self.splits = {"predict": graphs, "test": graphs}
        if self.failures or self.failures_csv.exists():  # a stale list from an earlier run is replaced
            self._write_failures()
        if self.failures:
            log.warning(
                "%d of %d records of %s cannot be featurised; listed in %s",
                len(self.failures), len(graphs) + len(self.failures), self.path, self.failures_csv,
            )

    def _write_failures(self) -> None:
        try:
            self.failures_csv.parent.mkdir(parents=True, exist_ok=True)
            self._write_failures_file()
        except OSError as err:
            log.warning("cannot write %s (%s); the records that failed: %s", self.failures_csv, err, self.failures)

    def _write_failures_file(self) -> None:
        partial = self.failures_csv.with_name(self.failures_csv.name + ".partial")
        with open(partial, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["index", "name", "error"])
            writer.writerows(self.failures)
        os.replace(partial, self.failures_csv)
