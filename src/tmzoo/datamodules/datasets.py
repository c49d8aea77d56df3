"""The file-backed sources as PyG datasets, usable without Lightning.

A :class:`MoleculeDataset` is a :class:`torch_geometric.data.Dataset`: ``raw_file_names`` are
looked for in ``raw_dir`` (each possibly gzipped); ``download()`` fetches missing ones when
``download=True``; ``process()`` featurises the records in ``num_proc`` worker processes into
the keyed on-disk cache (:mod:`~tmzoo.datamodules.cache`), which is ``processed_dir``; records
that fail are listed in its ``failures.csv``. ``get(i)`` reads molecule ``i`` from the memory
maps and ``transform`` (PyG's hook, e.g. :func:`~tmzoo.data.transforms.transformer_m_transform`)
runs on each access, so changing it never re-reads the raw files; a ``pre_transform`` is
applied before caching (its ``repr`` joins the cache key). Example::

    from tmzoo.data.transforms import transformer_m_transform
    from tmzoo.datamodules import QM9Dataset

    dataset = QM9Dataset("data/qm9", transform=transformer_m_transform(), download=True)
    dataset[0]  # Data(x, edge_index, edge_attr, pos, has_pos, y, idx, name, pair_spd, ...)

Unlike PyG's datasets, a cache is reused when its manifest and checksums hold (not merely
when its files exist), it is built atomically under a lock, and the cache folder's name hashes
the settings and the source files' identity, so changed files or options give a new cache.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
from torch_geometric.data import Data
from torch_geometric.data import Dataset as PygDataset

from tmzoo.datamodules import cache as cache_module
from tmzoo.datamodules.cache import FeatureCache, Failure, cache_key, default_num_proc, user_cache_dir
from tmzoo.datamodules.demo import demo_root
from tmzoo.io.files import find_file

log = logging.getLogger(__name__)

FEATURISATION_MODULES = ("tmzoo.chem.molecule",)
PAIR_MODULES = ("tmzoo.chem.paths", "tmzoo.data.transforms")  # cached only with a pre_transform


def featurisation_code_digest(modules=None) -> str:
    """Hash of the source of the shared featurisation code (atom/bond features; with
    ``modules`` = ``FEATURISATION_MODULES + PAIR_MODULES`` also paths and transforms):
    editing it gives new cache keys instead of stale caches. Dataset readers carry their
    own ``READER_VERSION``."""
    hasher = hashlib.sha256()
    for name in FEATURISATION_MODULES if modules is None else modules:
        hasher.update(Path(importlib.import_module(name).__file__).read_bytes())
    return hasher.hexdigest()[:16]


class MoleculeDataset(PygDataset):
    """Molecules of one source, featurised once into a keyed on-disk cache.

    Args:
        root: folder of the raw files; ``None``: the source's embedded demo data (if any).
        transform: applied to every molecule on access (PyG's hook).
        pre_transform: applied before caching (e.g. the pair features, for GPU nodes short
            of CPUs; ≈7x the disk).
        cache_dir: folder for cache folders; default ``<root>/processed`` when writable,
            else ``$TMZOO_CACHE`` / ``~/.cache/tmzoo``.
        num_proc: featurisation worker processes (default: the usable cores, at most 32).
        verify_cache: ``auto`` (checksums below 2 GiB), ``size`` or ``full``.
        download: fetch missing raw files (``download()``); otherwise they are an error.
        lazy: featurise on first use (:meth:`load`, ``len``, ``get``) instead of in the
            constructor (PyG's default); the datamodules describe themselves without work.
        force_reload: rebuild the cache even when a valid one exists.

    Subclasses give ``name``, :attr:`raw_file_names`, :meth:`download`, :meth:`jobs`,
    :meth:`featurizer` and :meth:`cache_settings`; their attributes are set before calling
    this constructor.
    """

    name = "molecules"
    demo: str | None = None  # name of the embedded demo set read when root is None

    def __init__(
        self,
        root: str | Path | None = None,
        transform: Callable[[Data], Data] | None = None,
        pre_transform: Callable[[Data], Data] | None = None,
        *,
        cache_dir: str | Path | None = None,
        num_proc: int | None = None,
        verify_cache: str = "auto",
        download: bool = False,
        lazy: bool = False,
        force_reload: bool = False,
        log: bool = True,
    ):
        self.source_root = Path(root).expanduser() if root is not None else None
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.num_proc = num_proc if num_proc is not None else default_num_proc()
        self.verify_cache = verify_cache
        self.allow_download = download
        self.lazy = lazy
        self._cache: FeatureCache | None = None
        super().__init__(str(self.data_root), transform, pre_transform, log=log, force_reload=force_reload)

    @property
    def data_root(self) -> Path:
        """``root``, or the embedded demo data's folder when ``root`` is ``None``."""
        if self.source_root is not None:
            return self.source_root
        if self.demo is None:
            raise ValueError(f"{type(self).__name__} needs a root folder")
        return demo_root(self.demo)

    # ------------------------------------------------------------ subclass hooks
    @property
    def raw_file_names(self) -> list[str]:
        """Files (relative to ``raw_dir``; ``.gz`` variants accepted) that must be present."""
        raise NotImplementedError

    def download(self) -> None:
        """Fetches the raw files into ``raw_dir``."""
        raise NotImplementedError

    def source_files(self) -> list[Path]:
        """The raw files whose identity (name, size, mtime) is part of the cache key."""
        return [Path(p) for p in self.raw_paths]

    def cache_settings(self) -> dict:
        """Reader options that change the featurised molecules (part of the cache key)."""
        return {}

    def jobs(self) -> Iterable[tuple[int, str, Any]]:
        """``(record index, name, payload)`` for each record to featurise."""
        raise NotImplementedError

    def featurizer(self) -> Callable[[Any], Data]:
        """A picklable ``payload -> Data`` (raises ``MoleculeError`` for bad records) that
        applies ``pre_transform`` when it is not ``None``."""
        raise NotImplementedError

    def job_count(self) -> int | None:
        """Number of jobs, for the progress bar (``None`` when unknown)."""
        return None

    def manifest_extra(self) -> dict:
        """Fields added to the manifest once the jobs are consumed (e.g. skip counts)."""
        return {}

    # ------------------------------------------------------------------ raw files
    @property
    def raw_paths(self) -> list[str]:
        """Paths of :attr:`raw_file_names` (the gzipped file where only that exists)."""
        folder = Path(self.raw_dir)
        return [str(find_file(folder, name) or folder / name) for name in self.raw_file_names]

    def missing_raw_files(self) -> list[str]:
        return [p for p in self.raw_paths if not Path(p).is_file()]

    def _download(self) -> None:  # PyG calls it from the constructor
        missing = self.missing_raw_files()
        if not missing:
            return
        if not self.allow_download:
            raise FileNotFoundError(
                f"{type(self).__name__} needs {', '.join(missing)} (optionally .gz); pass "
                "download=True to fetch them"
            )
        Path(self.raw_dir).mkdir(parents=True, exist_ok=True)
        self.download()
        if missing := self.missing_raw_files():
            raise FileNotFoundError(f"{type(self).__name__}.download() did not provide {missing}")

    # --------------------------------------------------------------------- cache
    def settings(self) -> dict:
        """Everything that defines the cached molecules (hashed into the cache key)."""
        settings = {"dataset": self.name, "reader": self.cache_settings()}
        if self.pre_transform is None:
            return {**settings, "featurisation_code": featurisation_code_digest()}
        return {**settings, "transform": repr(self.pre_transform),
                "featurisation_code": featurisation_code_digest(FEATURISATION_MODULES + PAIR_MODULES)}

    @property
    def cache_folder(self) -> Path:
        """``<cache dir>/tmzoo-<name>-<key>``: under ``cache_dir`` when given, else a finished
        cache under ``<root>/processed`` (read-only or not), else ``<root>/processed`` when
        writable, else ``$TMZOO_CACHE`` (always for the embedded demo data)."""
        name = f"tmzoo-{self.name}-{cache_key(self.settings(), self.source_files())}"
        if self.cache_dir is not None:
            return self.cache_dir / name
        if self.source_root is not None:
            processed = self.source_root / "processed"
            if (processed / name / "manifest.json").is_file():  # e.g. built by another user
                return processed / name
            writable = processed if processed.exists() else self.source_root
            if os.access(writable, os.W_OK):
                return processed / name
            log.info("%s is read-only; caching under %s", self.source_root, user_cache_dir())
        return user_cache_dir() / name

    @property
    def processed_dir(self) -> str:
        return str(self._cache.folder if self._cache is not None else self.cache_folder)

    @property
    def processed_file_names(self) -> list[str]:
        return ["manifest.json"]

    def _process(self) -> None:  # PyG calls it from the constructor
        if not self.lazy:
            self.load()

    def load(self) -> FeatureCache:
        """The featurised molecules: a valid cache (manifest and checksums checked), else
        built by :meth:`process` under the cache folder's lock."""
        if self._cache is None:
            folder = self.cache_folder
            self._cache = cache_module.load_or_run(
                folder, lambda: self._build(folder), verify=self.verify_cache, force=self.force_reload
            )
            if self._cache.failures:
                log.warning("%d %s records could not be featurised; listed in %s",
                            len(self._cache.failures), self.name, self._cache.folder / cache_module.FAILURES_FILE)
        return self._cache

    def process(self) -> None:
        """Featurises the raw records into ``processed_dir`` (PyG's hook; call :meth:`load`,
        which checks the existing cache first and holds the lock)."""
        folder = self.cache_folder
        with cache_module.folder_lock(folder):
            self._build(folder)

    def _build(self, folder: Path) -> FeatureCache:
        self._cache = cache_module.build_cache(
            folder,
            self.jobs(),
            self.featurizer(),
            total=self.job_count(),
            num_proc=self.num_proc,
            description=f"featurising {self.name}",
            manifest=lambda: {"settings": self.settings(), **self.manifest_extra()},
        )
        return self._cache

    # ----------------------------------------------------------------- access
    @property
    def failures(self) -> list[Failure]:
        """Records left out of the cache and why (also in ``processed_dir/failures.csv``)."""
        return self.load().failures

    def len(self) -> int:
        return len(self.load())

    def get(self, idx: int) -> Data:
        return self.load().store[int(idx)]

    @property
    def num_nodes_per_item(self) -> np.ndarray:
        """Atoms of every molecule (``int64 [len]``), from the cache's offsets (what
        :class:`~tmzoo.data.batching.SizeBatchSampler` reads: no molecule is decoded)."""
        counts = self.load().store.num_nodes_per_item()
        return counts if self._indices is None else counts[np.asarray(self.indices())]

    def record_indices(self) -> np.ndarray:
        """Source-file record index (``data.idx``) of every molecule."""
        idx = np.asarray(self.load().store.column("idx")).reshape(-1)
        return idx if self._indices is None else idx[np.asarray(self.indices())]

    def __repr__(self) -> str:
        size = len(self) if self._cache is not None else "?"
        return f"{type(self).__name__}({size})"


__all__ = ["MoleculeDataset", "featurisation_code_digest", "FEATURISATION_MODULES", "PAIR_MODULES"]
