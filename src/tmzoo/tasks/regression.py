"""Fine-tuning tasks: property regression (QM9, ...) and binding affinity (PDBBind)."""

from __future__ import annotations

from typing import Callable, Literal, Sequence

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, PearsonCorrCoef

from tmzoo.models.heads import GraphRegressionHead
from tmzoo.modes import EvalMode
from tmzoo.tasks.base import MoleculeTask, build_head, masked_targets
from tmzoo.tasks.data_info import metric_suffix, report_units
from tmzoo.tasks.metrics import FitResidualStd
from tmzoo.tasks.pretrained import build_pretrained_encoder, load_pretrained_encoder


class Regression(MoleculeTask):
    """Graph-level regression of one or several targets, standardised with train statistics.

    The head predicts standardised targets; ``forward``/``predict_step`` return them in data
    units. NaN targets are left out of loss and metrics. MAEs are logged per target with their
    unit in the name (``{stage}/mae_gap_meV``; eV and Hartree energies in meV, from
    ``data_info["target_units"]``; ``{stage}/mae_logp`` without a unit) and as the mean over
    targets of the MAE in standardised units (``{stage}/mae_standardised``, what checkpoints
    monitor: it weighs targets of different units alike).

    Args:
        encoder: the encoder; ``None`` with ``pretrained``: built from the file's own settings.
        head: factory called with ``embed_dim, num_targets`` (default
            ``GraphRegressionHead(readout="token")``) or a module.
        loss: ``"l2"`` (mean squared error, the reference) or ``"l1"``, on standardised targets.
        pretrained: a tmzoo ``.ckpt``/bundle or released Transformer-M file whose encoder
            weights seed a fresh fit (the heads stay fresh). Checkpoints of this task keep the
            weights themselves, so they load without this file.
        encoder_args: settings on top of the pretrained file's (e.g. ``{dropout: 0.1}``) when
            ``encoder`` is ``None``.
        freeze_encoder: train the head only.
        Other arguments: see :class:`MoleculeTask`.
    """

    task_name = "regression"

    def __init__(
        self,
        encoder: nn.Module | None = None,
        head: Callable[[int, int], nn.Module] | None = None,
        loss: Literal["l1", "l2"] = "l2",
        pretrained: str | None = None,
        encoder_args: dict | None = None,
        freeze_encoder: bool = False,
        mode_probs: Sequence[float] | None = None,
        eval_mode: EvalMode | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        data_info: dict | None = None,
    ):
        pretrained_spec: dict = {}
        if encoder is None:
            if not pretrained:
                raise ValueError("give model.init_args.encoder, or model.init_args.pretrained to build it from a file")
            encoder, pretrained_spec = build_pretrained_encoder(pretrained, encoder_args)
            rank_zero_info(f"encoder built from {pretrained} and its weights loaded")
        elif encoder_args:
            raise ValueError("encoder_args apply to an encoder built from `pretrained`; set them in encoder.init_args")
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
        self.register_buffer("report_scale", torch.ones(self.num_targets), persistent=False)
        self._set_report_units()
        self.metrics = nn.ModuleDict()
        self._build_metrics()

        self.pretrained_spec = pretrained_spec
        if pretrained and not pretrained_spec:
            self.pretrained_spec = load_pretrained_encoder(self.encoder, pretrained)
            rank_zero_info(f"loaded pretrained encoder weights from {pretrained}")
        if pretrained:
            self._check_featurization(pretrained)
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    def _set_report_units(self) -> None:
        units = report_units(self.data_info, self.num_targets)
        self.report_units = [u for u, _ in units]
        self.report_scale.copy_(torch.tensor([s for _, s in units]))

    def _check_featurization(self, source: str) -> None:
        """Warn when the data's transform differs from the encoder's training (hydrogens may
        differ: fine-tuning on QM9 from a PCQM4Mv2 model keeps them, as the reference did)."""
        theirs = self.pretrained_spec.get("featurization") or {}
        ours = self.data_info.get("featurization") or {}
        keys = ("max_hops", "reference_compatible")
        differ = {k: (theirs[k], ours[k]) for k in keys if k in theirs and k in ours and theirs[k] != ours[k]}
        if differ:
            rank_zero_warn(f"{source} was trained with featurization {theirs}, the data uses {ours}")

    @property
    def metric_names(self) -> list[str]:
        """Per target, the suffix of its MAE metric (``gap_meV``, ``logp``)."""
        return [metric_suffix(n, u) for n, u in zip(self.target_names, self.report_units)]

    def _build_metrics(self) -> None:
        for stage in ("val", "test"):
            for i in range(self.num_targets):
                self.metrics[f"{stage}_mae_{i}"] = MeanAbsoluteError()
                self.metrics[f"{stage}_mae_standardised_{i}"] = MeanAbsoluteError()

    # ------------------------------------------------------------------ model
    def forward(self, batch, mode=None) -> Tensor:
        """``[B, T]`` predictions in data units."""
        out = self.encode(batch, mode, graph_only=getattr(self.head, "graph_token_only", False))
        return self.head(out).float() * self.target_std + self.target_mean

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
        for i, name in enumerate(self.metric_names):
            k = known[:, i]
            if k.any():
                metric = self.metrics[f"{stage}_mae_{i}"]
                metric.update(pred_r[k, i], y_r[k, i])
                self.log(f"{stage}/mae_{name}", metric, batch_size=int(k.sum()))
                self.metrics[f"{stage}_mae_standardised_{i}"].update(pred[k, i], y[k, i])

    def _log_standardised_mean(self, stage: str) -> None:
        """``{stage}/mae_standardised``: the mean over targets of each target's standardised MAE."""
        if f"{stage}_mae_standardised_0" not in self.metrics:  # Affinity: its own metrics
            return
        metrics = [self.metrics[f"{stage}_mae_standardised_{i}"] for i in range(self.num_targets)]
        values = [m.compute() for m in metrics if m.update_called]
        if values:
            self.log(f"{stage}/mae_standardised", torch.stack(values).mean(), prog_bar=True, sync_dist=False)
        for m in metrics:
            m.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_standardised_mean("val")

    def on_test_epoch_end(self) -> None:
        self._log_standardised_mean("test")
        super().on_test_epoch_end()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Train statistics come from the checkpoint, not from the data at hand (e.g. a users' file)."""
        super().on_load_checkpoint(checkpoint)
        self._set_report_units()
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
