"""Base of the file-backed datamodules: a featurisation cache, split views, train statistics.

Subclasses say where their files are (:meth:`source_files`), what the records are
(:meth:`jobs`, :meth:`featurizer`) and how the cached molecules are split
(:meth:`split_positions`). Everything else — the cache folder and its key, lazy loading when
a CLI link first reads ``target_mean``, saving the split beside the run — lives here.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from tmzoo.datamodules.base import MoleculeDataModule, target_statistics
from tmzoo.datamodules.cache import (
    FeatureCache,
    cache_key,
    default_num_proc,
    load_or_build,
    user_cache_dir,
)
from tmzoo.datamodules.splits import SplitView, save_split

log = logging.getLogger(__name__)


FEATURISATION_MODULES = ("tmzoo.chem.molecule", "tmzoo.chem.paths", "tmzoo.data.transforms")


def featurisation_code_digest() -> str:
    """Hash of the source of the shared featurisation code (atom/bond features, paths,
    transforms): editing it gives new cache keys instead of stale caches. Dataset readers
    carry their own ``READER_VERSION``."""
    hasher = hashlib.sha256()
    for name in FEATURISATION_MODULES:
        hasher.update(Path(importlib.import_module(name).__file__).read_bytes())
    return hasher.hexdigest()[:16]


class FeaturizedDataModule(MoleculeDataModule):
    """A datamodule whose molecules are featurised once into an on-disk cache.

    Args:
        root: folder of the raw files (``None``: the subclass's embedded demo data).
        cache_dir: folder for cache folders; default ``<root>/processed`` when writable,
            else ``$TMZOO_CACHE`` / ``~/.cache/tmzoo``.
        num_proc: featurisation worker processes (default: the usable cores, at most 32).
        verify_cache: ``auto`` (checksums below 2 GiB), ``size`` or ``full``.
    """

    cache_name = "molecules"
    failures_file = "failures.csv"
    drop_coordinates_in: tuple[str, ...] = ()  # splits evaluated without coordinates

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
    ):
        super().__init__(batch_size, num_workers, max_hops, reference_compatible)
        self.root = Path(root).expanduser() if root is not None else None
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.num_proc = num_proc if num_proc is not None else default_num_proc()
        self.verify_cache = verify_cache
        self.cache: FeatureCache | None = None
        self.positions: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------ subclass hooks
    def source_files(self) -> list[Path]:
        """The raw files whose identity is part of the cache key."""
        raise NotImplementedError

    def cache_settings(self) -> dict:
        """Reader options that change the featurised molecules (part of the cache key)."""
        return {}

    def jobs(self) -> Iterable[tuple[int, str, Any]]:
        """``(record index, name, payload)`` for each record to featurise."""
        raise NotImplementedError

    def featurizer(self) -> Callable[[Any], Any]:
        """A picklable ``payload -> Data`` (raises ``MoleculeError`` for bad records)."""
        raise NotImplementedError

    def split_positions(self, cache: FeatureCache) -> dict[str, np.ndarray]:
        """Cache positions of each split ("train", "val", "test", optionally "predict")."""
        raise NotImplementedError

    def target_columns(self) -> list[int] | None:
        """Columns of the cached ``y`` that are this datamodule's targets (``None``: all)."""
        return None

    def manifest_extra(self) -> dict:
        """Fields added to the manifest once the jobs are consumed (e.g. skip counts)."""
        return {}

    def job_count(self) -> int | None:
        """Number of jobs, for the progress bar (``None`` when unknown)."""
        return None

    # ------------------------------------------------------------------- cache
    def settings(self) -> dict:
        """Everything that defines the featurised molecules (hashed into the cache key)."""
        return {
            "dataset": self.cache_name,
            "transform": repr(self.transform()),
            "reader": self.cache_settings(),
            "featurisation_code": featurisation_code_digest(),
        }

    @property
    def cache_folder(self) -> Path:
        """``<cache dir>/tmzoo-<name>-<key>``."""
        key = cache_key(self.settings(), self.source_files())
        return self._cache_parent() / f"tmzoo-{self.cache_name}-{key}"

    def _cache_parent(self) -> Path:
        if self.cache_dir is not None:
            return self.cache_dir
        if self.root is not None:
            processed = self.root / "processed"
            writable = processed if processed.exists() else self.root
            if os.access(writable, os.W_OK):
                return processed
            log.info("%s is read-only; caching under %s", self.root, user_cache_dir())
        return user_cache_dir()

    def load(self) -> FeatureCache:
        """The featurised molecules, built on first use (in ``num_proc`` processes)."""
        if self.cache is None:
            self.cache = load_or_build(
                self.cache_folder,
                self.jobs,
                self.featurizer(),
                verify=self.verify_cache,
                total=self.job_count,  # counted only when the cache is built
                num_proc=self.num_proc,
                description=f"featurising {self.cache_name}",
                failures_file=self.failures_file,
                manifest=lambda: {"settings": self.settings(), **self.manifest_extra()},
            )
            if self.cache.failures:
                log.warning(
                    "%d %s records could not be featurised; listed in %s",
                    len(self.cache.failures), self.cache_name,
                    self.cache.folder / self.failures_file,
                )
        return self.cache

    # ------------------------------------------------------------------ splits
    def prepare_data(self) -> None:
        self.load()

    def setup(self, stage: str | None = None) -> None:
        self._ensure_ready()
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return
        log_dir = trainer.log_dir  # every rank: log_dir broadcasts under DDP
        if trainer.is_global_zero and log_dir:
            self.save_split(log_dir)

    def _ensure_ready(self) -> None:
        if self.positions:
            return
        cache = self.load()
        self.positions = self.split_positions(cache)
        columns = self.target_columns()
        self.splits = {
            name: SplitView(cache.store, positions, columns, name in self.drop_coordinates_in)
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
        path = save_split(Path(folder) / filename, split, dataset=self.cache_name,
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

    @property
    def target_mean(self) -> list[float]:
        return target_statistics(self.train_targets())[0]

    @property
    def target_std(self) -> list[float]:
        return target_statistics(self.train_targets())[1]


__all__ = ["FeaturizedDataModule"]
