"""Shared machinery of tmzoo's LightningModules: optimizer/schedule, modes, checkpoint spec."""

from __future__ import annotations

import math

from typing import Callable, Literal, Sequence

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import Tensor, nn

from tmzoo.checkpoints.bundle import module_spec
from tmzoo.models.output import EncoderOutput, Mode
from tmzoo.tasks.data_info import DEFAULT_FEATURIZATION, target_names
from tmzoo.tasks.resume import rng_states, set_rng_states

#: A head given as a factory: called by the task with the sizes it knows
#: (``embed_dim`` for the gap head; ``embed_dim, num_targets`` for regression heads;
#: ``embed_dim, num_heads`` for the denoising head). In YAML: ``class_path`` + the other init args.
HeadFactory = Callable[..., nn.Module]
EvalMode = Literal["2d3d", "2d", "3d"]
MODULE_NAMES = ("encoder", "gap_head", "denoising_head", "head")


def build_head(head, *sizes: int) -> nn.Module:
    """An ``nn.Module`` is used as is; a factory (class, partial) is called with ``sizes``."""
    return head if isinstance(head, nn.Module) else head(*sizes)


class MoleculeTask(L.LightningModule):
    """Base of the tasks: an encoder, heads set by subclasses, and the training plumbing.

    Args:
        encoder: a tmzoo encoder (``forward(batch, modes) -> EncoderOutput``).
        optimizer: called with the trainable parameters (``OptimizerCallable``).
        lr_scheduler: called with the optimizer; stepped every optimizer step.
        mode_probs: (p_2D+3D, p_2D, p_3D) for training; overrides the encoder's ``mode_probs``.
        eval_mode: mode for validation/test/predict (``None`` = the encoder's default, 2D+3D).
        data_info: what the datamodule knows (targets, statistics, featurisation), linked by the CLI
            (see :func:`tmzoo.tasks.describe_data`).
    """

    task_name = "pretraining"

    def __init__(
        self,
        encoder: nn.Module,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        mode_probs: Sequence[float] | None = None,
        eval_mode: EvalMode | None = None,
        data_info: dict | None = None,
    ):
        super().__init__()
        # from the CLI, hparams are the (plain) resolved config, so load_from_checkpoint can rebuild
        # the task; built in Python, the module and callable arguments are left out
        from_cli = _given_hyperparameters.get() is not None
        self.save_hyperparameters(ignore=[] if from_cli else [*MODULE_NAMES, "optimizer", "lr_scheduler"])
        self.encoder = encoder
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.data_info = dict(data_info or {})
        self.eval_mode = Mode.parse(eval_mode) if eval_mode is not None else None
        if mode_probs is not None:
            set_mode_probs(encoder, mode_probs)

    # ------------------------------------------------------------------ model
    @property
    def embed_dim(self) -> int:
        return int(self.encoder.embed_dim)

    def encode(self, batch, mode: Mode | None = None) -> EncoderOutput:
        """Encoder output; ``mode`` forces one mode for every molecule (training draws them)."""
        if mode is None and not self.training and "mode" in batch:  # per-record modes (users' files)
            return self.encoder(batch, batch.mode.view(-1))
        if mode is None and not self.training:
            mode = self.eval_mode
        if mode is None:
            return self.encoder(batch)
        modes = torch.full((batch.num_graphs,), int(mode), dtype=torch.long, device=batch.x.device)
        return self.encoder(batch, modes)

    # ------------------------------------------------------------- evaluation
    def _evaluate(self, batch, stage: str) -> None:
        """Update and log the ``stage`` ("val"/"test") metrics for one batch."""
        raise NotImplementedError

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> Tensor:
        return self(batch)

    # -------------------------------------------------------------- optimizers
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if hasattr(scheduler, "total_steps") and scheduler.total_steps is None and self._trainer is not None:
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise ValueError(
                    "the learning-rate schedule needs a run length: set trainer.max_steps or "
                    "trainer.max_epochs, or lr_scheduler.init_args.total_steps"
                )
            scheduler.total_steps = int(total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------- checkpoint
    @property
    def target_names(self) -> list[str]:
        return target_names(self.data_info)

    def tmzoo_spec(self) -> dict:
        """The ``tmzoo`` checkpoint entry (ARCHITECTURE.md, "Checkpoints"): how to rebuild and featurise."""
        modules = {n: module_spec(getattr(self, n)) for n in MODULE_NAMES if getattr(self, n, None) is not None}
        return {
            "format": 1,
            "task": self.task_name,
            "modules": modules,
            "featurization": dict(self.data_info.get("featurization") or DEFAULT_FEATURIZATION),
            "targets": self.target_names,
        }

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["tmzoo"] = self.tmzoo_spec()
        checkpoint["rng_states"] = rng_states()  # exact resume of mode dropout and noise

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng_states" in checkpoint and self._trainer is not None:  # resuming, not load_from_checkpoint
            set_rng_states(checkpoint["rng_states"])


def set_mode_probs(encoder: nn.Module, mode_probs: Sequence[float]) -> None:
    """Set an encoder's training mode distribution (its ``mode_probs`` buffer and config)."""
    probs = torch.tensor([float(p) for p in mode_probs])
    if probs.numel() != 3 or (probs < 0).any() or abs(float(probs.sum()) - 1.0) > 1e-6:
        raise ValueError(f"mode_probs must be 3 non-negative numbers summing to 1, got {list(mode_probs)}")
    buffer = getattr(encoder, "mode_probs", None)
    if not isinstance(buffer, Tensor):
        return  # encoders without modes (GIN, SchNet) ignore it
    buffer.copy_(probs.to(buffer))
    if isinstance(getattr(encoder, "config", None), dict):
        encoder.config["mode_probs"] = probs.tolist()


def masked_targets(batch, count: int | None = None) -> Tensor:
    """``batch.y`` as ``[B, T]`` float (NaN where unknown)."""
    y = batch.y.float()
    return y.view(batch.num_graphs, -1) if count is None else y.view(batch.num_graphs, count)
