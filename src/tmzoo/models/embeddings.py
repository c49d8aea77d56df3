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
        rows = torch.where(mol.mask[..., None], mol.x + offsets, 0).view(-1, mol.x.shape[-1])
        table = self.atom_encoder
        atoms = _SummedRows.apply(rows, table.weight, table.padding_idx).view(*mol.x.shape[:2], -1)
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
        spatial = self.spatial_pos_encoder
        spd_rows = (spd + 1).clamp(0, spatial.num_embeddings - 1).view(-1, 1)
        spd_bias = _SummedRows.apply(spd_rows, spatial.weight, spatial.padding_idx).view(*spd.shape, h)  # [B, N, N, H]

        hops = min(self.multi_hop_max_dist, mol.path.shape[3])
        if self.exact_hop_padding:
            hops = min(hops, int(spd.max().clamp(min=0)))
        if not hops:
            return spd_bias.permute(0, 3, 1, 2)
        features = mol.path.shape[-1]
        hop_matrices = self.edge_dis_encoder.weight.view(-1, h, h)[:hops]
        # mean over features then hop matrix == mean of (table @ W_hop) lookups: one table per hop,
        # stacked, and one summing lookup of every (hop, feature) row of a pair (no [.., hops, 3, H])
        edge_rows = self.edge_encoder.weight
        edge_rows = torch.cat([edge_rows[:1].detach(), edge_rows[1:]])  # padding row: no gradient, as in a lookup
        tables = torch.matmul(edge_rows, hop_matrices).reshape(hops * edge_rows.shape[0], h)
        bag = _stacked_table_rows(mol.path[:, :, :, :hops], edge_rows.shape[0]).view(spd.numel(), hops * features)
        # mean over features, divided by the hop count
        divisor = torch.where(spd > 1, spd, 1).clamp(max=self.multi_hop_max_dist) * features
        edge = _SummedRows.apply(bag, tables).view(spd_bias.shape) / divisor[..., None]
        return (spd_bias + edge).permute(0, 3, 1, 2)


def _stacked_table_rows(path: Tensor, table_rows: int) -> Tensor:
    """Row of every path code ``[..., hops, F]`` (uint8) in the hop tables stacked hop after hop:
    bond value v of feature f at hop k -> ``k·table_rows + v + 3 + 512 f``; codes 0 (no hop) and
    1 (non-bond hop) -> ``k·table_rows + code``. One lookup into a table of every (hop, feature, code)."""
    hops, features = path.shape[-2:]
    device = path.device
    codes = torch.arange(256, device=device)
    feature_offsets = torch.arange(features, device=device)[:, None] * FEATURE_STRIDE + 1
    rows = torch.where(codes >= 2, codes + feature_offsets, codes)  # [F, 256]
    rows = (torch.arange(hops, device=device)[:, None, None] * table_rows + rows).view(-1)  # [hops * F * 256]
    first = (torch.arange(hops * features, device=device) * 256).view(hops, features)
    index = path.long() + first
    return rows.index_select(0, index.view(-1)).view(index.shape)


class _SummedRows(torch.autograd.Function):
    """``embedding_bag(rows, table, mode="sum")`` for ``rows [P, R]``; its backward gives row
    ``padding_idx`` no gradient, as ``nn.Embedding`` does.

    The backward is one ``index_add_`` per column of ``rows``, in fp32 at least: on CPU 2-3x faster
    than ``embedding(rows).sum(-2)`` (which writes a ``[P, R, C]`` tensor) and than
    ``embedding_bag``'s sorting backward. Narrow tables (≤ 32 columns: the 2D channel's ``H``) are
    filled transposed, so that threads split them by column (splitting rows of 8 floats between 2
    threads made it slower than 1).
    """

    @staticmethod
    def forward(ctx, rows: Tensor, table: Tensor, padding_idx: int | None = None) -> Tensor:
        ctx.save_for_backward(rows)
        ctx.table_shape, ctx.padding_idx = table.shape, padding_idx
        return nn.functional.embedding_bag(rows, table, mode="sum")

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, None]:
        (rows,) = ctx.saved_tensors
        num_rows, width = ctx.table_shape
        grad = grad.to(torch.promote_types(grad.dtype, torch.float32))
        narrow = width <= 32
        if narrow:
            grad = grad.t().contiguous()  # [C, P]
        table_grad = grad.new_zeros((width, num_rows) if narrow else (num_rows, width))
        for column in rows.unbind(1):
            table_grad.index_add_(1 if narrow else 0, column, grad)
        if narrow:
            table_grad = table_grad.t()
        if ctx.padding_idx is not None:
            table_grad[ctx.padding_idx] = 0.0
        return None, table_grad, None
