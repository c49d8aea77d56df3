"""A user's file as a stream of featurised chunks, for prediction at any size.

:class:`RecordStream` is a torch ``IterableDataset``: the records of the file, in input order,
cut into chunks of ``chunk_size`` consecutive records (chunk ``k`` holds records
``[k*chunk_size, (k+1)*chunk_size)``, whatever the start). Each loader worker (and each DDP
rank) featurises every n-th chunk; the ``DataLoader`` hands workers' outputs back round-robin,
so chunks arrive in input order. A chunk is a PyG ``Batch`` of its featurised records plus
``rows``: ``(index, name, smiles, mode, error)`` for *every* record of the chunk, those that
failed included, so outputs keep one row per record. A chunk whose records all failed carries
one placeholder graph (``num_predicted == 0``) so every batch can go through a model.

A damaged compressed input ends the stream: the chunk holding the damage carries its readable
records and ``input_error`` (the message); no chunk follows it. Memory is bounded by the
chunk size and the loader's prefetch, whatever the file size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from rdkit import Chem
from torch.utils.data import IterableDataset, get_worker_info
from torch_geometric.data import Batch, Data

from tmzoo.chem.molecule import MoleculeError
from tmzoo.io.files import DamagedInputError, open_text
from tmzoo.io.records import Record, file_kind, read_records
from tmzoo.modes import MODE_NAMES, Mode

ROW_FIELDS = ("index", "name", "smiles", "mode", "error")


def shard_of(position: int, workers: int, world_size: int = 1) -> tuple[int, int]:
    """``(rank, worker)`` featurising the chunk at ``position`` (0 = the first chunk streamed).

    Ranks take chunks round-robin; within a rank, workers take that rank's chunks round-robin,
    which is the order a ``DataLoader`` collects an ``IterableDataset``'s workers' outputs in.
    """
    return position % world_size, (position // world_size) % max(workers, 1)


def pass_through(item):
    """``collate_fn`` of a loader whose items are already batches."""
    return item


class RecordStream(IterableDataset):
    """Featurised chunks of ``path`` from record ``start`` on (see the module docstring).

    Args:
        path: ``.sdf``, ``.smi`` or ``.csv`` (optionally gzipped).
        featurize: ``Record -> Data`` with ``mode`` (e.g. :class:`tmzoo.io.featurize.RecordFeaturizer`);
            raises :class:`~tmzoo.chem.molecule.MoleculeError` for a record it cannot featurise;
            its ``placeholder()`` (when it has one) makes the stand-in graph.
        chunk_size: records per chunk (the largest batch the model sees).
        start: first record index streamed (records before it are framed, not featurised).
        rank, world_size: this process's share under DDP (chunks are dealt round-robin).
    """

    def __init__(
        self,
        path: str | Path,
        featurize: Callable[[Record], Data],
        chunk_size: int = 64,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
        self.path = Path(path)
        self.featurize = featurize
        self.chunk_size = int(chunk_size)
        self.start = int(start)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self._placeholder: Data | None = None

    # ------------------------------------------------------------------ sharding
    def _mine(self, worker: int, workers: int) -> Callable[[int], bool]:
        first = self.start // self.chunk_size

        def mine(index: int) -> bool:
            if index < self.start:
                return False
            return shard_of(index // self.chunk_size - first, workers, self.world_size) == (self.rank, worker)

        return mine

    def _records(self, mine: Callable[[int], bool], framed: list[int]) -> Iterator[Record]:
        """This shard's records (only they are parsed); ``framed[0]``: the last record index read."""

        def select(index: int) -> bool:
            framed[0] = index
            return mine(index)

        return read_records(self.path, select=select)

    # ------------------------------------------------------------------ chunks
    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        framed = [self.start - 1]
        chunk_id, records = None, []
        try:
            for record in self._records(self._mine(worker, workers), framed):
                k = record.index // self.chunk_size
                if records and k != chunk_id:
                    yield self.chunk(records)
                    records = []
                chunk_id = k
                records.append(record)
        except DamagedInputError as err:
            # the chunk holding the first unread record reports the damage; later chunks do not exist
            damaged = (framed[0] + 1) // self.chunk_size
            if records and chunk_id != damaged:
                yield self.chunk(records)
                records = []
            if self._mine(worker, workers)(max(damaged * self.chunk_size, self.start)):
                yield self.chunk(records, input_error=str(err))
            return
        if records:
            yield self.chunk(records)

    def chunk(self, records: list[Record], input_error: str = "") -> Batch:
        """The featurised records as one ``Batch`` with ``rows``, ``num_predicted``, ``input_error``."""
        rows, graphs = [], []
        for record in records:
            mode, error = "", ""
            try:
                data = self.featurize(record)
                mode = MODE_NAMES[Mode(int(data.mode))]
                graphs.append(data)
            except MoleculeError as err:
                error = str(err)
            except Exception as err:  # an unexpected failure stays with its record
                error = f"featurisation failed: {type(err).__name__}: {err}"
            rows.append((record.index, record.name, record.smiles, mode, error))
        batch = Batch.from_data_list(graphs or [self.placeholder()])
        batch.rows = rows
        batch.num_predicted = len(graphs)
        batch.input_error = input_error
        return batch

    def placeholder(self) -> Data:
        """A one-atom graph (methane, 2D) standing in for a chunk whose records all failed."""
        if self._placeholder is None:
            make = getattr(self.featurize, "placeholder", None)
            methane = Record(-1, "placeholder", Chem.MolFromSmiles("C"), "C")
            self._placeholder = make() if make is not None else self.featurize(methane)
        return self._placeholder


def count_records(path: str | Path, block: int = 1 << 20) -> int | None:
    """About how many records ``path`` holds (for progress bars): ``$$$$`` lines of an SDF, lines
    of a SMILES file, lines after the header of a CSV; ``None`` when the file cannot be read."""
    try:
        kind = file_kind(path)
        lines, separators, last = 0, 0, "\n"
        with open_text(path) as handle:
            while chunk := handle.read(block):
                lines += chunk.count("\n")
                if kind == ".sdf":
                    separators += chunk.count("$$$$")
                last = chunk[-1]
    except (OSError, ValueError):
        return None
    lines += last != "\n"
    if kind == ".sdf":
        return separators or int(lines > 0)
    return max(lines - (kind == ".csv"), 0)


__all__ = ["ROW_FIELDS", "RecordStream", "count_records", "pass_through", "shard_of"]
