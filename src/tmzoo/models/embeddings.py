"""Transformer-M's input embeddings: atoms, degree and the 2D attention bias."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tmzoo.data.dense import DenseMolecules

FEATURE_STRIDE = 512  # rows per feature in the shared atom and edge tables
# Rows, from raw values: atom feature f value v -> v + 2 + 512 f (0 = padding); degree d -> d + 1;
# bond distance s -> s + 1 (0 = padding); path code c (tmzoo.chem.paths: bond value + 2, 1 = the
# reference's non-bond hop, 0 = none) of feature f -> c + 1 + 512 f when c >= 2, else c.


class AtomEmbedding(nn.Module):
    """Sum of the 9 OGB atom-feature embeddings, plus degree (2D channel), plus graph token."""

    def __init__(self, embed_dim: int, num_atom_rows: int = 512 * 9 + 1, num_degrees: int = 512):
        super().__init__()
        self.atom_encoder = nn.Embedding(num_atom_rows, embed_dim, padding_idx=0)
        self.in_degree_encoder = nn.Embedding(num_degrees, embed_dim, padding_idx=0)
        self.out_degree_encoder = nn.Embedding(num_degrees, embed_dim, padding_idx=0)
        self.graph_token = nn.Embedding(1, embed_dim)

    def forward(self, mol: DenseMolecules, use_2d: Tensor) -> Tensor:
        """``[B, N+1, C]`` token embeddings; ``use_2d`` ([B] float) switches degree per molecule."""
        offsets = torch.arange(mol.x.shape[-1], device=mol.x.device) * FEATURE_STRIDE + 2
        rows = torch.where(mol.mask[..., None], mol.x + offsets, 0)
        atoms = self.atom_encoder(rows).sum(dim=-2)
        degree = torch.where(mol.mask, mol.degree + 1, 0).clamp(max=self.in_degree_encoder.num_embeddings - 1)
        degree_feature = self.in_degree_encoder(degree) + self.out_degree_encoder(degree)
        atoms = atoms + degree_feature * use_2d[:, None, None]
        token = self.graph_token.weight.unsqueeze(0).expand(atoms.shape[0], 1, -1)
        return torch.cat([token, atoms], dim=1)


class Graph2DBias(nn.Module):
    """Attention bias from the bond graph: shortest-path distance and multi-hop edge encodings.

    Also adds the graph-token virtual distance, which stays on in every mode.
    ``exact_hop_padding`` reproduces the reference's batch-dependent hop count (only visible
    when the padding rows of the edge table are non-zero).
    """

    def __init__(
        self,
        num_heads: int,
        num_edge_rows: int = 512 * 3 + 1,
        num_spatial: int = 512,
        num_edge_dis: int = 128,
        multi_hop_max_dist: int = 5,
        exact_hop_padding: bool = False,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.multi_hop_max_dist = multi_hop_max_dist
        self.exact_hop_padding = exact_hop_padding
        self.edge_encoder = nn.Embedding(num_edge_rows, num_heads, padding_idx=0)
        self.edge_dis_encoder = nn.Embedding(num_edge_dis * num_heads * num_heads, 1)
        self.spatial_pos_encoder = nn.Embedding(num_spatial, num_heads, padding_idx=0)
        self.graph_token_virtual_distance = nn.Embedding(1, num_heads)

    def token_bias(self, batch_size: int, num_tokens: int, like: Tensor) -> Tensor:
        """``[B, H, T, T]`` zeros with the graph-token virtual distance on row 0 and column 0."""
        t = self.graph_token_virtual_distance.weight.view(1, self.num_heads, 1)
        bias = like.new_zeros(batch_size, self.num_heads, num_tokens, num_tokens)
        bias[:, :, 1:, 0] = t
        bias[:, :, 0, :] = t
        return bias

    def forward(self, mol: DenseMolecules) -> Tensor:
        """``[B, H, N, N]`` atom–atom bias (SPD + multi-hop edges), before the 2D switch."""
        h = self.num_heads
        spd = mol.spd.long()
        spd_rows = (spd + 1).clamp(0, self.spatial_pos_encoder.num_embeddings - 1)
        spd_bias = self.spatial_pos_encoder(spd_rows)  # [B, N, N, H]

        path = mol.path.long()
        hops = min(self.multi_hop_max_dist, path.shape[3])
        if self.exact_hop_padding:
            hops = min(hops, int(spd.max().clamp(min=0)))
        features = path.shape[-1]
        offsets = torch.arange(features, device=path.device) * FEATURE_STRIDE + 1
        rows = torch.where(path >= 2, path + offsets, path)  # bond v -> v + 3 + 512 f; 0, 1 kept
        hop_matrices = self.edge_dis_encoder.weight.view(-1, h, h)[:hops]
        # mean over features then hop matrix == mean of (table @ W_hop) lookups: one table per hop,
        # stacked, and one summing lookup of every (hop, feature) row of a pair (no [.., hops, 3, H])
        table_rows = self.edge_encoder.num_embeddings
        tables = torch.matmul(self.edge_encoder.weight, hop_matrices).reshape(hops * table_rows, h)
        hop_offsets = (torch.arange(hops, device=path.device) * table_rows).view(hops, 1)
        bag = (rows[:, :, :, :hops] + hop_offsets).reshape(spd.numel(), hops * features)
        if hops:
            edge = nn.functional.embedding_bag(bag, tables, mode="sum").view(spd_bias.shape) / features
        else:
            edge = torch.zeros_like(spd_bias)
        divisor = torch.where(spd > 1, spd, 1).clamp(max=self.multi_hop_max_dist)
        edge = edge / divisor[..., None].to(edge.dtype)
        return (spd_bias + edge).permute(0, 3, 1, 2)
