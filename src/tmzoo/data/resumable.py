"""A training loader whose position Lightning can checkpoint, for exact mid-epoch resume.

Lightning restores a loader's position only when the loader has ``state_dict`` /
``load_state_dict`` (otherwise a resumed epoch starts a new shuffle). Restoring skips the
consumed batches in the batch sampler, before any molecule is loaded: nothing is replayed.
"""

from __future__ import annotations

import itertools
import os
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader
from torch_geometric.loader.dataloader import Collater


class _SkippableBatches:
    """The loader's batch sampler, started ``skip`` batches into its next iteration.

    One object for the loader's life: persistent workers keep the first one they were given.
    """

    def __init__(self, batches):
        self.batches = batches
        self.skip = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        skip, self.skip = self.skip, 0
        if hasattr(self.batches, "start"):  # SizeBatchSampler: jumps straight to the batch
            self.batches.start = skip
            return iter(self.batches)
        return itertools.islice(iter(self.batches), skip, None)  # index lists only, no data


class ResumableDataLoader(DataLoader):
    """``DataLoader`` whose order is a function of ``(seed, epoch)`` and whose position can be
    saved and restored (``state_dict``/``load_state_dict``).

    The order comes from ``batch_sampler`` when it has ``set_epoch`` (e.g.
    :class:`tmzoo.data.batching.SizeBatchSampler`, given the loader's seed), else from a
    shuffle driven by the loader's own generator. ``collate_fn`` defaults to PyG's (``Batch``);
    pass :class:`tmzoo.data.dense.DenseCollater` for padded batches. The epoch counts the
    iterations started; the position counts the batches handed out (Lightning fetches no batch
    ahead from a loader with a length). ``seed=None`` takes ``torch.initial_seed()`` at
    construction (set by ``seed_everything``), except for a distributed batch sampler: then
    ``PL_GLOBAL_SEED`` (what ``seed_everything`` shares with the other ranks), else the batch
    sampler's seed, so that every rank deals the same order.
    """

    def __init__(self, dataset, batch_size: int | None = 1, shuffle: bool = False, seed: int | None = None, **kwargs):
        kwargs.pop("generator", None)  # ours drives the shuffle (Lightning passes one when it adds a sampler)
        if kwargs.get("collate_fn") is None:
            kwargs["collate_fn"] = Collater(dataset)
        self._order = torch.Generator()
        batch_sampler = kwargs.get("batch_sampler")
        if batch_sampler is not None:
            batch_size, shuffle = 1, False  # DataLoader's defaults; the batch sampler decides
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle, generator=self._order, **kwargs)
        if seed is None and getattr(batch_sampler, "num_replicas", 1) > 1:
            # every rank must deal one order: a seed all processes share, not each one's own
            seed = int(os.environ.get("PL_GLOBAL_SEED", getattr(batch_sampler, "seed", 0)))
        self.seed = int(torch.initial_seed() if seed is None else seed) % (2**63)
        self.epoch = 0
        self._started = False
        self._restored = False
        self._yielded = 0
        self._skipper = _SkippableBatches(super()._index_sampler)

    @property
    def _index_sampler(self):
        skipper = self.__dict__.get("_skipper")
        return super()._index_sampler if skipper is None else skipper

    def __iter__(self) -> Iterator[Any]:
        if self._started and not self._restored:
            self.epoch += 1
        self._started, self._restored = True, False
        self._order.manual_seed(self.seed + self.epoch)
        sampler = self.batch_sampler
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.seed = self.seed
            sampler.set_epoch(self.epoch)
        self._yielded = self._skipper.skip
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict:
        if self._started and self._yielded >= len(self):  # the epoch is over: resume with the next one
            return {"seed": self.seed, "epoch": self.epoch + 1, "consumed": 0}
        return {"seed": self.seed, "epoch": self.epoch, "consumed": self._yielded}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch, self._skipper.skip = int(state["seed"]), int(state["epoch"]), int(state["consumed"])
        self._yielded = self._skipper.skip  # saved again as restored until the next iteration
        self._started, self._restored = False, True
