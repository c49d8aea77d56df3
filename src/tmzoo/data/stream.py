"""A user's file as a stream of featurised chunks, for prediction at any size.

:class:`RecordStream` is a torch ``IterableDataset``: the records of the file, in input order,
cut into chunks of ``chunk_size`` consecutive records (chunk ``k`` holds records
``[k*chunk_size, (k+1)*chunk_size)``, whatever the start). Each loader worker (and each DDP
rank) featurises every n-th chunk; the ``DataLoader`` hands workers' outputs back round-robin,
so chunks arrive in input order. A chunk is a :class:`Chunk`: ``rows``
``(index, name, smiles, mode, error)`` for *every* record, those that failed included, so
outputs keep one row per record, and the featurised records sorted by atom count and cut
into model batches (padded in the worker: the predicting process only runs the model), so
that a batch pads to molecules of about its own size. :meth:`Chunk.predict` puts the
predictions back in input order.

A damaged compressed input ends the stream: the chunk holding the damage carries its readable
records and ``input_error`` (the message); no chunk follows it. Memory is bounded by the
chunk size and the loader's prefetch, whatever the file size. Given the file's record count,
the stream has a length (its chunks): Lightning then starts on the first chunk instead of
waiting for a second one to learn whether the first is the last.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info
from torch_geometric.data import Batch, Data

from tmzoo.chem.molecule import MoleculeError
from tmzoo.data.batching import SizeBatchSampler
from tmzoo.io.files import DamagedInputError
from tmzoo.io.records import Record, read_records
from tmzoo.modes import MODE_NAMES, Mode

def pass_through(item):
    """``collate_fn`` of a loader whose items are already batches."""
    return item


@dataclass
class Chunk:
    """Consecutive records of a file, featurised: a row for every record, model batches of the rest.

    ``batches`` hold the featurised records sorted by atom count (``collate``'s output: a
    :class:`~tmzoo.data.dense.DenseMolecules` or a PyG ``Batch``); ``order[j]`` is the place,
    among the featurised records in input order, of the ``j``-th molecule of the batches.
    """

    rows: list[tuple]
    batches: list[Any]
    order: Tensor
    input_error: str = ""

    @property
    def num_graphs(self) -> int:
        """Records with a featurised molecule (predicted), of ``len(rows)``."""
        return int(self.order.numel())

    def to(self, *args, **kwargs) -> "Chunk":
        return replace(self, batches=[batch.to(*args, **kwargs) for batch in self.batches])

    def predict(self, model: Callable[[Any], Tensor]) -> Tensor:
        """``model(batch)`` of every batch, concatenated in input order: ``[num_graphs, T]``
        (``[0, 0]`` for a chunk whose records all failed)."""
        if not self.batches:
            return torch.empty(0, 0)
        out = torch.cat([model(batch) for batch in self.batches])
        in_order = torch.empty_like(out)
        in_order[self.order.to(out.device)] = out
        return in_order


class RecordStream(IterableDataset):
    """Featurised chunks of ``path`` from record ``start`` on (see the module docstring).

    Args:
        path: ``.sdf``, ``.smi`` or ``.csv`` (optionally gzipped).
        featurize: ``Record -> Data`` with ``mode`` (e.g. :class:`tmzoo.io.featurize.RecordFeaturizer`);
            raises :class:`~tmzoo.chem.molecule.MoleculeError` for a record it cannot featurise;
        chunk_size: records per chunk (the unit of sorting, of worker hand-out and of resume).
        start: first record index streamed (records before it are framed, not featurised).
        rank, world_size: this process's share under DDP (chunks are dealt round-robin).
        batch_size: most molecules in a model batch (default: the chunk size).
        max_pairs: most padded atom pairs ``B·N_max²`` in a model batch (a larger molecule gets
            a batch of its own), so that memory stays bounded whatever the molecules.
        collate: featurised molecules -> model batch (default: a PyG ``Batch``).
        total: the file's record count (:func:`~tmzoo.io.records.count_records`), if known: the
            stream's length; a record beyond it (the file grew while read) is an error.
    """

    def __init__(
        self,
        path: str | Path,
        featurize: Callable[[Record], Data],
        chunk_size: int = 64,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int | None = None,
        max_pairs: int | None = None,
        collate: Callable[[list[Data]], Any] = Batch.from_data_list,
        total: int | None = None,
    ):
        super().__init__()
        if chunk_size < 1 or (batch_size is not None and batch_size < 1):
            raise ValueError(f"chunk_size and batch_size must be at least 1, got {chunk_size} and {batch_size}")
        self.path = Path(path)
        self.featurize = featurize
        self.chunk_size = int(chunk_size)
        self.start = int(start)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.batch_size = int(batch_size or chunk_size)
        self.max_pairs = max_pairs
        self.collate = collate
        self.total = total

    def __len__(self) -> int:
        """This rank's chunks, at least 1: Lightning skips a loader of length 0, the writer's end
        included (``TypeError`` when the record count is unknown: no length)."""
        if self.total is None:
            raise TypeError("the record count of this stream is unknown")
        first, end = self.start // self.chunk_size, -(-self.total // self.chunk_size)
        return max(len(range(self.rank, max(end - first, 0), self.world_size)), 1)

    def __iter__(self) -> Iterator[Chunk]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        first, framed = self.start // self.chunk_size, self.start - 1  # framed: the last record index read

        def mine(index: int) -> bool:
            # ranks take chunks round-robin; within a rank, workers take that rank's chunks round-robin,
            # which is the order a DataLoader collects an IterableDataset's workers' outputs in
            position = index // self.chunk_size - first  # 0 = the first chunk streamed
            rank, turn = position % self.world_size, position // self.world_size  # turn: among the rank's chunks
            return index >= self.start and (rank, turn % workers) == (self.rank, worker)

        def select(index: int) -> bool:  # only this shard's records are parsed
            nonlocal framed
            framed = index
            if self.total is not None and index >= self.total:  # its chunks would not be read
                raise ValueError(f"{self.path} changed while it was read: it held {self.total} records at the start")
            return mine(index)

        chunk_id, records = None, []
        try:
            for record in read_records(self.path, select=select):
                k = record.index // self.chunk_size
                if records and k != chunk_id:
                    yield self.chunk(records)
                    records = []
                chunk_id = k
                records.append(record)
        except DamagedInputError as err:
            # the chunk holding the first unread record reports the damage; later chunks do not exist
            damaged = (framed + 1) // self.chunk_size
            if records and chunk_id != damaged:
                yield self.chunk(records)
                records = []
            if mine(max(damaged * self.chunk_size, self.start)):
                yield self.chunk(records, input_error=str(err))
            return
        if records:
            yield self.chunk(records)

    def chunk(self, records: list[Record], input_error: str = "") -> Chunk:
        """The records' rows, and their featurised molecules in model batches of similar size."""
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
        batches = SizeBatchSampler(
            graphs, self.batch_size, max_pairs=self.max_pairs, shuffle=False, window=max(len(graphs), 1),
            sizes=[int(g.num_nodes) for g in graphs], num_replicas=1, rank=0,
        )
        order = [index for batch in batches for index in batch]
        return Chunk(rows, [self.collate([graphs[i] for i in batch]) for batch in batches],
                     torch.tensor(order, dtype=torch.long), input_error)


__all__ = ["Chunk", "RecordStream", "pass_through"]
