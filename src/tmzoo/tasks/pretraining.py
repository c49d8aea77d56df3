"""PCQM4Mv2-style pretraining: L1 on the gap from the graph token + 3D denoising."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch_geometric.utils import to_dense_batch
from torchmetrics import MeanAbsoluteError

from tmzoo.data.dense import DenseMolecules
from tmzoo.models.heads import GapHead
from tmzoo.models.output import EncoderOutput
from tmzoo.modes import EvalMode, Mode
from tmzoo.tasks.base import MoleculeTask, build_head, masked_targets


def add_coordinate_noise(batch, std: float) -> tuple[object, Tensor]:
    """A copy of ``batch`` whose ``pos`` has N(0, std²) noise on every atom of every molecule
    with coordinates, and the noise: ``[B, N, 3]`` (zero on padding) for a dense batch,
    ``[num_nodes, 3]`` for a PyG ``Batch``. ``batch`` is not modified."""
    if isinstance(batch, DenseMolecules):
        on = (batch.mask & batch.has_pos[:, None]).unsqueeze(-1)
        noise = torch.randn_like(batch.pos, dtype=torch.float32) * std * on
        return replace(batch, pos=batch.pos.float() + noise), noise
    has_pos = batch.has_pos.view(-1).bool()[batch.batch]
    noise = torch.randn_like(batch.pos, dtype=torch.float32) * std * has_pos[:, None]
    noisy = copy.copy(batch)
    noisy.pos = batch.pos.float() + noise
    return noisy, noise


def denoising_loss(pred: Tensor, noise: Tensor, out: EncoderOutput, batch) -> Tensor:
    """Σ over 3D-only molecules of the mean over atoms of ``1 − cos(pred, noise)`` (not yet
    divided by the batch size). ``noise`` as :func:`add_coordinate_noise` returns it."""
    if noise.dim() == 3:
        noise_dense = noise
    else:
        noise_dense, _ = to_dense_batch(noise, batch.batch, batch_size=batch.num_graphs)
    cos = F.cosine_similarity(pred.float(), noise_dense.float(), dim=-1)  # [B, N]
    mask = out.atom_mask.to(cos.dtype)
    per_molecule = ((1.0 - cos) * mask).sum(1) / mask.sum(1).clamp(min=1)
    only_3d = (out.modes == Mode.ONLY_3D) & batch.has_pos.view(-1).bool()
    return (per_molecule * only_3d.to(per_molecule.dtype)).sum()


class Pretraining(MoleculeTask):
    """The reference objective: L1 on the gap (graph token) + (1 − cos) noise prediction.

    In training, noise of std ``noise_std`` (Å) is added to the coordinates of every molecule
    that has them (only when a denoising head is given); the L1 loss (summed over molecules)
    and the denoising loss (summed over 3D-only molecules) are divided by the batch size
    and added 1:1. Validation/test log the MAE read in 2D-only mode (``mae_2d`` and ``mae``,
    the PCQM4Mv2 protocol) and, over molecules with coordinates, in 3D-only mode (``mae_3d``)
    and in 2D+3D mode (``mae_2d3d``).

    Args:
        encoder: the encoder (``TransformerM``, ``GINVirtualNode``, ``SchNetEncoder``, ...).
        gap_head: factory called with ``embed_dim`` (default :class:`GapHead`) or a module.
        denoising_head: factory called with ``embed_dim, num_heads`` (e.g. :class:`DenoisingHead`)
            or a module; ``None`` trains the gap only.
        noise_std: coordinate noise in Å.
        target: column of ``batch.y`` to regress.
        Other arguments: see :class:`MoleculeTask`.
    """

    task_name = "pretraining"

    def __init__(
        self,
        encoder: nn.Module,
        gap_head: Callable[[int], nn.Module] | None = None,
        denoising_head: Callable[[int, int], nn.Module] | None = None,
        noise_std: float = 0.2,
        target: int = 0,
        mode_probs: Sequence[float] | None = None,
        eval_mode: EvalMode | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        data_info: dict | None = None,
    ):
        super().__init__(encoder, optimizer, lr_scheduler, mode_probs, eval_mode, data_info)
        self.gap_head = build_head(gap_head or GapHead, self.embed_dim)
        self.denoising_head = (
            build_head(denoising_head, self.embed_dim, int(getattr(encoder, "num_heads", 1)))
            if denoising_head is not None
            else None
        )
        self.noise_std = float(noise_std)
        self.target = int(target)
        self.metrics = nn.ModuleDict(
            {f"{stage}_{name}": MeanAbsoluteError() for stage in ("val", "test") for name in ("mae", "mae_2d", "mae_3d", "mae_2d3d")}
        )

    @property
    def target_names(self) -> list[str]:
        names = super().target_names
        return [names[self.target]] if self.target < len(names) else ["homolumogap"]

    def _targets(self, batch) -> Tensor:
        return masked_targets(batch)[:, self.target]

    def forward(self, batch, mode: Mode | None = None) -> Tensor:
        """``[B, 1]`` gap predictions."""
        return self.gap_head(self.encode(batch, mode, graph_only=getattr(self.gap_head, "graph_token_only", False)))

    # --------------------------------------------------------------- training
    def training_step(self, batch, batch_idx: int) -> Tensor:
        size = batch.num_graphs
        y = self._targets(batch)
        use_noise = self.denoising_head is not None and self.noise_std > 0
        noisy, noise = add_coordinate_noise(batch, self.noise_std) if use_noise else (batch, None)
        out = self.encode(noisy)
        pred = self.gap_head(out).squeeze(-1).float()
        known = torch.isfinite(y)
        l1 = torch.where(known, (pred - y).abs(), torch.zeros_like(pred)).sum() / size
        loss = l1
        self.log("train/l1", l1, batch_size=size)
        if self.denoising_head is not None:
            noise_pred = self.denoising_head(out)
            if noise is None:  # noise_std == 0: nothing to predict, keep the head in the graph
                denoise = noise_pred.sum() * 0.0
            else:
                denoise = denoising_loss(noise_pred, noise, out, batch) / size
            loss = loss + denoise
            self.log("train/denoise", denoise, batch_size=size)
        self.log("train/loss", loss, batch_size=size, prog_bar=True)
        return loss

    # ------------------------------------------------------------- evaluation
    def _evaluate(self, batch, stage: str) -> None:
        y = self._targets(batch)
        known = torch.isfinite(y)
        n_known = int(known.sum())
        if n_known:
            pred_2d = self(batch, Mode.ONLY_2D).squeeze(-1).float()
            for name in ("mae", "mae_2d"):
                metric = self.metrics[f"{stage}_{name}"]
                metric.update(pred_2d[known], y[known])
                self.log(f"{stage}/{name}", metric, batch_size=n_known, prog_bar=name == "mae")
        with_pos = known & batch.has_pos.view(-1).bool()
        n_pos = int(with_pos.sum())
        if n_pos and getattr(self.encoder, "use_3d", True):
            for name, mode in (("mae_3d", Mode.ONLY_3D), ("mae_2d3d", Mode.BOTH)):
                pred = self(batch, mode).squeeze(-1).float()
                metric = self.metrics[f"{stage}_{name}"]
                metric.update(pred[with_pos], y[with_pos])
                self.log(f"{stage}/{name}", metric, batch_size=n_pos)

