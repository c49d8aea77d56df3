"""The shipped experiment and data configs, as package data, resolvable by name.

``experiments/`` and ``datamodules/`` at the top of the repository are the configs; the
package links them here (``tmzoo/configs/{experiments,datamodules}``), so an installed tmzoo
has them too: ``tmzoo fit --config transformer_m_small --config qm9_demo``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

FOLDERS = ("experiments", "datamodules")


def config_root() -> Path:
    """The folder holding ``experiments/`` and ``datamodules/``."""
    return Path(str(files("tmzoo.configs")))


def available() -> dict[str, Path]:
    """``{name: path}`` of every shipped config; the name is the path below its folder,
    without ``.yaml`` (``transformer_m_small``, ``finetune/qm9``, ``qm9_demo``)."""
    found: dict[str, Path] = {}
    for folder in FOLDERS:
        base = config_root() / folder
        for path in sorted(base.rglob("*.yaml")):
            found.setdefault(path.relative_to(base).with_suffix("").as_posix(), path)
    return found


def resolve(value: str) -> str:
    """An existing file as given; else the shipped config of that name (``ValueError`` if none)."""
    if Path(value).expanduser().is_file():
        return value
    name = value[: -len(".yaml")] if value.endswith(".yaml") else value
    for folder in FOLDERS:
        name = name[len(folder) + 1 :] if name.startswith(folder + "/") else name
    shipped = available()
    if name in shipped:
        return str(shipped[name])
    raise ValueError(f"--config {value}: no such file, and no shipped config of that name "
                     f"(shipped: {', '.join(sorted(shipped))})")


def resolve_config_args(argv: list[str]) -> list[str]:
    """``argv`` with every ``--config NAME`` / ``--config=NAME`` / ``-c NAME`` resolved by :func:`resolve`."""
    out, expect = [], False
    for arg in argv:
        if expect:
            out.append(resolve(arg))
            expect = False
        elif arg in ("--config", "-c"):
            out.append(arg)
            expect = True
        elif arg.startswith("--config="):
            out.append("--config=" + resolve(arg.split("=", 1)[1]))
        else:
            out.append(arg)
    return out
