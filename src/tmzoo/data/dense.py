"""Padded, dense batches of molecules, as the Transformer needs them.

:func:`collate_dense` pads a list of featurised ``Data`` (in the DataLoader's worker
processes: pass :class:`DenseCollater` as ``collate_fn``); :func:`to_dense` does the same for a
PyG ``Batch`` already built. Both give a :class:`DenseMolecules` with raw feature values; the
embedding modules own every vocabulary offset and padding row.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_dense_batch

#: Attributes a featurised molecule carries that :class:`DenseMolecules` pads into fields.
_STRUCTURE_KEYS = ("x", "degree", "pos", "has_pos", "pair_spd", "pair_path", "edge_index", "edge_attr")
_TENSOR_FIELDS = ("x", "mask", "degree", "pos", "has_pos", "spd", "path", "y", "idx", "mode")


@dataclass
class DenseMolecules:
    """A padded batch of molecules. ``mask`` is True on real atoms; padding holds zeros
    (``spd`` −1). Per-molecule ``y``/``idx``/``mode`` are there when the molecules had them,
    other per-molecule or per-atom attributes (``ligand_mask``, ``name``) in ``extra``.

    Behaves like a PyG ``Batch`` where tasks read it: ``batch.y``, ``"mode" in batch``,
    ``batch.num_graphs``, ``batch.to(device)``.
    """

    x: Tensor  # [B, N, 9] long, raw OGB atom features
    mask: Tensor  # [B, N] bool
    degree: Tensor  # [B, N] long, bonded neighbours
    pos: Tensor  # [B, N, 3] float32, zero without coordinates
    has_pos: Tensor  # [B] bool
    spd: Tensor  # [B, N, N] long bond distance (510 between fragments), -1 on padding
    path: Tensor  # [B, N, N, hops, 3] uint8 path codes (tmzoo.chem.paths), 0 on padding
    y: Tensor | None = None  # [B, T] float
    idx: Tensor | None = None  # [B] long, record index in the source
    mode: Tensor | None = None  # [B] long, per-record mode (users' files)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_graphs(self) -> int:
        return self.x.shape[0]

    @property
    def pair_type(self) -> Tensor:
        """``[B, N, N, 2]`` rows of the 3D pair-type tables (for inspection; the model broadcasts)."""
        from tmzoo.models.geometry import pair_type_rows

        return pair_type_rows(self.x, self.mask)

    def __contains__(self, key: str) -> bool:
        return getattr(self, key, None) is not None if key in _TENSOR_FIELDS else key in self.extra

    def __getattr__(self, key: str) -> Any:
        extra = self.__dict__.get("extra", {})
        if key in extra:
            return extra[key]
        if key in ("batch", "edge_index", "edge_attr", "ptr"):
            raise AttributeError(
                f"a dense batch has no {key!r}: encoders that read PyG batches (GIN, SchNet) need the "
                "datamodule's dense_batches=False"
            )
        raise AttributeError(key)

    def apply(self, fn) -> "DenseMolecules":
        """A copy with ``fn`` applied to every tensor (fields and ``extra``)."""
        done = {f.name: fn(v) for f in fields(self) if isinstance(v := getattr(self, f.name), Tensor)}
        done["extra"] = {k: fn(v) if isinstance(v, Tensor) else v for k, v in self.extra.items()}
        return replace(self, **done)

    def to(self, *args, **kwargs) -> "DenseMolecules":
        """Move/cast like ``Tensor.to``; only floating tensors change dtype."""
        dtype = kwargs.pop("dtype", None)
        return self.apply(lambda t: t.to(*args, **kwargs, **({"dtype": dtype} if dtype and t.is_floating_point() else {})))

    def pin_memory(self) -> "DenseMolecules":
        return self.apply(Tensor.pin_memory)

    def select(self, index: Tensor) -> "DenseMolecules":
        """The molecules at ``index`` (padding width kept)."""
        n = self.num_graphs
        return self.apply(lambda t: t[index] if t.dim() and t.shape[0] == n else t)

    def __len__(self) -> int:
        return self.num_graphs

    def __reduce__(self):
        """Pickled (out of a loader worker) with every CPU tensor packed into one byte buffer: one
        shared-memory segment to create, pass and map per batch rather than one per tensor."""
        groups = ({f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}, self.extra)
        tensors = [v for group in groups for v in group.values() if isinstance(v, Tensor)]
        if any(t.device.type != "cpu" or t.requires_grad for t in tensors):
            return type(self), tuple(getattr(self, f.name) for f in fields(self))
        layouts: tuple[dict, dict] = ({}, {})  # key -> (dtype, shape, byte offset), for fields and extra
        offset = 0
        for group, layout in zip(groups, layouts):
            for key, value in group.items():
                if isinstance(value, Tensor):
                    layout[key] = (value.dtype, tuple(value.shape), offset)
                    offset += -(-value.numel() * value.element_size() // _ALIGN) * _ALIGN
        buffer = torch.empty(offset, dtype=torch.uint8)
        for group, layout in zip(groups, layouts):
            for key, spec in layout.items():
                _view(buffer, *spec).copy_(group[key])
        others = [{k: v for k, v in group.items() if k not in layout} for group, layout in zip(groups, layouts)]
        return _unpack, (type(self), buffer, *layouts, *others)


_ALIGN = 16  # byte alignment of each tensor in a packed batch (any element size divides it)


def _view(buffer: Tensor, dtype: torch.dtype, shape: tuple[int, ...], offset: int) -> Tensor:
    return buffer[offset : offset + math.prod(shape) * dtype.itemsize].view(dtype).view(shape)


def _unpack(cls, buffer: Tensor, field_layout: dict, extra_layout: dict, fields_: dict, extra: dict) -> DenseMolecules:
    """The batch of :meth:`DenseMolecules.__reduce__`; its tensors are views of ``buffer``."""
    tensors = {k: _view(buffer, *spec) for k, spec in field_layout.items()}
    return cls(**tensors, **fields_, extra={**extra, **{k: _view(buffer, *spec) for k, spec in extra_layout.items()}})


def collate_dense(data_list: Sequence[Data]) -> DenseMolecules:
    """Pad featurised molecules (``transformer_m_transform`` output) into one :class:`DenseMolecules`."""
    if not data_list:
        raise ValueError("cannot collate an empty list of molecules")
    b = len(data_list)
    counts = [int(d.num_nodes) for d in data_list]
    n = max(counts)
    first = data_list[0]
    # every molecule's atoms (and pairs, in _dense_pairs) scattered at once into the padded tensors
    atom_rows = torch.from_numpy(np.concatenate([np.arange(g * n, g * n + k) for g, k in enumerate(counts)]))
    x = torch.zeros(b * n, first.x.shape[-1], dtype=torch.long)
    x[atom_rows] = torch.cat([d.x for d in data_list]).long()
    mask = torch.zeros(b * n, dtype=torch.bool)
    mask[atom_rows] = True
    degree = torch.zeros(b * n, dtype=torch.long)
    degree[atom_rows] = torch.cat([d.degree for d in data_list]).long()
    with_pos = [bool(d.has_pos.view(-1)[0]) for d in data_list]
    pos = torch.zeros(b * n, 3)
    if any(with_pos):  # coordinates are read from the molecules that have them only
        on = torch.from_numpy(np.repeat(with_pos, counts))
        pos[atom_rows[on]] = torch.cat([d.pos for d, h in zip(data_list, with_pos) if h]).float()
    spd = _dense_pairs(torch.cat([d.pair_spd.view(-1) for d in data_list]).long(), counts, n, -1)
    path = _dense_pairs(torch.cat([d.pair_path for d in data_list]), counts, n, 0)
    x, mask, degree, pos = x.view(b, n, -1), mask.view(b, n), degree.view(b, n), pos.view(b, n, 3)
    has_pos = torch.tensor(with_pos)
    extra: dict[str, Any] = {}
    widest = data_list[counts.index(n)]  # a 1-atom molecule cannot tell per-atom from per-molecule
    for key in first.keys():
        if key in _STRUCTURE_KEYS:
            continue
        values = [d[key] for d in data_list]
        if not isinstance(values[0], Tensor):
            extra[key] = values
        elif key not in ("y", "idx", "mode") and widest.is_node_attr(key):  # per atom
            padded = values[0].new_zeros(b, n, *values[0].shape[1:])
            for i, (v, k) in enumerate(zip(values, counts)):
                padded[i, :k] = v
            extra[key] = padded
        else:  # per molecule, [1, ...] each
            extra[key] = torch.cat([v.reshape(1, *v.shape[1:]) if v.dim() else v.view(1) for v in values])
    y, idx, mode = extra.pop("y", None), extra.pop("idx", None), extra.pop("mode", None)
    return DenseMolecules(
        x=x, mask=mask, degree=degree, pos=pos, has_pos=has_pos, spd=spd, path=path,
        y=y, idx=None if idx is None else idx.view(-1), mode=None if mode is None else mode.view(-1), extra=extra,
    )


@functools.lru_cache(maxsize=1024)
def _pair_slots(k: int, n: int) -> np.ndarray:
    """Rows of the ``k*k`` pairs of a ``k``-atom molecule in a flattened ``[n, n]`` grid (read-only)."""
    atoms = np.arange(k)
    slots = (atoms[:, None] * n + atoms[None, :]).ravel()
    slots.setflags(write=False)
    return slots


class DenseCollater:
    """``collate_fn`` for a ``torch.utils.data.DataLoader`` of featurised molecules (picklable)."""

    def __call__(self, data_list: Sequence[Data]) -> DenseMolecules:
        return collate_dense(data_list)

    def __repr__(self) -> str:
        return "DenseCollater()"


def _dense_pairs(values: Tensor, counts: Sequence[int], n_max: int, fill) -> Tensor:
    """Scatter flattened per-graph ``[n_b*n_b, ...]`` blocks into ``[B, n_max, n_max, ...]``."""
    b = len(counts)
    out = values.new_full((b * n_max * n_max, *values.shape[1:]), fill)
    rows = np.concatenate([_pair_slots(k, n_max) + g * n_max * n_max for g, k in enumerate(counts)])
    out[torch.from_numpy(rows).to(values.device)] = values
    return out.view(b, n_max, n_max, *values.shape[1:])


def to_dense(batch: Batch) -> DenseMolecules:
    """The :class:`DenseMolecules` of a PyG ``Batch`` of featurised molecules (same values as
    :func:`collate_dense` on its molecules)."""
    counts = torch.bincount(batch.batch, minlength=batch.num_graphs).tolist()
    x, mask = to_dense_batch(batch.x, batch.batch, batch_size=batch.num_graphs)
    n_max = x.shape[1]
    degree, _ = to_dense_batch(batch.degree.long(), batch.batch, batch_size=batch.num_graphs)
    pos, _ = to_dense_batch(batch.pos.float(), batch.batch, batch_size=batch.num_graphs)
    has_pos = batch.has_pos.view(-1).bool()
    optional = {k: batch[k].view(-1) for k in ("idx", "mode") if k in batch}
    return DenseMolecules(
        x=x.long(), mask=mask, degree=degree, pos=pos * has_pos.view(-1, 1, 1), has_pos=has_pos,
        spd=_dense_pairs(batch.pair_spd.long(), counts, n_max, -1),
        path=_dense_pairs(batch.pair_path, counts, n_max, 0), y=batch.y if "y" in batch else None, **optional,
    )
