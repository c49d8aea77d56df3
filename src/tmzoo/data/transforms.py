"""PyG transforms that precompute the per-molecule, fixed inputs of Transformer-M.

Pair-valued attributes are stored flattened row-major as ``[N*N, ...]`` so that PyG's
default collation concatenates them; :mod:`tmzoo.data.dense` pads them into ``[B, N, N, ...]``.
Values are raw (no vocabulary offsets: the embedding modules own those); the 3D pair types
are not stored, the model reads them from the atomic numbers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform, Compose

from tmzoo.chem.paths import path_bond_codes, reference_path_bond_codes


class _ReprArgs(BaseTransform):
    """A transform whose ``repr`` lists its arguments, so cache keys change with them."""

    def _args(self) -> dict:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._args().items())
        return f"{type(self).__name__}({args})"


class AddShortestPaths(_ReprArgs):
    """Adds ``pair_spd`` (int16 ``[N*N]``) and ``pair_path`` (uint8 ``[N*N, max_hops, 3]``).

    ``pair_spd`` is the bond distance (510 between fragments). ``pair_path`` holds, per hop of
    one shortest path, the bond features + 2 (0 past the end of the path). With
    ``reference_compatible=True`` the path is rebuilt like the reference's Floyd–Warshall,
    quirk included (hops through atom 0 collapse into a "non-bond" hop coded 1).
    """

    def __init__(self, max_hops: int = 5, reference_compatible: bool = False):
        self.max_hops = max_hops
        self.reference_compatible = reference_compatible

    def _args(self) -> dict:
        return {"max_hops": self.max_hops, "reference_compatible": self.reference_compatible}

    def forward(self, data: Data) -> Data:
        n = data.num_nodes
        build = reference_path_bond_codes if self.reference_compatible else path_bond_codes
        dist, codes = build(data.edge_index.numpy(), data.edge_attr.numpy(), n, self.max_hops)
        data.pair_spd = torch.from_numpy(dist.reshape(n * n).astype(np.int16, copy=False))
        data.pair_path = torch.from_numpy(codes.reshape(n * n, self.max_hops, -1))
        return data


class AddDegree(_ReprArgs):
    """Adds ``degree`` (``[N]``): the number of distinct bonded neighbours of each atom."""

    def forward(self, data: Data) -> Data:
        n = data.num_nodes
        edge_index = data.edge_index.numpy()
        adj = np.zeros((n, n), dtype=bool)  # numpy: cheaper than torch for molecule-sized arrays
        adj[edge_index[0], edge_index[1]] = True
        data.degree = torch.from_numpy(adj.sum(axis=1))
        return data


class TransformerMInputs(Compose):
    """A ``Compose`` that copies the input ``Data`` once, not once per transform (hot path)."""

    def forward(self, data: Data) -> Data:
        for transform in self.transforms:
            data = transform.forward(data)
        return data


def transformer_m_transform(max_hops: int = 5, reference_compatible: bool = False) -> Compose:
    """Every precomputation Transformer-M needs, in one ``Compose``."""
    return TransformerMInputs([AddShortestPaths(max_hops, reference_compatible), AddDegree()])
