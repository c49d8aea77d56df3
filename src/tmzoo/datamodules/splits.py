"""Split views over a cache, seeded random splits, and split files saved beside a run."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data

from tmzoo.io.files import atomic_write


class SplitView(Dataset):
    """The molecules ``positions`` of ``store``, with ``y`` reduced to ``y_columns``, when
    ``drop_coordinates`` the coordinates hidden (``pos`` zeros, ``has_pos`` False), then
    ``transform`` applied (on each access: in the DataLoader's worker processes)."""

    def __init__(
        self,
        store: Dataset,
        positions: Sequence[int],
        y_columns: Sequence[int] | None = None,
        drop_coordinates: bool = False,
        transform: Callable[[Data], Data] | None = None,
    ):
        self.store = store
        self.positions = np.asarray(positions, dtype=np.int64)
        self.y_columns = None if y_columns is None else list(y_columns)
        self.drop_coordinates = drop_coordinates
        self.transform = transform

    def __len__(self) -> int:
        return len(self.positions)

    @cached_property
    def num_nodes_per_item(self) -> np.ndarray:
        """Atoms of each molecule of the split (``int64 [len]``), from the store's offsets
        when it has them (no molecule is decoded), e.g. for size-bucketing batch samplers."""
        counts = getattr(self.store, "num_nodes_per_item", None)  # a method or an array
        if counts is not None:
            return np.asarray(counts() if callable(counts) else counts, dtype=np.int64)[self.positions]
        return np.asarray([self.store[int(p)].num_nodes for p in self.positions], dtype=np.int64)

    def __getitem__(self, index: int) -> Data:
        data = self.store[int(self.positions[index])]
        if self.y_columns is not None:
            data.y = data.y[:, self.y_columns]
        if self.drop_coordinates:
            data.pos = torch.zeros_like(data.pos)
            data.has_pos = torch.zeros_like(data.has_pos)
        if self.transform is not None:
            data = self.transform(data)
        return data


def split_sizes(
    n: int, paper: tuple[int, int] = (10_000, 10_831), paper_total: int = 130_831
) -> tuple[int, int, int]:
    """(train, valid, test) sizes: the paper's valid/test sizes when they leave at least half
    of ``n`` for training, else the same fractions of ``n`` (at least one each when n ≥ 3)."""
    valid, test = paper
    if n - valid - test >= n / 2:
        return n - valid - test, valid, test
    valid = round(n * paper[0] / paper_total)
    test = round(n * paper[1] / paper_total)
    if n >= 3:
        valid, test = max(valid, 1), max(test, 1)
    return n - valid - test, valid, test


def fill_sizes(sizes, n: int) -> tuple[int, int, int]:
    """``[train, valid, test]`` with at most one ``None``, which takes the molecules left over."""
    sizes = list(sizes)
    if len(sizes) != 3 or sizes.count(None) > 1:
        raise ValueError(f"split sizes must be [train, valid, test] with at most one null, got {sizes}")
    if None in sizes:
        rest = n - sum(s for s in sizes if s is not None)
        if rest < 0:
            raise ValueError(f"split sizes {sizes} ask for more than the {n} molecules")
        sizes[sizes.index(None)] = rest
    return tuple(int(s) for s in sizes)


def random_split(n: int, sizes, seed: int) -> dict[str, np.ndarray]:
    """Seeded permutation of ``range(n)`` cut into sorted train/val/test positions
    (``sizes`` as :func:`fill_sizes` takes them)."""
    sizes = fill_sizes(sizes, n)
    if sum(sizes) != n:
        raise ValueError(f"split sizes {sizes} do not add up to the {n} molecules")
    order = np.random.default_rng(seed).permutation(n)
    parts = np.split(order, np.cumsum(sizes[:2]))
    return {name: np.sort(part) for name, part in zip(("train", "val", "test"), parts)}


def save_split(path: Path, split: dict[str, Sequence[int]], **info) -> Path:
    """Writes ``{"train": [...], "val": [...], "test": [...], **info}`` as JSON, atomically.

    The lists hold record indices in the source file (``data.idx``), not cache positions.
    """
    payload = {**info, **{name: [int(i) for i in idx] for name, idx in split.items()}}
    with atomic_write(path) as handle:
        handle.write(json.dumps(payload))
    return Path(path)


def load_split(path: Path) -> dict[str, np.ndarray]:
    """The train/val/test record indices of a file written by :func:`save_split`."""
    payload = json.loads(Path(path).read_text())
    missing = {"train", "val", "test"} - set(payload)
    if missing:
        raise ValueError(f"split file {path} lacks {sorted(missing)}")
    return {name: np.asarray(payload[name], dtype=np.int64) for name in ("train", "val", "test")}


__all__ = ["SplitView", "split_sizes", "random_split", "save_split", "load_split"]
