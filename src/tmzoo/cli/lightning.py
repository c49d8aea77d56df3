"""``tmzoo fit|validate|test|predict``: Lightning's CLI over tmzoo tasks and datamodules.

Model and data are chosen by ``class_path`` (subclass mode), so experiments compose:
``tmzoo fit --config experiments/X.yaml --config datamodules/Y.yaml``.

What the datamodule knows (targets, train mean/std, units, coordinates, featurisation) reaches
the task through one link: ``data`` → ``model.init_args.data_info``
(:func:`tmzoo.tasks.describe_data`, applied on instantiation). Every task accepts
``data_info`` and sizes its heads from it, so YAML never repeats those numbers.

Loggers: a ``CSVLogger`` always (under ``trainer.default_root_dir``); ``--wandb true`` adds a
``WandbLogger`` (project ``--wandb_project``), which runs offline (``WANDB_MODE=offline``,
``wandb sync`` later) unless ``WANDB_API_KEY`` is set and W&B's server can be reached, or
``WANDB_MODE`` says otherwise. The resolved config is saved beside the logs.

``--ckpt_path`` is read with ``weights_only=True`` by default (``--weights_only false`` to
override for a trusted foreign checkpoint).
"""

from __future__ import annotations

import os
import socket
import sys
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from tmzoo.datamodules.base import MoleculeDataModule
from tmzoo.tasks.data_info import describe_data


def wandb_online() -> bool:
    """Whether W&B can sync now: an API key is set and its server answers (2 s timeout)."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return False
    if mode == "online":
        return True
    if not os.environ.get("WANDB_API_KEY"):
        return False
    try:
        socket.create_connection(("api.wandb.ai", 443), timeout=2).close()
        return True
    except OSError:
        return False


def _mentions_wandb(logger_config: Any) -> bool:
    return "wandb" in str(logger_config).lower()


class TmzooCLI(LightningCLI):
    """LightningCLI with the ``data_info`` link, default loggers and W&B flags."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data", "model.init_args.data_info", compute_fn=describe_data, apply_on="instantiate")
        parser.add_argument("--wandb", type=bool, default=False, help="also log to Weights & Biases")
        parser.add_argument("--wandb_project", type=str, default="tmzoo", help="W&B project for --wandb")

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if "weights_only" in self._subcommand_method_arguments.get(subcommand, ()):
            # tmzoo checkpoints are plain data: never unpickle code from a --ckpt_path (local or URL)
            parser.set_defaults(weights_only=True)
        return parser

    def _subconfig(self):
        return self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        cfg = self._subconfig()
        if "weights_only" in cfg and cfg.get("weights_only") is None:
            # Lightning unpickles a remote --ckpt_path (http...) in full (weights_only=False):
            # a downloaded file could run code. tmzoo checkpoints are plain data, so default to
            # weights_only=True everywhere (``--weights_only false`` still opts out).
            cfg["weights_only"] = True
        wants_wandb = bool(cfg.get("wandb")) or _mentions_wandb(cfg.get("trainer", {}).get("logger"))
        if wants_wandb and not wandb_online():
            os.environ["WANDB_MODE"] = "offline"

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> L.Trainer:
        config["logger"] = self._loggers(config)
        return super()._instantiate_trainer(config, callbacks)

    def _loggers(self, config: dict[str, Any]) -> list[Logger] | bool:
        logger = config.get("logger")
        if logger is False:
            return False
        loggers = [] if logger in (None, True) else list(logger) if isinstance(logger, (list, tuple)) else [logger]
        save_dir = config.get("default_root_dir") or os.getcwd()
        if not any(isinstance(lg, CSVLogger) for lg in loggers):
            loggers.insert(0, CSVLogger(save_dir=save_dir))
        cfg = self._subconfig()
        if cfg.get("wandb") and not any(isinstance(lg, WandbLogger) for lg in loggers):
            offline = os.environ.get("WANDB_MODE") == "offline"
            loggers.append(WandbLogger(project=cfg.get("wandb_project") or "tmzoo", save_dir=save_dir, offline=offline))
        return loggers


def run_lightning_cli(args: list[str] | None = None, run: bool = True) -> TmzooCLI:
    """Run ``fit|validate|test|predict`` with ``args`` (``sys.argv[1:]`` when ``None``)."""
    # `tmzoo` hands its own argv over explicitly; Lightning would warn that sys.argv is set too
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
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


if __name__ == "__main__":
    run_lightning_cli()
