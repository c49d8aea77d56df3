"""Predictions as one CSV, one row per input record, written while they are computed.

The one prediction schema of tmzoo (``tmzoo infer`` and ``tmzoo predict``): ``index``, ``name``,
``smiles``, ``mode``, ``prediction`` (the first target), ``prediction_<target>`` per target when
there are several, and ``error`` (why a record has no prediction).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import signal
import sys
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities.exceptions import SIGTERMException
from tqdm import tqdm

from tmzoo.io.files import DamagedInputError, atomic_write, check_output
from tmzoo.io.records import count_records

FIRST_COLUMNS = ("index", "name", "smiles", "mode", "prediction")
MAX_FAILED_INDICES = 100


def prediction_columns(target_names: list[str]) -> list[str]:
    """The CSV header for a model predicting ``target_names``."""
    extra = [f"prediction_{name}" for name in target_names] if len(target_names) > 1 else []
    return [*FIRST_COLUMNS, *extra, "error"]


def partial_path(output: str | Path) -> Path:
    """Where rows go while a run is in progress (beside the file a symlinked output points to)."""
    target = Path(os.path.realpath(output))
    return target.with_name(target.name + ".partial")


def settings_path(output: str | Path) -> Path:
    """What the rows of ``<output>.partial`` were computed with (model, input, settings), for ``resume``."""
    partial = partial_path(output)
    return partial.with_name(partial.name + ".json")


def progress_total(path: str | Path) -> int | None:
    """Records of ``path`` (:func:`~tmzoo.io.records.count_records`), ``None`` when it cannot be read."""
    try:
        return count_records(path)
    except (OSError, ValueError):
        return None


def model_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's weights and buffers (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy())  # read in place, without the GIL
    return digest.hexdigest()


#: how a difference between a partial file's settings and this run's is named
_SETTING_NAMES = {"columns": "set of targets", "model": "model (weights)", "input": "input file",
                  "size": "input file", "mtime_ns": "input file (modified since)", "batch_size": "batch size", "chunk_size": "chunk size",
                  "featurizer": "featurisation (mode, hydrogens, conformers, atom limit)"}


def _complete_rows(reader):
    """Rows of a CSV reader up to the first one it cannot parse (a quoted field cut by a kill)."""
    try:
        yield from reader
    except csv.Error:
        return


class PredictionWriter(BasePredictionWriter):
    """``--trainer.callbacks+=tmzoo.tasks.PredictionWriter --trainer.callbacks.output=preds.csv``.

    Rows are appended to ``<output>.partial`` as batches complete, in the order the loader
    delivers them (input order for :class:`tmzoo.datamodules.FilesDataModule`), and the file
    is renamed over ``output`` at the end (a symlinked ``output`` is written through). With
    ``resume=True`` a partial file left by a killed run is continued: its whole chunks of rows
    are kept, the datamodule starts after them (``start_index``), and the final file equals an
    uninterrupted run's. What the rows were computed with (the model's weights, the datamodule's
    ``prediction_settings()``: input file, featurisation, batch size) is kept in
    ``<output>.partial.json``; a resume with anything else is refused. SIGTERM stops the run after
    the batch in progress is written (``SIGTERMException``, exit status 143).
    With several processes each rank writes ``<stem>.rank<k><suffix>``.

    Batches carrying ``rows`` (users' files) give every record a row, failures included;
    other batches give one row per graph (``index`` from ``idx``). After the run ``summary``
    holds the counts. A damaged compressed input is raised as
    :class:`~tmzoo.io.files.DamagedInputError` after the rows read so far are written.

    Args:
        output: the CSV to write.
        resume: continue from ``<output>.partial``.
        progress: show a progress bar with rate and ETA (total from a quick count of the input).
    """

    def __init__(self, output: str = "predictions.csv", resume: bool = False, progress: bool = False):
        super().__init__(write_interval="batch")
        self.output = Path(output)
        self.resume = resume
        self.progress = progress
        self.summary: dict = {}
        self._handle = None
        self._writer = None
        self._bar = None
        self._input_error = ""
        self._digest: Future | None = None

    # ------------------------------------------------------------------ set up
    def _target(self, trainer) -> Path:
        output = self.output
        if trainer.world_size > 1:
            output = output.with_name(f"{output.stem}.rank{trainer.global_rank}{output.suffix}")
        return output

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "predict":
            return
        # Lightning looks for the batch indices of every batch for prediction writers; these rows need none
        warnings.filterwarnings("ignore", message=".*infer the batch indices.*")
        # the rows are here: predictions kept in memory as well would grow with the input
        trainer.predict_loop.return_predictions = False
        datamodule = trainer.datamodule
        source = getattr(datamodule, "path", None)
        self._output = check_output(self._target(trainer), *([source] if source is not None else []))
        self._partial = partial_path(self._output)
        self._settings = settings_path(self._output)
        self.summary = {"records": 0, "predicted": 0, "failed": 0, "failed_indices": [], "resumed_at": 0,
                        "output": str(self._output)}
        self._input_error = ""
        self._earlier = None
        self._datamodule = datamodule
        if self.resume:
            if trainer.world_size > 1:
                raise ValueError("resume is for single-process prediction runs")
            chunk = getattr(datamodule, "chunk_size", None) or getattr(datamodule, "batch_size", 1)
            self._earlier = self._scan_partial(int(chunk or 1))
            start = self._earlier["rows"] if self._earlier else 0
            if start and not hasattr(datamodule, "start_index"):
                raise ValueError(f"{type(datamodule).__name__} cannot start after the {start} rows of {self._partial}")
            if hasattr(datamodule, "start_index"):
                datamodule.start_index = start
            self.summary.update(resumed_at=start, records=start)
            if self._earlier:
                self.summary.update({k: self._earlier[k] for k in ("predicted", "failed", "failed_indices")})
        if self.progress:
            total = getattr(datamodule, "num_records", None) or (progress_total(source) if source is not None else None)
            # a log file (not a terminal) gets a line every 30 s, not ten a second for the whole run
            self._bar = tqdm(total=total, initial=self.summary["resumed_at"], desc="predicting", unit="mol",
                             dynamic_ncols=True, file=sys.stderr, mininterval=0.1 if sys.stderr.isatty() else 30)

    def _scan_partial(self, chunk: int) -> dict | None:
        """What to keep of an earlier run's partial file: its header and whole chunks of rows."""
        if not self._partial.exists():
            print(f"tmzoo: no partial results at {self._partial}; starting from the first record", file=sys.stderr)
            return None
        with open(self._partial, "rb") as raw:
            consumed = [0]

            def lines():
                for line in raw:
                    if not line.endswith(b"\n"):
                        return  # a row cut by the kill
                    consumed[0] += len(line)
                    yield line.decode("utf-8", errors="replace")

            reader = csv.reader(lines())
            header = next(_complete_rows(reader), None)
            if header is None:
                return None
            kept = {"header": header, "rows": 0, "bytes": consumed[0], "predicted": 0, "failed": 0, "failed_indices": []}
            if "prediction" not in header or "error" not in header:
                return kept  # refused when the columns are compared
            prediction, error = header.index("prediction"), header.index("error")
            rows, predicted, failed = 0, 0, []
            for row in _complete_rows(reader):
                if len(row) != len(header) or row[0] != str(rows):
                    break  # not a row of this run: keep what precedes it
                if row[error]:
                    failed.append(rows)
                elif row[prediction]:
                    predicted += 1
                rows += 1
                if rows % chunk == 0:  # whole chunks only: the batches after them are composed as before
                    kept.update(rows=rows, bytes=consumed[0], predicted=predicted, failed=len(failed),
                                failed_indices=failed[:MAX_FAILED_INDICES])
                    del failed[MAX_FAILED_INDICES:]
        kept["failed"] = kept["rows"] - kept["predicted"]
        print(f"tmzoo: resuming after {kept['rows']} rows of {self._partial}", file=sys.stderr)
        return kept

    def _open(self, pl_module) -> None:
        """Start (or continue) the partial file once the model's target names are final
        (a task may take them from the checkpoint it loads, after ``setup``)."""
        self.target_names = [str(n) for n in (getattr(pl_module, "target_names", None) or ["prediction"])]
        self.columns = prediction_columns(self.target_names)
        settings = self._run_settings(pl_module)
        earlier = self._earlier
        if earlier is not None:
            if earlier["header"] != self.columns:
                raise ValueError(
                    f"cannot resume: {self._partial} has columns {earlier['header']}, this run writes {self.columns}"
                )
        if earlier is not None and earlier["rows"]:
            self._check_settings(settings)
            self._handle = open(self._partial, "r+", newline="", encoding="utf-8")
            self._handle.truncate(earlier["bytes"])
            self._handle.seek(earlier["bytes"])
            self._writer = csv.writer(self._handle)
            return
        if not self.resume and self._partial.exists():
            print(f"tmzoo: discarding the earlier partial results at {self._partial} (continue them with resume)",
                  file=sys.stderr)
        with atomic_write(self._settings) as handle:
            json.dump(settings, handle, indent=1)
        self._partial.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self._partial, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._handle)
        self._writer.writerow(self.columns)
        self._handle.flush()

    def _run_settings(self, pl_module) -> dict:
        """What this run's rows depend on (JSON data): columns, model weights, input and featurisation."""
        describe = getattr(self._datamodule, "prediction_settings", None)
        digest = self._digest.result() if self._digest is not None else model_digest(pl_module)
        settings = {"columns": self.columns, "model": digest,
                    "data": describe() if describe is not None else None}
        return json.loads(json.dumps(settings, default=str))

    def _check_settings(self, settings: dict) -> None:
        try:
            earlier = json.loads(self._settings.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ValueError(
                f"cannot resume: {self._settings} (what the rows of {self._partial} were computed with) is missing "
                "or unreadable; delete the partial file to start over"
            ) from None
        if earlier != settings:
            data, before = settings.get("data") or {}, earlier.get("data") or {}
            changed = [_SETTING_NAMES.get(k, k) for k in ("columns", "model") if earlier.get(k) != settings[k]]
            changed += [_SETTING_NAMES.get(k, k) for k in sorted(set(data) | set(before)) if before.get(k) != data.get(k)]
            raise ValueError(
                f"cannot resume: the rows of {self._partial} were computed with another "
                f"{', '.join(dict.fromkeys(changed)) or 'run'}; resume with the same checkpoint, input and "
                "settings, or delete the partial file to start over"
            )

    def on_predict_start(self, trainer, pl_module) -> None:
        # the weights are hashed (for resume) while the loader featurises the first batch
        pool = ThreadPoolExecutor(max_workers=1)
        self._digest = pool.submit(model_digest, pl_module)
        pool.shutdown(wait=False)

    # ------------------------------------------------------------------ rows
    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        if self._handle is None:
            self._open(pl_module)
        values = torch.as_tensor(prediction).detach().float().cpu()
        values = values.reshape(batch.num_graphs, -1) if batch.num_graphs else values.new_empty(0, len(self.target_names))
        if values.shape[1] != len(self.target_names):
            raise ValueError(
                f"the model predicts {values.shape[1]} values per molecule but names "
                f"{len(self.target_names)} targets ({self.target_names})"
            )
        rows = self._rows(batch, values)
        self._writer.writerows(rows)
        self._handle.flush()
        self._input_error = self._input_error or getattr(batch, "input_error", "") or ""
        if self._bar is not None:
            self._bar.update(len(rows))
        if trainer.received_sigterm:  # Lightning's handler only notes it; prediction loops never look
            print(f"tmzoo: SIGTERM after {self.summary['records']} records", file=sys.stderr)
            raise SIGTERMException(128 + signal.SIGTERM)

    def _rows(self, batch, values: torch.Tensor) -> list[list]:
        records = getattr(batch, "rows", None)
        if records is None:  # a datamodule without per-record rows: one row per graph
            indices = batch.idx.view(-1).tolist() if "idx" in batch else [None] * batch.num_graphs
            names = batch.name if isinstance(getattr(batch, "name", None), list) else [""] * batch.num_graphs
            records = [(i, n, "", "", "") for i, n in zip(indices, names)]
        predicted = iter(values.tolist())
        out = []
        for index, name, smiles, mode, error in records:
            value = next(predicted) if not error else None
            if value is not None and not all(math.isfinite(v) for v in value):
                mode, value, error = "", None, "prediction is not finite"
            self._count(index, error)
            if value is None:
                out.append([index, name, smiles, mode, "", *([""] * (len(self.columns) - 6)), error])
                continue
            extra = [f"{v:.9g}" for v in value] if len(value) > 1 else []
            out.append([index, name, smiles, mode, f"{value[0]:.9g}", *extra, ""])
        return out

    def _count(self, index, error: str) -> None:
        summary = self.summary
        summary["records"] += 1
        if error:
            summary["failed"] += 1
            if len(summary["failed_indices"]) < MAX_FAILED_INDICES:
                summary["failed_indices"].append(index)
        else:
            summary["predicted"] += 1

    # ------------------------------------------------------------------ end
    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._handle is None:  # no batch at all (an input without records)
            self._open(pl_module)
        self._close()
        target = Path(os.path.realpath(self._output))
        if target.exists():
            print(f"tmzoo: replacing existing {self._output}", file=sys.stderr)
        os.replace(self._partial, target)
        self._settings.unlink(missing_ok=True)
        if self._input_error:
            raise DamagedInputError(
                f"{self._input_error}; the {self.summary['records']} records read before the damage are in {self._output}"
            )

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        opened = self._handle is not None
        self._close()
        if not opened:
            return
        if not isinstance(exception, DamagedInputError):
            print(f"tmzoo: stopped; the rows written so far are in {self._partial} (continue with resume)",
                  file=sys.stderr)
