"""Writes ``tmzoo predict`` outputs to a CSV, one row per predicted molecule."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch
from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionWriter(BasePredictionWriter):
    """``--trainer.callbacks+=tmzoo.tasks.PredictionWriter --trainer.callbacks.output=preds.csv``.

    Columns: ``index`` (the record's position in the input, ``data.idx``) and one column per
    target of the task, sorted by ``index``. Records the datamodule could not featurise are not
    here: they are listed, with the reason, by the datamodule (``FilesDataModule.failures_csv``).
    With several processes each rank writes its own shard, ``<output stem>.rank<k><suffix>``.
    """

    def __init__(self, output: str = "predictions.csv"):
        super().__init__(write_interval="batch_and_epoch")
        self.output = Path(output)
        self.rows: list[list] = []

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        values = torch.as_tensor(prediction).detach().float().cpu().reshape(batch.num_graphs, -1)
        indices = batch.idx.view(-1).tolist() if "idx" in batch else [None] * batch.num_graphs
        self.rows += [[i, *v] for i, v in zip(indices, values.tolist())]

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        width = len(self.rows[0]) - 1 if self.rows else 1
        names = list(getattr(pl_module, "target_names", None) or [])
        header = names if len(names) == width else [f"prediction_{k}" for k in range(width)]
        output = self.output
        if trainer.world_size > 1:
            output = output.with_name(f"{output.stem}.rank{trainer.global_rank}{output.suffix}")
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".partial")
        rows = sorted(self.rows, key=lambda row: (row[0] is None, row[0] or 0))
        with open(partial, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["index", *header])
            writer.writerows([[i, *(f"{v:.9g}" for v in vs)] for i, *vs in rows])
        os.replace(partial, output)
        self.rows = []
