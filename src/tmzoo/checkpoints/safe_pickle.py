"""Reading checkpoint files without executing pickled code.

``torch.load(weights_only=True)`` refuses released Transformer-M files because they pickle
fairseq objects beside the weights. :func:`safe_load` instead runs torch's loader with a
restricted unpickler: tensors, storages and plain containers are rebuilt; classes of known
training frameworks (fairseq, omegaconf, argparse, Lightning) become inert placeholders;
any other global — ``os.system``, ``builtins.eval``, ``subprocess.Popen``, ... — stops the
load with :class:`UnsafeCheckpointError` before anything is called.

Naming a global is not the only way a pickle acts, so the unpickler (the pure-Python one,
whose opcodes can be overridden) also checks what the opcodes *do* with allowed globals:

* ``REDUCE``/``NEWOBJ``/``INST``/``OBJ`` may only call a short list of constructors and
  torch's tensor-rebuild functions (storage classes, ``torch.Tensor`` and the like may
  appear as values but are never called; a ``defaultdict`` factory must be a container);
* ``BUILD`` may only fill in placeholders, numpy arrays and dtypes, ``OrderedDict``
  attributes (``state_dict()._metadata``) — never a class, so a file cannot monkeypatch
  ``pathlib.Path`` or ``torch.UntypedStorage`` for the rest of the process;
* tensors must come with empty backward hooks, attribute state may not set dunder names,
  ``codecs.encode`` only takes the latin-1/utf-8 codecs pickle itself uses, and paths are
  rebuilt as inert ``PurePath`` objects.

Two container formats bypass any unpickler inside ``torch.load`` and are refused outright:
TorchScript archives (``torch.load`` hands them to ``torch.jit.load``, which runs the
archive's code, e.g. a scripted ``__setstate__``) and the pre-0.4 tar format (extracted with
``tarfile``, links included).
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
import tarfile
import types
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

import torch


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """The file pickles a global that could run code; nothing from it was called.

    Also a ``ValueError``, so callers that report bad checkpoint files (``tmzoo infer``,
    ``tmzoo convert``) print the reason instead of a traceback.
    """


def _refuse(what: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"the checkpoint {what}; refusing to load it (nothing from the file was executed)"
    )


class Placeholder:
    """Stands in for an object of a training framework that is not needed (or installed)."""

    _qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __call__(self, *args, **kwargs):
        return type(self)(*args)

    def __repr__(self) -> str:
        return f"<placeholder {self._qualname}>"


def _placeholder(module: str, name: str) -> type:
    return type(name, (Placeholder,), {"_qualname": f"{module}.{name}", "__module__": "tmzoo.placeholder"})


def _is_placeholder_class(obj) -> bool:
    return isinstance(obj, type) and issubclass(obj, Placeholder)


# ----------------------------------------------------------------- checked callables
def _check_attribute_state(state, what: str) -> None:
    """``state`` for ``setattr``-style restoring: dicts (or a (dict, slots) pair) of plain names."""
    parts = state if isinstance(state, tuple) else (state,)
    if isinstance(state, tuple) and len(state) != 2:
        raise _refuse(f"gives {what} a malformed attribute state")
    for part in parts:
        if part is None:
            continue
        if not isinstance(part, dict):
            raise _refuse(f"gives {what} attribute state of type {type(part).__name__}")
        for key in part:
            if not isinstance(key, str) or key.startswith("__"):
                raise _refuse(f"sets attribute {key!r} on {what}")


def _check_no_hooks(backward_hooks) -> None:
    if backward_hooks:  # torch.save always writes an empty OrderedDict
        raise _refuse("attaches backward hooks to a tensor")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise _refuse(f"rebuilds a tensor from a {type(storage).__name__}, not a storage")
    _check_no_hooks(backward_hooks)
    return torch._utils._rebuild_tensor_v2(
        storage, storage_offset, size, stride, requires_grad, collections.OrderedDict(), metadata
    )


def _rebuild_parameter(data, requires_grad, backward_hooks):
    if not isinstance(data, torch.Tensor):
        raise _refuse(f"rebuilds a Parameter from a {type(data).__name__}")
    _check_no_hooks(backward_hooks)
    return torch._utils._rebuild_parameter(data, requires_grad, collections.OrderedDict())


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    if not isinstance(data, torch.Tensor):
        raise _refuse(f"rebuilds a Parameter from a {type(data).__name__}")
    _check_no_hooks(backward_hooks)
    _check_attribute_state(state, "a Parameter")
    return torch._utils._rebuild_parameter_with_state(data, requires_grad, collections.OrderedDict(), state)


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in _CALLABLE_IDS.values() or func is _rebuild_from_type_v2:
        raise _refuse(f"rebuilds a tensor with {getattr(func, '__name__', type(func).__name__)}")
    if new_type not in (torch.Tensor, torch.nn.Parameter):
        raise _refuse(f"rebuilds a tensor as {getattr(new_type, '__name__', new_type)!r}")
    _check_attribute_state(state, "a tensor")
    return torch._tensor._rebuild_from_type_v2(func, new_type, args, state)


_TEXT_CODECS = {"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1", "utf-8", "utf8", "utf_8", "ascii"}


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    """``codecs.encode`` as pickle uses it (protocol-2 bytes), without codec lookups by name."""
    import codecs

    if not isinstance(obj, str) or str(encoding).lower() not in _TEXT_CODECS:
        raise _refuse(f"calls codecs.encode with codec {encoding!r}")
    return codecs.encode(obj, encoding, errors)


_DEFAULT_FACTORIES = (None, list, dict, set, frozenset, tuple, collections.OrderedDict)


def _defaultdict(default_factory=None, *args):
    if not any(default_factory is f for f in _DEFAULT_FACTORIES):
        name = getattr(default_factory, "__qualname__", type(default_factory).__name__)
        raise _refuse(f"makes a defaultdict whose default factory is {name}")
    return collections.defaultdict(default_factory, *args)


def _multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _np_reconstruct(subtype, shape, dtype):
    import numpy as np

    if subtype is not np.ndarray:
        raise _refuse(f"rebuilds a numpy array of type {subtype!r}")
    return _multiarray()._reconstruct(subtype, shape, dtype)


def _np_scalar(dtype, *args):
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise _refuse("rebuilds a numpy scalar of object dtype")
    return _multiarray().scalar(dtype, *args)


def _np_dtype(*args, **kwargs):
    import numpy as np

    if not args or not isinstance(args[0], str):
        raise _refuse("builds a numpy dtype from something other than a type string")
    return np.dtype(*args, **kwargs)


# ---------------------------------------------------------------- the allow-lists
_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): _defaultdict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch", "Tensor"): torch.Tensor,  # a value (new_type of _rebuild_from_type_v2), never called
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,  # a value, never called
    ("pathlib", "PosixPath"): PurePosixPath,
    ("pathlib", "PurePosixPath"): PurePosixPath,
    ("pathlib", "WindowsPath"): PureWindowsPath,
    ("pathlib", "PureWindowsPath"): PureWindowsPath,
    ("pathlib", "Path"): PurePosixPath,
    ("codecs", "encode"): _codecs_encode,
}
_NUMPY = {"dtype": _np_dtype, "scalar": _np_scalar, "_reconstruct": _np_reconstruct}
_NUMPY_MODULES = {"numpy", "numpy.core.multiarray", "numpy._core.multiarray"}
_MODULE_ALIASES = {"_codecs": "codecs"}

_CALLABLE_IDS = {
    id(f): f
    for f in (
        collections.OrderedDict, _defaultdict, set, frozenset, slice, complex, dict, list, tuple,
        torch.Size, torch.device, _rebuild_tensor_v2, _rebuild_parameter,
        _rebuild_parameter_with_state, _rebuild_from_type_v2, PurePosixPath, PureWindowsPath,
        _codecs_encode, _np_dtype, _np_scalar, _np_reconstruct,
    )
}
"""What ``REDUCE``/``INST``/``OBJ`` may call (placeholder classes too)."""

_NEWOBJ_CLASSES = (dict, collections.OrderedDict, list, set, frozenset, tuple)
"""What ``NEWOBJ`` may create with ``cls.__new__`` (placeholder classes too)."""

_STORAGES = {
    name for name in dir(torch) if name.endswith("Storage") and isinstance(getattr(torch, name), type)
}
_DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}
_DICT_LIKE = {
    ("lightning.fabric.utilities.data", "AttributeDict"),
    ("pytorch_lightning.utilities.parsing", "AttributeDict"),
    ("lightning_fabric.utilities.data", "AttributeDict"),
}
_INERT_MODULE_PREFIXES = ("fairseq", "fairseq_cli", "omegaconf", "argparse", "jsonargparse", "enum", "typing")


def _describe(obj) -> str:
    if isinstance(obj, type) or callable(obj):
        return getattr(obj, "__qualname__", None) or type(obj).__name__
    return f"a {type(obj).__name__}"


def _check_callable(func, opcode: str) -> None:
    if id(func) in _CALLABLE_IDS or _is_placeholder_class(func):
        return
    raise _refuse(f"calls {_describe(func)} ({opcode}), which only appears as a value in checkpoints")


def _check_build(inst, state) -> None:
    import numpy as np

    if isinstance(inst, type):
        raise _refuse(f"sets attributes of the class {inst.__qualname__}")
    if isinstance(inst, Placeholder):
        return
    if type(inst) is np.ndarray or isinstance(inst, np.dtype):
        return
    if type(inst) is collections.OrderedDict:
        _check_attribute_state(state, "an OrderedDict")
        return
    if type(inst) is dict and not state:
        return
    raise _refuse(f"sets the state of a {type(inst).__name__} object")


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that resolves only allow-listed globals and checks what opcodes do with them."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str):
        # protocol < 3 pickles use Python 2 names (``__builtin__``, ``commands``); map them
        # the way pickle itself does, so allow-list and messages see today's names
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        module = _MODULE_ALIASES.get(module, module)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and (name in _STORAGES or name in _DTYPES):
            return getattr(torch, name)
        if module in _NUMPY_MODULES and name in _NUMPY:
            return _NUMPY[name]
        if module == "numpy" and name == "ndarray":
            import numpy as np

            return np.ndarray
        if (module, name) in _DICT_LIKE:
            return dict
        if module.split(".")[0] in _INERT_MODULE_PREFIXES:
            return _placeholder(module, name)
        raise _refuse(
            f"pickles {module}.{name}, which is not a tensor, container or known training-framework object"
        )

    # Every opcode that calls or mutates something is checked before pickle's own code runs.
    def _load_reduce(self):
        _check_callable(self.stack[-2], "REDUCE")
        pickle._Unpickler.load_reduce(self)

    def _load_newobj(self):
        cls = self.stack[-2]
        if not (_is_placeholder_class(cls) or any(cls is c for c in _NEWOBJ_CLASSES)):
            raise _refuse(f"creates {_describe(cls)} objects directly (NEWOBJ)")
        pickle._Unpickler.load_newobj(self)

    def _load_newobj_ex(self):
        cls = self.stack[-3]
        if not (_is_placeholder_class(cls) or any(cls is c for c in _NEWOBJ_CLASSES)):
            raise _refuse(f"creates {_describe(cls)} objects directly (NEWOBJ_EX)")
        pickle._Unpickler.load_newobj_ex(self)

    def _instantiate(self, klass, args):
        _check_callable(klass, "INST/OBJ")
        return pickle._Unpickler._instantiate(self, klass, args)

    def _load_build(self):
        _check_build(self.stack[-2], self.stack[-1])
        pickle._Unpickler.load_build(self)

    dispatch[pickle.REDUCE[0]] = _load_reduce
    dispatch[pickle.NEWOBJ[0]] = _load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = _load_newobj_ex
    dispatch[pickle.BUILD[0]] = _load_build


restricted_pickle = types.ModuleType("tmzoo_restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()
restricted_pickle.loads = lambda b, **kw: RestrictedUnpickler(io.BytesIO(b), **kw).load()
restricted_pickle.__name__ = "pickle"


def _refuse_container(path: Path) -> None:
    """Refuse the formats ``torch.load`` reads without the unpickler it is given."""
    with open(path, "rb") as handle:
        torch_zip = handle.read(4) == b"PK\x03\x04"  # what torch.load itself checks
    if torch_zip or zipfile.is_zipfile(path):
        names = []
        try:
            with zipfile.ZipFile(path) as archive:
                names += archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            pass
        try:  # torch's own zip reader, so that the two parsers cannot disagree
            names += list(torch._C.PyTorchFileReader(str(path)).get_all_records())
        except Exception:  # noqa: BLE001 - not readable by torch either: torch.load fails too
            pass
        if any(n.rsplit("/", 1)[-1] == "constants.pkl" or "/code/" in f"/{n}" for n in names):
            raise UnsafeCheckpointError(
                f"{path} is a TorchScript archive, whose code torch.load would run "
                "(torch.jit.load); refusing to load it (nothing from the file was executed)"
            )
        return
    try:
        is_tar = tarfile.is_tarfile(path)
    except OSError:
        is_tar = False
    if is_tar:
        raise UnsafeCheckpointError(
            f"{path} is a tar archive (torch < 0.4 format), which torch.load extracts, links "
            "included; refusing to load it (nothing from the file was executed)"
        )


def safe_load(path: str | Path, map_location="cpu"):
    """Load a torch checkpoint file without running code pickled inside it.

    Raises ``FileNotFoundError``, :class:`UnsafeCheckpointError` or ``ValueError`` with a
    message naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    _refuse_container(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception:
        pass
    try:
        return torch.load(path, map_location=map_location, weights_only=False, pickle_module=restricted_pickle)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(f"{path}: {err}") from None
    except Exception as err:
        raise ValueError(f"{path} is not a readable torch checkpoint: {err}") from err
