"""Prediction heads on top of an :class:`EncoderOutput`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tmzoo.models.init import init_transformer_m_
from tmzoo.models.layers import Dropout
from tmzoo.models.output import EncoderOutput, init_arguments


def fp32_linear(x: Tensor, layer: nn.Linear) -> Tensor:
    """``layer(x)`` in fp32 whatever the autocast: a prediction in eV rounded to bf16 would keep
    3 significant digits (steps of 0.03 eV at 5 eV)."""
    with torch.autocast(x.device.type, enabled=False):
        return F.linear(x.float(), layer.weight.float(), None if layer.bias is None else layer.bias.float())


class GapHead(nn.Module):
    """The pretraining HOMO-LUMO head: Linear → GELU → LayerNorm → Linear(no bias) + scalar bias.

    ``forward`` reads the graph token; :meth:`per_token` applies it to every token.
    """

    graph_token_only = True  # the encoder may skip the atoms in its last layer

    def __init__(self, embed_dim: int):
        super().__init__()
        self.config = init_arguments(self)
        self.lm_head_transform_weight = nn.Linear(embed_dim, embed_dim)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.embed_out = nn.Linear(embed_dim, 1, bias=False)
        self.lm_output_learned_bias = nn.Parameter(torch.zeros(1))
        self.apply(init_transformer_m_)

    def per_token(self, tokens: Tensor) -> Tensor:
        x = self.layer_norm(F.gelu(self.lm_head_transform_weight(tokens)))
        return fp32_linear(x, self.embed_out) + self.lm_output_learned_bias

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
        self.config = init_arguments(self)
        self.num_heads = num_heads
        self.scaling = (embed_dim // num_heads) ** -0.5
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.force_proj1 = nn.Linear(embed_dim, 1)
        self.force_proj2 = nn.Linear(embed_dim, 1)
        self.force_proj3 = nn.Linear(embed_dim, 1)
        self.dropout = Dropout(attention_dropout)
        self.apply(init_transformer_m_)

    def forward(self, out: EncoderOutput) -> Tensor:
        if out.bias is None or out.direction is None:
            raise ValueError("DenoisingHead needs an encoder that returns attention bias and directions")
        atoms = out.atoms
        b, n, c = atoms.shape
        h = self.num_heads
        # force_proj_c(o_c(i)) = Σ_j Δ̂_ij[c] Σ_h A_h(i, j) u_hc(j) + b_c, with u_hc(j) = w_c,h · v_h(j):
        # v_proj folded into each axis's projection, u comes from the atoms in the GEMM of q and k,
        # and nothing [B, N, 3, C]-sized is formed
        projections = (self.force_proj1, self.force_proj2, self.force_proj3)
        w = torch.cat([p.weight for p in projections]).view(3, h, -1, 1)  # [3, H, D, 1]
        u_weight = (w * self.v_proj.weight.view(1, h, -1, c)).sum(2).transpose(0, 1).reshape(h * 3, c)
        u_bias = (w[..., 0] * self.v_proj.bias.view(1, h, -1)).sum(2).t().reshape(h * 3)
        qku = F.linear(
            atoms,
            torch.cat([self.q_proj.weight, self.k_proj.weight, u_weight]),
            torch.cat([self.q_proj.bias, self.k_proj.bias, u_bias]),
        )
        q, k, u = qku.split([c, c, h * 3], dim=-1)
        q = q.view(b, n, h, -1).transpose(1, 2) * self.scaling
        k = k.view(b, n, h, -1).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) + out.bias[:, :, 1:, 1:]
        probs = self.dropout(torch.softmax(logits.float(), dim=-1).to(q.dtype))  # [B, H, N, N]
        u = u.view(b, n, h, 3).transpose(1, 2)  # [B, H, N, 3]
        m = torch.einsum("bhij,bhjc->bijc", probs, u)  # [B, N, N, 3]: Σ_h A_h(i, j) u_hc(j)
        forces = (out.direction.float() * m.float()).sum(2)  # [B, N, 3]
        return forces + torch.cat([p.bias for p in projections]).float()


class GraphRegressionHead(nn.Module):
    """Linear(C, C) → GELU → Linear(C, T) on a graph readout: the graph token, or mean/sum of atoms."""

    def __init__(self, embed_dim: int, num_targets: int = 1, readout: str = "token"):
        super().__init__()
        if readout not in ("token", "mean", "sum"):
            raise ValueError(f"readout must be 'token', 'mean' or 'sum', got {readout!r}")
        self.config = init_arguments(self)
        self.readout = readout
        self.dense = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, num_targets)
        self.apply(init_transformer_m_)

    @property
    def graph_token_only(self) -> bool:
        return self.readout == "token"

    def pool(self, out: EncoderOutput) -> Tensor:
        if self.readout == "token":
            return out.graph
        mask = out.atom_mask.unsqueeze(-1).to(out.atoms.dtype)
        total = (out.atoms * mask).sum(dim=1)
        return total if self.readout == "sum" else total / mask.sum(dim=1).clamp(min=1)

    def forward(self, out: EncoderOutput) -> Tensor:
        """``[B, T]`` predictions."""
        return fp32_linear(F.gelu(self.dense(self.pool(out))), self.out_proj)
