"""Fine-tuning tasks: property regression (QM9, ...) and binding affinity (PDBBind)."""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, PearsonCorrCoef

from tmzoo.models.heads import GraphRegressionHead
from tmzoo.tasks.base import EvalMode, MoleculeTask, build_head, masked_targets
from tmzoo.tasks.data_info import report_units
from tmzoo.tasks.metrics import FitResidualStd
from tmzoo.tasks.pretrained import load_pretrained_encoder


class Regression(MoleculeTask):
    """Graph-level regression of one or several targets, standardised with train statistics.

    The head predicts standardised targets; ``forward``/``predict_step`` return them in data
    units. NaN targets are left out of loss and metrics. MAEs are logged per target
    (``{stage}/mae_{name}``) and over all known entries (``{stage}/mae``) in the units users
    read: eV and Hartree energies in meV (from ``data_info["target_units"]``; no scaling when absent).

    Args:
        encoder: the encoder.
        head: factory called with ``embed_dim, num_targets`` (default
            ``GraphRegressionHead(readout="token")``) or a module.
        loss: ``"l2"`` (mean squared error, the reference) or ``"l1"``, on standardised targets.
        pretrained: a tmzoo ``.ckpt``/bundle or released Transformer-M file whose encoder
            weights are loaded (the heads stay fresh).
        freeze_encoder: train the head only.
        Other arguments: see :class:`MoleculeTask`.
    """

    task_name = "regression"

    def __init__(
        self,
        encoder: nn.Module,
        head: Callable[[int, int], nn.Module] | None = None,
        loss: Literal["l1", "l2"] = "l2",
        pretrained: str | None = None,
        freeze_encoder: bool = False,
        mode_probs: Sequence[float] | None = None,
        eval_mode: EvalMode | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        data_info: dict | None = None,
    ):
        super().__init__(encoder, optimizer, lr_scheduler, mode_probs, eval_mode, data_info)
        if loss not in ("l1", "l2"):
            raise ValueError(f"loss must be 'l1' or 'l2', got {loss!r}")
        names = self.target_names
        self.num_targets = len(names)
        self.head = build_head(head or GraphRegressionHead, self.embed_dim, self.num_targets)
        head_targets = getattr(self.head, "config", {}).get("num_targets", self.num_targets)
        if head_targets != self.num_targets:
            raise ValueError(f"head predicts {head_targets} targets but the data has {self.num_targets}: {names}")
        self.loss_name = loss
        info = self.data_info
        mean = info.get("target_mean") or [0.0] * self.num_targets
        std = info.get("target_std") or [1.0] * self.num_targets
        self.register_buffer("target_mean", torch.tensor(mean, dtype=torch.float32).view(-1), persistent=False)
        self.register_buffer("target_std", torch.tensor(std, dtype=torch.float32).view(-1), persistent=False)
        units = report_units(info, self.num_targets)
        self.report_units = [u for u, _ in units]
        self.register_buffer("report_scale", torch.tensor([s for _, s in units]), persistent=False)
        self.metrics = nn.ModuleDict()
        self._build_metrics()

        self.pretrained_spec: dict = {}
        if pretrained:
            self.pretrained_spec = load_pretrained_encoder(self.encoder, pretrained)
            rank_zero_info(f"loaded pretrained encoder weights from {pretrained}")
            self._check_featurization(pretrained)
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    def _check_featurization(self, source: str) -> None:
        theirs = self.pretrained_spec.get("featurization")
        ours = self.data_info.get("featurization")
        if theirs and ours and dict(theirs) != dict(ours):
            rank_zero_warn(f"{source} was trained with featurization {theirs}, the data uses {ours}")

    def _build_metrics(self) -> None:
        for stage in ("val", "test"):
            self.metrics[f"{stage}_mae"] = MeanAbsoluteError()
            for i in range(self.num_targets):
                self.metrics[f"{stage}_mae_{i}"] = MeanAbsoluteError()

    # ------------------------------------------------------------------ model
    def forward(self, batch, mode=None) -> Tensor:
        """``[B, T]`` predictions in data units."""
        return self.head(self.encode(batch, mode)).float() * self.target_std + self.target_mean

    def _standardised(self, batch) -> tuple[Tensor, Tensor, Tensor]:
        """(prediction, target) standardised, and the mask of known targets."""
        pred = self.head(self.encode(batch)).float()
        y = (masked_targets(batch, self.num_targets) - self.target_mean) / self.target_std
        return pred, y, torch.isfinite(y)

    def _loss(self, pred: Tensor, y: Tensor, known: Tensor) -> Tensor:
        err = torch.where(known, pred - torch.nan_to_num(y), torch.zeros_like(pred))
        per_entry = err.abs() if self.loss_name == "l1" else err.pow(2)
        return per_entry.sum() / known.sum().clamp(min=1)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        pred, y, known = self._standardised(batch)
        loss = self._loss(pred, y, known)
        self.log("train/loss", loss, batch_size=batch.num_graphs, prog_bar=True)
        return loss

    # ------------------------------------------------------------- evaluation
    def _evaluate(self, batch, stage: str) -> None:
        pred, y, known = self._standardised(batch)
        self.log(f"{stage}/loss", self._loss(pred, y, known), batch_size=batch.num_graphs)
        scale = self.target_std * self.report_scale  # standardised -> reported units
        pred_r, y_r = pred * scale, torch.nan_to_num(y) * scale
        if known.any():
            metric = self.metrics[f"{stage}_mae"]
            metric.update(pred_r[known], y_r[known])
            self.log(f"{stage}/mae", metric, batch_size=int(known.sum()), prog_bar=True)
        for i, name in enumerate(self.target_names):
            k = known[:, i]
            if k.any():
                metric = self.metrics[f"{stage}_mae_{i}"]
                metric.update(pred_r[k, i], y_r[k, i])
                self.log(f"{stage}/mae_{name}", metric, batch_size=int(k.sum()))


    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Train statistics come from the checkpoint, not from the data at hand (e.g. a users' file)."""
        super().on_load_checkpoint(checkpoint)
        spec = checkpoint.get("tmzoo") or {}
        for name in ("target_mean", "target_std"):
            if spec.get(name) is not None:
                value = torch.tensor(spec[name], dtype=torch.float32).view(-1)
                if value.numel() == getattr(self, name).numel():
                    getattr(self, name).copy_(value)

    def tmzoo_spec(self) -> dict:
        spec = super().tmzoo_spec()
        spec["target_mean"] = self.target_mean.tolist()
        spec["target_std"] = self.target_std.tolist()
        return spec


class Affinity(Regression):
    """Binding affinity (−log Kd/Ki) regression, PDBBind protocol: RMSE, MAE, Pearson R and SD
    (std of the residuals of a linear fit of targets on predictions), in pK units."""

    task_name = "affinity"

    def _build_metrics(self) -> None:
        if self.num_targets != 1:
            raise ValueError(f"Affinity predicts one target, the data has {self.num_targets}")
        for stage in ("val", "test"):
            self.metrics[f"{stage}_rmse"] = MeanSquaredError(squared=False)
            self.metrics[f"{stage}_mae"] = MeanAbsoluteError()
            self.metrics[f"{stage}_pearson"] = PearsonCorrCoef()
            self.metrics[f"{stage}_sd"] = FitResidualStd()

    def _evaluate(self, batch, stage: str) -> None:
        pred, y, known = self._standardised(batch)
        self.log(f"{stage}/loss", self._loss(pred, y, known), batch_size=batch.num_graphs)
        known = known[:, 0]
        if not known.any():
            return
        p = (pred[:, 0] * self.target_std + self.target_mean)[known]
        t = (y[:, 0] * self.target_std + self.target_mean)[known]
        for name in ("rmse", "mae", "pearson", "sd"):
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(p, t)
            self.log(f"{stage}/{name}", metric, batch_size=int(known.sum()), prog_bar=name == "rmse")
