"""Padded, dense view of a PyG ``Batch`` of molecules, as the Transformer needs it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import Batch
from torch_geometric.utils import to_dense_batch


@dataclass
class DenseMolecules:
    """Padded molecule tensors. ``mask`` is True on real atoms."""

    x: Tensor  # [B, N, 9] raw OGB atom features
    mask: Tensor  # [B, N] bool
    degree: Tensor  # [B, N]
    pos: Tensor  # [B, N, 3]
    has_pos: Tensor  # [B] bool
    spd: Tensor  # [B, N, N] long, -1 on padding
    path: Tensor  # [B, N, N, hops, 3] path codes, 0 on padding
    pair_type: Tensor  # [B, N, N, 2] 3D pair-type rows, (1, 513) on padding

    @property
    def num_graphs(self) -> int:
        return self.x.shape[0]


def _dense_pairs(values: Tensor, counts: Tensor, n_max: int, fill) -> Tensor:
    """Scatter flattened per-graph ``[n_b*n_b, ...]`` blocks into ``[B, n_max, n_max, ...]``."""
    b = counts.numel()
    out = values.new_full((b, n_max, n_max, *values.shape[1:]), fill)
    if values.shape[0] == 0:
        return out
    sizes = counts * counts
    graph = torch.repeat_interleave(torch.arange(b, device=values.device), sizes)
    start = torch.cumsum(sizes, 0) - sizes
    local = torch.arange(values.shape[0], device=values.device) - start[graph]
    n_g = counts[graph]
    out[graph, local // n_g, local % n_g] = values
    return out


def to_dense(batch: Batch) -> DenseMolecules:
    """Turn a PyG batch made by :func:`tmzoo.data.transforms.transformer_m_transform` dense."""
    counts = torch.bincount(batch.batch, minlength=batch.num_graphs)
    x, mask = to_dense_batch(batch.x, batch.batch, batch_size=batch.num_graphs)
    n_max = x.shape[1]
    degree, _ = to_dense_batch(batch.degree, batch.batch, batch_size=batch.num_graphs)
    pos, _ = to_dense_batch(batch.pos.float(), batch.batch, batch_size=batch.num_graphs)
    has_pos = batch.has_pos.view(-1).bool()
    pos = pos * has_pos.view(-1, 1, 1)
    return DenseMolecules(
        x=x,
        mask=mask,
        degree=degree,
        pos=pos,
        has_pos=has_pos,
        spd=_dense_pairs(batch.pair_spd.long(), counts, n_max, -1),
        path=_dense_pairs(batch.pair_path, counts, n_max, 0),
        pair_type=_dense_pairs(batch.pair_type.long(), counts, n_max, 0)
        + (x.new_tensor([1, 513]) * (~(mask[:, :, None] & mask[:, None, :]))[..., None]),
    )
