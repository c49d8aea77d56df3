"""Reading checkpoint files without executing pickled code.

``torch.load(weights_only=True)`` refuses released Transformer-M files because they pickle
fairseq objects beside the weights. :func:`safe_load` instead runs torch's loader with a
restricted unpickler: tensors, storages and plain containers are rebuilt; classes of known
training frameworks (fairseq, omegaconf, argparse, Lightning) become inert placeholders;
any other global — ``os.system``, ``builtins.eval``, ``subprocess.Popen``, ... — stops the
load with :class:`UnsafeCheckpointError` before anything is called.
"""

from __future__ import annotations

import collections
import io
import pickle
import types
from pathlib import Path

import torch

_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("pathlib", "PosixPath"): Path,
    ("pathlib", "WindowsPath"): Path,
    ("pathlib", "Path"): Path,
}
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


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The file pickles a global that could run code; nothing from it was called."""


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


def _numpy_global(module: str, name: str):
    import numpy as np

    if name == "dtype":
        return np.dtype
    if name == "scalar":
        from numpy.core.multiarray import scalar  # noqa: F401  (rebuilds a number from bytes)

        return scalar
    if name == "_reconstruct":
        from numpy.core.multiarray import _reconstruct

        return _reconstruct
    if name == "ndarray":
        return np.ndarray
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only allow-listed globals (see module docstring)."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and (name in _STORAGES or name in _DTYPES):
            return getattr(torch, name)
        if module in ("_codecs", "codecs") and name == "encode":
            import codecs

            return codecs.encode
        if module.split(".")[0] == "numpy":
            found = _numpy_global(module, name)
            if found is not None:
                return found
        if (module, name) in _DICT_LIKE:
            return dict
        if module.split(".")[0] in _INERT_MODULE_PREFIXES:
            return _placeholder(module, name)
        raise UnsafeCheckpointError(
            f"the checkpoint pickles {module}.{name}, which is not a tensor, container or known "
            "training-framework object; refusing to load it (nothing from the file was executed)"
        )


restricted_pickle = types.ModuleType("tmzoo_restricted_pickle")
restricted_pickle.Unpickler = RestrictedUnpickler
restricted_pickle.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()
restricted_pickle.loads = lambda b, **kw: RestrictedUnpickler(io.BytesIO(b), **kw).load()
restricted_pickle.__name__ = "pickle"


def safe_load(path: str | Path, map_location="cpu"):
    """Load a torch checkpoint file without running code pickled inside it.

    Raises ``FileNotFoundError``, :class:`UnsafeCheckpointError` or ``ValueError`` with a
    message naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
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
