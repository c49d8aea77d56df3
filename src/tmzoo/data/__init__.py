"""PyG transforms, batching by size, padding in loader workers and a resumable loader."""

from tmzoo.data.batching import SizeBatchSampler, molecule_sizes
from tmzoo.data.dense import DenseCollater, DenseMolecules, collate_dense, to_dense
from tmzoo.data.resumable import ResumableDataLoader
from tmzoo.data.transforms import transformer_m_transform

__all__ = [
    "DenseCollater", "DenseMolecules", "ResumableDataLoader", "SizeBatchSampler", "collate_dense",
    "molecule_sizes", "to_dense", "transformer_m_transform",
]
