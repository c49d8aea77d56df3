"""Prediction heads on top of an :class:`EncoderOutput`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tmzoo.models.init import init_transformer_m_
from tmzoo.models.output import EncoderOutput


class GapHead(nn.Module):
    """The pretraining HOMO-LUMO head: Linear → GELU → LayerNorm → Linear(no bias) + scalar bias.

    ``forward`` reads the graph token; :meth:`per_token` applies it to every token.
    """

    def __init__(self, embed_dim: int):
        super().__init__()
        self.config = {"embed_dim": embed_dim}
        self.lm_head_transform_weight = nn.Linear(embed_dim, embed_dim)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.embed_out = nn.Linear(embed_dim, 1, bias=False)
        self.lm_output_learned_bias = nn.Parameter(torch.zeros(1))
        self.apply(init_transformer_m_)

    def per_token(self, tokens: Tensor) -> Tensor:
        x = self.layer_norm(F.gelu(self.lm_head_transform_weight(tokens)))
        return self.embed_out(x) + self.lm_output_learned_bias

    def forward(self, out: EncoderOutput) -> Tensor:
        """``[B, 1]`` gap prediction from the graph token."""
        return self.per_token(out.graph)


class DenoisingHead(nn.Module):
    """Predicts the coordinate noise ``[B, N, 3]`` by attention along pair directions.

    Per head, ``o_c(i) = Σ_j A(i, j) Δ̂_ij[c] v_j`` with logits biased by the encoder's full
    attention bias; a separate Linear(C, 1) per axis reads each ``o_c``.
    """

    def __init__(self, embed_dim: int, num_heads: int, attention_dropout: float = 0.1):
        super().__init__()
        self.config = {"embed_dim": embed_dim, "num_heads": num_heads, "attention_dropout": attention_dropout}
        self.num_heads = num_heads
        self.scaling = (embed_dim // num_heads) ** -0.5
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.force_proj1 = nn.Linear(embed_dim, 1)
        self.force_proj2 = nn.Linear(embed_dim, 1)
        self.force_proj3 = nn.Linear(embed_dim, 1)
        self.dropout = nn.Dropout(attention_dropout)
        self.apply(init_transformer_m_)

    def forward(self, out: EncoderOutput) -> Tensor:
        if out.bias is None or out.direction is None:
            raise ValueError("DenoisingHead needs an encoder that returns attention bias and directions")
        atoms = out.atoms
        b, n, c = atoms.shape
        h = self.num_heads

        def heads(t: Tensor) -> Tensor:
            return t.view(b, n, h, -1).transpose(1, 2)

        q = heads(self.q_proj(atoms)) * self.scaling
        k, v = heads(self.k_proj(atoms)), heads(self.v_proj(atoms))
        logits = q @ k.transpose(-1, -2) + out.bias[:, :, 1:, 1:]
        probs = self.dropout(torch.softmax(logits.float(), dim=-1).to(q.dtype))  # [B, H, N, N]
        direction = out.direction.to(q.dtype)  # [B, N, N, 3]
        # o[b,h,c,i,:] = sum_j probs[b,h,i,j] * dir[b,i,j,c] * v[b,h,j,:]
        o = torch.einsum("bhij,bijc,bhjd->bichd", probs, direction, v).reshape(b, n, 3, c)
        return torch.cat(
            [self.force_proj1(o[:, :, 0]), self.force_proj2(o[:, :, 1]), self.force_proj3(o[:, :, 2])],
            dim=-1,
        ).float()


class GraphRegressionHead(nn.Module):
    """Linear(C, C) → GELU → Linear(C, T) on a graph readout: the graph token, or mean/sum of atoms."""

    def __init__(self, embed_dim: int, num_targets: int = 1, readout: str = "token"):
        super().__init__()
        if readout not in ("token", "mean", "sum"):
            raise ValueError(f"readout must be 'token', 'mean' or 'sum', got {readout!r}")
        self.config = {"embed_dim": embed_dim, "num_targets": num_targets, "readout": readout}
        self.readout = readout
        self.dense = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, num_targets)
        self.apply(init_transformer_m_)

    def pool(self, out: EncoderOutput) -> Tensor:
        if self.readout == "token":
            return out.graph
        mask = out.atom_mask.unsqueeze(-1).to(out.atoms.dtype)
        total = (out.atoms * mask).sum(dim=1)
        return total if self.readout == "sum" else total / mask.sum(dim=1).clamp(min=1)

    def forward(self, out: EncoderOutput) -> Tensor:
        """``[B, T]`` predictions."""
        return self.out_proj(F.gelu(self.dense(self.pool(out))))
