"""``tmzoo sweep FILE``: run a W&B sweep file locally and offline, one ``tmzoo fit`` per
configuration, then write ``summary.csv`` and ``summary.png`` (the metric per configuration).

The file is the one ``wandb sweep`` takes (``program``, ``method``, ``metric``, ``parameters``,
``command``). Methods ``grid`` and ``random`` are supported (``bayes`` falls back to random);
parameters may be ``value``, ``values`` (with optional ``probabilities``) or the
``uniform``/``int_uniform``/``log_uniform_values``/``normal`` distributions. Arguments reach
``tmzoo fit`` as the W&B agent passes them: ``--name=value``. Runs happen in this process via
:func:`tmzoo.cli.lightning.run_lightning_cli`; ``--wandb`` flags in the command are dropped
unless ``--keep-wandb`` is given (W&B then logs offline when it cannot sync).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import random
import shlex
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_METHODS = ("grid", "random", "bayes")


def load_sweep(path: str | Path) -> dict:
    with open(path) as f:
        sweep = yaml.safe_load(f)
    for key in ("method", "parameters"):
        if key not in sweep:
            raise ValueError(f"{path}: a sweep file needs {key!r}")
    if sweep["method"] not in SUPPORTED_METHODS:
        raise ValueError(f"{path}: method {sweep['method']!r} is not one of {SUPPORTED_METHODS}")
    return sweep


def grid_configurations(parameters: dict) -> list[dict]:
    """Every combination of the parameters' ``values``/``value`` (in file order)."""
    names, choices = [], []
    for name, spec in parameters.items():
        if "values" in spec:
            choices.append(list(spec["values"]))
        elif "value" in spec:
            choices.append([spec["value"]])
        else:
            raise ValueError(f"grid search needs 'values' or 'value' for {name!r}, got {spec}")
        names.append(name)
    return [dict(zip(names, combo)) for combo in itertools.product(*choices)]


def sample_value(spec: dict, rng: random.Random) -> Any:
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        values = list(spec["values"])
        weights = spec.get("probabilities")
        return values[rng.choices(range(len(values)), weights=weights)[0]]
    kind = spec.get("distribution", "uniform")
    if kind == "uniform":
        return rng.uniform(spec["min"], spec["max"])
    if kind == "int_uniform":
        return rng.randint(int(spec["min"]), int(spec["max"]))
    if kind == "log_uniform_values":
        return math.exp(rng.uniform(math.log(spec["min"]), math.log(spec["max"])))
    if kind == "normal":
        return rng.gauss(spec.get("mu", 0.0), spec.get("sigma", 1.0))
    raise ValueError(f"unsupported distribution {kind!r}")


def configurations(sweep: dict, max_runs: int | None, seed: int = 0) -> list[dict]:
    """The configurations to run: the grid (first ``max_runs``) or ``max_runs`` random draws."""
    if sweep["method"] == "grid":
        grid = grid_configurations(sweep["parameters"])
        return grid[:max_runs] if max_runs else grid
    rng = random.Random(seed)
    count = max_runs or 5
    return [{n: sample_value(s, rng) for n, s in sweep["parameters"].items()} for _ in range(count)]


def agent_flags(config: dict) -> list[str]:
    """``--name=value`` as the W&B agent formats ``${args}``."""
    return [f"--{name}={value}" for name, value in config.items()]


def command_args(sweep: dict, config: dict, keep_wandb: bool = False) -> list[str]:
    """Arguments for ``run_lightning_cli`` from the sweep's ``command`` (default ``fit ${args}``)."""
    command = sweep.get("command") or ["${program}", "fit", "${args}"]
    args: list[str] = []
    for token in command:
        token = str(token)
        if token in ("${env}", "${interpreter}", "${program}") or token == sweep.get("program") == "tmzoo":
            continue
        if token == "${args}":
            args += agent_flags(config)
        elif token == "${args_no_hyphens}":
            args += [f[2:] for f in agent_flags(config)]
        elif token == "${args_json}":
            raise ValueError("${args_json} is not supported by tmzoo sweep")
        elif keep_wandb or not token.startswith("--wandb"):
            args.append(token)
    return args


def run_one(args: list[str], metric: str) -> tuple[float | None, str, str]:
    """``(metric value, status, log dir)`` of one ``tmzoo`` run in this process."""
    from tmzoo.cli.lightning import run_lightning_cli

    try:
        cli = run_lightning_cli(args)
    except SystemExit as err:
        return None, f"failed: exit {err.code}", ""
    except Exception as err:  # a failed configuration is a row in the table, not the end of the sweep
        return None, f"failed: {type(err).__name__}: {err}", ""
    value = cli.trainer.callback_metrics.get(metric)
    return (float(value) if value is not None else None), "ok", str(cli.trainer.log_dir or "")


def _label(config: dict) -> str:
    return "\n".join(f"{k.split('.')[-1]}={json.dumps(v)}" for k, v in config.items())


def write_summary(rows: list[dict], names: list[str], metric: str, out: Path) -> tuple[Path, Path]:
    """``summary.csv`` (one row per run) and ``summary.png`` (bar chart of the metric)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    table = out / "summary.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", *names, metric, "status", "log_dir"])
        for r in rows:
            writer.writerow([r["run"], *(json.dumps(r["config"][n]) for n in names), r["metric"], r["status"], r["log_dir"]])
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(rows)), 4.0))
    values = [r["metric"] if r["metric"] is not None else float("nan") for r in rows]
    ax.bar(range(len(rows)), values, color="tab:blue")
    ax.set_xticks(range(len(rows)), [_label(r["config"]) for r in rows], fontsize=7)
    ax.set_ylabel(metric)
    ax.set_title(out.name)
    fig.tight_layout()
    figure = out / "summary.png"
    fig.savefig(figure, dpi=120)
    plt.close(fig)
    return table, figure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tmzoo sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="W&B sweep YAML")
    parser.add_argument("--max-runs", type=int, default=None, help="at most this many configurations")
    parser.add_argument("--out", default=None, help="output folder (default runs/sweeps/<file stem>)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random method")
    parser.add_argument("--keep-wandb", action="store_true", help="keep --wandb flags of the command")
    parser.add_argument("--base-args", nargs=argparse.REMAINDER, default=[], help="appended to every run")
    opts = parser.parse_args(argv)

    sweep = load_sweep(opts.file)
    metric = (sweep.get("metric") or {}).get("name", "val/mae")
    out = Path(opts.out or Path("runs") / "sweeps" / Path(opts.file).stem)
    configs = configurations(sweep, opts.max_runs, opts.seed)
    names = list(sweep["parameters"])
    rows = []
    for i, config in enumerate(configs):
        args = command_args(sweep, config, opts.keep_wandb) + list(opts.base_args)
        args.append(f"--trainer.default_root_dir={out / f'run_{i:03d}'}")
        print(f"[tmzoo sweep] run {i + 1}/{len(configs)}: tmzoo {shlex.join(args)}", flush=True)
        value, status, log_dir = run_one(args, metric)
        rows.append({"run": i, "config": config, "metric": value, "status": status, "log_dir": log_dir})
        print(f"[tmzoo sweep] run {i + 1}: {metric} = {value} ({status})", flush=True)
    table, figure = write_summary(rows, names, metric, out)
    print(f"[tmzoo sweep] wrote {table} and {figure}")
    return 0 if any(r["status"] == "ok" for r in rows) else 1
