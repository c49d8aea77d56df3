"""Transformer-M's 3D channel: Gaussian basis over pair distances, bias and atom encoding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from tmzoo.data.dense import DenseMolecules

_PI = 3.14159  # the reference's value of pi, kept for checkpoint parity
_SQRT_2PI = (2 * _PI) ** 0.5
# exp(t) for t below this is under fp32's smallest normal number (~1e-38, as good as 0 here), and
# ATen's vectorised exp is 10-30x slower on such t (most of a [B, N, N, K] basis): t is clamped to it
_EXP_FLOOR = -87.0


def pair_geometry(pos: Tensor) -> tuple[Tensor, Tensor]:
    """Distances ``[B, N, N]`` and unit directions ``[B, N, N, 3]`` from atom i to atom j."""
    delta = pos.unsqueeze(1) - pos.unsqueeze(2)
    dist = delta.norm(dim=-1)
    return dist, delta / (dist.unsqueeze(-1) + 1e-5)


PAIR_TYPE_STRIDE = 512  # rows of the first atom of a pair; the second atom's rows follow
PAIR_TYPE_PADDING = 1  # row of a padded atom (the reference's padding value 0, + 1)


def atom_type_rows(x: Tensor) -> Tensor:
    """``[B, N]`` row of each atom in the pair-type tables: ``Z + 2`` (``x`` holds raw OGB atom
    features, whose first column is ``Z − 1``)."""
    return x[..., 0].long() + 3


def pair_type_rows(x: Tensor, mask: Tensor) -> Tensor:
    """``[B, N, N, 2]`` pair-type rows ``(Z_i + 2, Z_j + 514)``; ``(1, 513)`` when either atom is padding."""
    rows = atom_type_rows(x)
    first, second = torch.broadcast_tensors(rows[:, :, None], rows[:, None, :] + PAIR_TYPE_STRIDE)
    pairs = torch.stack([first, second], dim=-1)
    padding = pairs.new_tensor([PAIR_TYPE_PADDING, PAIR_TYPE_PADDING + PAIR_TYPE_STRIDE])
    return torch.where((mask[:, :, None] & mask[:, None, :])[..., None], pairs, padding)


def gaussians(x: Tensor, mean: Tensor, s: Tensor) -> Tensor:
    """``N(x; μ_k, σ_k)`` for the K kernels, ``σ = |s| + 0.01``; fp32 in, fp32 out (in place on one
    ``[..., K]`` buffer when no gradient is recorded)."""
    std = s.abs() + 1e-2
    if torch.is_grad_enabled():
        return torch.exp((-0.5 * ((x - mean) / std) ** 2).clamp(min=_EXP_FLOOR)) / (_SQRT_2PI * std)
    z = (x - mean).div_(std)
    return z.square_().mul_(-0.5).clamp_(min=_EXP_FLOOR).exp_().div_(_SQRT_2PI * std)


class GaussianPairBasis(nn.Module):
    """K Gaussians over an affine map of the distance, the map learned per atom-type pair.

    ``mul``/``bias`` (1536 rows) give γ and β as the sum over the pair's two type rows;
    ``means``/``stds`` are 1×K tables. Always evaluated in fp32.
    """

    def __init__(self, num_kernels: int = 128, num_pair_rows: int = 512 * 3):
        super().__init__()
        self.num_kernels = num_kernels
        self.means = nn.Embedding(1, num_kernels)
        self.stds = nn.Embedding(1, num_kernels)
        self.mul = nn.Embedding(num_pair_rows, 1, padding_idx=0)
        self.bias = nn.Embedding(num_pair_rows, 1, padding_idx=0)

    def affine_input(self, dist: Tensor, atom_rows: Tensor, mask: Tensor) -> Tensor:
        """``γ·d + β`` ``[B, N, N, 1]`` in fp32, as :meth:`forward` computes it for
        ``pair_type_rows``, but looked up per atom and broadcast rather than per pair."""
        pad = torch.tensor([PAIR_TYPE_PADDING, PAIR_TYPE_PADDING + PAIR_TYPE_STRIDE], device=atom_rows.device)
        second = atom_rows + PAIR_TYPE_STRIDE
        real = (mask[:, :, None] & mask[:, None, :]).unsqueeze(-1)

        def affine(table: nn.Embedding) -> Tensor:
            pairs = table(atom_rows).float()[:, :, None] + table(second).float()[:, None, :]
            return torch.where(real, pairs, table(pad).float().sum(0))

        return affine(self.mul) * dist.float().unsqueeze(-1) + affine(self.bias)

    def basis(self, x: Tensor) -> Tensor:
        """The K Gaussians of the affine input ``x`` ``[..., 1]`` (fp32)."""
        with torch.autocast(x.device.type, enabled=False):
            return gaussians(x.float(), self.means.weight.float().view(-1), self.stds.weight.float().view(-1))

    def forward(self, dist: Tensor, pair_type: Tensor) -> Tensor:
        """``[..., K]`` basis of distances ``dist`` for pair-type rows ``pair_type [..., 2]``."""
        with torch.autocast(dist.device.type, enabled=False):
            gamma = self.mul(pair_type).sum(dim=-2).float()
            beta = self.bias(pair_type).sum(dim=-2).float()
            return self.basis(gamma * dist.float().unsqueeze(-1) + beta)


class Geometry3DBias(nn.Module):
    """Per-head 3D attention bias and the summed-distance atom encoding.

    ``recompute=True`` recomputes the ``[B, N, N, K]`` basis in backward instead of storing it.
    """

    def __init__(self, embed_dim: int, num_heads: int, num_kernels: int = 128, recompute: bool = True):
        super().__init__()
        self.gbf = GaussianPairBasis(num_kernels)
        self.gbf_proj = _NonLinear(num_kernels, num_heads)
        self.edge_proj = nn.Linear(num_kernels, embed_dim)
        self.recompute = recompute

    def _bias_and_sum(self, dist: Tensor, atom_rows: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(dist.device.type, enabled=False):
            psi = self.gbf.basis(self.gbf.affine_input(dist, atom_rows, key_mask > 0))  # fp32 [B, N, N, K]
        bias = self.gbf_proj(psi.to(self.gbf_proj.layer1.weight.dtype))
        summed = (psi * key_mask[:, None, :, None]).sum(dim=-2)
        return bias, summed

    def _can_fuse(self, dist: Tensor) -> bool:
        """The fused path covers fp32 weights (autocast included); others recompute by checkpoint."""
        return self.gbf_proj.layer1.weight.dtype == torch.float32

    def _fused_bias_and_sum(self, dist: Tensor, atom_rows: Tensor, key_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``_bias_and_sum`` with an analytic backward that recomputes the basis (see below)."""
        gbf, proj = self.gbf, self.gbf_proj
        x = gbf.affine_input(dist, atom_rows, key_mask > 0)  # [B, N, N, 1]
        return _GaussianProjection.apply(
            x, gbf.means.weight.view(-1), gbf.stds.weight.view(-1),
            proj.layer1.weight, proj.layer1.bias, proj.layer2.weight, proj.layer2.bias, key_mask,
        )

    def forward(self, mol: DenseMolecules) -> tuple[Tensor, Tensor, Tensor]:
        """``bias [B, H, N, N]`` (−inf on padded keys), ``atom_encoding [B, N, C]``, ``direction``."""
        dist, direction = pair_geometry(mol.pos)
        key_mask = mol.mask.to(dist.dtype)
        atom_rows = atom_type_rows(mol.x)
        if self.recompute and torch.is_grad_enabled() and self._can_fuse(dist):
            bias, summed = self._fused_bias_and_sum(dist, atom_rows, key_mask)
        elif self.recompute and torch.is_grad_enabled():
            bias, summed = checkpoint(self._bias_and_sum, dist, atom_rows, key_mask, use_reentrant=False)
        else:
            bias, summed = self._bias_and_sum(dist, atom_rows, key_mask)
        bias = bias.permute(0, 3, 1, 2).masked_fill(~mol.mask[:, None, None, :], float("-inf"))
        return bias, self.edge_proj(summed.to(self.edge_proj.weight.dtype)), direction


class _GaussianProjection(torch.autograd.Function):
    """Gaussian basis (fp32) → ``gbf_proj`` (fp32, or bf16 under autocast) and the key-masked
    sum over j (fp32), with a hand-written fp32 backward that keeps nothing ``[B, N, N, K]``-sized between forward and backward.

    Same forward ops as ``_bias_and_sum``. Backward recomputes ψ and ``layer1``'s output once
    and applies the chain rule directly (``∂ψ/∂z = −zψ``, ``∂ψ/∂σ = ψ(z² − 1)/σ``), which is
    cheaper than ``checkpoint`` (a second forward plus autograd's per-op backward). Padded keys
    j receive no gradient from either output (their bias is −inf, their ψ is masked out of the
    sum), so ψ is zeroed there in backward.
    """

    @staticmethod
    def forward(ctx, x, mean, s, w1, b1, w2, b2, key_mask):
        psi = gaussians(x, mean, s)
        bias = F.linear(F.gelu(F.linear(psi, w1, b1)), w2, b2)
        summed = (psi * key_mask[:, None, :, None]).sum(dim=-2)
        ctx.save_for_backward(x, mean, s, w1, b1, w2, key_mask)
        return bias, summed

    @staticmethod
    def backward(ctx, d_bias, d_summed):
        x, mean, s, w1, b1, w2, key_mask = ctx.saved_tensors
        d_bias = d_bias.float()  # under autocast the projection ran in bf16; its gradient is taken in fp32
        d_summed = None if d_summed is None else d_summed.float()
        k = mean.numel()
        inv = 1.0 / (s.abs() + 1e-2)
        z = (x - mean).mul_(inv)  # [B, N, N, K]; in place where possible: fewer [B, N, N, K] buffers
        psi = (z * z).mul_(-0.5).clamp_(min=_EXP_FLOOR).exp_().mul_(key_mask[:, None, :, None] * (inv / _SQRT_2PI))
        # terms below 1e-20 change no fp32 gradient, but their products underflow to denormals,
        # which make the GEMMs below up to 10x slower on x86 CPUs (threshold_: one pass, no bool mask)
        F.threshold_(psi, 1e-20, 0.0)
        flat_psi = psi.view(-1, k)
        h1 = F.linear(flat_psi, w1, b1)
        d_bias = d_bias.reshape(-1, d_bias.shape[-1])
        dw2 = d_bias.t() @ F.gelu(h1)
        db2 = d_bias.sum(0)
        dh1 = torch.ops.aten.gelu_backward(d_bias @ w2, h1)
        del h1
        dw1 = dh1.t() @ flat_psi
        db1 = dh1.sum(0)
        d_psi = (dh1 @ w1).view_as(psi)
        del dh1
        if d_summed is not None:
            d_psi.add_(d_summed.unsqueeze(2))
        t = d_psi.mul_(psi)  # dL/dψ · ψ
        del psi
        t_sum = t.view(-1, k).sum(0)
        tz = t.mul_(z)  # dL/dz = −t·z
        dx = -(tz @ inv.unsqueeze(-1))  # dz/dx = 1/σ
        dmean = tz.view(-1, k).sum(0) * inv  # dz/dμ = −1/σ
        dstd = (tz.mul_(z).view(-1, k).sum(0) - t_sum) * inv
        return dx, dmean, dstd * torch.sign(s), dw1, db1, dw2, db2, None


class _NonLinear(nn.Module):
    """Linear → GELU → Linear (the reference's ``gbf_proj``)."""

    def __init__(self, in_features: int, out_features: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or in_features
        self.layer1 = nn.Linear(in_features, hidden)
        self.layer2 = nn.Linear(hidden, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer2(F.gelu(self.layer1(x)))


