"""Base of the file-backed datamodules: a PyG dataset, split views, train statistics.

Subclasses create their source's :class:`~tmzoo.datamodules.datasets.MoleculeDataset` (raw
files, download, featurisation into the on-disk cache) as ``self.dataset`` and say how its
molecules are split (:meth:`split_positions`). Everything else — lazy loading when a CLI link
first reads ``target_mean``, the split views, saving the split beside the run — lives here.

The cache holds the molecules as RDKit gives them (atom and bond features, bonds,
coordinates, targets, record index); the split datasets apply ``transformer_m_transform``
(shortest paths, edge paths, degree) on each access, i.e. in the loader's worker processes,
so ``max_hops`` and the path mode are not part of the cache key.
``cache_pairs=True`` caches the transformed molecules instead (for GPU nodes short of CPUs).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from tmzoo.datamodules.base import MoleculeDataModule
from tmzoo.datamodules.cache import FeatureCache
from tmzoo.datamodules.datasets import MoleculeDataset
from tmzoo.datamodules.splits import SplitView, save_split
from tmzoo.io.files import FAILURES_FILE

log = logging.getLogger(__name__)


class FeaturizedDataModule(MoleculeDataModule):
    """A datamodule over a :class:`MoleculeDataset`: splits, loaders and statistics.

    Args:
        root, cache_dir, num_proc, verify_cache: as :class:`MoleculeDataset` takes them.
        cache_pairs: cache the pair features too (≈7x the disk on PCQM4Mv2; for GPU nodes
            whose loader workers cannot keep up with the transform); default: computed on access.
        loader_options: the loader settings of ``MoleculeDataModule`` (``batch_by_size``,
            ``max_atoms_per_batch``, ``dense_batches``).
    """

    failures_file = FAILURES_FILE
    drop_coordinates_in: tuple[str, ...] = ()  # splits evaluated without coordinates
    dataset: MoleculeDataset

    def __init__(
        self,
        root: str | None = None,
        cache_dir: str | None = None,
        num_proc: int | None = None,
        verify_cache: str = "auto",
        batch_size: int = 32,
        num_workers: int = 0,
        max_hops: int = 5,
        reference_compatible: bool = False,
        cache_pairs: bool = False,
        **loader_options,
    ):
        super().__init__(batch_size, num_workers, max_hops, reference_compatible, **loader_options)
        self.cache_pairs = cache_pairs
        self.root = Path(root).expanduser() if root is not None else None
        self.cache_dir = cache_dir
        self.num_proc = num_proc
        self.verify_cache = verify_cache
        self.positions: dict[str, np.ndarray] = {}

    def dataset_options(self) -> dict:
        """Keyword arguments of the subclass's dataset common to every source."""
        return {"transform": self.access_transform(), "pre_transform": self.transform() if self.cache_pairs else None,
                "cache_dir": self.cache_dir, "num_proc": self.num_proc,
                "verify_cache": self.verify_cache, "lazy": True}

    # ------------------------------------------------------------ subclass hooks
    def split_positions(self, cache: FeatureCache) -> dict[str, np.ndarray]:
        """Cache positions of each split ("train", "val", "test", optionally "predict")."""
        raise NotImplementedError

    def target_columns(self) -> list[int] | None:
        """Columns of the cached ``y`` that are this datamodule's targets (``None``: all)."""
        return None

    # ------------------------------------------------------------------- cache
    def access_transform(self):
        """The transform the split datasets apply on each access (``None`` with ``cache_pairs``)."""
        return None if self.cache_pairs else self.transform()

    @property
    def cache_folder(self) -> Path:
        """The dataset's cache folder (``processed_dir``)."""
        return self.dataset.cache_folder

    def load(self) -> FeatureCache:
        """The featurised molecules, built on first use (in ``num_proc`` processes)."""
        return self.dataset.load()

    # ------------------------------------------------------------------ splits
    def prepare_data(self) -> None:
        self.load()

    def setup(self, stage: str | None = None) -> None:
        self._ensure_ready()
        trainer = getattr(self, "trainer", None)
        # log_dir read once on every rank: it broadcasts under DDP
        if trainer is not None and (log_dir := trainer.log_dir) and trainer.is_global_zero:
            self.save_split(log_dir)

    def _ensure_ready(self) -> None:
        if self.positions:
            return
        cache = self.load()
        self.positions = self.split_positions(cache)
        columns = self.target_columns()
        self.splits = {
            name: SplitView(cache.store, positions, columns, name in self.drop_coordinates_in,
                            transform=self.dataset.transform)
            for name, positions in self.positions.items()
        }

    def record_indices(self, split: str) -> np.ndarray:
        """Source-file record indices (``data.idx``) of the molecules of ``split``."""
        self._ensure_ready()
        return np.asarray(self.load().store.column("idx")[self.positions[split]]).reshape(-1)

    def save_split(self, folder: str | Path, filename: str = "split.json") -> Path:
        """Writes the record indices of every split to ``folder/filename``."""
        self._ensure_ready()
        split = {name: self.record_indices(name) for name in self.positions}
        path = save_split(Path(folder) / filename, split, dataset=self.dataset.name,
                          cache=self.load().folder.name, **self.split_info())
        log.info("split saved to %s", path)
        return path

    def split_info(self) -> dict:
        """Extra fields saved with the split (e.g. the seed)."""
        return {}

    # ------------------------------------------------------------- statistics
    def train_targets(self) -> torch.Tensor:
        """``y [M, T]`` of the training molecules (this datamodule's target columns)."""
        self._ensure_ready()
        y = np.asarray(self.load().store.column("y"))
        y = torch.from_numpy(y[self.positions["train"]]).float()
        columns = self.target_columns()
        return y if columns is None else y[:, columns]


__all__ = ["FeaturizedDataModule"]
