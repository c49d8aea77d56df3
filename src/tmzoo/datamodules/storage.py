"""Featurised graphs on disk: one flat binary file per attribute, read through memory maps.

Each tensor attribute of the stored ``Data`` objects is concatenated along its PyG
concatenation dimension (moved to the front) into ``<name>.bin``; ``<name>.off`` holds the
``int64`` row offsets, one per molecule plus one. Strings are stored as UTF-8 bytes the same
way. Reading molecule ``i`` slices every memory map, so a dataset far larger than RAM opens
instantly and DataLoader workers share the operating system's page cache.

Integer attributes listed in :data:`COMPACT_DTYPES` are stored in a narrower dtype (OGB
features fit in a byte, local atom numbers in 16 bits) and cast back to the dtype they had
when read; a value that does not fit is refused (:class:`~tmzoo.chem.molecule.MoleculeError`),
never truncated.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torch_geometric.data import Data

from tmzoo.chem.molecule import MoleculeError

_TENSOR, _STRING, _INT = "tensor", "str", "int"

# attribute -> dtype on disk (read back in the dtype it had: int64 for these)
COMPACT_DTYPES = {
    "x": np.uint8,  # OGB atom features: every column < 256
    "edge_attr": np.uint8,  # OGB bond features
    "edge_index": np.int16,  # local atom numbers: molecules up to 32,767 atoms
    "degree": np.uint8,
}


def _compact(name: str, rows: np.ndarray) -> np.ndarray:
    """``rows`` in the narrower dtype of :data:`COMPACT_DTYPES`; refuses values that do not fit."""
    narrow = np.dtype(COMPACT_DTYPES[name])
    if rows.size and rows.dtype != narrow:
        info = np.iinfo(narrow)
        low, high = rows.min(), rows.max()
        if low < info.min or high > info.max:
            raise MoleculeError(
                f"attribute {name!r} holds values {low}..{high}, outside the {narrow} the cache "
                f"stores it in ({info.min}..{info.max})"
            )
    return rows.astype(narrow, copy=False)


def encode(data: Data) -> dict[str, tuple[dict, np.ndarray]]:
    """``Data`` -> ``{name: (spec, rows)}`` with plain numpy rows (cheap to send between
    processes, unlike tensors, which torch pickles through shared memory); attributes of
    :data:`COMPACT_DTYPES` narrowed (``spec["load_dtype"]``: the dtype they are read back in)."""
    out = {}
    for name, value in data.items():
        if isinstance(value, str):
            spec = {"kind": _STRING, "dtype": "uint8", "shape": [], "cat_dim": 0}
            rows = np.frombuffer(value.encode("utf-8"), dtype=np.uint8)
        elif isinstance(value, int) and not isinstance(value, bool):
            spec = {"kind": _INT, "dtype": "int64", "shape": [], "cat_dim": 0}
            rows = np.asarray([value], dtype=np.int64)
        elif isinstance(value, torch.Tensor):
            dim = data.__cat_dim__(name, value) % value.dim() if value.dim() > 0 else 0
            rows = (value.movedim(dim, 0) if value.dim() > 0 else value.view(1)).contiguous().numpy()
            load_dtype = str(rows.dtype)
            if name in COMPACT_DTYPES:
                rows = _compact(name, rows)
            spec = {"kind": _TENSOR, "dtype": str(rows.dtype), "shape": list(rows.shape[1:]),
                    "cat_dim": dim, "scalar": value.dim() == 0, "load_dtype": load_dtype}
        else:
            raise TypeError(f"cannot store attribute {name!r} of type {type(value).__name__}")
        out[name] = (spec, rows)
    return out


class GraphWriter:
    """Appends encoded molecules (:func:`encode`) to the attribute files of a store folder.

    Every molecule must carry the same attributes with the same dtypes and trailing shapes.
    :meth:`close` returns, per file, its size and BLAKE2b checksum; ``layout`` the specs.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.count = 0
        self.layout: dict[str, dict] = {}
        self._rows: dict[str, int] = {}  # attribute -> rows written
        self._files: dict[str, tuple] = {}  # file name -> (handle, BLAKE2b hasher)

    def append(self, encoded: dict[str, tuple[dict, np.ndarray]]) -> None:
        if self.count == 0:
            for name, (spec, _) in encoded.items():
                self.layout[name], self._rows[name] = spec, 0
                for file in (f"{name}.bin", f"{name}.off"):
                    self._files[file] = (open(self.folder / file, "wb"), hashlib.blake2b(digest_size=16))
                self._write(f"{name}.off", np.int64(0))
        elif set(encoded) != set(self.layout):
            raise ValueError(
                f"molecule {self.count} has attributes {sorted(encoded)}, "
                f"the store expects {sorted(self.layout)}"
            )
        for name, (spec, rows) in encoded.items():
            expected = self.layout[name]
            if spec["dtype"] != expected["dtype"] or spec["shape"] != expected["shape"]:
                raise ValueError(
                    f"molecule {self.count}: attribute {name!r} is {spec['dtype']}"
                    f"[*, {spec['shape']}], the store expects {expected['dtype']}"
                    f"[*, {expected['shape']}]"
                )
            self._rows[name] += len(rows)
            self._write(f"{name}.bin", rows)
            self._write(f"{name}.off", np.int64(self._rows[name]))
        self.count += 1

    def _write(self, file: str, values: np.ndarray | np.int64) -> None:
        handle, hasher = self._files[file]
        raw = values.tobytes()
        handle.write(raw)
        hasher.update(raw)

    def close(self) -> dict[str, dict]:
        """Closes the files; returns ``{file name: {"size", "blake2b"}}``."""
        files = {}
        for file, (handle, hasher) in self._files.items():
            files[file] = {"size": handle.tell(), "blake2b": hasher.hexdigest()}
            handle.close()
        return files


def file_checksum(path: Path, algorithm: str = "blake2b") -> str:
    """Hex digest of a file, read in blocks: BLAKE2b (16 bytes), or e.g. ``"sha256"``."""
    hasher = hashlib.blake2b(digest_size=16) if algorithm == "blake2b" else hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            hasher.update(block)
    return hasher.hexdigest()


class GraphStore(Dataset):
    """Random access to the molecules of a store folder; memory maps open on first use."""

    def __init__(self, folder: Path, layout: dict[str, dict], count: int):
        self.folder = Path(folder)
        self.layout = layout
        self.count = count
        self._maps: dict[str, tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return self.count

    def __getstate__(self):  # memory maps are reopened in the receiving process
        return {**self.__dict__, "_maps": None}

    @property
    def maps(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{attribute: (rows, offsets)}``, memory-mapped (an empty file cannot be mapped)."""
        if self._maps is None:
            maps = {}
            for name, spec in self.layout.items():
                offsets = np.memmap(self.folder / f"{name}.off", dtype=np.int64, mode="r")
                shape = (int(offsets[-1]), *spec["shape"])
                values = (np.memmap(self.folder / f"{name}.bin", dtype=spec["dtype"], mode="r", shape=shape)
                          if shape[0] else np.empty(shape, dtype=spec["dtype"]))
                maps[name] = (values, offsets)
            self._maps = maps
        return self._maps

    def column(self, name: str) -> np.ndarray:
        """All rows of one attribute concatenated (e.g. ``y`` of every molecule), as stored."""
        return self.maps[name][0]

    def num_nodes_per_item(self) -> np.ndarray:
        """Atoms of every molecule (``int64 [count]``), from the offsets of ``x`` (no decoding)."""
        return np.diff(np.asarray(self.maps["x"][1]))

    def __getitem__(self, index: int) -> Data:
        if not -self.count <= index < self.count:
            raise IndexError(f"molecule {index} out of range (store holds {self.count})")
        index = int(index) % self.count
        values = {}
        for name, spec in self.layout.items():
            array, offsets = self.maps[name]
            rows = array[offsets[index]: offsets[index + 1]]
            if spec["kind"] == _STRING:
                values[name] = bytes(rows).decode("utf-8")
            elif spec["kind"] == _INT:
                values[name] = int(rows[0])
            else:
                tensor = torch.from_numpy(np.array(rows, dtype=spec.get("load_dtype", spec["dtype"])))
                if spec.get("scalar"):
                    tensor = tensor.view(())
                elif spec["cat_dim"]:
                    tensor = tensor.movedim(0, spec["cat_dim"])
                values[name] = tensor
        return Data(**values)


__all__ = ["COMPACT_DTYPES", "encode", "GraphWriter", "GraphStore", "file_checksum"]
