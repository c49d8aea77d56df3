"""What a task needs to know about its data, as one plain dict (linked from the datamodule)."""

from __future__ import annotations

from typing import Any

DEFAULT_FEATURIZATION = {"max_hops": 5, "reference_compatible": False}

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


def report_units(info: dict | None, count: int) -> list[tuple[str, float]]:
    """Per target, the unit MAEs are reported in and the factor from the stored unit.

    eV and Hartree energies are reported in meV; other or missing units are reported as stored.
    """
    units = (info or {}).get("target_units") or [""] * count
    if isinstance(units, str):
        units = [units] * count
    return [REPORT_UNITS.get(str(u).lower(), (str(u), 1.0)) for u in units]
