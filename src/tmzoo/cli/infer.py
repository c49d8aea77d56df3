"""``tmzoo infer``: predict molecules of a user's file with a tmzoo or released checkpoint.

Writes one CSV row per input record, in input order. A record that cannot be parsed or
featurised gets an empty prediction and the reason in ``error``; the rest are predicted.
A front end over what ``tmzoo predict`` runs: :class:`~tmzoo.datamodules.FilesDataModule`
(records featurised in worker processes, streamed in chunks) and
:class:`~tmzoo.tasks.PredictionWriter` (rows written as they complete, ``--resume``),
through Lightning's ``Trainer.predict``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from tmzoo.checkpoints import load_bundle
from tmzoo.datamodules.files import FilesDataModule
from tmzoo.io.files import DamagedInputError, check_output
from tmzoo.io.records import file_kind
from tmzoo.models.layers import TransformerMLayer
from tmzoo.models.transformer_m import fastest_precision
from tmzoo.modes import MODES
from tmzoo.tasks.writer import PredictionWriter


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """Featurisation processes: the cores left beside the predicting process, 1 to 4."""
    return max(1, min(4, _cores() - 1))


def cpu_snapshot() -> tuple[int, int, float, float] | None:
    """Idle and all ticks of the machine (Linux ``/proc/stat``), this process's CPU seconds and the
    clock; ``None`` where ``/proc/stat`` cannot be read."""
    try:
        with open("/proc/stat") as handle:
            ticks = [int(v) for v in handle.readline().split()[1:9]]  # user .. steal
    except (OSError, ValueError):
        return None
    return ticks[3] + ticks[4], sum(ticks), time.process_time(), time.monotonic()


def idle_cores(seconds: float = 0.1, start: tuple | None = None) -> float | None:
    """How many of this process's cores other work leaves free: measured from ``start`` (a
    :func:`cpu_snapshot`; the interval is stretched to at least ``seconds``), or over the next
    ``seconds``. The process's own CPU use counts as free. ``None`` where it cannot be read."""
    start = start or cpu_snapshot()
    if start is None:
        return None
    time.sleep(max(0.0, seconds - (time.monotonic() - start[3])))
    end = cpu_snapshot()
    if end is None:
        return None
    cores = min(_cores(), os.cpu_count() or 1)
    idle = (end[0] - start[0]) / max(end[1] - start[1], 1) * cores
    own = (end[2] - start[2]) / max(end[3] - start[3], 1e-6)  # cores this process used
    return min(idle + own, float(cores))


class ShareCores(Callback):
    """CPU threads of the predicting process beside ``workers`` featurising processes, measured.

    Two settings are tried on chunks of the run and the faster per molecule is kept: the cores
    the workers leave (at least one: a model faster than featurisation, or cores shared with
    other work, where more threads than free cores make every process wait on the others) and
    every core (a large model, whose workers need little). A run starts on every core when the
    cores are idle as it starts (:func:`idle_cores`), else on those the workers leave. The trial
    takes the last chunks of every ``period``, as the load of the machine changes: a run shorter
    than that keeps the start's choice (a trial of the slower setting costs a short run more than
    it can win back).
    """

    def __init__(self, workers: int, period: int = 64, idle: float | None = None):
        self.every = torch.get_num_threads()
        self.settings = sorted({max(1, min(self.every, _cores() - workers)), self.every})
        self.period = period
        self.speed: dict[int, float] = {}
        idle = idle_cores() if idle is None else idle
        self.chosen = self.every if idle is not None and idle >= _cores() - 0.25 else self.settings[0]
        self._ended = 0.0

    def _trial(self, batch_idx: int) -> int | None:
        """The setting chunk ``batch_idx`` tries, if it is a trial chunk."""
        step = batch_idx % self.period - (self.period - len(self.settings))
        return self.settings[step] if step >= 0 and len(self.settings) > 1 else None

    def on_predict_start(self, trainer, pl_module) -> None:
        torch.set_num_threads(self.chosen)
        self._ended = time.perf_counter()

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        """A chunk's time is from the previous chunk's end (waiting for the workers included) to its own."""
        now = time.perf_counter()
        trial = self._trial(batch_idx)
        if trial is not None and batch.num_graphs:
            self.speed[trial] = batch.num_graphs / (now - self._ended)
            if len(self.speed) == len(self.settings):
                self.chosen = max(self.speed, key=self.speed.get)
                self.speed = {}
        following = self._trial(batch_idx + 1)
        torch.set_num_threads(following if following is not None else self.chosen)
        self._ended = time.perf_counter()

    def on_predict_end(self, trainer, pl_module) -> None:
        torch.set_num_threads(self.every)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        torch.set_num_threads(self.every)


def cast_layer_weights(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """The Transformer layers' ``Linear`` weights and biases in ``dtype``, once: under autocast to
    ``dtype`` these are the values every step would cast them to (the same predictions), without
    the cast of ~40M weights at every step. Norms, embeddings and heads keep their precision."""
    for layer in model.modules():
        if isinstance(layer, TransformerMLayer):
            for module in layer.modules():
                if isinstance(module, torch.nn.Linear):
                    module.to(dtype)


def _accelerator(device: str) -> tuple[str, int | list[int]]:
    """``cpu``, ``cuda``, ``cuda:1``, ``mps`` -> Lightning's ``(accelerator, devices)``."""
    kind, _, number = device.partition(":")
    kind = {"cuda": "gpu"}.get(kind.lower(), kind.lower())
    return kind, [int(number)] if number else 1


@contextlib.contextmanager
def _quiet_lightning():
    """No Lightning banners or loader advice: ``tmzoo infer`` chooses its own loader settings."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")  # Lightning vs torch, not ours
        try:
            yield
        finally:
            logger.setLevel(level)


def run_inference(
    checkpoint: str | Path,
    input_path: str | Path,
    output: str | Path,
    mode: str = "auto",
    batch_size: int = 64,
    max_atoms: int = 512,
    conformers: bool = False,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
    workers: int | None = None,
    resume: bool = False,
    precision: str | None = None,
    chunk_size: int | None = None,
) -> dict:
    """Predict every record of ``input_path`` into the CSV ``output``; returns the writer's counts.

    ``precision`` is Lightning's (default: the fastest on ``device``, see
    :func:`~tmzoo.models.transformer_m.fastest_precision`: ``bf16-mixed`` on GPUs and on CPUs
    with AVX512-BF16 or AMX; ``"32-true"`` reproduces fp32 outputs exactly).

    Raises ``FileNotFoundError``/``ValueError``/``OSError`` for the files themselves, and
    :class:`~tmzoo.io.files.DamagedInputError` for a damaged compressed input, after writing
    the rows read before the damage.
    """
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {MODES}, got {mode!r}")
    if batch_size < 1 or (chunk_size is not None and chunk_size < 1):
        raise ValueError(f"--batch-size and --chunk-size must be at least 1, got {batch_size} and {chunk_size}")
    file_kind(input_path)
    if not Path(input_path).is_file():
        raise FileNotFoundError(f"input file {input_path} does not exist")
    check_output(output, input_path)
    before_load = cpu_snapshot()  # the cores' load is measured over the checkpoint's load
    bundle = load_bundle(checkpoint)
    workers = default_workers() if workers is None else workers
    data = FilesDataModule(
        str(input_path), mode=mode, conformers=conformers, seed=seed, max_atoms=max_atoms, batch_size=batch_size,
        num_workers=workers, chunk_size=chunk_size,
    )
    data.apply_model(bundle)
    writer = PredictionWriter(str(output), resume=resume, progress=progress)
    accelerator, devices = _accelerator(device)
    precision = precision or fastest_precision(device)
    if precision in ("bf16-mixed", "bf16"):
        cast_layer_weights(bundle.model, torch.bfloat16)
    threads = [ShareCores(workers, idle=idle_cores(0.05, before_load))] if accelerator == "cpu" else []
    with _quiet_lightning():
        trainer = L.Trainer(
            accelerator=accelerator, devices=devices, precision=precision,
            logger=False, callbacks=[writer, *threads],
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        )
        trainer.predict(bundle.model, datamodule=data, return_predictions=False)
    return writer.summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tmzoo infer", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="tmzoo .ckpt or released Transformer-M .pt")
    parser.add_argument("--input", required=True, help=".sdf (coordinates used), .smi or .csv (smiles column); "
                        "gzipped files are streamed")
    parser.add_argument("--output", required=True, help="CSV to write (one row per input record)")
    parser.add_argument("--mode", choices=MODES, default="auto",
                        help="auto: the checkpoint's evaluation mode; else 2D+3D with coordinates, 2D without (default)")
    parser.add_argument("--batch-size", type=int, default=64, help="most molecules per model batch")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="records sorted by size together into batches, and the unit a resumed run restarts "
                             "from (default 4 x batch size)")
    parser.add_argument("--max-atoms", type=int, default=512, help="records with more atoms are reported")
    parser.add_argument("--conformers", action="store_true",
                        help="embed an RDKit conformer (ETKDG+MMFF) for inputs without coordinates")
    parser.add_argument("--seed", type=int, default=0, help="seed of the conformer embedding")
    parser.add_argument("--workers", type=int, default=None,
                        help=f"featurisation processes (0: in the main process; default {default_workers()})")
    parser.add_argument("--resume", action="store_true",
                        help="continue a killed run from the rows already in OUTPUT.partial")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default=None,
                        help="Lightning precision (default: bf16-mixed where the device computes bf16 fast "
                             "(GPUs, CPUs with AVX512-BF16 or AMX), else 32-true; 32-true for exact fp32 outputs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers is not None and args.workers < 0:
        print("tmzoo infer: error: --workers must be 0 or more", file=sys.stderr)
        return 2
    try:
        summary = run_inference(
            args.checkpoint, args.input, args.output, mode=args.mode, batch_size=args.batch_size,
            max_atoms=args.max_atoms, conformers=args.conformers, seed=args.seed, device=args.device,
            progress=not args.quiet, workers=args.workers, resume=args.resume, precision=args.precision,
            chunk_size=args.chunk_size,
        )
    except DamagedInputError as err:
        print(f"tmzoo infer: error: {err}", file=sys.stderr)
        return 1
    except SIGTERMException as err:
        print("tmzoo infer: stopped by SIGTERM; continue with --resume", file=sys.stderr)
        return int(err.code)
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"tmzoo infer: error: {err}", file=sys.stderr)
        return 2
    print(f"tmzoo infer: {summary['predicted']} of {summary['records']} records predicted -> {args.output}")
    if summary["failed"]:
        shown = ", ".join(map(str, summary["failed_indices"][:10]))
        more = " ..." if summary["failed"] > 10 else ""
        print(f"tmzoo infer: {summary['failed']} records not predicted (indices {shown}{more}); "
              f"reasons in the 'error' column of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
