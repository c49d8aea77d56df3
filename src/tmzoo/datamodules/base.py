"""Shared base of tmzoo's datamodules: split datasets, PyG loaders, and what tasks link to."""

from __future__ import annotations

import inspect
from typing import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch_geometric.loader.dataloader import Collater

from tmzoo.data.batching import SizeBatchSampler
from tmzoo.data.dense import DenseCollater
from tmzoo.data.resumable import ResumableDataLoader
from tmzoo.data.transforms import transformer_m_transform

TRANSFORM_ARGS = tuple(inspect.signature(transformer_m_transform).parameters)


class MoleculeDataModule(L.LightningDataModule):
    """Base datamodule: subclasses fill ``self.splits`` ({"train","val","test","predict"} ->
    ``Dataset`` of featurised ``Data``) in :meth:`setup` and describe their targets.

    Loaders: :func:`molecule_loader` (prediction keeps the input order); ``max_atoms_per_batch``
    caps the padded atoms ``B·N_max`` of a batch as well as ``batch_size``; ``dense_batches``
    pads for Transformer-M, ``False`` gives PyG ``Batch``es (GIN, SchNet).

    Attributes read by the tasks through CLI links: ``target_names``, ``num_targets``,
    ``target_mean``, ``target_std`` (train statistics), ``target_units`` (``"eV"``, ... ;
    ``""`` when unknown), ``has_coordinates``, ``featurization``, ``hydrogens`` (explicit H
    atoms are graph nodes; recorded in checkpoints so inference adds or removes them alike).
    """

    hydrogens: bool = False
    target_names: list[str] = ["y"]  # subclasses set theirs (on the class, or per instance)

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
    def num_targets(self) -> int:
        return len(self.target_names)

    @property
    def target_units(self) -> list[str]:
        return [""] * self.num_targets

    def train_targets(self) -> torch.Tensor:
        """``y [M, T]`` of the training molecules (none here: mean 0, std 1)."""
        return torch.zeros(0, self.num_targets)

    @property
    def target_mean(self) -> list[float]:
        return target_statistics(self.train_targets())[0]

    @property
    def target_std(self) -> list[float]:
        return target_statistics(self.train_targets())[1]

    @property
    def has_coordinates(self) -> bool:
        return True

    @property
    def transform_args(self) -> dict:
        """The ``transformer_m_transform`` arguments among :attr:`featurization`."""
        return {k: v for k, v in self.featurization.items() if k in TRANSFORM_ARGS}

    def transform(self):
        """The featurisation every record goes through (cache keys use its ``repr``)."""
        return transformer_m_transform(**self.transform_args)

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
    there). With ``batch_by_size`` the batches group molecules of similar atom count
    (:class:`~tmzoo.data.batching.SizeBatchSampler`), batches in a random order when ``shuffle``,
    else sorted within windows of 32 batches taken in input order (not the input order itself:
    a streaming writer would need to reorder). ``dense_batches`` pads in the worker processes
    (:class:`~tmzoo.data.dense.DenseMolecules`, read by ``TransformerM``); ``False`` gives PyG
    ``Batch``es (GIN, SchNet).

    Example (what the datamodules use for training)::

        loader = molecule_loader(list_of_featurised_data, batch_size=64, shuffle=True, train=True, num_workers=2)
    """
    options = {"collate_fn": DenseCollater() if dense_batches else Collater(dataset), "num_workers": num_workers,
               "persistent_workers": num_workers > 0, "pin_memory": pin_memory}
    if batch_by_size:
        options["batch_sampler"] = SizeBatchSampler(
            dataset, batch_size, max_atoms=max_atoms_per_batch, shuffle=shuffle, seed=0 if seed is None else seed
        )
    else:
        options.update(batch_size=batch_size, shuffle=shuffle)
    if train:
        return ResumableDataLoader(dataset, seed=seed, **options)
    # keywords only: Lightning re-creates loaders from their arguments (e.g. for predict)
    return DataLoader(dataset, **options)


def target_statistics(y: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-column mean and std of ``y [M, T]``, ignoring NaN; std 1 where undefined."""
    finite = torch.isfinite(y)
    count = finite.sum(0).clamp(min=1)
    mean = torch.where(finite, y, 0).sum(0) / count
    var = (torch.where(finite, y - mean, 0) ** 2).sum(0) / (count - 1).clamp(min=1)
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.tolist(), std.tolist()


def positions_of(records: np.ndarray, wanted) -> np.ndarray:
    """Position in ``records`` (distinct record indices) of each of ``wanted``; -1 where absent."""
    position = np.full(int(records.max(initial=0)) + 1, -1, dtype=np.int64)
    position[records] = np.arange(len(records))
    wanted = np.asarray(wanted, dtype=np.int64).reshape(-1)
    known = (wanted >= 0) & (wanted < len(position))
    return np.where(known, position[np.where(known, wanted, 0)], -1)


__all__: Sequence[str] = ["MoleculeDataModule", "molecule_loader", "positions_of", "target_statistics"]
