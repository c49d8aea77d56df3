"""tmzoo's checkpoint format and the model it rebuilds.

A tmzoo checkpoint is a Lightning-style dict: ``state_dict`` with keys prefixed by module
name (``encoder.``, ``gap_head.``, ``denoising_head.``, ``head.``) and a ``tmzoo`` entry of
plain data (:data:`spec`) saying how to rebuild each module and how to featurise inputs.
Only tmzoo's own classes can be named there.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
from pathlib import Path
from typing import get_args

import torch
from torch import Tensor, nn
from torch.nn.modules.module import register_module_parameter_registration_hook
from torch.overrides import TorchFunctionMode

from tmzoo.checkpoints.official import convert_official, is_official
from tmzoo.checkpoints.safe_pickle import safe_load
from tmzoo.io.files import atomic_write, check_output
from tmzoo.modes import EvalMode

FEATURIZATION = {"max_hops": 5, "reference_compatible": False, "hydrogens": False}
"""The spec's ``featurization`` keys and their defaults: the ``transformer_m_transform``
arguments, and ``hydrogens`` (explicit H atoms as graph nodes)."""


def _transform_parameters() -> dict:
    from tmzoo.data.transforms import transformer_m_transform

    return dict(inspect.signature(transformer_m_transform).parameters)


def tmzoo_class(path: str) -> type:
    """The tmzoo class named ``path`` (no other package is imported from a checkpoint or saved spec)."""
    if not path.startswith("tmzoo."):
        raise ValueError(f"checkpoint names class {path!r}; only tmzoo classes may be rebuilt")
    module_name, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def build_module(spec: dict) -> nn.Module:
    """Instantiate ``{"class_path": ..., "init_args": {...}}`` for a tmzoo class only."""
    cls = tmzoo_class(spec["class_path"])
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"{spec['class_path']} is not a torch module")
    return cls(**spec.get("init_args", {}))


def class_path(cls: type, public: tuple[str, ...] = ("tmzoo.models", "tmzoo.models.baselines")) -> str:
    """``cls``'s import path, through the last of the ``public`` modules that exports it."""
    path = f"{cls.__module__}.{cls.__qualname__}"
    for name in public:
        if getattr(importlib.import_module(name), cls.__name__, None) is cls:
            path = f"{name}.{cls.__name__}"
    return path


def module_spec(module: nn.Module) -> dict:
    """The ``class_path``/``init_args`` of a tmzoo module (its recorded ``config``)."""
    return {"class_path": class_path(type(module)), "init_args": dict(getattr(module, "config", {}))}


class ModelBundle(nn.Module):
    """A checkpoint's task, rebuilt from its spec with its weights, and how to feed it.

    ``model`` is the task itself (:class:`~tmzoo.tasks.Pretraining`, ``Regression``, ...):
    ``bundle(batch, modes)`` is its ``forward``, ``[B, T]`` in data units (the fine-tuned
    head de-standardised, or the gap head), so a checkpoint predicts here exactly as it does in
    ``tmzoo test`` and ``tmzoo predict``. ``modes`` gives one mode per molecule; without it the
    recorded evaluation mode (or the molecules' own ``mode``) applies.
    """

    def __init__(self, spec: dict, model: nn.Module):
        super().__init__()
        self.spec = spec
        self.model = model
        self.task = spec.get("task", "pretraining")

    @property
    def encoder(self) -> nn.Module:
        return self.model.encoder

    @property
    def target_names(self) -> list[str]:
        return list(self.model.target_names)

    @property
    def featurization(self) -> dict:
        """How inputs are featurised: every :data:`FEATURIZATION` key, defaults filled in."""
        return {**FEATURIZATION, **(self.spec.get("featurization") or {})}

    @property
    def transform_args(self) -> dict:
        """The ``featurization`` keys ``transformer_m_transform(**...)`` takes."""
        parameters = _transform_parameters()
        return {k: v for k, v in self.featurization.items() if k in parameters}

    @property
    def eval_mode(self) -> EvalMode | None:
        """The recorded mode for predictions (``None``: the encoder's default, 2D+3D)."""
        return self.spec.get("eval_mode")

    def forward(self, batch, modes: Tensor | None = None) -> Tensor:
        return self.model(batch, modes)

    predict = forward


def build_task(spec: dict, modules: dict[str, nn.Module]) -> nn.Module:
    """The task a spec names (``task``: ``pretraining``, ``regression``, ``affinity``) around
    ``modules``, with the data description the spec records (targets, train statistics,
    featurisation, evaluation mode)."""
    from tmzoo.tasks import Affinity, Pretraining, Regression

    tasks = {cls.task_name: cls for cls in (Pretraining, Regression, Affinity)}
    name = spec.get("task", "pretraining")
    if name not in tasks:
        raise ValueError(f"the tmzoo spec names task {name!r}; known: {sorted(tasks)}")
    count = getattr(modules.get("head"), "config", {}).get("num_targets", 1)
    targets = spec.get("targets") or (["homolumogap"] if name == "pretraining" else [f"target_{i}" for i in range(count)])
    info = {"target_names": list(targets), "num_targets": len(targets), "featurization": dict(spec.get("featurization") or {})}
    info.update({k: spec[k] for k in ("target_mean", "target_std") if spec.get(k) is not None})
    heads = {k: v for k, v in modules.items() if k != "encoder"}
    return tasks[name](modules["encoder"], **heads, eval_mode=spec.get("eval_mode"), data_info=info)


def spec_and_state(checkpoint: dict, require_spec: bool = True) -> tuple[dict, dict[str, Tensor]]:
    """``(spec, prefixed state_dict)`` of a released file or a tmzoo/Lightning checkpoint dict
    (``require_spec=False``: also a Lightning checkpoint without a ``tmzoo`` entry, spec ``{}``)."""
    if is_official(checkpoint):
        return convert_official(checkpoint)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        if "tmzoo" in checkpoint or not require_spec:
            return checkpoint.get("tmzoo", {}), checkpoint["state_dict"]
    raise ValueError("not a tmzoo checkpoint nor a released Transformer-M checkpoint")


def load_state_strict(
    modules: dict[str, nn.Module], state: dict[str, Tensor], check_only: bool = False, assign: bool = False
) -> None:
    """Load prefixed weights into ``modules``; any missing, unexpected or mis-shaped tensor is an error.

    ``check_only``: only compare names and shapes (e.g. against modules on the meta device).
    ``assign``: the modules take the tensors themselves (cast to the modules' dtypes), no copy.
    """
    expected = {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match the model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    for key, value in state.items():
        got, wanted = tuple(value.shape), tuple(expected[key].shape)
        if got != wanted:
            raise ValueError(f"tensor {key} has shape {got} in the checkpoint but {wanted} in the model")
    if check_only:
        return
    for name, module in modules.items():
        prefix = name + "."
        mine = {k[len(prefix) :]: v.to(expected[k].dtype) for k, v in state.items() if k.startswith(prefix)}
        module.load_state_dict(mine, assign=assign)


class _SkipInit(TorchFunctionMode):
    """``torch.nn.init`` does nothing (as Lightning's ``empty_init``): modules about to take a
    checkpoint's weights skip drawing random ones (a third of the time an L12 file takes to load)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return kwargs.get("tensor", args[0] if args else None)
        return func(*args, **kwargs)


def _check_layout(spec, state) -> None:
    """Plain-data shape of a spec and state dict, checked before anything is built from them."""
    if not isinstance(spec, dict) or not isinstance(spec.get("modules"), dict) or "encoder" not in spec["modules"]:
        raise ValueError("the tmzoo spec needs a 'modules' dict with an 'encoder' entry")
    for name, module in spec["modules"].items():
        if not (isinstance(module, dict) and isinstance(module.get("class_path"), str)
                and isinstance(module.get("init_args", {}), dict)):
            raise ValueError(f"module {name!r} of the tmzoo spec needs a string 'class_path' and dict 'init_args'")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError("the state dict must map names to tensors")
    featurization = spec.get("featurization", {})
    allowed = {**FEATURIZATION, **{k: p.default for k, p in _transform_parameters().items()}}
    if not isinstance(featurization, dict) or set(featurization) - set(allowed) or not all(
        type(featurization.get(k, default)) is type(default) for k, default in allowed.items()
    ):
        wanted = ", ".join(f"{k}: {type(default).__name__}" for k, default in allowed.items())
        raise ValueError(f"the tmzoo spec's 'featurization' must be a dict of {{{wanted}}}, got {featurization!r}")
    for key in ("target_mean", "target_std"):
        value = spec.get(key)
        values = value if isinstance(value, list) else [value]
        if value is not None and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"the tmzoo spec's {key!r} must be a list of numbers, got {value!r}")
    targets = spec.get("targets")
    if targets is not None and not (isinstance(targets, list) and all(isinstance(t, str) for t in targets)):
        raise ValueError(f"the tmzoo spec's 'targets' must be a list of names, got {targets!r}")
    eval_modes = (None, *get_args(EvalMode))
    if spec.get("eval_mode") not in eval_modes:
        raise ValueError(f"the tmzoo spec's 'eval_mode' must be one of {eval_modes}, got {spec.get('eval_mode')!r}")


def _dry_run(spec: dict, state: dict[str, Tensor]) -> None:
    """Build the requested modules on the meta device (no memory) and check the weights fit,
    so that a spec asking for a model far larger than its weights fails before allocating it.
    Modules that cannot be built on meta are checked after the real build instead."""
    numel = sum(v.numel() for v in state.values())
    for name, module in spec["modules"].items():  # a width or depth beyond the weights' size is absurd
        for arg, value in module.get("init_args", {}).items():
            if isinstance(value, int) and not isinstance(value, bool) and value > max(numel, 1024):
                raise ValueError(f"module {name!r} asks for {arg}={value}, more than the checkpoint's {numel} weights")
    registered = itertools.count(1)

    def count(module, name, param):  # every parameter is a state-dict entry: a spec cannot ask for many more
        if next(registered) > len(state) + 16:
            raise ValueError(f"the tmzoo spec asks for more parameters than the {len(state)} weights it carries")

    try:
        with register_module_parameter_registration_hook(count), torch.device("meta"):
            modules = {name: build_module(s) for name, s in spec["modules"].items()}
    except ValueError:
        raise
    except Exception:  # noqa: BLE001 - not meta-safe: load_state_strict checks after building
        return
    load_state_strict(modules, state, check_only=True)


def _rebuild(checkpoint, path, released: bool = False) -> tuple[dict, dict[str, Tensor], nn.Module | None]:
    """``(spec, state, task)`` of a checkpoint dict, checked as plain data and on the meta device, then
    built with its weights (``released``: no task, for ``tmzoo convert``); every problem is a ``ValueError``."""
    try:
        spec, state = spec_and_state(checkpoint)
        _check_layout(spec, state)
        _dry_run(spec, state)
        with _SkipInit():
            modules = {name: build_module(s) for name, s in spec["modules"].items()}
        load_state_strict(modules, state, assign=True)
        return spec, state, None if released else build_task(spec, modules)
    except ValueError:
        raise
    except (TypeError, KeyError, AttributeError, ImportError, IndexError, RuntimeError) as err:
        what = "released checkpoint" if released else "checkpoint"
        raise ValueError(f"{path}: malformed {what} ({type(err).__name__}: {err})") from err


def load_bundle(path: str | Path, map_location="cpu") -> ModelBundle:
    """Rebuild a model from a tmzoo or released Transformer-M checkpoint file (detected); every
    problem with the file's content (spec, weights) is a ``ValueError``."""
    spec, _, task = _rebuild(safe_load(path, map_location=map_location), path)
    return ModelBundle(spec, task).eval()


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` through :func:`tmzoo.io.files.atomic_write` (temporary file, rename,
    the umask's permissions, symlinks written through)."""
    with atomic_write(path, "wb") as handle:
        torch.save(obj, handle)


def save_bundle(spec: dict, state_dict: dict[str, Tensor], path: str | Path) -> None:
    """Write a tmzoo checkpoint (readable with ``torch.load(weights_only=True)``).

    It carries Lightning's version too, so ``tmzoo validate|test|predict --ckpt_path`` take it.
    """
    import lightning

    atomic_save({"state_dict": state_dict, "tmzoo": spec, "pytorch-lightning_version": lightning.__version__}, path)


def convert_checkpoint(source: str | Path, target: str | Path) -> dict:
    """``tmzoo convert``: released file → tmzoo checkpoint; returns the spec written."""
    check_output(target, source)
    checkpoint = safe_load(source)
    if not is_official(checkpoint):
        raise ValueError(f"{source} is not a released Transformer-M checkpoint")
    spec, state, _ = _rebuild(checkpoint, source, released=True)  # verify before writing
    save_bundle(spec, {k: v.contiguous() for k, v in state.items()}, target)
    return spec
