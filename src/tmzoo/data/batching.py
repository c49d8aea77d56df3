"""Batches of molecules of similar size: a seeded, DDP-aware, resumable batch sampler.

A padded batch costs ``B · N_max²`` pair work; with a mean of ~15 atoms and outliers of 50,
random batches spend most of it on padding. :class:`SizeBatchSampler` sorts molecules by atom
count (random order among equal counts, new every epoch), cuts the sorted list into batches
of a fixed molecule count or within an atom/pair budget, and shuffles the batches.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch.distributed as dist
from torch.utils.data import BatchSampler, Dataset, DistributedSampler, Sampler


def molecule_sizes(dataset) -> np.ndarray:
    """Atom count of every item: ``dataset.num_nodes_per_item`` (an array or a method) when it has it,
    otherwise read item by item (slow on large datasets: give them ``num_nodes_per_item``)."""
    sizes = getattr(dataset, "num_nodes_per_item", None)
    if callable(sizes):  # GraphStore has it as a method
        sizes = sizes()
    if sizes is None:
        sizes = [int(dataset[i].num_nodes) for i in range(len(dataset))]
    return np.asarray(sizes, dtype=np.int64).reshape(-1)


def _size_batches(sizes: np.ndarray, batch_size: int, max_atoms: int | None, max_pairs: int | None) -> list[np.ndarray]:
    """Cut indices (already in the order to batch) into batches: at most ``batch_size``
    molecules, padded atoms ``B·N_max`` ≤ ``max_atoms``, padded pairs ``B·N_max²`` ≤ ``max_pairs``.
    A molecule over a budget gets a batch of its own."""
    if max_atoms is None and max_pairs is None:
        return [np.arange(i, min(i + batch_size, len(sizes))) for i in range(0, len(sizes), batch_size)]
    batches, start, widest = [], 0, 0
    for i, n in enumerate(sizes.tolist()):
        wide = max(widest, n)
        count = i - start + 1
        over = count > batch_size or (max_atoms is not None and count * wide > max_atoms) or (
            max_pairs is not None and count * wide * wide > max_pairs
        )
        if over and count > 1:
            batches.append(np.arange(start, i))
            start, wide = i, n
        widest = wide
    if start < len(sizes):
        batches.append(np.arange(start, len(sizes)))
    return batches


class SizeBatchSampler(BatchSampler):
    """Index batches of molecules of similar atom count.

    Each epoch: molecules are ordered by atom count, ties in a random order drawn from
    ``(seed, epoch)``; the list is cut into batches of ``batch_size`` molecules (and, when
    given, at most ``max_atoms`` padded atoms or ``max_pairs`` padded pairs per batch); with
    ``shuffle`` the batches are then shuffled. Batch boundaries depend on the sizes only, so the
    number of batches is the same every epoch. Without ``shuffle`` the molecules are sorted
    within windows of ``window`` consecutive items (default: 32 batches' worth) and the batches
    come window by window, so outputs can be put back in input order with a bounded buffer.
    ``drop_last`` drops the batches short of ``batch_size`` only without a budget (every
    budgeted batch is kept); a molecule over a budget gets a batch of its own.

    Distributed: the batches are padded by repeating the first ones to a multiple of the number
    of processes and dealt round-robin, so every rank gets the same number of batches. The
    world comes from ``sampler`` when it is a ``DistributedSampler`` (what Lightning injects),
    else ``num_replicas``/``rank``, else ``torch.distributed`` when initialised.

    Resumable: :meth:`set_epoch` and ``start`` (the number of this epoch's batches to skip)
    place the next iteration anywhere in the epoch without touching the data.

    Args:
        sampler: the molecules (a dataset with ``num_nodes_per_item`` or items with
            ``num_nodes``), or a sampler over them (its ``dataset``/``data_source`` is used).
        sizes: atom counts, if known (overrides reading them from the dataset).
    """

    def __init__(
        self,
        sampler: Dataset | Sampler | Sequence,
        batch_size: int = 32,
        drop_last: bool = False,
        max_atoms: int | None = None,
        max_pairs: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        window: int | None = None,
        sizes: Sequence[int] | np.ndarray | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.sampler = sampler
        if isinstance(sampler, DistributedSampler):
            num_replicas, rank = sampler.num_replicas, sampler.rank
        elif num_replicas is None and dist.is_available() and dist.is_initialized():
            num_replicas, rank = dist.get_world_size(), dist.get_rank()
        self.num_replicas, self.rank = int(num_replicas or 1), int(rank or 0)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is not in [0, {self.num_replicas})")
        dataset = next((d for d in (getattr(sampler, n, None) for n in ("dataset", "data_source")) if d is not None), sampler)
        self.sizes = molecule_sizes(dataset) if sizes is None else np.asarray(sizes, dtype=np.int64).reshape(-1)
        self.batch_size, self.drop_last = int(batch_size), drop_last
        self.max_atoms, self.max_pairs = max_atoms, max_pairs
        self.shuffle, self.seed = shuffle, int(seed)
        self.window = int(window or 32 * batch_size)
        self.epoch = 0
        self.start = 0
        self._num_batches = len(self._global_batches(0))  # the same every epoch, a multiple of the world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _global_batches(self, epoch: int) -> list[np.ndarray]:
        sizes = self.sizes
        if self.shuffle:  # one window: every molecule, in a random order (ties stay random after sorting)
            rng = np.random.default_rng([self.seed % 2**63, epoch])
            windows = [rng.permutation(len(sizes))]
        else:
            windows = [np.arange(lo, min(lo + self.window, len(sizes))) for lo in range(0, len(sizes), self.window)]
        batches = []
        for part in windows:
            part = part[np.argsort(sizes[part], kind="stable")]
            batches += [part[b] for b in _size_batches(sizes[part], self.batch_size, self.max_atoms, self.max_pairs)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.drop_last and self.max_atoms is None and self.max_pairs is None:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.num_replicas > 1 and batches:
            if self.drop_last:
                batches = batches[: len(batches) - len(batches) % self.num_replicas]
            else:
                batches += [batches[i % len(batches)] for i in range(-len(batches) % self.num_replicas)]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        start, self.start = self.start, 0
        mine = self._global_batches(self.epoch)[self.rank :: self.num_replicas]
        for batch in mine[start:]:
            yield batch.tolist()

    def __len__(self) -> int:
        return self._num_batches // self.num_replicas

    def __repr__(self) -> str:
        budget = f", max_atoms={self.max_atoms}, max_pairs={self.max_pairs}" if self.max_atoms or self.max_pairs else ""
        return (
            f"{type(self).__name__}({len(self.sizes)} molecules, batch_size={self.batch_size}{budget}, "
            f"shuffle={self.shuffle}, rank {self.rank}/{self.num_replicas})"
        )


__all__ = ["SizeBatchSampler", "molecule_sizes"]
