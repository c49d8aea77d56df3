"""Shared base of tmzoo's datamodules: split datasets, PyG loaders, and what tasks link to."""

from __future__ import annotations

from typing import Sequence

import lightning as L
import torch
from torch.utils.data import Dataset
from torch_geometric.loader import DataLoader

from tmzoo.data.resumable import ResumableDataLoader
from tmzoo.data.transforms import transformer_m_transform


class MoleculeDataModule(L.LightningDataModule):
    """Base datamodule: subclasses fill ``self.splits`` ({"train","val","test","predict"} ->
    ``Dataset`` of featurised ``Data``) in :meth:`setup` and describe their targets.

    Attributes read by the tasks through CLI links: ``target_names``, ``num_targets``,
    ``target_mean``, ``target_std`` (train statistics), ``target_units`` (``"eV"``, ... ;
    ``""`` when unknown), ``has_coordinates``, ``featurization``.
    """

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        max_hops: int = 5,
        reference_compatible: bool = False,
    ):
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.featurization = {"max_hops": max_hops, "reference_compatible": reference_compatible}
        self.splits: dict[str, Dataset] = {}

    # ---------------------------------------------------------------- describe
    @property
    def target_names(self) -> list[str]:
        return ["y"]

    @property
    def num_targets(self) -> int:
        return len(self.target_names)

    @property
    def target_units(self) -> list[str]:
        return [""] * self.num_targets

    @property
    def target_mean(self) -> list[float]:
        return [0.0] * self.num_targets

    @property
    def target_std(self) -> list[float]:
        return [1.0] * self.num_targets

    @property
    def has_coordinates(self) -> bool:
        return True

    def transform(self):
        """The featurisation every record goes through (cache keys use its ``repr``)."""
        return transformer_m_transform(**self.featurization)

    # ----------------------------------------------------------------- loaders
    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split not in self.splits:
            raise RuntimeError(f"{type(self).__name__} has no {split!r} split (setup not run?)")
        loader = ResumableDataLoader if split == "train" else DataLoader  # exact mid-epoch resume
        return loader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict" if "predict" in self.splits else "test")


def target_statistics(y: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-column mean and std of ``y [M, T]``, ignoring NaN; std 1 where undefined."""
    finite = torch.isfinite(y)
    count = finite.sum(0).clamp(min=1)
    mean = torch.where(finite, y, 0).sum(0) / count
    var = (torch.where(finite, y - mean, 0) ** 2).sum(0) / (count - 1).clamp(min=1)
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.tolist(), std.tolist()


__all__: Sequence[str] = ["MoleculeDataModule", "target_statistics"]
