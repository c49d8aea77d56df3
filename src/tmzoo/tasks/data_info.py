"""What a task needs to know about its data, as one plain dict (linked from the datamodule)."""

from __future__ import annotations

from typing import Any

from tmzoo.checkpoints.bundle import FEATURIZATION

# stored unit -> (unit errors are reported in, factor)
REPORT_UNITS = {
    "ev": ("meV", 1000.0),
    "hartree": ("meV", 27211.386245988),
    "ha": ("meV", 27211.386245988),
}

_FIELDS = (
    "target_names",
    "num_targets",
    "target_mean",
    "target_std",
    "has_coordinates",
    "featurization",
    "target_units",
)


def describe_data(datamodule: Any) -> dict:
    """``data_info`` of a datamodule: its targets, statistics, units and featurisation.

    Reads the attributes of ``MoleculeDataModule`` (an ``info`` dict property wins when a
    datamodule defines one); attributes a datamodule lacks are left out.
    """
    info = getattr(datamodule, "info", None)
    if isinstance(info, dict):
        return dict(info)
    out = {}
    for field in _FIELDS:
        value = getattr(datamodule, field, None)
        if value is not None:
            out[field] = _plain(value)
    if "featurization" in out:
        out["featurization"] = {**FEATURIZATION, **out["featurization"],
                                "hydrogens": keeps_hydrogens(datamodule)}
    return out


def keeps_hydrogens(datamodule: Any) -> bool:
    """Whether the datamodule's molecules carry explicit hydrogen atoms (QM9 does).

    A datamodule says so with its ``hydrogens`` attribute (``MoleculeDataModule``: False;
    ``QM9DataModule``: True).
    """
    return bool(getattr(datamodule, "hydrogens", False))


def encoder_featurization(encoder_args: dict) -> dict:
    """The transform arguments an encoder's settings need (``{}`` for encoders without a
    2D path encoding): its ``multi_hop_max_dist`` and ``reference_compatible``."""
    out = {}
    if "multi_hop_max_dist" in encoder_args:
        out["max_hops"] = int(encoder_args["multi_hop_max_dist"])
    if "reference_compatible" in encoder_args:
        out["reference_compatible"] = bool(encoder_args["reference_compatible"])
    return out


def _plain(value: Any) -> Any:
    """Lists/dicts of Python numbers and strings (tensors and tuples converted)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def target_names(info: dict | None, default_count: int = 1) -> list[str]:
    info = info or {}
    names = info.get("target_names")
    if names:
        return [str(n) for n in names]
    count = int(info.get("num_targets", default_count))
    return ["y"] if count == 1 else [f"y{i}" for i in range(count)]


def metric_suffix(name: str, unit: str) -> str:
    """``gap_meV`` for a target with a unit, ``logp`` without (metric names carry both)."""
    unit = "".join(c if c.isalnum() else "_" for c in unit).strip("_")
    return f"{name}_{unit}" if unit else name


def report_units(info: dict | None, count: int) -> list[tuple[str, float]]:
    """Per target, the unit MAEs are reported in and the factor from the stored unit.

    eV and Hartree energies are reported in meV; other or missing units are reported as stored.
    """
    units = (info or {}).get("target_units") or [""] * count
    if isinstance(units, str):
        units = [units] * count
    return [REPORT_UNITS.get(str(u).lower(), (str(u), 1.0)) for u in units]
