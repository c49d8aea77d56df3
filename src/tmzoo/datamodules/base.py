"""Shared base of tmzoo's datamodules: split datasets, PyG loaders, and what tasks link to."""

from __future__ import annotations

from typing import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset
from torch_geometric.loader.dataloader import Collater

from tmzoo.data.batching import SizeBatchSampler
from tmzoo.data.dense import DenseCollater
from tmzoo.data.resumable import ResumableDataLoader
from tmzoo.data.transforms import transformer_m_transform


class MoleculeDataModule(L.LightningDataModule):
    """Base datamodule: subclasses fill ``self.splits`` ({"train","val","test","predict"} ->
    ``Dataset`` of featurised ``Data``) in :meth:`setup` and describe their targets.

    Loaders (see :func:`molecule_loader`): ``batch_by_size`` groups molecules of similar atom
    count in training, validation and test (:class:`~tmzoo.data.batching.SizeBatchSampler`;
    prediction keeps the input order); ``max_atoms_per_batch`` caps the padded atoms
    ``B·N_max`` of a batch as well as ``batch_size``; ``dense_batches`` pads in the loader
    workers (:class:`~tmzoo.data.dense.DenseMolecules`, what Transformer-M reads) instead of
    making PyG ``Batch``es (what GIN and SchNet read: set it to False for them).

    Attributes read by the tasks through CLI links: ``target_names``, ``num_targets``,
    ``target_mean``, ``target_std`` (train statistics), ``target_units`` (``"eV"``, ... ;
    ``""`` when unknown), ``has_coordinates``, ``featurization``, ``hydrogens`` (explicit H
    atoms are graph nodes; recorded in checkpoints so inference adds or removes them alike).
    """

    hydrogens: bool = False

    def __init__(
        self,
        batch_size: int = 32,
        num_workers: int = 0,
        max_hops: int = 5,
        reference_compatible: bool = False,
        batch_by_size: bool = True,
        max_atoms_per_batch: int | None = None,
        dense_batches: bool = True,
    ):
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.batch_by_size = batch_by_size
        self.max_atoms_per_batch = max_atoms_per_batch
        self.dense_batches = dense_batches
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
    def _loader(self, split: str, shuffle: bool = False, batch_by_size: bool | None = None) -> DataLoader:
        if split not in self.splits:
            raise RuntimeError(f"{type(self).__name__} has no {split!r} split (setup not run?)")
        return molecule_loader(
            self.splits[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            train=split == "train",
            batch_by_size=self.batch_by_size if batch_by_size is None else batch_by_size,
            max_atoms_per_batch=self.max_atoms_per_batch,
            dense_batches=self.dense_batches,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        # input order: PredictionWriter writes rows in the order the batches come
        return self._loader("predict" if "predict" in self.splits else "test", batch_by_size=False)


def molecule_loader(
    dataset,
    batch_size: int = 32,
    shuffle: bool = False,
    train: bool = False,
    batch_by_size: bool = True,
    max_atoms_per_batch: int | None = None,
    dense_batches: bool = True,
    num_workers: int = 0,
    seed: int | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """tmzoo's loader for featurised molecules (a dataset or a list of ``Data``).

    ``train=True`` gives a :class:`ResumableDataLoader` (exact mid-epoch resume; ``seed`` as
    there). With ``batch_by_size`` the batches group molecules of similar atom count,
    batches in a random order when ``shuffle``, else sorted within windows of 32 batches taken in
    input order (not the input order itself: a streaming writer would need to reorder).
    ``dense_batches`` pads in the worker processes (``tmzoo.data.dense.DenseMolecules``, read by
    ``TransformerM``); ``False`` gives PyG ``Batch``es (GIN, SchNet).

    Example (what the datamodules use for training)::

        loader = molecule_loader(list_of_featurised_data, batch_size=64, shuffle=True, train=True, num_workers=2)
    """
    collate_fn = DenseCollater() if dense_batches else Collater(dataset)
    workers = {"num_workers": num_workers, "persistent_workers": num_workers > 0, "pin_memory": pin_memory}
    if batch_by_size:
        batch_sampler = SizeBatchSampler(
            dataset, batch_size, max_atoms=max_atoms_per_batch, shuffle=shuffle, seed=0 if seed is None else seed
        )
        if train:
            return ResumableDataLoader(dataset, batch_sampler=batch_sampler, seed=seed, collate_fn=collate_fn, **workers)
        return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn, **workers)
    if train:
        return ResumableDataLoader(dataset, batch_size=batch_size, shuffle=shuffle, seed=seed, collate_fn=collate_fn, **workers)
    # keywords only: Lightning re-creates loaders from their arguments (e.g. for predict)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate_fn, **workers)


def target_statistics(y: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-column mean and std of ``y [M, T]``, ignoring NaN; std 1 where undefined."""
    finite = torch.isfinite(y)
    count = finite.sum(0).clamp(min=1)
    mean = torch.where(finite, y, 0).sum(0) / count
    var = (torch.where(finite, y - mean, 0) ** 2).sum(0) / (count - 1).clamp(min=1)
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.tolist(), std.tolist()


__all__: Sequence[str] = ["MoleculeDataModule", "molecule_loader", "target_statistics"]
