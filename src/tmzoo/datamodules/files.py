"""Users' own molecule files (``.smi``, ``.csv``, ``.sdf``, optionally gzipped) as a datamodule
for prediction: ``tmzoo predict`` and ``tmzoo infer`` both read files through it."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from pathlib import Path

from torch.utils.data import DataLoader
from torch_geometric.data import Batch

from tmzoo.data.dense import DenseCollater
from tmzoo.data.stream import RecordStream, pass_through
from tmzoo.datamodules.base import TRANSFORM_ARGS, MoleculeDataModule
from tmzoo.io.featurize import RecordFeaturizer, wants_hydrogens
from tmzoo.io.files import DamagedInputError
from tmzoo.io.records import count_records, file_kind, read_records
from tmzoo.modes import MODES

#: padded atom pairs a batch may hold per molecule of ``batch_size`` (32 atoms each)
PAIRS_PER_MOLECULE = 32 * 32


class FilesDataModule(MoleculeDataModule):
    """Predict-only datamodule streaming one user file (see :class:`tmzoo.data.stream.RecordStream`).

    Loader items are :class:`~tmzoo.data.stream.Chunk`\ s of ``chunk_size`` consecutive records,
    featurised in ``num_workers`` loader processes and delivered in input order; each carries
    ``rows`` (index, name, smiles, mode, error) for every record of the chunk, failures
    included, which :class:`tmzoo.tasks.PredictionWriter` writes as one CSV row per record, and
    the featurised records sorted by size into padded batches of at most ``batch_size``
    molecules and ``batch_size · 32²`` padded atom pairs (so a batch of large molecules is
    smaller). Memory stays bounded whatever the file size.

    Args:
        path: ``.sdf`` (coordinates used), ``.smi`` or ``.csv`` with a ``smiles`` column.
        mode: ``auto`` (the checkpoint's evaluation mode; else 2D+3D with coordinates and 2D
            without), ``2d``, ``3d`` or ``2d3d``.
        conformers: embed a seeded ETKDG+MMFF conformer for records without coordinates.
        max_atoms: records with more atoms are reported, not predicted.
        hydrogens: explicit hydrogens, as a model trained on them needs (added to SMILES, kept
            from SDF); otherwise hydrogens are removed.
        eval_mode: the evaluation mode the model was validated in (``2d``, ``3d``, ``2d3d``),
            applied when ``mode`` is ``auto``.
        model_has_3d: whether the model has a 3D channel (``auto`` reads everything in 2D otherwise).
        model_has_2d: whether the model has a 2D channel (``auto`` reads everything in 3D otherwise:
            a record without coordinates is an error suggesting ``conformers``).
        chunk_size: records per chunk (default ``4 · batch_size``): molecules are sorted by size
            within a chunk; a resumed run continues after the last whole chunk.
        checkpoint: a tmzoo or released checkpoint whose recorded featurisation (hops, path mode,
            hydrogens), evaluation mode and target names replace the arguments above. Without it,
            the checkpoint a trainer restores (``tmzoo predict --ckpt_path``) is read the same way.
    """

    def __init__(
        self,
        path: str,
        mode: str = "auto",
        conformers: bool = False,
        seed: int = 0,
        max_atoms: int = 512,
        batch_size: int = 64,
        num_workers: int = 0,
        max_hops: int = 5,
        reference_compatible: bool = False,
        hydrogens: bool = False,
        eval_mode: str | None = None,
        model_has_3d: bool = True,
        model_has_2d: bool = True,
        chunk_size: int | None = None,
        dense_batches: bool = True,
        checkpoint: str | None = None,
    ):
        super().__init__(batch_size, num_workers, max_hops, reference_compatible, dense_batches=dense_batches)
        self.chunk_size = int(chunk_size or 4 * batch_size)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self.conformers = conformers
        self.seed = seed
        self.max_atoms = max_atoms
        self.featurization["hydrogens"] = bool(hydrogens)
        self.eval_mode = eval_mode
        self.model_has_3d = model_has_3d
        self.model_has_2d = model_has_2d
        self.start_index = 0  # first record streamed; set by PredictionWriter(resume=True)
        self.num_records: int | None = None  # counted by setup
        self.checkpoint = checkpoint
        self._applied_checkpoint = None
        if checkpoint is not None:
            from tmzoo.checkpoints import load_bundle

            self.apply_model(load_bundle(checkpoint))

    def apply_model(self, bundle) -> None:
        """Take the featurisation and evaluation mode recorded with a model (a ``ModelBundle``)."""
        featurization = dict(getattr(bundle, "featurization", None) or {})
        transform_args = getattr(bundle, "transform_args", None)
        if transform_args is None:
            transform_args = {k: v for k, v in featurization.items() if k in TRANSFORM_ARGS}
        self.featurization = {**dict(transform_args), "hydrogens": wants_hydrogens(featurization.get("hydrogens", False))}
        self.eval_mode = getattr(bundle, "eval_mode", None)
        self.model_has_3d = bool(getattr(bundle.encoder, "use_3d", True))
        self.model_has_2d = bool(getattr(bundle.encoder, "use_2d", True))
        self.dense_batches = bool(getattr(bundle.encoder, "reads_dense_batches", False))
        self._target_names = [str(n) for n in getattr(bundle, "target_names", None) or []] or None

    @property
    def target_names(self) -> list[str]:
        """The model's targets when a checkpoint was given (so ``predict`` keeps their names), else ``y``."""
        return list(getattr(self, "_target_names", None) or ["y"])

    @property
    def has_coordinates(self) -> bool:
        return self.mode != "2d" and (self.conformers or file_kind(self.path) == ".sdf")

    def featurizer(self) -> RecordFeaturizer:
        """Record -> graph with this datamodule's settings."""
        return RecordFeaturizer(
            mode=self.mode, transform_args=self.transform_args, hydrogens=bool(self.featurization.get("hydrogens")),
            eval_mode=self.eval_mode, model_has_3d=self.model_has_3d, model_has_2d=self.model_has_2d,
            max_atoms=self.max_atoms, conformers=self.conformers, seed=self.seed,
        )

    def prediction_settings(self) -> dict:
        """What a prediction's rows depend on besides the model: the input file (path, size,
        modification time), the featurisation and the chunk size (``PredictionWriter`` refuses to
        resume rows computed with other settings)."""
        stat = self.path.stat()
        return {"input": os.path.realpath(self.path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "batch_size": self.batch_size, "chunk_size": self.chunk_size, "featurizer": dataclasses.asdict(self.featurizer())}

    def setup(self, stage: str | None = None) -> None:
        """Check the file itself (exists, known type, CSV header) before any worker starts, and
        count its records (``num_records``; ``None`` for a damaged compressed file)."""
        try:
            with contextlib.closing(read_records(self.path, select=lambda index: index == 0)) as records:
                next(records, None)
            self.num_records = count_records(self.path)
        except DamagedInputError:
            self.num_records = None  # reported by the stream, after the rows it can read
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.world_size > 1:  # one count for all ranks: their lengths agree
            self.num_records = trainer.strategy.broadcast(self.num_records, src=0)

    def _apply_restored_checkpoint(self, trainer) -> None:
        """The featurisation recorded in the checkpoint ``trainer`` restored the model from
        (``tmzoo predict --ckpt_path``), as ``tmzoo infer`` applies it; loaders are made after the restore."""
        path = getattr(trainer, "ckpt_path", None) if trainer is not None else None
        if self.checkpoint is not None or not path or path == self._applied_checkpoint:
            return
        from tmzoo.checkpoints import load_bundle

        try:
            bundle = load_bundle(path)
        except ValueError as err:  # e.g. a Lightning checkpoint saved without tmzoo's spec
            warnings.warn(f"{path}: no recorded featurisation ({err}); the datamodule's own settings are used")
            return
        self.apply_model(bundle)
        self._applied_checkpoint = path

    def stream(self) -> RecordStream:
        trainer = getattr(self, "trainer", None)
        self._apply_restored_checkpoint(trainer)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return RecordStream(
            self.path, self.featurizer(), self.chunk_size, self.start_index, rank, world, batch_size=self.batch_size,
            max_pairs=self.batch_size * PAIRS_PER_MOLECULE,
            collate=DenseCollater() if self.dense_batches else Batch.from_data_list, total=self.num_records,
        )

    def predict_dataloader(self) -> DataLoader:
        # Lightning's caution about an IterableDataset's length: each worker reads its own chunks
        warnings.filterwarnings("ignore", message=".*IterableDataset.*has `__len__` defined.*")
        return DataLoader(
            self.stream(),
            batch_size=None,
            collate_fn=pass_through,
            num_workers=self.num_workers,
            prefetch_factor=2 if self.num_workers else None,
            in_order=True,  # chunks come back in input order
        )
