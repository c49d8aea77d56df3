"""Shared machinery of tmzoo's LightningModules: optimizer/schedule, modes, checkpoint spec."""

from __future__ import annotations

import ast
import csv
import inspect
import math
import random
from pathlib import Path
from typing import Callable, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from tmzoo.checkpoints.bundle import FEATURIZATION, build_module, class_path, module_spec, tmzoo_class
from tmzoo.data.stream import Chunk
from tmzoo.io.files import atomic_write
from tmzoo.models.output import EncoderOutput
from tmzoo.modes import MODE_NAMES, EvalMode, Mode, mode_probs_tensor
from tmzoo.tasks.data_info import target_names

#: A head given as a factory: called by the task with the sizes it knows
#: (``embed_dim`` for the gap head; ``embed_dim, num_targets`` for regression heads;
#: ``embed_dim, num_heads`` for the denoising head). In YAML: ``class_path`` + the other init args.
HeadFactory = Callable[..., nn.Module]
MODULE_NAMES = ("encoder", "gap_head", "denoising_head", "head")


def build_head(head, *sizes: int) -> nn.Module:
    """An ``nn.Module`` is used as is; a factory (class, partial) is called with ``sizes``; a
    ``{"class_path", "init_args"}`` spec of a tmzoo class (a task's saved hyper-parameters) is
    built with ``sizes`` as its first arguments."""
    if isinstance(head, nn.Module):
        return head
    if isinstance(head, dict) and "class_path" in head:
        init_args = dict(head.get("init_args") or {})
        if sizes:
            cls = tmzoo_class(head["class_path"])
            init_args = {**dict(zip(_leading_parameters(cls, len(sizes)), sizes)), **init_args}
        return build_module({"class_path": head["class_path"], "init_args": init_args})
    return head(*sizes)


def _leading_parameters(cls: type, count: int) -> list[str]:
    """Names of the first ``count`` parameters of ``cls.__init__`` (the sizes a task supplies)."""
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    return [p.name for p in params[:count]]


def saved_spec(module: nn.Module | None, sizes: int = 0) -> dict | None:
    """``{"class_path", "init_args"}`` of a module without the first ``sizes`` init args (those
    the task supplies when it calls the factory), for the task's saved hyper-parameters."""
    if module is None:
        return None
    spec = module_spec(module)
    if sizes:
        cls = type(module)
        for name in _leading_parameters(cls, sizes):
            spec["init_args"].pop(name, None)
    return spec


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
        # plain arguments only: modules and callables are written by `saved_hparams` as specs
        self.save_hyperparameters(ignore=[*MODULE_NAMES, "optimizer", "lr_scheduler"])
        self.encoder = build_head(encoder)
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.data_info = dict(data_info or {})
        self.eval_mode = Mode.parse(eval_mode) if eval_mode is not None else None
        if mode_probs is not None:
            set_mode_probs(self.encoder, mode_probs)
        self._test_rows: list[list] = []

    # ------------------------------------------------------------------ model
    @property
    def embed_dim(self) -> int:
        return int(self.encoder.embed_dim)

    def encode(self, batch, mode: Mode | Tensor | None = None, graph_only: bool = False) -> EncoderOutput:
        """Encoder output; ``mode`` forces one mode for every molecule (training draws them), or
        gives one per molecule (a ``[B]`` tensor). ``graph_only``: the caller reads ``out.graph``
        alone (a head's ``graph_token_only``), and an encoder that can (``forward(..., graph_only)``)
        skips the atoms' last layer."""
        if mode is None and not self.training:  # per-record modes (users' files), else eval_mode
            mode = batch.mode.view(-1) if "mode" in batch else self.eval_mode
        if mode is not None and not isinstance(mode, Tensor):
            mode = torch.full((batch.num_graphs,), int(mode), dtype=torch.long, device=self.device)
        skip_atoms = graph_only and "graph_only" in inspect.signature(self.encoder.forward).parameters
        return self.encoder(batch, mode, **({"graph_only": True} if skip_atoms else {}))

    def on_fit_start(self) -> None:
        """A model without a 2D channel cannot be validated on molecules without coordinates
        (PCQM4Mv2's ``valid``): refused before training, not at the first validation."""
        datamodule = getattr(self.trainer, "datamodule", None)
        validates = self.trainer.limit_val_batches != 0 and not self.trainer.fast_dev_run  # a smoke run keeps nothing
        if validates and not getattr(self.encoder, "use_2d", True) and "val" in getattr(datamodule, "drop_coordinates_in", ()):
            raise ValueError(
                f"{type(datamodule).__name__} validates without coordinates (the benchmark's protocol) and this "
                "encoder has no 2D channel: validate on molecules with coordinates, or train with "
                "--trainer.limit_val_batches 0"
            )

    # ------------------------------------------------------------- evaluation
    def _evaluate(self, batch, stage: str) -> None:
        """Update and log the ``stage`` ("val"/"test") metrics for one batch."""
        raise NotImplementedError

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")
        self._test_rows += test_rows(batch, self(batch), self.target_names)

    def on_test_epoch_start(self) -> None:
        self._test_rows = []

    def on_test_epoch_end(self) -> None:
        """Per-molecule predictions beside the metrics: ``<log dir>/test_predictions.csv``
        (``index`` = the record in the source file, target and prediction per target)."""
        log_dir = self._trainer.log_dir if self._trainer is not None else None
        if log_dir:
            name = "test_predictions.csv" if self.trainer.world_size == 1 else f"test_predictions.rank{self.global_rank}.csv"
            write_test_predictions(Path(log_dir) / name, self._test_rows, self.target_names)
        self._test_rows = []

    def predict_step(self, batch, batch_idx: int) -> Tensor:
        """Predictions in data units; a users' file's :class:`~tmzoo.data.stream.Chunk` batch by
        batch, in input order."""
        return batch.predict(self) if isinstance(batch, Chunk) else self(batch)

    # -------------------------------------------------------------- optimizers
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        if hasattr(scheduler, "set_run_length") and self._trainer is not None:
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total):
                total = None
            scheduler.set_run_length(None if total is None else int(total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------- checkpoint
    @property
    def target_names(self) -> list[str]:
        return target_names(self.data_info)

    #: (name, sizes the task supplies when it calls the factory) of the modules a task owns
    module_sizes: dict[str, int] = {"encoder": 0, "gap_head": 1, "denoising_head": 2, "head": 2}

    def tmzoo_spec(self) -> dict:
        """The ``tmzoo`` checkpoint entry (ARCHITECTURE.md, "Checkpoints"): how to rebuild the
        model, featurise its inputs (``featurization``) and read them (``eval_mode``)."""
        modules = {n: module_spec(getattr(self, n)) for n in MODULE_NAMES if getattr(self, n, None) is not None}
        spec = {
            "format": 1,
            "task": self.task_name,
            "modules": modules,
            "featurization": {**FEATURIZATION, **(self.data_info.get("featurization") or {})},
            "targets": self.target_names,
        }
        if self.eval_mode is not None:
            spec["eval_mode"] = MODE_NAMES[self.eval_mode]
        return spec

    def saved_hparams(self) -> dict:
        """The task's arguments as plain data: ``Task.load_from_checkpoint`` rebuilds the model
        from them alone (modules as ``class_path``/``init_args`` specs; a ``pretrained`` file
        only seeds a fresh fit, the weights come from the checkpoint)."""
        cls = type(self)
        params = inspect.signature(cls.__init__).parameters
        hparams = {"_class_path": class_path(cls, ("tmzoo.tasks",))}
        hparams.update({k: v for k, v in self.hparams.items() if k in params and k not in ("optimizer", "lr_scheduler")})
        for name, sizes in self.module_sizes.items():
            if name in params:
                hparams[name] = saved_spec(getattr(self, name, None), sizes)
        hparams["data_info"] = self.data_info
        hparams["eval_mode"] = MODE_NAMES[self.eval_mode] if self.eval_mode is not None else None
        for seed_only in ("pretrained", "encoder_args"):  # already in the encoder spec and weights
            if seed_only in params:
                hparams[seed_only] = None
        return hparams

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = unshared(checkpoint["state_dict"])
        checkpoint["tmzoo"] = self.tmzoo_spec()
        checkpoint[self.CHECKPOINT_HYPER_PARAMS_KEY] = self.saved_hparams()
        checkpoint.pop(self.CHECKPOINT_HYPER_PARAMS_NAME, None)
        checkpoint.pop(self.CHECKPOINT_HYPER_PARAMS_TYPE, None)
        checkpoint["rng_states"] = rng_states()  # exact resume of mode dropout and noise

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "rng_states" in checkpoint and self._trainer is not None:  # resuming, not load_from_checkpoint
            set_rng_states(checkpoint["rng_states"])
        # the model's targets are those it was trained on, not those of the data at hand (a users'
        # file in `predict` knows none): names and units come from the checkpoint
        saved = (checkpoint.get(self.CHECKPOINT_HYPER_PARAMS_KEY) or {}).get("data_info") or {}
        names = saved.get("target_names")
        if names and len(names) == len(self.target_names):
            self.data_info["target_names"] = list(names)
            if saved.get("target_units") is not None:
                self.data_info["target_units"] = saved["target_units"]


def unshared(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with every entry whose memory an earlier entry already holds copied (modules
    registered twice, e.g. the filter network of PyG's SchNet ``InteractionBlock``, shared by its
    ``CFConv``): ``tmzoo infer`` refuses checkpoints whose tensors share memory."""
    seen, out = set(), {}
    for key, value in state.items():
        if not isinstance(value, Tensor) or value.numel() == 0:
            out[key] = value
            continue
        memory = (value.device, value.untyped_storage().data_ptr())
        out[key] = value.clone() if memory in seen else value
        seen.add(memory)
    return out


def test_rows(batch, prediction: Tensor, names: Sequence[str]) -> list[list]:
    """``[index, target..., prediction...]`` per molecule of a test batch."""
    pred = prediction.detach().float().cpu().reshape(batch.num_graphs, -1)
    y = batch.y.detach().float().cpu().reshape(batch.num_graphs, -1)[:, : pred.shape[1]] if "y" in batch else None
    index = batch.idx.view(-1).tolist() if "idx" in batch else [None] * batch.num_graphs
    return [[i, *(y[k].tolist() if y is not None else [math.nan] * pred.shape[1]), *pred[k].tolist()]
            for k, i in enumerate(index)]


def write_test_predictions(path: Path, rows: list[list], names: Sequence[str]) -> None:
    width = (len(rows[0]) - 1) // 2 if rows else len(names)
    names = list(names) if len(names) == width else [f"y{k}" for k in range(width)]
    rows = sorted(rows, key=lambda r: (r[0] is None, r[0] or 0))
    with atomic_write(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", *names, *(f"prediction_{n}" for n in names)])
        writer.writerows([[i, *(f"{v:.9g}" for v in values)] for i, *values in rows])


def set_mode_probs(encoder: nn.Module, mode_probs: Sequence[float]) -> None:
    """Set an encoder's training mode distribution (its ``mode_probs`` buffer and config)."""
    probs = mode_probs_tensor(mode_probs)
    buffer = getattr(encoder, "mode_probs", None)
    if not isinstance(buffer, Tensor):
        return  # encoders without modes (GIN, SchNet) ignore it
    buffer.copy_(probs.to(buffer))
    if isinstance(getattr(encoder, "config", None), dict):
        encoder.config["mode_probs"] = probs.tolist()


# ---------------------------------------------------------------- RNG (exact resume)
def rng_states() -> dict:
    """Global RNG states (torch CPU and CUDA, numpy, python) as checkpoint-friendly data."""
    np_state = np.random.get_state()
    cuda = {"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}
    return {
        **cuda,
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "python": repr(random.getstate()),
    }


def set_rng_states(states: dict) -> None:
    """Restore what :func:`rng_states` saved (entries that are missing are skipped)."""
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    if "numpy" in states:
        key = states["numpy"]["key"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", key, int(states["numpy"]["pos"]), 0, 0.0))
    if "python" in states:
        random.setstate(ast.literal_eval(states["python"]))

def masked_targets(batch, count: int | None = None) -> Tensor:
    """``batch.y`` as ``[B, T]`` float (NaN where unknown)."""
    y = batch.y.float()
    return y.view(batch.num_graphs, -1) if count is None else y.view(batch.num_graphs, count)
