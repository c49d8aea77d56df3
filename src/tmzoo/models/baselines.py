"""Baseline encoders behind Transformer-M's interface: GIN with a virtual node, and SchNet.

Both return an :class:`EncoderOutput` whose token 0 is a pooled graph representation, so
every head and task works with them unchanged. They ignore ``modes`` (no 2D/3D channels).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from ogb.graphproppred.mol_encoder import AtomEncoder, BondEncoder
from torch import Tensor, nn
from torch_geometric.nn import GINEConv, global_add_pool, global_mean_pool
from torch_geometric.nn.models.schnet import GaussianSmearing, InteractionBlock
from torch_geometric.utils import to_dense_batch

from tmzoo.models.output import EncoderOutput, init_arguments

Readout = Literal["mean", "sum"]


def _pool(h: Tensor, batch: Tensor, size: int, readout: str) -> Tensor:
    return (global_mean_pool if readout == "mean" else global_add_pool)(h, batch, size)


def _tokens(graph: Tensor, atoms: Tensor, batch) -> EncoderOutput:
    """``[B, N+1, C]`` tokens (graph state first) and the atom mask from per-node states."""
    dense, mask = to_dense_batch(atoms, batch.batch, batch_size=batch.num_graphs)
    return EncoderOutput(tokens=torch.cat([graph.unsqueeze(1), dense], dim=1), atom_mask=mask)


class GINVirtualNode(nn.Module):
    """GIN (PyG ``GINEConv``, bond features added to messages) with a virtual node, the OGB
    ``gin-virtual`` baseline. Atoms and bonds are embedded with OGB's encoders; token 0 is the
    ``readout`` (mean by default, as in OGB) of the final atom states.

    The virtual-node MLP uses LayerNorm instead of OGB's BatchNorm so a batch of one molecule
    trains.
    """

    reads_dense_batches = False  # PyG Batch

    def __init__(self, num_layers: int = 5, embed_dim: int = 300, dropout: float = 0.0, readout: Readout = "mean"):
        super().__init__()
        if num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        self.config = init_arguments(self)
        self.embed_dim, self.readout = embed_dim, readout
        c = embed_dim
        self.atom_encoder = AtomEncoder(c)
        self.bond_encoders = nn.ModuleList(BondEncoder(c) for _ in range(num_layers))
        self.convs = nn.ModuleList(
            GINEConv(nn.Sequential(nn.Linear(c, 2 * c), nn.BatchNorm1d(2 * c), nn.ReLU(), nn.Linear(2 * c, c)), train_eps=True)
            for _ in range(num_layers)
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(c) for _ in range(num_layers))
        self.virtual_node = nn.Embedding(1, c)
        nn.init.zeros_(self.virtual_node.weight)
        self.virtual_mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, 2 * c), nn.LayerNorm(2 * c), nn.ReLU(), nn.Linear(2 * c, c), nn.LayerNorm(c), nn.ReLU())
            for _ in range(num_layers - 1)
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, batch, modes: Tensor | None = None) -> EncoderOutput:
        size = batch.num_graphs
        h = self.atom_encoder(batch.x)
        vn = self.virtual_node.weight.expand(size, -1)
        last = len(self.convs) - 1
        for layer, (conv, bond, norm) in enumerate(zip(self.convs, self.bond_encoders, self.norms)):
            h_in = h + vn[batch.batch]
            h = norm(conv(h_in, batch.edge_index, bond(batch.edge_attr)))
            h = self.dropout(h if layer == last else F.relu(h))
            if layer < last:
                vn = self.dropout(self.virtual_mlps[layer](global_add_pool(h_in, batch.batch, size) + vn))
        return _tokens(_pool(h, batch.batch, size, self.readout), h, batch)


def radius_pairs(pos: Tensor, batch: Tensor, num_graphs: int, cutoff: float) -> tuple[Tensor, Tensor]:
    """Directed pairs ``(j -> i)`` of distinct atoms of one molecule closer than ``cutoff``,
    and their distances (no neighbour cap; molecules are small)."""
    dense, mask = to_dense_batch(pos, batch, batch_size=num_graphs)
    dist = torch.cdist(dense, dense)
    eye = torch.eye(dense.shape[1], dtype=torch.bool, device=pos.device)
    close = mask[:, :, None] & mask[:, None, :] & (dist < cutoff) & ~eye
    graph, i, j = close.nonzero(as_tuple=True)
    counts = mask.sum(1)
    offsets = torch.cumsum(counts, 0) - counts
    target, source = offsets[graph] + i, offsets[graph] + j
    weight = (pos[source] - pos[target]).norm(dim=-1)
    return torch.stack([source, target]), weight


class SchNetEncoder(nn.Module):
    """SchNet (PyG's ``InteractionBlock`` and ``GaussianSmearing``) producing per-atom states;
    token 0 is their ``readout``. Needs coordinates: molecules without them raise."""

    reads_dense_batches = False  # PyG Batch

    def __init__(
        self,
        embed_dim: int = 128,
        num_filters: int = 128,
        num_interactions: int = 6,
        num_gaussians: int = 50,
        cutoff: float = 10.0,
        readout: Readout = "mean",
    ):
        super().__init__()
        self.config = init_arguments(self)
        self.embed_dim, self.cutoff, self.readout = embed_dim, cutoff, readout
        self.embedding = nn.Embedding(120, embed_dim, padding_idx=0)  # row = atomic number
        self.distance_expansion = GaussianSmearing(0.0, cutoff, num_gaussians)
        self.interactions = nn.ModuleList(
            InteractionBlock(embed_dim, num_gaussians, num_filters, cutoff) for _ in range(num_interactions)
        )

    def forward(self, batch, modes: Tensor | None = None) -> EncoderOutput:
        if not bool(batch.has_pos.all()):
            raise ValueError("SchNetEncoder needs coordinates for every molecule")
        size = batch.num_graphs
        h = self.embedding(batch.x[:, 0] + 1)  # OGB's first atom feature is Z - 1
        pos = batch.pos.float()
        edge_index, weight = radius_pairs(pos, batch.batch, size, self.cutoff)
        attr = self.distance_expansion(weight)
        for block in self.interactions:
            h = h + block(h, edge_index, weight, attr)
        return _tokens(_pool(h, batch.batch, size, self.readout), h, batch)
