"""The shipped experiment and data configs, as package data, resolvable by name.

``experiments/`` and ``datamodules/`` at the top of the repository are the configs; the
package links them here (``tmzoo/configs/{experiments,datamodules}``), so an installed tmzoo
has them too: ``tmzoo fit --config transformer_m_small --config qm9_demo``.

A config may be a delta over another: its first line ``# extends: BASE`` (a shipped name, or a
path relative to the file) makes ``--config FILE`` stand for ``--config BASE --config FILE``,
bases first, recursively. jsonargparse reads the line as a comment; the CLI expands it
(:func:`resolve_config_args`), so the saved ``config.yaml`` of a run is complete.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

FOLDERS = ("experiments", "datamodules")
EXTENDS = "# extends:"


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
    """An existing file as given; else the shipped config of that name, or of that file name
    when only one has it (``wandb``: ``loggers/wandb``); ``ValueError`` if none."""
    if Path(value).expanduser().is_file():
        return value
    name = value.removesuffix(".yaml")
    for folder in FOLDERS:
        name = name.removeprefix(folder + "/")
    shipped = available()
    by_file_name = [n for n in shipped if n.rsplit("/", 1)[-1] == name]
    name = by_file_name[0] if name not in shipped and len(by_file_name) == 1 else name
    if name in shipped:
        return str(shipped[name])
    raise ValueError(f"--config {value}: no such file, and no shipped config of that name "
                     f"(shipped: {', '.join(sorted(shipped))})")


def with_bases(value: str, seen: tuple[Path, ...] = ()) -> list[str]:
    """The files ``--config value`` stands for: the bases named by ``# extends:`` lines, then
    the file itself."""
    path = resolve(value)
    file = Path(path).expanduser().resolve()
    if file in seen:
        raise ValueError(f"--config {value}: '{EXTENDS}' lines form a cycle: {' -> '.join(map(str, [*seen, file]))}")
    first = file.read_text().partition("\n")[0]
    if not first.startswith(EXTENDS):
        return [path]
    base = first[len(EXTENDS):].strip()
    beside = file.parent / base
    return [*with_bases(str(beside) if beside.is_file() else base, (*seen, file)), path]


def resolve_config_args(argv: list[str]) -> list[str]:
    """``argv`` with every ``--config NAME`` / ``--config=NAME`` / ``-c NAME`` resolved by
    :func:`resolve` into ``--config=PATH``, its bases (:func:`with_bases`) first."""
    out: list[str] = []
    for arg in argv:
        if out[-1:] in (["--config"], ["-c"]):  # the value of that flag
            out[-1:] = [f"--config={path}" for path in with_bases(arg)]
        elif arg.startswith("--config="):
            out += [f"--config={path}" for path in with_bases(arg.split("=", 1)[1])]
        else:
            out.append(arg)
    return out
