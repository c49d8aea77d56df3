"""``tmzoo fit|validate|test|predict``: Lightning's CLI over tmzoo tasks and datamodules.

Model and data are chosen by ``class_path`` (subclass mode), so experiments compose:
``tmzoo fit --config experiments/X.yaml --config datamodules/Y.yaml``.

What the datamodule knows (targets, train mean/std, units, coordinates, featurisation) reaches
the task through one link: ``data`` → ``model.init_args.data_info``
(:func:`tmzoo.tasks.describe_data`, applied on instantiation). Every task accepts
``data_info`` and sizes its heads from it, so YAML never repeats those numbers.

Loggers: a ``CSVLogger`` always (under ``trainer.default_root_dir``), beside those of
``trainer.logger``; ``--config wandb`` adds a ``WandbLogger``, offline unless W&B can sync
(:func:`_prepare_wandb`). The resolved config is saved beside the logs.

The encoder owns the featurisation: its ``multi_hop_max_dist`` and ``reference_compatible``
(or those of the ``pretrained`` file the encoder is built from) are written into the data's
``max_hops`` / ``reference_compatible`` before anything is built — one place to switch.

Runs resume: ``fit --ckpt_path last`` continues the newest run under
``trainer.default_root_dir`` in its own folder (``lightning_logs/version_N``, checkpoints in
its ``checkpoints/``) from its newest ``last*.ckpt`` (:func:`newest_last_checkpoint`). The
experiments keep the latest state there in ``last-state.ckpt``, after every validation (a
``ModelCheckpoint`` with ``monitor: null``; a monitored one's ``last.ckpt`` changes only with a
new best), so a killed run (SIGKILL, out of memory) loses at most the steps since its last
validation; SIGTERM (preemption) saves ``last.ckpt`` there and exits with status 143.
Without a logger (``--trainer.logger=false``) a ``LearningRateMonitor`` is dropped, with a note.
``--trainer.precision`` ``*-true`` (pure half precision) is refused: use ``bf16-mixed``.

``--ckpt_path`` is read with ``weights_only=True`` by default (``--weights_only false`` to
override for a trusted foreign checkpoint).
"""

from __future__ import annotations

import netrc
import os
import socket
import sys
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning as L
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from tmzoo.configs import resolve_config_args
from tmzoo.datamodules.base import MoleculeDataModule
from tmzoo.tasks.data_info import describe_data, encoder_featurization

#: exit status of a run stopped by SIGTERM (after saving its checkpoint), as a shell reports it
SIGTERM_EXIT = 143


def wandb_offline_reason() -> str | None:
    """Why W&B cannot sync now, or ``None``: no API key (``WANDB_API_KEY`` or a netrc entry)
    for the host of ``WANDB_BASE_URL``, or that host does not answer within 2 s."""
    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    host = url.hostname
    if not os.environ.get("WANDB_API_KEY"):
        try:
            entry = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
        except (OSError, netrc.NetrcParseError):
            entry = None
        if not entry:
            return f"no API key for {host}"
    try:
        socket.create_connection((host, url.port or (80 if url.scheme == "http" else 443)), timeout=2).close()
    except OSError:
        return f"{host} cannot be reached"
    return None


def _prepare_wandb(cfg) -> None:
    """A ``WandbLogger`` in ``trainer.logger`` writes under ``trainer.default_root_dir`` (when
    its ``save_dir`` is the default) and, unless ``WANDB_MODE`` is set, logs offline when W&B
    cannot sync (one line says how to sync later)."""
    trainer = cfg.get("trainer") or {}
    loggers = trainer.get("logger")
    wandb = [lg for lg in (loggers if isinstance(loggers, list) else [loggers])
             if str(getattr(lg, "class_path", "")).endswith("WandbLogger")]
    for logger in wandb:
        if trainer.get("default_root_dir") and logger.init_args.get("save_dir") in (None, "."):
            logger.init_args["save_dir"] = trainer["default_root_dir"]
    reason = wandb_offline_reason() if wandb and not os.environ.get("WANDB_MODE") else None
    if reason:
        os.environ["WANDB_MODE"] = "offline"
        folders = " ".join(f"{Path(lg.init_args.get('save_dir') or '.') / 'wandb'}/offline-run-*" for lg in wandb)
        rank_zero_info(f"W&B logs offline ({reason}); sync later with: wandb sync {folders}")


class CheckpointOnSigterm(Callback):
    """On SIGTERM (a preempted job) save ``last.ckpt`` where ``--ckpt_path last`` finds it.

    Lightning stops the loop at the end of the current batch, so the saved state is a
    consistent one to resume from exactly; the CLI then exits with status 143.
    """

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        rank_zero_warn(f"SIGTERM: checkpoint saved to {path}; resume with --ckpt_path last")


def last_checkpoint_path(trainer) -> Path:
    """``last.ckpt`` of the run's first ``ModelCheckpoint`` (its folder), else ``<log dir>/checkpoints``."""
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / "last.ckpt"


def newest_last_checkpoint(root: Path) -> Path | None:
    """The newest ``lightning_logs/version_*/checkpoints/last*.ckpt`` under ``root``
    (``last-state.ckpt`` of the experiments, ``last.ckpt`` of ``save_last`` and SIGTERM).

    On equal times ``last.ckpt``: the experiments list the best's ``ModelCheckpoint`` after the
    latest state's, so its ``last.ckpt`` of the same step is written after, with the best updated.
    """
    found = [p for p in root.glob("lightning_logs/version_*/checkpoints/last*.ckpt") if p.is_file()]
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt")) if found else None


class TmzooCLI(LightningCLI):
    """LightningCLI with the ``data_info`` link and default loggers."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data", "model.init_args.data_info", compute_fn=describe_data, apply_on="instantiate")

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if "weights_only" in self._subcommand_method_arguments.get(subcommand, ()):
            # tmzoo checkpoints are plain data: never unpickle code from a --ckpt_path (local or URL)
            parser.set_defaults(weights_only=True)
        return parser

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        self._resume_version: str | None = None
        _refuse_pure_half_precision(cfg)
        _link_featurization(cfg)
        if self.subcommand == "fit" and cfg.get("ckpt_path") == "last":
            root = Path(cfg.get("trainer", {}).get("default_root_dir") or os.getcwd())
            last = newest_last_checkpoint(root)
            if last is not None:  # continue that run in its own folder
                cfg["ckpt_path"] = str(last)
                self._resume_version = last.parent.parent.name
                rank_zero_info(f"resuming {last}")
            else:
                rank_zero_info(f"no last checkpoint under {root}/lightning_logs: starting from step 0")
        if "weights_only" in cfg and cfg.get("weights_only") is None:
            # an explicit null: Lightning would unpickle a remote --ckpt_path in full, which could run code
            cfg["weights_only"] = True
        _prepare_wandb(cfg)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> L.Trainer:
        logger = config.get("logger")
        if logger is False and config.get("callbacks"):
            kept = [c for c in config["callbacks"] if not isinstance(c, LearningRateMonitor)]
            if len(kept) != len(config["callbacks"]):
                rank_zero_info("no logger (--trainer.logger=false): the LearningRateMonitor is dropped")
            config["callbacks"] = kept
        elif logger is not False:  # a CSVLogger beside the configured loggers
            loggers = [] if logger in (None, True) else list(logger) if isinstance(logger, (list, tuple)) else [logger]
            if not any(isinstance(lg, CSVLogger) for lg in loggers):
                root = config.get("default_root_dir") or os.getcwd()
                loggers.insert(0, CSVLogger(save_dir=root, version=self._resume_version))
            config["logger"] = loggers
        return super()._instantiate_trainer(config, [*callbacks, CheckpointOnSigterm()])


def _refuse_pure_half_precision(cfg) -> None:
    precision = str(cfg.get("trainer", {}).get("precision") or "")
    if precision.endswith("-true") and precision not in ("32-true", "64-true"):
        raise ValueError(
            f"--trainer.precision {precision} is not supported: tmzoo keeps LayerNorm statistics and "
            "the 3D Gaussian basis in fp32, which pure half precision cannot; use "
            "--trainer.precision bf16-mixed (or 16-mixed)"
        )


def _encoder_of(init) -> tuple[str | None, dict]:
    """``(class_path, init_args)`` of the configured encoder, or of the ``pretrained`` file's
    (with ``encoder_args`` on top) when the config gives none."""
    encoder = init.get("encoder")
    if encoder is not None and encoder.get("init_args") is not None:
        return encoder.get("class_path"), dict(encoder["init_args"])
    if init.get("pretrained"):
        from tmzoo.tasks.pretrained import encoder_spec, read_encoder_state

        theirs = encoder_spec(read_encoder_state(init["pretrained"])[1]) or {}
        return theirs.get("class_path"), {**dict(theirs.get("init_args") or {}), **dict(init.get("encoder_args") or {})}
    return None, {}


def _reads_dense_batches(class_path: str) -> bool:
    """Whether an encoder reads padded (dense) batches: its class says so with
    ``reads_dense_batches`` (``TransformerM``: True); other encoders get PyG ``Batch``es."""
    import pydoc  # locate: the object a dotted path names

    return bool(getattr(pydoc.locate(class_path), "reads_dense_batches", False))


def _link_featurization(cfg) -> None:
    """The data's transform arguments and batch layout follow the encoder (or the pretrained
    file it is built from)."""
    init = (cfg.get("model") or {}).get("init_args") or {}
    class_path, args = _encoder_of(init)
    data = (cfg.get("data") or {}).get("init_args")
    if class_path is None or data is None:
        return
    settings = encoder_featurization(args)
    if "dense_batches" in data and not _reads_dense_batches(class_path):
        settings["dense_batches"] = False
    for key, value in settings.items():
        if key in data and data[key] != value:
            rank_zero_info(f"data follows the encoder: {key}={value} (was {data[key]})")
        if key in data:
            data[key] = value


def run_lightning_cli(args: list[str] | None = None, run: bool = True) -> TmzooCLI:
    """Run ``fit|validate|test|predict`` with ``args`` (``sys.argv[1:]`` when ``None``).

    A run stopped by SIGTERM raises ``SystemExit(143)`` after saving its checkpoint.
    """
    # `tmzoo` hands its own argv over explicitly; Lightning would warn that sys.argv is set too
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    args = resolve_config_args(list(sys.argv[1:] if args is None else args))  # shipped configs by name
    try:
        return TmzooCLI(
            L.LightningModule,
            MoleculeDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            run=run,
            seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )
    except SIGTERMException:
        raise SystemExit(SIGTERM_EXIT) from None


if __name__ == "__main__":
    run_lightning_cli()
