"""``tmzoo sweep FILE``: run a W&B sweep file locally and offline, one ``tmzoo fit`` per
configuration, then summarise: ``summary.csv`` (one row per run), ``groups.csv`` and
``summary.md`` (mean ± std over seeds per configuration), ``curves.csv`` (every validation of
every run) and ``summary.png`` (learning curves per configuration).

The file is the one ``wandb sweep`` takes (``program``, ``method``, ``metric``, ``parameters``,
``command``). Methods ``grid`` and ``random`` are supported (``bayes`` falls back to random);
parameters may be ``value``, ``values`` (with optional ``probabilities``) or the
``uniform``/``int_uniform``/``log_uniform_values``/``normal`` distributions. Arguments reach
``tmzoo fit`` as the W&B agent passes them: ``--name=value``. The command's W&B logger config
(``--config wandb``, ``experiments/loggers/wandb.yaml``) is dropped unless ``--keep-wandb`` is
given (W&B then logs offline when it cannot sync).

Seeds: the parameter ``seed_everything`` (Lightning's seed: initialisation, mode draws,
coordinate noise, training order) is the seed axis; ``--seeds 0 1 2`` adds it to any sweep.
Runs that differ only in it form one group in the summary.

Runs happen in this process (``--jobs 1``, the default) or in ``--jobs N`` parallel
``tmzoo fit`` processes with ``--threads`` torch threads each (on a small CPU machine, one
single-threaded run per core beats one run on every core). Each run's folder
``OUT/run_NNN`` holds ``run.json`` (configuration, arguments, status, seconds), the logs
(``lightning_logs/version_K/metrics.csv``) and, for parallel runs, ``output.log``.
``--summarize-only`` rebuilds the summary from those folders; ``--report FILE`` also writes the
table, comparisons and run facts between ``<!-- tmzoo-sweep:begin -->`` and
``<!-- tmzoo-sweep:end -->`` in FILE, with the CSVs and figure copied beside it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import itertools
import json
import math
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import yaml

from tmzoo.io.files import atomic_write

SUPPORTED_METHODS = ("grid", "random", "bayes")
SEED_PARAMETER = "seed_everything"
REPORT_BEGIN, REPORT_END = "<!-- tmzoo-sweep:begin -->", "<!-- tmzoo-sweep:end -->"
#: Display names of the metrics tmzoo's tasks log (others are shown as logged).
METRIC_NAMES = {
    "val/mae": "MAE", "val/mae_2d": "2D-mode MAE", "val/mae_3d": "3D-mode MAE", "val/mae_2d3d": "2D+3D-mode MAE",
}


# --------------------------------------------------------------------------- sweep file
def load_sweep(path: str | Path) -> dict:
    sweep = yaml.safe_load(Path(path).read_text())
    if not isinstance(sweep, dict):
        raise ValueError(f"{path}: a sweep file is a YAML mapping")
    for key in ("method", "parameters"):
        if key not in sweep:
            raise ValueError(f"{path}: a sweep file needs {key!r}")
    if sweep["method"] not in SUPPORTED_METHODS:
        raise ValueError(f"{path}: method {sweep['method']!r} is not one of {SUPPORTED_METHODS}")
    return sweep


def with_seeds(sweep: dict, seeds: list[int]) -> dict:
    """A copy of ``sweep`` whose seed axis (``seed_everything``) is ``seeds``, varied last."""
    others = {k: v for k, v in sweep["parameters"].items() if k != SEED_PARAMETER}
    return {**sweep, "parameters": {**others, SEED_PARAMETER: {"values": [int(s) for s in seeds]}}}


def grid_configurations(parameters: dict) -> list[dict]:
    """Every combination of the parameters' ``values``/``value`` (in file order)."""
    for name, spec in parameters.items():
        if "values" not in spec and "value" not in spec:
            raise ValueError(f"grid search needs 'values' or 'value' for {name!r}, got {spec}")
    choices = [spec["values"] if "values" in spec else [spec["value"]] for spec in parameters.values()]
    return [dict(zip(parameters, combo)) for combo in itertools.product(*choices)]


def sample_value(spec: dict, rng: random.Random) -> Any:
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return rng.choices(list(spec["values"]), weights=spec.get("probabilities"))[0]
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
        return grid_configurations(sweep["parameters"])[:max_runs or None]
    rng = random.Random(seed)
    return [{n: sample_value(s, rng) for n, s in sweep["parameters"].items()} for _ in range(max_runs or 5)]


def command_args(sweep: dict, config: dict, keep_wandb: bool = False) -> list[str]:
    """Arguments for ``run_lightning_cli`` from the sweep's ``command`` (default ``fit ${args}``),
    without its ``--config wandb`` (``wandb``, ``.../wandb.yaml``) unless ``keep_wandb``."""
    command = sweep.get("command") or ["${program}", "fit", "${args}"]
    flags = [f"--{name}={value}" for name, value in config.items()]  # as the W&B agent formats ``${args}``
    args: list[str] = []
    for token in map(str, command):
        if token in ("${env}", "${interpreter}", "${program}") or token == sweep.get("program") == "tmzoo":
            continue
        if token == "${args}":
            args += flags
        elif token == "${args_no_hyphens}":
            args += [f[2:] for f in flags]
        elif token == "${args_json}":
            raise ValueError("${args_json} is not supported by tmzoo sweep")
        elif not keep_wandb and token.startswith("--config=") and Path(token.split("=", 1)[1]).stem == "wandb":
            continue
        elif not keep_wandb and args[-1:] in (["--config"], ["-c"]) and Path(token).stem == "wandb":
            args.pop()
        else:
            args.append(token)
    return args


# -------------------------------------------------------------------------------- runs
def run_folder(out: Path, index: int) -> Path:
    return out / f"run_{index:03d}"


def latest_log_dir(root: Path) -> Path | None:
    """The newest ``lightning_logs/version_K`` under ``root`` that holds a ``metrics.csv``."""
    versions = [path.parent for path in Path(root).glob("lightning_logs/version_*/metrics.csv")
                if path.parent.name.removeprefix("version_").isdigit()]
    return max(versions, key=lambda folder: int(folder.name.removeprefix("version_")), default=None)


def run_status(args: list[str], log_path: Path | None, threads: int) -> str:
    """Status (``ok`` or why not) of one ``tmzoo fit`` run with ``threads`` torch threads: in this
    process, or with a ``log_path`` in a child process that writes its output there."""
    if log_path is not None:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        with open(log_path, "w") as log:
            command = [sys.executable, "-m", "tmzoo.cli.main", *args]
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        return "ok" if code == 0 else f"failed: exit {code} (see {log_path})"
    import torch

    from tmzoo.cli.lightning import run_lightning_cli

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # the thread count changes float sums: a rerun must match it
    try:
        run_lightning_cli(args)
    except SystemExit as err:
        return f"failed: exit {err.code}"
    except Exception as err:  # a failed configuration is a row in the table, not the end of the sweep
        return f"failed: {type(err).__name__}: {err}"
    finally:
        torch.set_num_threads(previous)
    return "ok"


def prepare_data(args: list[str]) -> None:
    """Builds the featurisation cache once (instantiating the first run's datamodule), so
    parallel runs read it instead of each building it."""
    from tmzoo.cli.lightning import run_lightning_cli

    if args and args[0] in ("fit", "validate", "test", "predict"):  # instantiating only: no subcommand
        args = args[1:]
    try:
        run_lightning_cli(args, run=False)
    except (Exception, SystemExit) as err:  # the runs report their own errors
        print(f"[tmzoo sweep] preparing the data failed ({type(err).__name__}: {err}); runs go on", flush=True)


def execute(index: int, config: dict, args: list[str], out: Path, jobs: int, threads: int) -> dict:
    """Runs one configuration; writes and returns its ``run.json`` record."""
    folder = run_folder(out, index)
    folder.mkdir(parents=True, exist_ok=True)
    args = [*args, f"--trainer.default_root_dir={folder}"]
    start = time.perf_counter()
    status = run_status(args, folder / "output.log" if jobs > 1 else None, threads)
    record = {
        "run": index, "config": config, "command": "tmzoo " + shlex.join(args), "status": status,
        "seconds": round(time.perf_counter() - start, 1),
    }
    with atomic_write(folder / "run.json") as f:
        json.dump(record, f, indent=1)
    return record


# ----------------------------------------------------------------------- run results
def read_metrics_csv(log_dir: Path) -> list[dict]:
    """The rows of a run's ``metrics.csv`` that hold a validation metric, as
    ``{"step", "epoch", <metric>: float, ...}`` (empty cells left out)."""
    rows = []
    with open(log_dir / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            values = {k: float(v) for k, v in row.items() if k.startswith("val/") and v not in ("", None)}
            if values:
                rows.append({"step": int(float(row.get("step") or 0)), "epoch": int(float(row.get("epoch") or 0)), **values})
    return rows


def display_unit(log_dir: Path | None) -> tuple[float, str]:
    """``(factor, unit)`` to show a run's metrics in: energies in eV become meV."""
    units = []
    if log_dir is not None and (Path(log_dir) / "hparams.yaml").exists():
        try:
            hparams = yaml.safe_load((Path(log_dir) / "hparams.yaml").read_text()) or {}
        except yaml.YAMLError:  # Python-tagged values: units unknown, metrics shown as logged
            hparams = {}
        info = hparams.get("data_info") or (hparams.get("init_args") or {}).get("data_info") or {}
        units = list(info.get("target_units") or [])
    if units and all(u == "eV" for u in units):
        return 1000.0, "meV"
    return 1.0, (units[0] if len(set(units)) == 1 else "")


def collect(out: Path, records: list[dict]) -> list[dict]:
    """Each run record with its ``log_dir``, validation ``curve`` and ``metrics`` (last values)."""
    rows = []
    for record in records:
        log_dir = latest_log_dir(run_folder(out, record["run"]))
        curve = read_metrics_csv(log_dir) if log_dir else []
        final = {k: v for point in curve for k, v in point.items() if k.startswith("val/")}
        rows.append({**record, "log_dir": str(log_dir or ""), "curve": curve, "metrics": final})
    return rows


# ------------------------------------------------------------------------ aggregation
def _value_label(value: Any) -> str:
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        return Path(value).stem
    return value if isinstance(value, str) else json.dumps(value)


def group_label(config: dict, names: list[str]) -> str:
    """The configuration without its seed: a config file's stem, or ``name=value, ...``."""
    varied = [n for n in names if n != SEED_PARAMETER]
    if len(varied) == 1:
        return _value_label(config[varied[0]])
    return ", ".join(f"{n.split('.')[-1]}={_value_label(config[n])}" for n in varied) or "all"


def run_seed(row: dict) -> Any:
    return row["config"].get(SEED_PARAMETER, row["run"])


def by_group(rows: list[dict], names: list[str]) -> dict[str, list[dict]]:
    """The runs of each group (configurations equal but for the seed), in order of first appearance."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(group_label(row["config"], names), []).append(row)
    return groups


def aggregate(rows: list[dict], names: list[str], metrics: list[str]) -> list[dict]:
    """Per group (configurations equal but for the seed), in order of first appearance:
    ``{"group", "runs", "failed", <metric>: {"mean", "std", "n", "values": [(seed, value)]}}``.
    Only successful runs with a finite value count; ``std`` is the sample standard deviation
    (NaN below two values)."""
    groups = []
    for label, members in by_group(rows, names).items():
        group = {"group": label, "runs": len(members), "failed": sum(r["status"] != "ok" for r in members)}
        groups.append(group)
        for metric in metrics:
            values = [
                (run_seed(r), float(r["metrics"][metric])) for r in members
                if r["status"] == "ok" and math.isfinite(float(r["metrics"].get(metric, math.nan)))
            ]
            numbers = [v for _, v in values]
            group[metric] = {
                "mean": statistics.fmean(numbers) if numbers else math.nan,
                "std": statistics.stdev(numbers) if len(numbers) > 1 else math.nan,
                "n": len(numbers),
                "values": values,
            }
    return groups


def _fmt(value: float, factor: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value * factor:.1f}" if factor != 1 else f"{value:.4g}"


def metric_title(metric: str, unit: str) -> str:
    name = METRIC_NAMES.get(metric, metric)
    return f"{name} ({unit})" if unit else name


def markdown_table(groups: list[dict], metrics: list[str], factor: float = 1.0, unit: str = "") -> str:
    """Group × metric: ``mean ± std`` over seeds, then each seed's value."""
    header = ["configuration", *(metric_title(m, unit) for m in metrics), "runs (failed)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        cells = [f"`{group['group']}`"]
        for metric in metrics:
            stats = group[metric]
            if not stats["n"]:
                cells.append("not logged")
                continue
            seeds = ", ".join(f"{_fmt(v, factor)} (s{s})" for s, v in stats["values"])
            spread = f" ± {_fmt(stats['std'], factor)}" if math.isfinite(stats["std"]) else ""
            cells.append(f"**{_fmt(stats['mean'], factor)}{spread}**<br>{seeds}")
        cells.append(f"{group['runs']} ({group['failed']})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare(groups: list[dict], better: str, than: str, metric: str, factor: float = 1.0, unit: str = "") -> tuple[str, str]:
    """``(verdict, sentence)`` for the claim that ``better`` has a lower ``metric`` than ``than``.

    ``reproduced`` when its mean is lower by more than the spread (the sum of the two groups'
    standard deviations over seeds), ``contradicted`` when higher by more than the spread,
    ``not resolved`` otherwise, ``not measured`` without two finite values per group."""
    by_label = {g["group"]: g for g in groups}
    missing = [label for label in (better, than) if label not in by_label]
    if missing:
        return "not measured", f"no runs of {', '.join(missing)}"
    a, b = by_label[better][metric], by_label[than][metric]
    if a["n"] < 2 or b["n"] < 2:
        return "not measured", f"{metric} has fewer than two values in `{better}` or `{than}`"
    diff, spread = a["mean"] - b["mean"], a["std"] + b["std"]
    verdict = "reproduced" if diff < -spread else "contradicted" if diff > spread else "not resolved"
    u = f" {unit}" if unit else ""
    return verdict, (
        f"{METRIC_NAMES.get(metric, metric)}: `{better}` {_fmt(a['mean'], factor)} ± {_fmt(a['std'], factor)}{u} vs "
        f"`{than}` {_fmt(b['mean'], factor)} ± {_fmt(b['std'], factor)}{u}; difference {_fmt(diff, factor)}{u}, "
        f"spread (sum of the standard deviations) {_fmt(spread, factor)}{u}"
    )


# --------------------------------------------------------------------------- outputs
def write_csv(path: Path, header: list[str], rows: Iterable[list]) -> Path:
    with atomic_write(path) as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_tables(rows: list[dict], groups: list[dict], names: list[str], metrics: list[str], out: Path) -> list[Path]:
    """``summary.csv`` (one row per run), ``groups.csv`` (mean/std/n per group and metric)
    and ``curves.csv`` (every validation of every run), in the metrics' logged units."""
    curve_metrics = sorted({k for r in rows for c in r["curve"] for k in c if k.startswith("val/")})
    return [
        write_csv(out / "summary.csv", ["run", "group", *names, *metrics, "status", "seconds", "log_dir"], (
            [r["run"], group_label(r["config"], names), *(json.dumps(r["config"].get(n)) for n in names),
             *(r["metrics"].get(m, "") for m in metrics), r["status"], r.get("seconds", ""), r["log_dir"]]
            for r in rows
        )),
        write_csv(out / "groups.csv", ["group", "metric", "mean", "std", "n", "seeds", "values", "runs", "failed"], (
            [g["group"], m, g[m]["mean"], g[m]["std"], g[m]["n"], json.dumps([x for x, _ in g[m]["values"]]),
             json.dumps([v for _, v in g[m]["values"]]), g["runs"], g["failed"]]
            for g in groups for m in metrics
        )),
        write_csv(out / "curves.csv", ["run", "group", "seed", "step", "epoch", *curve_metrics], (
            [r["run"], group_label(r["config"], names), run_seed(r), c["step"], c["epoch"],
             *(c.get(m, "") for m in curve_metrics)]
            for r in rows for c in r["curve"]
        )),
    ]


def plot_summary(rows: list[dict], names: list[str], metrics: list[str], out: Path, factor: float, unit: str) -> Path:
    """``summary.png``: per metric, the validation curves of every run (thin) and the mean over
    seeds per group (thick); a note when no run logged any of ``metrics``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = by_group(rows, names)
    colors = {label: plt.get_cmap("tab10")(i % 10) for i, label in enumerate(groups)}
    shown = [m for m in metrics if any(m in c for r in rows for c in r["curve"])]
    figure = out / "summary.png"
    if not shown:  # final values come from the curves: there are none to show
        fig, ax = plt.subplots(figsize=(4.0, 4.0))
        ax.text(0.5, 0.5, f"{out.name}: no run logged {', '.join(metrics)}", ha="center", wrap=True)
        ax.set_axis_off()
    else:
        fig, axes = plt.subplots(1, len(shown), figsize=(5.0 * len(shown), 4.0), squeeze=False)
        for ax, metric in zip(axes[0], shown):
            for label, members in groups.items():
                curves = [{c["step"]: c[metric] * factor for c in r["curve"] if metric in c} for r in members]
                for curve in filter(None, curves):
                    ax.plot(*zip(*curve.items()), color=colors[label], alpha=0.35, linewidth=0.8)
                steps = sorted(set.intersection(*map(set, curves)))  # the mean where every seed has a value
                if steps:
                    means = [statistics.fmean(curve[s] for curve in curves) for s in steps]
                    ax.plot(steps, means, color=colors[label], linewidth=2, label=label)
            ax.set(xlabel="optimiser step", ylabel=metric_title(metric, unit), yscale="log")
            ax.grid(alpha=0.3, which="both")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{out.name}: validation during training (thin: seeds, thick: mean)", fontsize=9)
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    plt.close(fig)
    return figure


def machine_facts() -> dict:
    """What the numbers were measured on."""
    import torch

    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "", False
    return {
        "cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "git": commit + (" (with uncommitted changes)" if dirty and commit else ""),
    }


def write_report(
    report: Path, rows: list[dict], groups: list[dict], metrics: list[str], facts: dict,
    claims: list[dict], factor: float, unit: str, assets: list[Path],
) -> Path:
    """Fills the generated block of ``report`` and copies ``assets`` to ``<report dir>/results``."""
    text = report.read_text() if report.exists() else f"# Results\n\n{REPORT_BEGIN}\n{REPORT_END}\n"
    if REPORT_BEGIN not in text or REPORT_END not in text:
        raise ValueError(f"{report} has no {REPORT_BEGIN} ... {REPORT_END} block to fill")
    folder = report.parent / "results"
    folder.mkdir(parents=True, exist_ok=True)
    for asset in assets:
        shutil.copyfile(asset, folder / asset.name)
    lines = [
        REPORT_BEGIN,
        "<!-- generated by `tmzoo sweep --report`; edits inside this block are overwritten -->",
        "",
        f"**{sum(r['status'] == 'ok' for r in rows)} of {len(rows)} runs finished.** Final validation values "
        "(after the last optimiser step), mean ± sample standard deviation over seeds, then each seed's value:",
        "",
        markdown_table(groups, metrics, factor, unit),
        "![validation curves per configuration](results/summary.png)",
        "",
        "Raw numbers: [`results/summary.csv`](results/summary.csv) (one row per run), "
        "[`results/groups.csv`](results/groups.csv) (per configuration), "
        "[`results/curves.csv`](results/curves.csv) (every validation of every run).",
        "",
    ]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["Failed runs:", ""] + [f"- run {r['run']} (`{group_label(r['config'], list(r['config']))}`): {r['status']}" for r in failed] + [""]
    if claims:
        lines += ["### Claims", "",
                  "A claim is *reproduced* when the difference of the means exceeds the spread (the sum of the two "
                  "standard deviations over seeds), *contradicted* when it exceeds it the other way, and *not resolved* "
                  "otherwise.", ""]
        for claim in claims:
            verdict, sentence = compare(groups, claim["better"], claim["than"], claim["metric"], factor, unit)
            lines.append(f"- {claim['claim']}: **{verdict}**. {sentence}.")
        lines.append("")
    lines += [
        "### How these numbers were made", "",
        f"- command: `{facts.get('command', '')}`",
        f"- started {facts.get('started', '?')}, wall clock {facts.get('wall_seconds', math.nan) / 60:.1f} min "
        f"({facts.get('jobs', 1)} parallel run(s), {facts.get('threads') or 'the default number of'} torch thread(s) each; "
        f"load average {facts.get('load_before', '?')} before, {facts.get('load_after', '?')} after)",
        f"- machine: {facts.get('cpu', '?')}, {facts.get('cores', '?')} cores, {facts.get('platform', '?')}, "
        f"Python {facts.get('python', '?')}, torch {facts.get('torch', '?')}, tmzoo at {facts.get('git') or '?'}",
        "- seconds per run: " + ", ".join(f"{r['seconds']:.0f}" for r in rows if r.get("seconds") is not None),
        "",
        REPORT_END,
    ]
    head, _, rest = text.partition(REPORT_BEGIN)
    with atomic_write(report) as f:
        f.write(head + "\n".join(lines) + rest.partition(REPORT_END)[2])
    return report


def load_claims(path: str | Path | None) -> list[dict]:
    """Claims to check: a YAML list of ``{claim, better, than, metric}`` (lower metric is better)."""
    if path is None:
        return []
    claims = yaml.safe_load(Path(path).read_text()) or []
    for i, claim in enumerate(claims):
        missing = {"claim", "better", "than", "metric"} - set(claim)
        if missing:
            raise ValueError(f"{path}: claim {i} lacks {sorted(missing)}")
    return claims


def summarize(out: Path, records: list[dict], names: list[str], primary: str, wanted: list[str] | None,
              facts: dict, report: Path | None = None, claims: list[dict] | None = None) -> list[Path]:
    """Writes the tables and figure for the runs in ``records`` (and the report)."""
    rows = collect(out, records)
    logged = sorted({m for r in rows for m in r["metrics"]})
    metrics = list(wanted) if wanted else [primary] + [m for m in logged if m != primary]
    groups = aggregate(rows, names, metrics)
    factor, unit = display_unit(next((Path(r["log_dir"]) for r in rows if r["log_dir"]), None))
    paths = write_tables(rows, groups, names, metrics, out)
    paths.append(plot_summary(rows, names, metrics, out, factor, unit))
    with atomic_write(out / "summary.md") as f:
        f.write(markdown_table(groups, metrics, factor, unit))
    paths.append(out / "summary.md")
    if report is not None:
        paths.append(write_report(report, rows, groups, metrics, facts, claims or [], factor, unit, paths[:4]))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tmzoo sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="W&B sweep YAML")
    parser.add_argument("--max-runs", type=int, default=None, help="at most this many configurations")
    parser.add_argument("--only", type=int, nargs="+", default=None, help="run only these run numbers (e.g. to rerun one)")
    parser.add_argument("--out", default=None, help="output folder (default runs/sweeps/<file stem>)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random method")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help=f"seed axis ({SEED_PARAMETER}) added to the sweep")
    parser.add_argument("--jobs", type=int, default=1, help="parallel runs, each in its own process (default 1: in this process)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per parallel run (default cores / jobs)")
    parser.add_argument("--keep-wandb", action="store_true", help="keep the command's --config wandb (W&B logger)")
    parser.add_argument("--summarize-only", action="store_true", help="summarise the runs already in --out, run nothing")
    parser.add_argument("--metrics", nargs="+", default=None, help="metrics in the summary (default: all val/ metrics)")
    parser.add_argument("--report", type=Path, help="Markdown file whose tmzoo-sweep block gets the results")
    parser.add_argument("--claims", default=None, help="YAML list of claims {claim, better, than, metric} for --report")
    parser.add_argument("--base-args", nargs=argparse.REMAINDER, default=[], help="appended to every run")
    opts = parser.parse_args(argv)
    if opts.jobs < 1:
        parser.error("--jobs must be at least 1")

    sweep = load_sweep(opts.file)
    if opts.seeds:
        sweep = with_seeds(sweep, opts.seeds)
    claims = load_claims(opts.claims)
    metric = (sweep.get("metric") or {}).get("name", "val/mae")
    out = Path(opts.out or Path("runs") / "sweeps" / Path(opts.file).stem)
    configs = configurations(sweep, opts.max_runs, opts.seed)
    names = list(sweep["parameters"])
    selected = sorted(set(opts.only)) if opts.only else list(range(len(configs)))
    bad = [i for i in selected if not 0 <= i < len(configs)]
    if bad:
        parser.error(f"--only {bad[0]}: the sweep has runs 0..{len(configs) - 1}")
    threads = opts.threads or max(1, (os.cpu_count() or 1) // opts.jobs)
    facts_path = out / "sweep.json"
    cache = f"TMZOO_CACHE={shlex.quote(os.environ['TMZOO_CACHE'])} " if os.environ.get("TMZOO_CACHE") else ""
    command = cache + "tmzoo sweep " + shlex.join(list(sys.argv[2:] if argv is None else argv))

    if opts.summarize_only:
        facts = json.loads(facts_path.read_text()) if facts_path.exists() else {}
    else:
        facts = {**machine_facts(), "command": command, "jobs": opts.jobs, "threads": threads,
                 "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "load_before": round(os.getloadavg()[0], 2)}
        start = time.perf_counter()
        plans = [(i, configs[i], command_args(sweep, configs[i], opts.keep_wandb) + list(opts.base_args)) for i in selected]
        for i, config, args in plans:
            print(f"[tmzoo sweep] run {i}: tmzoo {shlex.join(args)}", flush=True)
        done = []
        with concurrent.futures.ThreadPoolExecutor(opts.jobs) as pool:
            if opts.jobs > 1 and plans:  # child processes; serial runs stay in this (main) thread
                prepare_data(plans[0][2] + [f"--trainer.default_root_dir={out / 'prepare'}", "--trainer.logger=false"])
                futures = [pool.submit(execute, *plan, out, opts.jobs, threads) for plan in plans]
                finished = (future.result() for future in concurrent.futures.as_completed(futures))
            else:
                finished = (execute(*plan, out, 1, threads) for plan in plans)
            for record in finished:
                done.append(record)
                print(f"[tmzoo sweep] run {record['run']}: {record['status']} in {record['seconds']:.0f} s", flush=True)
        facts.update(wall_seconds=round(time.perf_counter() - start, 1), load_after=round(os.getloadavg()[0], 2))
        if opts.only and facts_path.exists():  # a rerun: the sweep's own facts stay, the rerun is listed
            earlier = json.loads(facts_path.read_text())
            facts = {**earlier, "reruns": [*earlier.get("reruns", []), {**facts, "runs": selected}]}
        with atomic_write(facts_path) as f:
            json.dump(facts, f, indent=1)

    records = []  # every run of this sweep in OUT (earlier ones too when --only reran some)
    for i in range(len(configs)):
        path = run_folder(out, i) / "run.json"
        if path.exists():
            records.append(json.loads(path.read_text()))
        elif opts.summarize_only:
            print(f"[tmzoo sweep] run {i}: no {path}, left out of the summary", flush=True)
    paths = summarize(out, records, names, metric, opts.metrics, facts, opts.report, claims)
    print(f"[tmzoo sweep] wrote {', '.join(str(p) for p in paths)}", flush=True)
    return 0 if any(r["status"] == "ok" for r in (records if opts.summarize_only else done)) else 1
