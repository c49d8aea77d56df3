"""Exact mid-epoch resume: a training loader that Lightning can checkpoint, and RNG state.

Lightning restores a loader's position only when the loader has ``state_dict`` /
``load_state_dict`` (otherwise a resumed epoch starts a new shuffle). :class:`ResumableDataLoader`
shuffles with its own generator seeded by ``(seed, epoch)`` and records how many batches the
training step has consumed, so a run resumed from a mid-epoch checkpoint sees exactly the
batches the uninterrupted run would have seen. The tasks save and restore the global RNG
states (mode dropout, coordinate noise, dropout) in the checkpoint.
"""

from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch_geometric.loader import DataLoader

class ResumableDataLoader(DataLoader):
    """PyG ``DataLoader`` whose shuffle order is a function of ``(seed, epoch)`` and whose
    position can be saved and restored (``state_dict``/``load_state_dict``).

    The epoch counts the iterations started; the position counts the batches handed out
    (Lightning fetches no batch ahead from a loader with a length). ``seed=None`` takes
    ``torch.initial_seed()`` at construction (set by ``seed_everything``).
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False, seed: int | None = None, **kwargs):
        self._order = torch.Generator()
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle, generator=self._order, **kwargs)
        self.seed = int(torch.initial_seed() if seed is None else seed) % (2**63)
        self.epoch = 0
        self._started = False
        self._restored = False
        self._yielded = 0
        self._skip = 0

    def __iter__(self) -> Iterator[Any]:
        if self._started and not self._restored:
            self.epoch += 1
        self._started, self._restored = True, False
        self._order.manual_seed(self.seed + self.epoch)
        iterator = super().__iter__()
        skip, self._skip = self._skip, 0
        for _ in range(skip):
            next(iterator)
        self._yielded = skip
        for batch in iterator:
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict:
        if self._started and self._yielded >= len(self):  # the epoch is over: resume with the next one
            return {"seed": self.seed, "epoch": self.epoch + 1, "consumed": 0}
        return {"seed": self.seed, "epoch": self.epoch, "consumed": self._yielded}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch, self._skip = int(state["seed"]), int(state["epoch"]), int(state["consumed"])
        self._restored = True


def rng_states() -> dict:
    """Global RNG states (torch CPU, numpy, python) as checkpoint-friendly data."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "python": repr(random.getstate()),
    }


def set_rng_states(states: dict) -> None:
    """Restore what :func:`rng_states` saved (entries that are missing are skipped)."""
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "numpy" in states:
        key = states["numpy"]["key"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", key, int(states["numpy"]["pos"]), 0, 0.0))
    if "python" in states:
        import ast

        random.setstate(ast.literal_eval(states["python"]))
