"""Crafted checkpoint files that corrupt memory or balloon from a few kB (issue 11): each is
refused with a message naming the file, without a crash and without allocating what it asks for.

The loads run in a child process: a regression would segfault or exhaust memory there, and the
child's peak RSS is what the tests measure.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
import torch

from conftest import tiny_pretraining_bundle
from tmzoo.checkpoints import UnsafeCheckpointError, load_bundle, safe_load, save_bundle

_CHILD = r"""
import json, resource, sys
from tmzoo.checkpoints import UnsafeCheckpointError, load_bundle
with open("/proc/self/statm") as handle:
    used = int(handle.read().split()[0]) * resource.getpagesize()
cap = used + int(sys.argv[1])  # so that a regression fails here instead of swapping the machine
resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
for path in sys.argv[2:]:
    try:
        load_bundle(path)
        outcome = "loaded"
    except UnsafeCheckpointError as err:
        outcome = f"refused: {err}"
    except BaseException as err:
        outcome = f"{type(err).__name__}: {err}"
    print(json.dumps([path, outcome]), flush=True)
with open("/proc/self/status") as handle:  # VmHWM: this process's peak RSS (ru_maxrss can be the parent's, from before exec)
    peak = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmHWM:"))
print(json.dumps(["maxrss_bytes", peak]), flush=True)
"""


def _load_in_child(paths, headroom=1 << 30) -> dict:
    """``{path: outcome, "maxrss_bytes": peak RSS}`` of ``load_bundle`` on each file in a child."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, "-c", _CHILD, str(headroom), *map(str, paths)],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert run.returncode == 0, f"the child died (return code {run.returncode}): {run.stderr[-2000:]}"
    return dict(json.loads(line) for line in run.stdout.splitlines() if line.startswith("["))


def _assert_refused(outcomes: dict, path, *words) -> None:
    outcome = outcomes[str(path)]
    assert outcome.startswith("refused: ") and str(path) in outcome, outcome
    for word in words:
        assert word in outcome, outcome


# ------------------------------------------------------------- numpy dtypes
class _Dtype:
    """Pickles as ``numpy.dtype(code)`` followed by BUILD with a hand-written state."""

    def __init__(self, code, state):
        self.code, self.state = code, state

    def __reduce__(self):
        return np.dtype, (self.code, False, True), self.state


class _Array:
    """Pickles as numpy's ``_reconstruct`` + BUILD with raw bytes for ``dtype``."""

    def __init__(self, dtype, raw: bytes, shape=(1,)):
        self.dtype, self.raw, self.shape = dtype, raw, shape

    def __reduce__(self):
        return np.core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), (1, self.shape, self.dtype, False, self.raw)


class _Scalar:
    def __init__(self, dtype, raw: bytes):
        self.dtype, self.raw = dtype, raw

    def __reduce__(self):
        return np._core.multiarray.scalar, (self.dtype, self.raw)


_POINTER = (0x4141414141414141).to_bytes(8, "little")
_OBJECT_FIELD = _Dtype("V8", (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0))  # flags 0: "no objects"
_WIDE_FIELD = _Dtype("V8", (3, "|", None, ("a",), {"a": (np.dtype("S4096"), 0)}, 8, 1, 0))
_WIDE_PLAIN = _Dtype("f8", (3, "<", None, None, None, 4096, 8, 0))


def _released_file(path, mode_prob):
    """The parity fixture's weights in the released layout, with ``args.mode_prob = mode_prob``."""
    from pathlib import Path

    official = safe_load(Path(__file__).parent / "fixtures" / "parity" / "golden_shared_official_format.pt")
    args = {k: v for k, v in vars(official["cfg"]["model"]).items() if not k.startswith("_")}
    torch.save({"model": official["model"], "args": argparse.Namespace(**dict(args, mode_prob=mode_prob))}, path)
    return path


def test_plain_numpy_values_still_load(tmp_path):
    path = tmp_path / "plain.pt"
    values = {"a": np.arange(6, dtype=">i4").reshape(2, 3), "f": np.float32(1.5), "b": np.bool_(True), "c": np.complex64(1j)}
    torch.save({"args": argparse.Namespace(**values)}, path)
    loaded = vars(safe_load(path)["args"])
    for key, value in values.items():  # as numpy's own unpickling gives them
        assert np.array_equal(loaded[key], value) and loaded[key].dtype == pickle.loads(pickle.dumps(value, 2)).dtype
    assert loaded["a"].shape == (2, 3) and isinstance(loaded["a"], np.ndarray)


# ------------------------------------------------------------- memory bombs
def _stride0_bundle(path, **encoder_args) -> int:
    """A tmzoo checkpoint whose every weight is a stride-0 view of one element; returns the
    bytes the model it describes would take."""
    from tmzoo.checkpoints.bundle import build_module

    spec, _ = tiny_pretraining_bundle()
    spec["modules"]["encoder"]["init_args"].update(encoder_args)
    with torch.device("meta"):
        modules = {name: build_module(s) for name, s in spec["modules"].items()}
    state = {
        f"{name}.{key}": torch.zeros((1,) * value.dim(), dtype=value.dtype).expand(value.shape)
        for name, module in modules.items() for key, value in module.state_dict().items()
    }
    save_bundle(spec, state, path)
    return sum(v.numel() * v.element_size() for v in state.values())


def _tensor_pickle(numel: int, storage_numel: int | None = None) -> bytes:
    """``data.pkl`` of ``{"w": float32 tensor of numel}`` whose storage (record ``data/0``)
    declares ``storage_numel`` elements (default ``numel``)."""
    storage = object()

    class Tensor:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (storage, 0, (numel,), (1,), False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", storage_numel or numel) if obj is storage else None

    buffer = __import__("io").BytesIO()
    Pickler(buffer, protocol=2).dump({"w": Tensor()})
    return buffer.getvalue()


def _write_zip(path, records) -> None:
    """A zip of ``(name, payload, method, uncompressed size)`` records, written by hand so a
    record can hold pre-compressed DEFLATE data (the CRC of compressed records is left 0)."""
    out, central = bytearray(), bytearray()
    for name, payload, method, size in records:
        crc = zlib.crc32(payload) if method == zipfile.ZIP_STORED else 0
        encoded, offset = name.encode(), len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(payload), size, len(encoded), 0)
        out += encoded + payload
        central += struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(payload), size, len(encoded), 0, 0, 0, 0, 0, offset
        ) + encoded
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(records), len(records), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))


def _torch_records(tmp_path) -> list:
    """The records of a real one-tensor torch file, as ``_write_zip`` takes them."""
    base = tmp_path / "base.pt"
    torch.save({"w": torch.zeros(1)}, base)
    with zipfile.ZipFile(base) as archive:
        return [(i.filename, archive.read(i), zipfile.ZIP_STORED, i.file_size) for i in archive.infolist()]


def _deflate_zeros(nbytes: int) -> bytes:
    """Raw DEFLATE of ``nbytes`` zeros, built from one compressed MiB (full flushes make the
    blocks identical), so the test never compresses gigabytes."""
    mib = 1 << 20
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = block.compress(bytes(mib)) + block.flush(zlib.Z_FULL_FLUSH)
    return chunk * (nbytes // mib) + block.flush(zlib.Z_FINISH)


def _deflate_bomb(path, tmp_path, nbytes: int):
    """A torch zip whose one tensor record is ``nbytes`` of zeros compressed with DEFLATE."""
    records = _torch_records(tmp_path)
    prefix = records[0][0].split("/", 1)[0]
    pkl, deflated = _tensor_pickle(nbytes // 4), _deflate_zeros(nbytes)
    replaced = {f"{prefix}/data.pkl": (pkl, zipfile.ZIP_STORED, len(pkl)),
                f"{prefix}/data/0": (deflated, zipfile.ZIP_DEFLATED, nbytes)}
    _write_zip(path, [(name, *replaced[name]) if name in replaced else (name, data, method, size)
                      for name, data, method, size in records])
    return path


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """The crafted files of issue 11 and what ``load_bundle`` in one child process made of them."""
    tmp_path = tmp_path_factory.mktemp("crafted")
    numpy_payloads = {
        "object-field-array": _Array(_OBJECT_FIELD, _POINTER),
        "wide-field-array": _Array(_WIDE_FIELD, bytes(8)),
        "object-field-scalar": _Scalar(_OBJECT_FIELD, _POINTER),
        "wide-plain-dtype": _Array(_WIDE_PLAIN, bytes(8)),
    }
    files = {name: _released_file(tmp_path / f"{name}.pt", payload) for name, payload in numpy_payloads.items()}
    files["stride0"] = tmp_path / "stride0.pt"
    model_bytes = _stride0_bundle(files["stride0"], num_layers=8, embed_dim=2048, ffn_dim=8192, num_heads=8)
    assert files["stride0"].stat().st_size < 64 << 10 and model_bytes > 1.5e9  # 50 kB -> 1.6 GB of weights
    files["deflate"] = _deflate_bomb(tmp_path / "deflate.pt", tmp_path, 1536 << 20)
    assert files["deflate"].stat().st_size < 2 << 20  # 1.6 MB -> 1.5 GB
    return files, _load_in_child(files.values())


@pytest.mark.parametrize("name", ["object-field-array", "wide-field-array", "object-field-scalar", "wide-plain-dtype"])
def test_numpy_dtype_payloads_are_refused_without_crashing(crafted, name):
    """A structured dtype whose object field holds an arbitrary address (segfault when read), one
    whose field is wider than its item (heap bytes read), both through a scalar too, in a
    released-format file's ``args.mode_prob``."""
    files, outcomes = crafted
    _assert_refused(outcomes, files[name], "numpy dtype")


def test_small_files_that_would_take_gigabytes_are_refused(crafted):
    """A stride-0 tmzoo checkpoint and a DEFLATE zip bomb: refused before allocating, peak RSS
    of the loading process well under 1 GB."""
    files, outcomes = crafted
    _assert_refused(outcomes, files["stride0"], "overlaps itself")
    _assert_refused(outcomes, files["deflate"], "DEFLATE")
    assert outcomes["maxrss_bytes"] < 700 << 20, outcomes["maxrss_bytes"]


def test_records_larger_than_the_declared_tensors_are_refused(tmp_path):
    """Stored (uncompressed) records holding more bytes than the pickle's tensors need."""
    records = _torch_records(tmp_path)
    prefix = records[0][0].split("/", 1)[0]
    padded = [(n, d + bytes(1 << 20), m, s + (1 << 20)) if n == f"{prefix}/data/0" else (n, d, m, s) for n, d, m, s in records]
    extra = records[:-1] + [(f"{prefix}/data/99", bytes(1 << 20), zipfile.ZIP_STORED, 1 << 20), records[-1]]
    for name, layout in (("padded", padded), ("extra", extra)):
        path = tmp_path / f"{name}.pt"
        _write_zip(path, layout)
        with pytest.raises(UnsafeCheckpointError, match="holds record data/") as err:
            safe_load(path)
        assert str(path) in str(err.value)


def test_overlapping_tensors_are_refused(tmp_path):
    """Two weights that are overlapping views of one storage (the file holds less than the model)."""
    spec, state = tiny_pretraining_bundle()
    shared = torch.randn(4096)
    key_a, key_b = "encoder.layers.0.fc1.weight", "encoder.layers.0.fc2.weight"
    state[key_a] = shared[: state[key_a].numel()].view_as(state[key_a])
    state[key_b] = shared[1 : 1 + state[key_b].numel()].view_as(state[key_b])
    path = tmp_path / "overlap.pt"
    save_bundle(spec, state, path)
    with pytest.raises(UnsafeCheckpointError, match="overlapping memory") as err:
        load_bundle(path)
    assert str(path) in str(err.value) and key_a in str(err.value) and key_b in str(err.value)


def test_tensor_past_its_storage_is_refused(tmp_path):
    records = _torch_records(tmp_path)
    prefix = records[0][0].split("/", 1)[0]
    path = tmp_path / "short.pt"
    pkl = _tensor_pickle(1000, storage_numel=1)
    _write_zip(path, [(n, pkl, m, len(pkl)) if n.endswith("data.pkl") else (n, d, m, s) for n, d, m, s in records])
    with pytest.raises(ValueError, match="out of bounds|past the end") as err:
        safe_load(path)
    assert str(path) in str(err.value)


# ------------------------------------------------- torch's allowlist is not ours
def test_globals_other_libraries_allow_torch_are_still_refused(tmp_path):
    """PyG widens torch's weights-only allowlist process-wide (``Data``, ``defaultdict``, ...);
    safe_load keeps to its own, and leaves the process-wide list as it found it."""
    from torch_geometric.data import Data

    before = set(map(repr, torch.serialization.get_safe_globals()))
    path = tmp_path / "pyg.pt"
    torch.save({"data": Data(x=torch.zeros(2, 1))}, path)
    assert Data in torch.serialization.get_safe_globals()  # torch would resolve the name
    with pytest.raises(UnsafeCheckpointError, match="torch_geometric"):
        safe_load(path)
    assert set(map(repr, torch.serialization.get_safe_globals())) == before


def _legacy_file(path, main: bytes, storage_keys: bytes):
    """A torch < 1.6 file: magic, protocol and system info pickles, then ``main`` and ``storage_keys``."""
    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    header = b"".join(pickle.dumps(x, protocol=2) for x in (
        MAGIC_NUMBER, PROTOCOL_VERSION, {"protocol_version": PROTOCOL_VERSION, "little_endian": True}))
    path.write_bytes(header + main + storage_keys)
    return path


_BYTEARRAY_100MB = b"\x80\x02c__builtin__\nbytearray\nJ\x00\xe1\xf5\x05\x85R."  # bytearray(10**8): zeroed memory


@pytest.mark.parametrize("where", ["zip", "legacy-object", "legacy-storage-keys"])
def test_globals_torch_allows_but_checkpoints_never_need_are_refused(tmp_path, where):
    """torch's own list has ``bytearray(n)`` (n zeroed bytes from a 30-byte pickle); every
    pickle torch reads from the file is checked, the storage keys of the old format included."""
    empty = pickle.dumps([], protocol=2)
    path = tmp_path / f"{where}.pt"
    if where == "zip":
        records = _torch_records(tmp_path)
        _write_zip(path, [(n, _BYTEARRAY_100MB, m, len(_BYTEARRAY_100MB)) if n.endswith("data.pkl") else (n, d, m, s)
                          for n, d, m, s in records if not n.endswith("data/0")])
    else:
        main, keys = (_BYTEARRAY_100MB, empty) if where == "legacy-object" else (pickle.dumps({}, protocol=2), _BYTEARRAY_100MB)
        _legacy_file(path, main, keys)
    with pytest.raises(UnsafeCheckpointError, match="builtins.bytearray") as err:
        safe_load(path)
    assert str(path) in str(err.value)
