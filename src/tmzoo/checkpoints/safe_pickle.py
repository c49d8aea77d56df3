"""Reading checkpoint files from the internet with PyTorch's weights-only loader.

:func:`safe_load` reads a file with ``torch.load(weights_only=True)``, which gets inert stand-ins
(:data:`STAND_INS`) for the few non-tensor objects released Transformer-M files pickle (an
``argparse.Namespace`` of hyper-parameters, fairseq meters, numpy numbers and arrays, paths,
``defaultdict``) and nothing else: what other libraries add to torch's list process-wide (PyG adds
its ``Data``, ``defaultdict``, ...) is set aside while loading. Nothing is read into memory or
unpickled before these checks pass:

1. the container: zip records must be stored uncompressed, lie inside the file, agree between
   Python's ``zipfile`` and torch's own reader, and not be TorchScript (whose code
   ``torch.load`` would hand to ``torch.jit.load``); the pre-0.4 tar format is refused;
2. the pickle, followed opcode by opcode on inert values (:func:`scan_pickle`): every global
   must be on :data:`ALLOWED` (narrower than torch's own list, which also has ``bytearray(n)``,
   quantized, sparse and nested tensors), only constructors may be called, no class may be
   modified, ``codecs.encode`` only takes text codecs, no state may set dunder attributes, and
   tensors must end inside declared storages that are exactly the tensor records present.

After loading, before any model is built from the result, no tensor may reach past its storage
or share memory with another or itself (a stride-0 view; :func:`check_tensors`), so a small file
cannot become gigabytes of weights.
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import dataclasses
import math
import os
import pickle
import pickletools
import re
import tarfile
import threading
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch._utils import IMPORT_MAPPING, NAME_MAPPING


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """The file is refused before anything from it was called or allocated (also a ``ValueError``,
    so ``tmzoo infer`` and ``tmzoo convert`` print the reason instead of a traceback)."""


_REFUSING = "refusing to load it (nothing from the file was executed)"


class _Refusal(Exception):
    """Why a file is refused (raised inside the checks and stand-ins; not an ``UnpicklingError``,
    so ``torch.load`` passes it through unchanged)."""


# --------------------------------------------------------------------- stand-ins
class Placeholder:
    """Inert stand-in for a training framework's object (argparse ``Namespace``, fairseq meters):
    keeps the attributes the file gives it and does nothing else."""

    def __init__(self, *args, **kwargs):  # what REDUCE or NEWOBJ passes is dropped
        pass

    def __setstate__(self, state):
        for part in check_attribute_state(state, f"a {self._qualname}"):
            self.__dict__.update(part or {})

    def __repr__(self) -> str:
        return f"<placeholder {self._qualname}>"


_PLAIN_DTYPE = re.compile(r"b1|[iu][1248]|f(2|4|8|16)|c(8|16|32)")


class NumpyDtype:
    """A pickled ``numpy.dtype``, only ever a plain number type (no fields, sub-arrays, objects):
    numpy's own dtype state would let a file build a structured dtype whose object field points
    anywhere in memory, so here the state may only say the byte order. ``.dtype`` is the real
    dtype once the file's state is read."""

    def __init__(self, code, align=False, copy=True):
        if not isinstance(code, str) or not _PLAIN_DTYPE.fullmatch(code):
            raise _Refusal(f"builds a numpy dtype {code!r} (only plain numbers are read)")
        self.code, self.dtype = code, None

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)):
            raise _Refusal(f"gives numpy dtype {self.code!r} a malformed state")
        order = state[1]
        # no sub-array, names or fields, no size or alignment of its own, no flags or metadata
        if state[2:8] != (None, None, None, -1, -1, 0) or state[8:] not in ((), (None,)):
            raise _Refusal(f"gives numpy dtype {self.code!r} fields, a size or flags (a structured dtype)")
        if order not in ("<", ">", "|", "="):
            raise _Refusal(f"gives numpy dtype {self.code!r} byte order {order!r}")
        self.dtype = np.dtype(self.code).newbyteorder(order if order in "<>" else "=")

    def __repr__(self) -> str:
        return f"NumpyDtype({self.dtype if self.dtype is not None else self.code!r})"


def _built_dtype(dtype, what: str):
    if not isinstance(dtype, NumpyDtype) or dtype.dtype is None:
        raise _Refusal(f"rebuilds a numpy {what} without a plain numeric dtype")
    return dtype.dtype


def _numpy_scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar``: one plain number from exactly its bytes."""
    real = _built_dtype(dtype, "scalar")
    if not isinstance(data, bytes) or len(data) != real.itemsize:
        got = f"{len(data)} bytes" if isinstance(data, bytes) else f"a {type(data).__name__}"
        raise _Refusal(f"rebuilds a numpy {real} scalar from {got}")
    return np.frombuffer(data, dtype=real)[0]


class NumpyArray(np.ndarray):
    """A pickled numpy array: plain numbers whose bytes match the shape exactly."""

    __module__ = "tmzoo.placeholder"

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1):
            raise _Refusal("gives a numpy array a malformed state")
        _, shape, dtype, fortran, data = state
        real = _built_dtype(dtype, "array")
        if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
            raise _Refusal(f"gives a numpy array the shape {shape!r}")
        if type(fortran) is not bool or not isinstance(data, bytes) or len(data) != math.prod(shape) * real.itemsize:
            raise _Refusal(f"gives a numpy {real} array of shape {shape} the wrong number of bytes")
        np.ndarray.__setstate__(self, (1, shape, real, fortran, data))


def _numpy_reconstruct(subtype, shape, dtype_code):
    """``numpy.core.multiarray._reconstruct``: an empty array that the file's state then fills."""
    if subtype is not NumpyArray or shape != (0,):
        raise _Refusal(f"rebuilds a numpy array of type {getattr(subtype, '__qualname__', subtype)!r}")
    return np.ndarray.__new__(NumpyArray, (0,), np.uint8)


def _defaultdict(default_factory=None, *args):
    """``collections.defaultdict``: read as a plain dict (torch fills only dicts)."""
    return dict(*args)


def _pure_path(*parts) -> PurePosixPath:
    if not all(isinstance(p, str) for p in parts):
        raise _Refusal("rebuilds a path from something other than strings")
    return PurePosixPath(*parts)


PLACEHOLDERS = (
    "argparse.Namespace",
    "fairseq.logging.meters.AverageMeter",
    "fairseq.logging.meters.SumMeter",
    "fairseq.logging.meters.TimeMeter",
    "fairseq.logging.meters.StopwatchMeter",
)
"""The non-tensor classes a released Transformer-M (fairseq) checkpoint pickles."""

_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy 1.x, 2.x

STAND_INS: dict[str, object] = {
    **{name: type(name.rpartition(".")[2], (Placeholder,), {"_qualname": name, "__module__": "tmzoo.placeholder"})
       for name in PLACEHOLDERS},
    **{f"{module}.scalar": _numpy_scalar for module in _NUMPY_MODULES},
    **{f"{module}._reconstruct": _numpy_reconstruct for module in _NUMPY_MODULES},
    "numpy.dtype": NumpyDtype,
    "numpy.ndarray": NumpyArray,
    "collections.defaultdict": _defaultdict,
    "pathlib.Path": _pure_path,
    "pathlib.PosixPath": _pure_path,
    "pathlib.PurePosixPath": _pure_path,
    "builtins.frozenset": frozenset,
    "builtins.slice": slice,
    "builtins.list": list,  # as values: a defaultdict's factory
    "builtins.dict": dict,
    "builtins.tuple": tuple,
}
"""Globals torch's weights-only loader does not know, and what it gets for them."""

_TENSOR_REBUILDERS = {
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
}
CALLABLE = _TENSOR_REBUILDERS | {
    "torch._tensor._rebuild_from_type_v2",
    "collections.OrderedDict",
    "builtins.set",
    "builtins.complex",
    "torch.Size",
    "torch.device",
    "_codecs.encode",
    *(set(STAND_INS) - {"numpy.ndarray", "builtins.list", "builtins.dict", "builtins.tuple"}),
}
"""Globals a pickle may call (REDUCE)."""

ALLOWED = CALLABLE | set(STAND_INS) | {
    "torch.Tensor",
    "torch.nn.parameter.Parameter",
    "torch.storage.TypedStorage",
    "torch.storage.UntypedStorage",
    *(f"torch.{name}" for name in dir(torch) if name.endswith("Storage") and isinstance(getattr(torch, name), type)),
    *(str(value) for value in vars(torch).values() if isinstance(value, torch.dtype)),
}
"""Every global a checkpoint may name; the rest appear only as values (storage types, dtypes)."""

_BUILDABLE = set(PLACEHOLDERS) | {"numpy.dtype"} | {f"{module}._reconstruct" for module in _NUMPY_MODULES}
_DICT_MAKERS = {"collections.OrderedDict", "collections.defaultdict"}
_TEXT_CODECS = {"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1", "utf-8", "utf8", "utf_8", "ascii"}
_DEFAULT_FACTORIES = {None, "collections.OrderedDict", *(
    f"builtins.{t}" for t in ("list", "dict", "set", "frozenset", "tuple"))}
"""What a pickled ``defaultdict`` may name as its factory (it is read as a plain dict anyway)."""


# ------------------------------------------------------------ pickle, statically
@dataclasses.dataclass(eq=False, slots=True)  # compared and hashed by identity, as pickled objects are
class _Global:
    """A global named by the pickle, as the scan sees it (nothing is imported)."""

    name: str


@dataclasses.dataclass(eq=False, slots=True)
class _Made:
    """What a REDUCE/NEWOBJ/BINPERSID would make: the maker and its arguments."""

    maker: _Global
    args: object


_STORAGE = _Global("<persistent storage>")

_LITERALS = {"BININT", "BININT1", "BININT2", "BINFLOAT", "BINUNICODE", "SHORT_BINSTRING", "LONG1"}
_EMPTY = {"NONE": lambda: None, "NEWTRUE": lambda: True, "NEWFALSE": lambda: False, "EMPTY_TUPLE": tuple,
          "EMPTY_LIST": list, "EMPTY_DICT": dict, "EMPTY_SET": set}


def _describe(value) -> str:
    if isinstance(value, _Global):
        return value.name
    if isinstance(value, _Made):
        return f"a {_describe(value.maker)} object"
    return f"a {type(value).__name__}"


def check_attribute_state(state, what: str) -> tuple:
    """``state`` for ``setattr``-style restoring: a dict (or a (dict, slots) pair) of plain names.
    Returns its parts (dicts or ``None``)."""
    parts = state if isinstance(state, tuple) else (state,)
    if isinstance(state, tuple) and len(state) != 2:
        raise _Refusal(f"gives {what} a malformed attribute state")
    for part in parts:
        if part is not None and not isinstance(part, dict):
            raise _Refusal(f"gives {what} attribute state of type {type(part).__name__}")
        for key in part or ():
            if not isinstance(key, str) or key.startswith("__"):
                raise _Refusal(f"sets attribute {key!r} on {what}")
    return parts


def _check_call(func, args, opcode: str) -> None:
    if not isinstance(func, _Global) or func.name not in CALLABLE:
        raise _Refusal(f"calls {_describe(func)} ({opcode}), which only appears as a value in checkpoints")
    if not isinstance(args, tuple):
        raise ValueError(f"{opcode} of {func.name} without an argument tuple")
    if func.name == "_codecs.encode":
        codec = args[1] if len(args) > 1 else "utf-8"
        if not isinstance(codec, str) or codec.lower() not in _TEXT_CODECS:
            raise _Refusal(f"calls codecs.encode with codec {codec!r}")
    elif func.name == "collections.defaultdict":
        factory = args[0] if args else None
        if (factory.name if isinstance(factory, _Global) else factory) not in _DEFAULT_FACTORIES:
            raise _Refusal(f"makes a defaultdict whose default factory is {_describe(factory)}")
    elif func.name == "torch._utils._rebuild_tensor_v2" and len(args) >= 4:
        _check_extent(*args[:4])
    elif func.name == "torch._utils._rebuild_parameter_with_state" and len(args) == 4:
        check_attribute_state(args[3], "a Parameter")
    elif func.name == "torch._tensor._rebuild_from_type_v2" and len(args) == 4:
        inner, new_type, inner_args, state = args
        if not isinstance(inner, _Global) or inner.name not in _TENSOR_REBUILDERS:
            raise _Refusal(f"rebuilds a tensor with {_describe(inner).rsplit('.', 1)[-1]}")
        if not isinstance(new_type, _Global) or new_type.name not in ("torch.Tensor", "torch.nn.parameter.Parameter"):
            raise _Refusal(f"rebuilds a tensor as {_describe(new_type)}")
        _check_call(inner, inner_args, opcode)
        check_attribute_state(state, "a tensor")


def _check_extent(storage, offset, size, stride) -> None:
    """A tensor must end inside the storage the file declares for it (checked before torch reads it)."""
    if not (isinstance(storage, _Made) and storage.maker is _STORAGE and isinstance(storage.args, tuple)
            and len(storage.args) >= 5 and type(storage.args[4]) is int):
        raise _Refusal(f"rebuilds a tensor from {_describe(storage)}, not a storage")
    if not (type(offset) is int and isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and all(type(n) is int and n >= 0 for n in size + stride) and offset >= 0):
        raise _Refusal(f"rebuilds a tensor with offset {offset!r}, size {size!r} and stride {stride!r}")
    end = offset + sum((n - 1) * st for n, st in zip(size, stride)) + 1 if all(size) else 0
    if end > storage.args[4]:
        raise _Refusal(
            f"stores a tensor of shape {size} past the end of its {storage.args[4]}-element storage {storage.args[2]!r}"
        )


def _check_build(inst, state) -> None:
    if isinstance(inst, _Global):
        raise _Refusal(f"sets attributes of the class {inst.name}")
    maker = inst.maker.name if isinstance(inst, _Made) else None
    if maker == "collections.OrderedDict":
        check_attribute_state(state, "an OrderedDict")
    elif maker not in _BUILDABLE:
        raise _Refusal(f"sets the state of {_describe(inst)}")


def _global_name(arg: str, name_mapping=NAME_MAPPING, import_mapping=IMPORT_MAPPING) -> str:
    """``module.name`` of a GLOBAL opcode, mapped from Python 2 names the way torch maps them."""
    module, _, name = arg.partition(" ")
    module, name = name_mapping.get((module, name), (import_mapping.get(module, module), name))
    return f"{module}.{name}"


def scan_pickle(stream) -> tuple[object, list]:
    """Follow one pickle's opcodes (only those torch reads) as torch's weights-only unpickler
    would, on inert values: nothing is imported or called. Returns ``(top object, persistent ids)``;
    raises :class:`_Refusal` for anything outside the policy and ``ValueError`` for a malformed pickle.
    """
    stack: list = []
    metastack: list = []
    memo: dict = {}
    pids: list = []

    def pop_mark() -> list:
        nonlocal stack
        items, stack = stack, metastack.pop()
        return items

    for op, arg, _ in pickletools.genops(stream):
        name = op.name
        if name == "GLOBAL":
            full = _global_name(arg)
            if full not in ALLOWED:  # named as Python's pickle reads it (protocol 2 writes subprocess as commands)
                shown = _global_name(arg, _compat_pickle.NAME_MAPPING, _compat_pickle.IMPORT_MAPPING)
                raise _Refusal(f"pickles {shown}, which is not a tensor, container or known training-framework object")
            stack.append(_Global(full))
        elif name == "REDUCE":
            args = stack.pop()
            _check_call(stack[-1], args, "REDUCE")
            stack[-1] = _Made(stack[-1], args)
        elif name == "NEWOBJ":
            args, cls = stack.pop(), stack.pop()
            if not (isinstance(cls, _Global) and cls.name in PLACEHOLDERS):
                raise _Refusal(f"creates {_describe(cls)} objects directly (NEWOBJ)")
            stack.append(_Made(cls, args))
        elif name == "BUILD":
            state = stack.pop()
            _check_build(stack[-1], state)
        elif name in ("APPEND", "APPENDS"):
            items = [stack.pop()] if name == "APPEND" else pop_mark()
            if type(stack[-1]) is not list:
                raise ValueError(f"{name} to {_describe(stack[-1])}")
            stack[-1].extend(items)
        elif name in ("SETITEM", "SETITEMS"):
            items = [stack.pop(-2), stack.pop()] if name == "SETITEM" else pop_mark()
            target = stack[-1]
            if type(target) is dict:
                target.update(zip(items[::2], items[1::2]))
            elif not (isinstance(target, _Made) and target.maker.name in _DICT_MAKERS):  # items: never checked
                raise ValueError(f"{name} on {_describe(target)}")
        elif name == "MARK":
            metastack.append(stack)
            stack = []
        elif name == "TUPLE":
            items = tuple(pop_mark())  # before naming `stack`: pop_mark rebinds it
            stack.append(items)
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            if len(stack) < n:
                raise ValueError(f"{name} on a short stack")
            stack[-n:] = [tuple(stack[-n:])]
        elif name == "BINPERSID":
            pids.append(stack[-1])
            stack[-1] = _Made(_STORAGE, stack[-1])
        elif name in ("BINGET", "LONG_BINGET"):
            stack.append(memo[arg])
        elif name in ("BINPUT", "LONG_BINPUT"):
            memo[arg] = stack[-1]
        elif name == "STOP":
            return stack.pop(), pids
        elif name in _EMPTY:
            stack.append(_EMPTY[name]())
        elif name in _LITERALS:
            stack.append(arg)
        elif name != "PROTO":
            raise ValueError(f"pickle opcode {name}, which torch's weights-only loader does not read")
    raise ValueError("pickle without STOP")


def _declared_storages(pids: list) -> dict[str, int]:
    """``{storage key: bytes}`` that a pickle's persistent ids ask torch to read."""
    declared: dict[str, int] = {}
    for pid in pids:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise ValueError(f"persistent id {pid!r:.80} is not a storage")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if not (isinstance(storage_type, _Global) and isinstance(key, str) and type(numel) is int and numel >= 0):
            raise ValueError(f"malformed storage declaration {pid!r:.80}")
        short = storage_type.name.rpartition(".")[2]
        try:  # how torch.load reads the storage type (a dtype's name + "Storage")
            size = 1 if short == "UntypedStorage" else torch.serialization.StorageType(short).dtype.itemsize
        except (KeyError, AttributeError, RuntimeError):
            raise _Refusal(f"declares a storage of type {storage_type.name}") from None
        if declared.setdefault(key, numel * size) != numel * size:
            raise _Refusal(f"declares storage {key!r} twice with different sizes")
    return declared


# -------------------------------------------------------------------- containers
def _check_zip(handle, size: int) -> None:
    """The zip directory, read before torch touches any record (see the module docstring)."""
    with zipfile.ZipFile(handle) as archive:
        infos = archive.infolist()
        names = [i.filename for i in infos]
        handle.seek(0)
        torch_names = set(torch._C.PyTorchFileReader(handle).get_all_records())
        if any(n.rsplit("/", 1)[-1] == "constants.pkl" or "/code/" in f"/{n}" for n in [*names, *torch_names]):
            raise _Refusal("is a TorchScript archive, whose code torch.load would run (torch.jit.load)")
        prefix = names[0].split("/", 1)[0] + "/" if names and "/" in names[0] else ""
        if set(names) != {prefix + n for n in torch_names} or len(names) != len(torch_names):
            raise _Refusal("has a zip directory that zipfile and torch's reader list differently")
        stored = {}  # storage key: bytes
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                methods = {zipfile.ZIP_DEFLATED: "DEFLATE", zipfile.ZIP_BZIP2: "BZIP2", zipfile.ZIP_LZMA: "LZMA"}
                method = methods.get(info.compress_type, f"method {info.compress_type}")
                raise _Refusal(f"stores record {info.filename} compressed ({method}); torch.save never compresses")
            if info.header_offset + info.file_size > size:
                raise _Refusal(f"declares record {info.filename} of {info.file_size} bytes, past the end of the file")
            name = info.filename[len(prefix):]
            if name.startswith("data/"):
                stored[name[len("data/"):]] = info.file_size
            elif name != "data.pkl" and info.file_size > 1024:
                raise _Refusal(f"holds a {info.file_size}-byte metadata record {name}")
        if sum(i.file_size for i in infos) > size:
            raise _Refusal("declares records larger than the file (overlapping records)")
        if prefix + "data.pkl" not in names:
            raise ValueError("no data.pkl record")
        declared = _declared_storages(scan_pickle(archive.read(prefix + "data.pkl"))[1])
        for key, nbytes in stored.items():
            if nbytes != declared.get(key):
                wanted = declared.get(key, "no such storage")
                raise _Refusal(f"holds record data/{key} of {nbytes} bytes, but its tensors declare {wanted}")
        missing = sorted(set(declared) - set(stored))
        if missing:
            raise ValueError(f"storage records {missing[:5]} are missing")


def _check_legacy(handle, size: int) -> None:
    """torch < 1.6 files: magic, protocol, system info, the object, storage keys (all pickles)."""
    magic, _ = scan_pickle(handle)
    if magic != torch.serialization.MAGIC_NUMBER:
        raise ValueError("no torch magic number (not a checkpoint)")
    scan_pickle(handle)
    scan_pickle(handle)
    _, pids = scan_pickle(handle)
    scan_pickle(handle)  # the storage keys: torch unpickles them too
    needed = sum(_declared_storages(pids).values())
    if needed > size:
        raise _Refusal(f"declares {needed} bytes of tensors in a {size}-byte file")


def _check_container(handle) -> None:
    """Check the file as the format ``torch.load`` will read it as: a zip only when it starts
    with a zip record (as torch decides), whatever else it also parses as."""
    size = os.fstat(handle.fileno()).st_size
    if torch.serialization._is_zipfile(handle):
        _check_zip(handle, size)
        return
    with contextlib.suppress(OSError):
        if tarfile.is_tarfile(handle):
            raise _Refusal("is a tar archive (torch < 0.4 format), which torch.load extracts, links included")
    handle.seek(0)
    _check_legacy(handle, size)


# ---------------------------------------------------------------------- tensors
def _tensors(obj, seen: set, path: str = "", depth: int = 0):
    """``(where, tensor)`` for every reference to a tensor in a loaded checkpoint (containers walked once)."""
    if depth > 200:
        raise _Refusal(f"nests containers more than 200 deep (at {path or 'the top'})")
    if isinstance(obj, torch.Tensor):
        yield path, obj  # every reference: two references to one tensor overlap
    if id(obj) in seen:
        return
    if isinstance(obj, (torch.Tensor, Placeholder)):
        children = vars(obj).items()  # attributes set from the file's state
    elif isinstance(obj, dict):
        children = obj.items()
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = enumerate(obj)
    else:
        return
    seen.add(id(obj))
    for key, child in children:
        yield from _tensors(child, seen, f"{path}/{key}" if path else str(key), depth + 1)


def _span(tensor: torch.Tensor) -> int:
    """Elements from the tensor's first to one past its last, or -1 when its strides overlap it with itself."""
    reach = 0
    for stride, size in sorted((st, sz) for sz, st in zip(tensor.shape, tensor.stride()) if sz > 1):
        if stride <= reach:
            return -1
        reach += (size - 1) * stride
    return reach + 1


def check_tensors(obj) -> None:
    """Every tensor lies inside its storage and no two tensor references share memory.

    Single numbers are exempt from the sharing rule: Lightning's ``ModelCheckpoint`` keeps its
    best score as one scalar tensor under several keys, and a repeated number costs no more
    memory than the pickle bytes that repeat it.
    """
    spans, first_seen = [], {}
    for where, tensor in _tensors(obj, set()):
        if id(tensor) in first_seen:  # the same object again: refused now, not listed N times
            if tensor.numel() > 1:
                raise _Refusal(f"stores tensors {first_seen[id(tensor)]} and {where} in overlapping memory")
            continue
        first_seen[id(tensor)] = where
        if getattr(tensor, "_backward_hooks", None):
            raise _Refusal(f"attaches backward hooks to tensor {where}")
        if tensor.numel() == 0:
            continue
        span = _span(tensor)
        if span < 0:
            raise _Refusal(
                f"stores tensor {where} of shape {tuple(tensor.shape)} as a view that overlaps itself "
                f"(strides {tensor.stride()}), so it would take more memory than the file holds"
            )
        item = tensor.element_size()
        if (tensor.storage_offset() + span) * item > tensor.untyped_storage().nbytes():
            raise _Refusal(f"stores tensor {where} past the end of its storage")
        if tensor.numel() > 1:
            start = tensor.data_ptr()
            spans.append((str(tensor.device), start, start + span * item, where))
    spans.sort()
    for (dev_a, _, end_a, where_a), (dev_b, start_b, _, where_b) in zip(spans, spans[1:]):
        if dev_a == dev_b and start_b < end_a:
            raise _Refusal(f"stores tensors {where_a} and {where_b} in overlapping memory")


# ------------------------------------------------------------------------- load
_SAFE_GLOBALS_LOCK = threading.Lock()


@contextlib.contextmanager
def _only_stand_ins():
    """torch's weights-only allowlist extended by :data:`STAND_INS` alone, while loading.

    Libraries widen it process-wide (PyG adds ``collections.defaultdict``, ``Data``, ...), and
    where two entries share a name torch picks either; so the others are set aside until the
    load ends. The list is process-wide: ``safe_load`` calls take turns, and a ``torch.load`` in
    another thread meanwhile sees the stand-ins, not the other libraries' entries.
    """
    with _SAFE_GLOBALS_LOCK:
        others = torch.serialization.get_safe_globals()
        torch.serialization.clear_safe_globals()
        try:
            with torch.serialization.safe_globals([(obj, name) for name, obj in STAND_INS.items()]):
                yield
        finally:
            torch.serialization.add_safe_globals(others)


def _printable(text) -> str:
    """``text`` with control characters from the file escaped (no terminal escapes in messages)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def safe_load(path: str | Path, map_location="cpu"):
    """Load a torch checkpoint file with torch's weights-only loader, after the checks above.

    Raises ``FileNotFoundError``, :class:`UnsafeCheckpointError` or ``ValueError`` with a
    message naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with open(path, "rb") as handle:
            _check_container(handle)
            handle.seek(0)
            with _only_stand_ins():
                checkpoint = torch.load(handle, map_location=map_location, weights_only=True)
        check_tensors(checkpoint)
    except _Refusal as why:
        raise UnsafeCheckpointError(f"{path}: the checkpoint {_printable(why)}; {_REFUSING}") from None
    except pickle.UnpicklingError as err:  # torch's own loader refused what the scan let through
        found = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(\n\n|$)", str(err), re.S)
        reason = found.group(1) if found else str(err) or type(err).__name__
        raise UnsafeCheckpointError(
            f"{path}: torch's weights-only loader refused the checkpoint ({_printable(reason)}); {_REFUSING}"
        ) from None
    except Exception as err:  # noqa: BLE001 - any parse failure is a bad file, reported with its name
        raise ValueError(
            f"{path} is not a readable torch checkpoint: {type(err).__name__}: {_printable(err)}"
        ) from err
    return checkpoint
