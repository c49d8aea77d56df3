"""PCQM4Mv2 (OGB-LSC) with the 3D training SDF, read as the Transformer-M reference reads it.

``root`` holds ``pcqm4m-v2/raw/data.csv.gz`` (idx, smiles, homolumogap),
``pcqm4m-v2/split_dict.pt`` and ``pcqm4m-v2-train.sdf`` (or ``.sdf.gz``): the official
layout (:func:`tmzoo.datamodules.download.download_pcqm4mv2` fetches it). Row ``i`` is
featurised from SDF record ``i`` (graph and coordinates; RDKit's defaults: sanitise, remove
hydrogens) when the SDF has one, else from its SMILES without coordinates. Unlike the
reference, the pairing is checked: record counts, and per record that the SDF molecule has
the heavy-atom formula of row ``i``'s SMILES; the first bad record stops the build.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rdkit import Chem

from tmzoo.chem.molecule import MoleculeError, heavy_atom_formula, mol_to_data
from tmzoo.datamodules.base import positions_of
from tmzoo.datamodules.cache import FeatureCache, RecordMismatchError
from tmzoo.datamodules.datasets import MoleculeDataset
from tmzoo.datamodules.download import download_pcqm4mv2
from tmzoo.datamodules.featurized import FeaturizedDataModule
from tmzoo.datamodules.readers import (
    block_heavy_formula,
    count_sdf_records,
    find_file,
    iter_sdf_blocks,
)

log = logging.getLogger(__name__)

READER_VERSION = 1  # part of the cache key: bump it when the reader's output changes

TEST_SPLITS = ("valid", "test-dev", "test-challenge")
OFFICIAL_TEST_SIZES = {"test-dev": 147_037, "test-challenge": 147_432}


def read_split_dict(path: Path) -> dict[str, np.ndarray]:
    """``split_dict.pt`` as numpy index arrays (tensors or numpy arrays inside; no code run)."""
    core = getattr(np, "_core", None) or np.core
    allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype,
               *{type(np.dtype(t)) for t in (np.int64, np.int32, np.uint32, np.float64)}]
    with torch.serialization.safe_globals(allowed):
        raw = torch.load(path, map_location="cpu", weights_only=True)
    missing = {"train", "valid", "test-dev", "test-challenge"} - set(raw)
    if missing:
        raise ValueError(f"{path} lacks the split(s) {sorted(missing)}")
    return {k: np.asarray(v, dtype=np.int64).reshape(-1) for k, v in raw.items()}


def smiles_heavy_formula(smiles: str) -> str | None:
    """Heavy-atom formula of a SMILES, parsed without sanitising (``None`` if unparsable)."""
    mol = Chem.MolFromSmiles(smiles, sanitize=False) if isinstance(smiles, str) else None
    return heavy_atom_formula(mol) if mol is not None else None


def first_mismatch(blocks, smiles: list[str]) -> tuple[int, str] | None:
    """The first SDF record whose heavy-atom formula differs from its row's SMILES."""
    for index, block in enumerate(blocks):
        if index >= len(smiles):
            return index, f"SDF record {index} has no CSV row ({len(smiles)} rows)"
        expected = smiles_heavy_formula(smiles[index])
        found = block_heavy_formula(block)
        if expected is not None and expected != found:
            return index, (f"SDF record {index} is {found}, but CSV row {index} "
                           f"({smiles[index]}) is {expected}")
    return None


def featurize_pcqm4mv2(payload: tuple[str, str | None, float], transform=None):
    """Row (SMILES, SDF record or ``None``, gap) -> ``Data`` with ``y [1, 1]`` (``transform``
    applied if given)."""
    smiles, block, gap = payload
    if block is None:
        mol = Chem.MolFromSmiles(smiles) if isinstance(smiles, str) else None
        if mol is None:
            raise MoleculeError(f"RDKit cannot parse SMILES {smiles!r}")
        data = mol_to_data(mol, use_coordinates=False)
    else:
        if getattr(block, "error", ""):  # an SdfBlock the reader could not frame
            raise MoleculeError(block.error)
        mol = Chem.MolFromMolBlock(block)  # SDMolSupplier's defaults: sanitise, remove Hs
        expected = smiles_heavy_formula(smiles)
        if expected is None:
            raise MoleculeError(f"RDKit cannot parse SMILES {smiles!r}; the SDF pairing is unchecked")
        found = heavy_atom_formula(mol) if mol is not None else block_heavy_formula(block)
        if found != expected:
            raise RecordMismatchError(
                f"the SDF molecule is {found}, but the row's SMILES {smiles} is {expected}; "
                "the SDF is out of step with data.csv.gz"
            )
        if mol is None:
            raise MoleculeError("RDKit cannot sanitise the SDF record")
        data = mol_to_data(mol)
    data.y = torch.tensor([[gap]], dtype=torch.float32)
    return data if transform is None else transform(data)


class PCQM4Mv2Dataset(MoleculeDataset):
    """PCQM4Mv2 as a PyG dataset: every row of ``data.csv.gz`` (``y [1, 1]``, the HOMO-LUMO gap
    in eV, NaN where unknown), with the training SDF's graph and coordinates where it has one.

    ``root`` holds OGB's layout (see the module docstring); ``None`` reads the embedded
    1,700-molecule sample. ``download=True`` fetches the missing files from OGB's URLs (SHA-256
    checked). :meth:`split` gives OGB's split by record index. Other arguments: :class:`MoleculeDataset`.
    """

    name = "pcqm4mv2"
    demo = "pcqm4mv2"

    def __init__(self, root: str | Path | None = None, transform=None, pre_transform=None, **options):
        self._rows = None
        super().__init__(root, transform, pre_transform, **options)
        if self.sdf_path is None:
            log.warning("no pcqm4m-v2-train.sdf in %s: every molecule is 2D", self.data_root)

    @property
    def raw_dir(self) -> str:
        return str(self.data_root)

    @property
    def raw_file_names(self) -> list[str]:
        return ["pcqm4m-v2/raw/data.csv.gz", "pcqm4m-v2/split_dict.pt"]

    def _download(self) -> None:
        if self.missing_raw_files() and not self.allow_download:
            raise FileNotFoundError(
                f"{self.missing_raw_files()[0]} is missing: PCQM4Mv2 needs OGB's layout under root; "
                "fetch it with tmzoo.datamodules.download.download_pcqm4mv2(root) or `download: true`"
            )
        super()._download()

    def download(self) -> None:
        download_pcqm4mv2(self.raw_dir)

    @property
    def csv_path(self) -> Path:
        return self.data_root / "pcqm4m-v2" / "raw" / "data.csv.gz"

    @property
    def split_path(self) -> Path:
        return self.data_root / "pcqm4m-v2" / "split_dict.pt"

    @property
    def sdf_path(self) -> Path | None:
        return find_file(self.data_root, "pcqm4m-v2-train.sdf")

    def split(self) -> dict[str, np.ndarray]:
        """OGB's split (``train``, ``valid``, ``test-dev``, ``test-challenge``): record indices."""
        return read_split_dict(self.split_path)

    def source_files(self) -> list[Path]:
        return [p for p in (self.csv_path, self.split_path, self.sdf_path) if p is not None]

    def cache_settings(self) -> dict:  # bump READER_VERSION when reading changes
        return {"version": READER_VERSION, "sdf": {"sanitize": True, "removeHs": True},
                "join": "heavy-atom-formula"}

    def featurizer(self):
        return functools.partial(featurize_pcqm4mv2, transform=self.pre_transform)

    def _table(self) -> pd.DataFrame:
        if self._rows is None:
            table = pd.read_csv(self.csv_path)
            if not {"smiles", "homolumogap"} <= set(table.columns):
                raise ValueError(f"{self.csv_path} needs the columns smiles and homolumogap")
            self._rows = table
        return self._rows

    def job_count(self) -> int:
        return len(self._table())

    def check_sdf(self, smiles: list[str]) -> int:
        """Number of SDF records, after checking it against the CSV and the train split.

        A count that does not match locates the first record out of step and names it.
        """
        sdf = self.sdf_path
        if sdf is None:
            return 0
        records = count_sdf_records(sdf)
        train = self.split()["train"]
        if records == len(train) and records <= len(smiles):
            if not np.array_equal(np.sort(train), np.arange(records)):
                log.warning("the train split is not rows 0..%d that the SDF covers", records - 1)
            return records
        problem = first_mismatch(iter_sdf_blocks(sdf), smiles)
        where = f"; first bad record: {problem[1]}" if problem else ""
        raise RecordMismatchError(
            f"{sdf} has {records} records but the train split has {len(train)} "
            f"molecules (record i must be CSV row i){where}"
        )

    def jobs(self):
        table = self._table()
        smiles = table["smiles"].tolist()
        gaps = table["homolumogap"].to_numpy(dtype=np.float64)
        records = self.check_sdf(smiles)
        blocks = iter_sdf_blocks(self.sdf_path) if records else iter(())
        for index in range(len(smiles)):
            block = next(blocks) if index < records else None
            yield index, "", (smiles[index], block, float(gaps[index]))
        self._rows = None  # the table is only needed while building


class PCQM4Mv2DataModule(FeaturizedDataModule):
    """PCQM4Mv2 for pretraining: HOMO-LUMO gap (eV) and 3D training coordinates.

    Splits from ``split_dict.pt``: train, val = ``valid`` (2D only, the PCQM4Mv2 protocol),
    test = predict = ``test_split``. :meth:`write_test_submission` writes OGB's file.

    Args:
        root: folder with the official layout; ``None`` reads the embedded 1,700-molecule sample.
        test_split: ``test-dev`` (default), ``test-challenge`` or ``valid``.
        download: fetch the official files into ``root`` when they are missing.
    """

    drop_coordinates_in = ("val", "test", "predict")
    target_names = ["homolumogap"]
    target_units = ["eV"]

    def __init__(
        self,
        root: str | None = None,
        test_split: str = "test-dev",
        download: bool = False,
        cache_dir: str | None = None,
        num_proc: int | None = None,
        verify_cache: str = "auto",
        batch_size: int = 256,
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
        if test_split not in TEST_SPLITS:
            raise ValueError(f"test_split must be one of {TEST_SPLITS}, not {test_split!r}")
        self.test_split = test_split
        self.dataset = PCQM4Mv2Dataset(root, download=download and root is not None, **self.dataset_options())

    @property
    def has_coordinates(self) -> bool:
        return self.dataset.sdf_path is not None

    def split_positions(self, cache: FeatureCache) -> dict[str, np.ndarray]:
        records, official = self.dataset.record_indices(), self.dataset.split()
        keys = {"train": "train", "val": "valid", "test": self.test_split, "predict": self.test_split}
        out = {}
        for name, key in keys.items():  # datamodule split -> split_dict key
            indices = official[key]
            found = positions_of(records, indices)
            found = found[found >= 0]
            if len(found) < len(indices):
                log.warning("%s: %d of %d molecules failed featurisation (see %s)", key,
                            len(indices) - len(found), len(indices), cache.folder / self.failures_file)
            out[name] = found
        return out

    def write_test_submission(self, predictions, folder: str | Path, idx=None, mode: str | None = None) -> Path:
        """Writes OGB's ``y_pred_pcqm4m-v2_<mode>.npz`` for the ``test_split`` molecules.

        ``predictions`` ``[M]`` follow ``idx`` (record indices, e.g. the batches' ``idx``)
        or, without it, the order of the test loader. Every molecule of the split must have
        a prediction. Full-size splits go through ``ogb.lsc.PCQM4Mv2Evaluator``.
        """
        mode = mode or self.test_split
        split = self.dataset.split()[mode]
        pred = torch.as_tensor(predictions, dtype=torch.float32).detach().cpu().reshape(-1)
        idx = self.record_indices("test") if idx is None else torch.as_tensor(idx).reshape(-1)
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) != len(pred):
            raise ValueError(f"{len(pred)} predictions for {len(idx)} molecules")
        slots = positions_of(split, idx)
        if (slots < 0).any():
            raise ValueError(f"molecule {int(idx[slots < 0][0])} is not in the {mode} split")
        ordered = np.full(len(split), np.nan, dtype=np.float32)
        ordered[slots] = pred.numpy()
        missing = np.flatnonzero(np.isnan(ordered))
        if len(missing):
            raise ValueError(
                f"{len(missing)} {mode} molecules have no prediction, first record "
                f"{int(split[missing[0]])} (failed featurisation? see {self.failures_file})"
            )
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if len(split) == OFFICIAL_TEST_SIZES.get(mode):
            from ogb.lsc import PCQM4Mv2Evaluator

            PCQM4Mv2Evaluator().save_test_submission({"y_pred": ordered}, str(folder), mode)
        else:
            log.warning("%s has %d molecules, not the official %s: the file is not a valid "
                        "OGB submission", mode, len(split), OFFICIAL_TEST_SIZES.get(mode, "size"))
            np.savez_compressed(folder / f"y_pred_pcqm4m-v2_{mode}", y_pred=ordered)
        return folder / f"y_pred_pcqm4m-v2_{mode}.npz"


__all__ = ["PCQM4Mv2DataModule", "PCQM4Mv2Dataset", "featurize_pcqm4mv2", "read_split_dict", "first_mismatch"]
