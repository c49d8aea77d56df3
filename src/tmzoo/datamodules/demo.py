"""The demo data sets shipped inside the package (``tmzoo/demo_data``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

DEMO_SETS = {
    "qm9": "QM9, 5,000 characterised molecules (raw/gdb9.sdf.gz, raw/gdb9.sdf.csv.gz)",
    "pcqm4mv2": "PCQM4Mv2, the leading 1,700 training molecules with a demo split",
}


def demo_root(name: str) -> Path:
    """Folder of an embedded demo set, laid out like the real data's ``root``."""
    if name not in DEMO_SETS:
        raise ValueError(f"no demo data set {name!r}; available: {sorted(DEMO_SETS)}")
    folder = Path(str(files("tmzoo") / "demo_data" / name))
    if not folder.is_dir():
        raise FileNotFoundError(
            f"demo data {folder} is missing; reinstall tmzoo (package_data demo_data/**/*)"
        )
    return folder


__all__ = ["DEMO_SETS", "demo_root"]
