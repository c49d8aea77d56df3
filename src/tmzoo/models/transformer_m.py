"""Transformer-M: one Transformer over atoms + a graph token, with 2D and 3D channels."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from tmzoo.data.dense import DenseMolecules, to_dense
from tmzoo.models.embeddings import AtomEmbedding, Graph2DBias
from tmzoo.models.geometry import Geometry3DBias
from tmzoo.models.init import init_transformer_m_
from tmzoo.models.layers import Dropout, TransformerMLayer
from tmzoo.models.output import EncoderOutput, init_arguments
from tmzoo.modes import Mode


class TransformerM(nn.Module):
    """The Transformer-M encoder (Luo et al., ICLR 2023), as in ``SPEC.md``.

    Args:
        num_layers, embed_dim, ffn_dim, num_heads: backbone shape (L12: 12, 768, 768, 32).
        num_kernels: Gaussian kernels of the 3D channel.
        use_2d, use_3d: build the 2D / 3D channel at all (Graphormer = 2D only).
        mode_probs: (p_2D+3D, p_2D, p_3D) for mode dropout in training.
        dropout, attention_dropout, activation_dropout, droppath: regularisation.
        reference_compatible: reproduce the reference's quirks (batch-wide stochastic depth
            per token position, batch-dependent hop padding); set when loading its weights.
        recompute_3d: recompute the Gaussian basis in backward to save memory.
        embed_layer_norm: LayerNorm on the summed embeddings (the released models have it).
    """

    reads_dense_batches = True  # padded DenseMolecules (tmzoo.data.dense)

    def __init__(
        self,
        num_layers: int = 12,
        embed_dim: int = 768,
        ffn_dim: int = 768,
        num_heads: int = 32,
        num_kernels: int = 128,
        use_2d: bool = True,
        use_3d: bool = True,
        mode_probs: Sequence[float] = (0.2, 0.2, 0.6),
        dropout: float = 0.0,
        attention_dropout: float = 0.1,
        activation_dropout: float = 0.1,
        droppath: float = 0.1,
        multi_hop_max_dist: int = 5,
        reference_compatible: bool = False,
        recompute_3d: bool = True,
        embed_layer_norm: bool = True,
    ):
        super().__init__()
        if not (use_2d or use_3d):
            raise ValueError("Transformer-M needs at least one of use_2d, use_3d")
        probs = torch.tensor([float(p) for p in mode_probs], device="cpu")  # CPU: checkable on meta too
        if probs.numel() != 3 or (probs < 0).any() or abs(float(probs.sum()) - 1.0) > 1e-6:
            raise ValueError(f"mode_probs must be 3 non-negative numbers summing to 1, got {mode_probs}")
        self.config = init_arguments(self)
        self.config["mode_probs"] = [float(p) for p in mode_probs]
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.use_2d, self.use_3d = use_2d, use_3d
        self.register_buffer("mode_probs", probs, persistent=False)

        self.atom_feature = AtomEmbedding(embed_dim)
        self.molecule_attn_bias = Graph2DBias(
            num_heads, multi_hop_max_dist=multi_hop_max_dist, exact_hop_padding=reference_compatible
        )
        self.molecule_3d_bias = (
            Geometry3DBias(embed_dim, num_heads, num_kernels, recompute=recompute_3d) if use_3d else None
        )
        self.emb_layer_norm = nn.LayerNorm(embed_dim) if embed_layer_norm else nn.Identity()
        self.emb_dropout = Dropout(dropout)
        rates = torch.linspace(0, droppath, num_layers, device="cpu").tolist() if num_layers > 1 else [0.0]
        self.layers = nn.ModuleList(
            TransformerMLayer(
                embed_dim, ffn_dim, num_heads, dropout, attention_dropout, activation_dropout,
                droppath=rate, droppath_per_token=reference_compatible,
            )
            for rate in rates
        )
        self.apply(init_transformer_m_)

    # ------------------------------------------------------------------ modes
    def resolve_modes(self, mol: DenseMolecules, modes: Tensor | None) -> Tensor:
        """Per-molecule modes: given, drawn (training) or 2D+3D (inference); 2D without coordinates."""
        b, device = mol.num_graphs, mol.x.device
        if modes is None:
            if self.training:
                modes = torch.multinomial(self.mode_probs, b, replacement=True).to(device)
            else:
                modes = torch.full((b,), int(Mode.BOTH), device=device, dtype=torch.long)
        modes = modes.to(device=device, dtype=torch.long).view(b)
        if not self.use_3d:
            modes = torch.full_like(modes, int(Mode.ONLY_2D))
        elif not self.use_2d:
            modes = torch.full_like(modes, int(Mode.ONLY_3D))
        # a molecule without coordinates can only be read in 2D
        return torch.where(mol.has_pos, modes, torch.full_like(modes, int(Mode.ONLY_2D)))

    def _3d_of_subset(self, mol: DenseMolecules, use_3d: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The 3D channel computed for the molecules that use it only, zeros for the others.

        Same result as computing it for all and zeroing (the −inf on padded keys that the
        others lose is put back by the key-padding mask in ``forward``); in pretraining 20 %
        of the molecules are 2D-only, so this skips 20 % of the ``[B, N, N, K]`` work.
        """
        idx = use_3d.nonzero().view(-1)
        sub = mol.select(idx)
        part_bias, part_atom, part_direction = self.molecule_3d_bias(sub)
        b = mol.num_graphs
        bias_3d = part_bias.new_zeros(b, *part_bias.shape[1:]).index_copy(0, idx, part_bias)
        atom_3d = part_atom.new_zeros(b, *part_atom.shape[1:]).index_copy(0, idx, part_atom)
        direction = part_direction.new_zeros(b, *part_direction.shape[1:]).index_copy(0, idx, part_direction)
        return bias_3d, atom_3d, direction

    # ---------------------------------------------------------------- forward
    def forward(
        self, batch: Batch | DenseMolecules, modes: Tensor | None = None, graph_only: bool = False
    ) -> EncoderOutput:
        """Encode a dense batch (:func:`tmzoo.data.dense.collate_dense`, padded in loader
        workers) or a PyG ``Batch`` (padded here). ``graph_only``: the last layer computes the
        graph token alone (``tokens`` is ``[B, 1, C]``), for heads that read ``out.graph``."""
        mol = batch if isinstance(batch, DenseMolecules) else to_dense(batch)
        modes = self.resolve_modes(mol, modes)
        b, n = mol.x.shape[:2]
        use_2d = (modes != int(Mode.ONLY_3D)).float() * float(self.use_2d)  # [B]
        use_3d = (modes != int(Mode.ONLY_2D)) & mol.has_pos & self.use_3d

        x = self.atom_feature(mol, use_2d)
        bias = self.molecule_attn_bias.token_bias(b, n + 1, x)
        if self.use_2d:
            bias[:, :, 1:, 1:] += self.molecule_attn_bias(mol) * use_2d[:, None, None, None]

        direction = None
        compiling = torch.compiler.is_compiling()  # no data-dependent branches in a compiled graph
        if self.molecule_3d_bias is not None and (compiling or bool(use_3d.any())):
            if compiling:  # computed for every molecule, then zeroed where not used
                bias_3d, atom_3d, direction = self.molecule_3d_bias(mol)
                on = use_3d[:, None, None, None]
                bias_3d = torch.where(on | torch.isinf(bias_3d), bias_3d, torch.zeros_like(bias_3d))
                atom_3d, direction = atom_3d * on[..., 0], direction * on
            elif bool(use_3d.all()):
                bias_3d, atom_3d, direction = self.molecule_3d_bias(mol)
            else:
                bias_3d, atom_3d, direction = self._3d_of_subset(mol, use_3d)
            bias[:, :, 1:, 1:] += bias_3d
            x = torch.cat([x[:, :1], x[:, 1:] + 0.01 * atom_3d], dim=1)
        key_padding = torch.cat([mol.mask.new_ones(b, 1), mol.mask], dim=1)
        bias = bias.masked_fill(~key_padding[:, None, None, :], float("-inf"))

        x = self.emb_dropout(self.emb_layer_norm(x))
        for i, layer in enumerate(self.layers):
            x = layer(x, bias, 1 if graph_only and i == len(self.layers) - 1 else None)
        if direction is None:
            direction = x.new_zeros(b, n, n, 3)
        return EncoderOutput(tokens=x, atom_mask=mol.mask, bias=bias, direction=direction, modes=modes)


def fastest_precision(device: str | torch.device = "cpu") -> str:
    """The Lightning ``precision`` that trains Transformer-M fastest on ``device``.

    ``"bf16-mixed"`` on GPUs with bf16 and on CPUs with AVX512-BF16 or AMX (measured on an
    AVX512-BF16 CPU, small shape, batch 64: 1.7-1.9x the fp32 step); ``"32-true"`` elsewhere
    (bf16 without those instructions is emulated and slower than fp32). The Gaussian basis of
    the 3D channel stays fp32 under autocast whatever is chosen.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return "16-mixed" if torch.cuda.is_available() and not torch.cuda.is_bf16_supported() else "bf16-mixed"
    if kind == "cpu":
        fast = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return "bf16-mixed" if fast else "32-true"
    return "32-true"
