"""A straightforward Transformer-M encoder: the same math as ``tmzoo.models.TransformerM``,
written the way the reference writes it, for the training-step benchmark.

What differs from tmzoo (on purpose; this is the baseline):

* the Gaussian basis is materialised in fp32 as ``[B, N, N, K]`` and kept for backward
  (tmzoo recomputes it in backward);
* the multi-hop edge encoding is materialised as ``[B, N, N, hops, 3, H]``, averaged over
  the 3 features, then multiplied hop by hop with ``bmm`` (tmzoo accumulates
  ``edge_table @ W_hop`` lookups and never builds that tensor);
* attention is explicit: ``softmax(q k^T * s + bias) v`` with the softmax in fp32 and dropout on
  the probabilities (tmzoo calls ``scaled_dot_product_attention`` with the additive bias).

Parameter names equal tmzoo's, so ``naive.load_state_dict(tmzoo_model.state_dict())`` works
and both compute the same function. Heads are not part of this file: the benchmark feeds
the :class:`~tmzoo.models.EncoderOutput` it returns to tmzoo's heads for both variants.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tmzoo.data.dense import DenseMolecules, to_dense
from tmzoo.models.output import EncoderOutput, Mode

_PI = 3.14159
_OFFSET = 512


class NaiveAtomFeature(nn.Module):
    def __init__(self, embed_dim: int):
        super().__init__()
        self.atom_encoder = nn.Embedding(512 * 9 + 1, embed_dim, padding_idx=0)
        self.in_degree_encoder = nn.Embedding(512, embed_dim, padding_idx=0)
        self.out_degree_encoder = nn.Embedding(512, embed_dim, padding_idx=0)
        self.graph_token = nn.Embedding(1, embed_dim)

    def forward(self, mol: DenseMolecules, use_2d: Tensor) -> Tensor:
        offsets = torch.arange(9, device=mol.x.device) * _OFFSET + 2
        rows = torch.where(mol.mask[..., None], mol.x + offsets, 0)
        atoms = self.atom_encoder(rows).sum(dim=-2)
        degree = torch.where(mol.mask, mol.degree + 1, 0).clamp(max=511)
        atoms = atoms + (self.in_degree_encoder(degree) + self.out_degree_encoder(degree)) * use_2d[:, None, None]
        token = self.graph_token.weight.unsqueeze(0).repeat(atoms.shape[0], 1, 1)
        return torch.cat([token, atoms], dim=1)


class NaiveAttnBias(nn.Module):
    def __init__(self, num_heads: int, multi_hop_max_dist: int = 5):
        super().__init__()
        self.num_heads = num_heads
        self.multi_hop_max_dist = multi_hop_max_dist
        self.edge_encoder = nn.Embedding(512 * 3 + 1, num_heads, padding_idx=0)
        self.edge_dis_encoder = nn.Embedding(128 * num_heads * num_heads, 1)
        self.spatial_pos_encoder = nn.Embedding(512, num_heads, padding_idx=0)
        self.graph_token_virtual_distance = nn.Embedding(1, num_heads)

    def forward(self, mol: DenseMolecules) -> Tensor:
        """``[B, H, N, N]`` SPD + multi-hop edge bias, reference style."""
        b, n = mol.mask.shape
        h = self.num_heads
        spatial_pos = (mol.spd + 1).clamp(0, 511)
        spd_bias = self.spatial_pos_encoder(spatial_pos).permute(0, 3, 1, 2)  # [B, H, N, N]

        path = mol.path.long()
        offsets = torch.arange(path.shape[-1], device=path.device) * _OFFSET + 1
        edge_input = torch.where(path >= 2, path + offsets, path)[:, :, :, : self.multi_hop_max_dist]
        hops = edge_input.shape[3]
        spd_clamped = torch.where(mol.spd > 1, mol.spd, 1).clamp(max=self.multi_hop_max_dist)
        edge = self.edge_encoder(edge_input)  # [B, N, N, hops, 3, H]
        edge = edge.mean(-2)  # [B, N, N, hops, H]
        flat = edge.permute(3, 0, 1, 2, 4).reshape(hops, -1, h)
        weights = self.edge_dis_encoder.weight.reshape(-1, h, h)[:hops]
        flat = torch.bmm(flat, weights)
        edge = flat.reshape(hops, b, n, n, h).permute(1, 2, 3, 0, 4)
        edge = (edge.sum(-2) / spd_clamped.float().unsqueeze(-1)).permute(0, 3, 1, 2)
        return spd_bias + edge


class NaiveGaussianLayer(nn.Module):
    def __init__(self, num_kernels: int = 128):
        super().__init__()
        self.means = nn.Embedding(1, num_kernels)
        self.stds = nn.Embedding(1, num_kernels)
        self.mul = nn.Embedding(512 * 3, 1, padding_idx=0)
        self.bias = nn.Embedding(512 * 3, 1, padding_idx=0)

    def forward(self, dist: Tensor, pair_type: Tensor) -> Tensor:
        mul = self.mul(pair_type).sum(dim=-2)
        bias = self.bias(pair_type).sum(dim=-2)
        x = mul * dist.unsqueeze(-1) + bias
        k = self.means.weight.shape[-1]
        x = x.expand(-1, -1, -1, k)  # [B, N, N, K] fp32, kept for backward
        mean = self.means.weight.float().view(-1)
        std = self.stds.weight.float().view(-1).abs() + 1e-2
        a = (2 * _PI) ** 0.5
        return torch.exp(-0.5 * (((x.float() - mean) / std) ** 2)) / (a * std)


class NaiveNonLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.layer1 = nn.Linear(in_features, in_features)
        self.layer2 = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer2(F.gelu(self.layer1(x)))


class Naive3DBias(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, num_kernels: int):
        super().__init__()
        self.gbf = NaiveGaussianLayer(num_kernels)
        self.gbf_proj = NaiveNonLinear(num_kernels, num_heads)
        self.edge_proj = nn.Linear(num_kernels, embed_dim)

    def forward(self, mol: DenseMolecules):
        pos = mol.pos
        delta = pos.unsqueeze(1) - pos.unsqueeze(2)
        dist = delta.norm(dim=-1)
        direction = delta / (dist.unsqueeze(-1) + 1e-5)
        psi = self.gbf(dist, mol.pair_type)  # [B, N, N, K]
        padding = ~mol.mask
        bias = self.gbf_proj(psi).permute(0, 3, 1, 2).contiguous()
        bias = bias.masked_fill(padding[:, None, None, :], float("-inf"))
        summed = psi.masked_fill(padding[:, None, :, None], 0.0).sum(dim=-2)
        return bias, self.edge_proj(summed), direction


class NaiveSelfAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        b, t, c = x.shape
        h, d = self.num_heads, self.head_dim
        q = self.q_proj(x) * self.scaling
        k, v = self.k_proj(x), self.v_proj(x)
        q = q.view(b, t, h, d).transpose(1, 2).reshape(b * h, t, d)
        k = k.view(b, t, h, d).transpose(1, 2).reshape(b * h, t, d)
        v = v.view(b, t, h, d).transpose(1, 2).reshape(b * h, t, d)
        logits = torch.bmm(q, k.transpose(1, 2)) + bias.reshape(b * h, t, t)
        probs = self.dropout(F.softmax(logits.float(), dim=-1).type_as(logits))
        out = torch.bmm(probs, v).view(b, h, t, d).transpose(1, 2).reshape(b, t, c)
        return self.out_proj(out)


class NaiveLayer(nn.Module):
    def __init__(self, embed_dim, ffn_dim, num_heads, dropout, attention_dropout, activation_dropout, droppath):
        super().__init__()
        self.self_attn = NaiveSelfAttention(embed_dim, num_heads, attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.activation_dropout = nn.Dropout(activation_dropout)
        self.droppath = droppath

    def _drop_path(self, x: Tensor) -> Tensor:
        if self.droppath == 0.0 or not self.training:
            return x
        keep = 1.0 - self.droppath
        mask = x.new_empty(x.shape[0], 1, 1).bernoulli_(keep)
        return x * mask / keep

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        x = self.self_attn_layer_norm(x + self._drop_path(self.dropout(self.self_attn(x, bias))))
        y = self.fc2(self.activation_dropout(F.gelu(self.fc1(x))))
        return self.final_layer_norm(x + self._drop_path(self.dropout(y)))


class NaiveTransformerM(nn.Module):
    """Same constructor arguments (the used subset) and parameter names as ``TransformerM``."""

    def __init__(
        self,
        num_layers: int = 12,
        embed_dim: int = 768,
        ffn_dim: int = 768,
        num_heads: int = 32,
        num_kernels: int = 128,
        dropout: float = 0.0,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.1,
        droppath: float = 0.1,
        multi_hop_max_dist: int = 5,
        **_ignored,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.atom_feature = NaiveAtomFeature(embed_dim)
        self.molecule_attn_bias = NaiveAttnBias(num_heads, multi_hop_max_dist)
        self.molecule_3d_bias = Naive3DBias(embed_dim, num_heads, num_kernels)
        self.emb_layer_norm = nn.LayerNorm(embed_dim)
        self.emb_dropout = nn.Dropout(dropout)
        rates = torch.linspace(0, droppath, num_layers).tolist() if num_layers > 1 else [0.0]
        self.layers = nn.ModuleList(
            NaiveLayer(embed_dim, ffn_dim, num_heads, dropout, attention_dropout, activation_dropout, r)
            for r in rates
        )

    def forward(self, batch, modes: Tensor) -> EncoderOutput:
        mol = batch if isinstance(batch, DenseMolecules) else to_dense(batch)
        b, n = mol.mask.shape
        h = self.num_heads
        modes = torch.where(mol.has_pos, modes.long(), torch.full_like(modes.long(), int(Mode.ONLY_2D)))
        use_2d = (modes != Mode.ONLY_3D).float()
        use_3d = ((modes != Mode.ONLY_2D) & mol.has_pos).float()

        x = self.atom_feature(mol, use_2d)
        graph_attn_bias = x.new_zeros(b, h, n + 1, n + 1)
        t = self.molecule_attn_bias.graph_token_virtual_distance.weight.view(1, h, 1)
        graph_attn_bias[:, :, 1:, 0] = t
        graph_attn_bias[:, :, 0, :] = t
        graph_attn_bias[:, :, 1:, 1:] = graph_attn_bias[:, :, 1:, 1:] + self.molecule_attn_bias(mol) * use_2d[
            :, None, None, None
        ]

        bias_3d, atom_3d, direction = self.molecule_3d_bias(mol)
        on = use_3d[:, None, None, None]
        bias_3d = torch.where(torch.isinf(bias_3d), bias_3d, bias_3d * on)
        graph_attn_bias[:, :, 1:, 1:] = graph_attn_bias[:, :, 1:, 1:] + bias_3d
        x = x + F.pad(0.01 * atom_3d * use_3d[:, None, None], (0, 0, 1, 0))
        direction = direction * on[..., 0:1]

        key_padding = F.pad(~mol.mask, (1, 0), value=False)
        graph_attn_bias = graph_attn_bias.masked_fill(key_padding[:, None, None, :], float("-inf"))

        x = self.emb_dropout(self.emb_layer_norm(x))
        for layer in self.layers:
            x = layer(x, graph_attn_bias)
        return EncoderOutput(tokens=x, atom_mask=mol.mask, bias=graph_attn_bias, direction=direction, modes=modes)


__all__ = ["NaiveTransformerM"]
