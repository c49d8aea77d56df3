"""A training loader whose position Lightning can checkpoint, for exact mid-epoch resume.

Lightning restores a loader's position only when the loader has ``state_dict`` /
``load_state_dict`` (otherwise a resumed epoch starts a new shuffle).
"""

from __future__ import annotations

from typing import Any, Iterator

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
        kwargs.pop("generator", None)  # ours drives the shuffle (Lightning passes one when it adds a sampler)
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
