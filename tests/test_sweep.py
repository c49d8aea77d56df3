"""``tmzoo sweep``: the W&B sweep file, argument formatting as the agent does it, local runs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args, load_sweep_config

from tmzoo.cli.sweep import (
    REPORT_BEGIN,
    REPORT_END,
    SEED_PARAMETER,
    aggregate,
    command_args,
    compare,
    configurations,
    grid_configurations,
    main,
    markdown_table,
    with_seeds,
)

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "experiments" / "sweeps" / "mode_distribution.yaml"


def test_sweep_file_is_a_wandb_sweep_over_probability_vectors():
    sweep = load_sweep_config(str(SWEEP))  # what `wandb sweep FILE` reads
    assert {"program", "method", "metric", "parameters", "command"} <= set(sweep)
    assert sweep["metric"] == {"name": "val/mae", "goal": "minimize"}
    assert "${args}" in sweep["command"] and sweep["command"][0] == "${program}"
    values = sweep["parameters"]["model.init_args.mode_probs"]["values"]
    assert len(values) >= 2 and [0.2, 0.2, 0.6] in values
    for probs in values:
        assert len(probs) == 3 and min(probs) >= 0 and sum(probs) == pytest.approx(1.0)


def test_arguments_are_formatted_like_the_wandb_agent():
    sweep = yaml.safe_load(SWEEP.read_text())
    config = {"model.init_args.mode_probs": [0.2, 0.2, 0.6]}
    agent = create_sweep_command_args({"args": {k: {"value": v} for k, v in config.items()}})["args"]
    args = command_args(sweep, config)
    assert args[0] == "fit" and args[-len(agent):] == agent
    wandb = "experiments/loggers/wandb.yaml"
    assert wandb not in args and ["--config", wandb] == command_args(sweep, config, keep_wandb=True)[-len(agent) - 2:-len(agent)]
    one_token = {"command": ["fit", "--config=wandb", "-c", "x.yaml", "${args}"]}
    assert command_args(one_token, {}) == ["fit", "-c", "x.yaml"] and "--config=wandb" in command_args(one_token, {}, True)


def test_grid_and_random_configurations():
    params = {"a": {"values": [1, 2]}, "b": {"values": [[0.5, 0.5], [1.0, 0.0]]}, "c": {"value": "x"}}
    grid = grid_configurations(params)
    assert len(grid) == 4 and grid[0] == {"a": 1, "b": [0.5, 0.5], "c": "x"}
    random_sweep = {"method": "random", "parameters": {**params, "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}}}
    drawn = configurations(random_sweep, max_runs=3, seed=1)
    assert drawn == configurations(random_sweep, max_runs=3, seed=1) and len(drawn) == 3
    assert all(1e-4 <= d["lr"] <= 1e-2 and d["b"] in ([0.5, 0.5], [1.0, 0.0]) for d in drawn)
    assert configurations({"method": "grid", "parameters": params}, max_runs=2) == grid[:2]


def test_sweep_runs_two_mode_distributions_offline(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(ROOT)  # the sweep's command names configs relative to the repository
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "sweep"
    code = main([
        str(SWEEP), "--max-runs", "2", "--out", str(out), "--base-args",
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false",
        "--data.init_args.batch_size=4",
    ])
    assert code == 0
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert [json.loads(r["model.init_args.mode_probs"]) for r in rows] == [[0.2, 0.2, 0.6], [1.0, 0.0, 0.0]]
    assert all(float(r["val/mae"]) > 0 for r in rows)
    assert (out / "summary.png").stat().st_size > 1000
    # each run trained with its own distribution
    for row, probs in zip(rows, ([0.2, 0.2, 0.6], [1.0, 0.0, 0.0])):
        config = yaml.safe_load(open(Path(row["log_dir"]) / "config.yaml"))
        assert config["model"]["init_args"]["mode_probs"] == probs


# ------------------------------------------------------------------ seeds and summaries
def _row(run: int, arm: str, seed: int, mae_2d: float | None, status: str = "ok") -> dict:
    metrics = {} if mae_2d is None else {"val/mae_2d": mae_2d}
    return {"run": run, "config": {"config": f"experiments/ablations/{arm}.yaml", SEED_PARAMETER: seed},
            "status": status, "metrics": metrics, "curve": [], "log_dir": "", "seconds": 1.0}


SYNTHETIC = [
    _row(0, "arm_a", 0, 0.30), _row(1, "arm_a", 1, 0.32), _row(2, "arm_a", 2, 0.34),
    _row(3, "arm_b", 0, 0.20), _row(4, "arm_b", 1, 0.22), _row(5, "arm_b", 2, None, status="failed: exit 1"),
    _row(6, "arm_c", 0, 0.33), _row(7, "arm_c", 1, 0.29), _row(8, "arm_c", 2, 0.31),
]
NAMES = ["config", SEED_PARAMETER]


def test_seed_axis_is_added_last_and_replaces_an_existing_one():
    sweep = {"method": "grid", "parameters": {SEED_PARAMETER: {"value": 7}, "a": {"values": [1, 2]}}}
    seeded = with_seeds(sweep, [0, 1, 2])
    assert list(seeded["parameters"]) == ["a", SEED_PARAMETER] and sweep["parameters"][SEED_PARAMETER] == {"value": 7}
    runs = configurations(seeded, None)
    assert [(r["a"], r[SEED_PARAMETER]) for r in runs] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    assert command_args(seeded, runs[4])[-2:] == ["--a=2", "--seed_everything=1"]


def test_seeds_aggregate_into_mean_and_sample_std_per_configuration():
    groups = aggregate(SYNTHETIC, NAMES, ["val/mae_2d", "val/mae_3d"])
    assert [g["group"] for g in groups] == ["arm_a", "arm_b", "arm_c"]
    a, b, c = (g["val/mae_2d"] for g in groups)
    assert a["mean"] == pytest.approx(0.32) and a["std"] == pytest.approx(0.02) and a["n"] == 3
    assert a["values"] == [(0, 0.30), (1, 0.32), (2, 0.34)]
    assert b["mean"] == pytest.approx(0.21) and b["std"] == pytest.approx(0.01 * 2**0.5) and b["n"] == 2  # failed run left out
    assert groups[1]["runs"] == 3 and groups[1]["failed"] == 1
    assert c["mean"] == pytest.approx(0.31) and c["std"] == pytest.approx(0.02)
    assert groups[0]["val/mae_3d"]["n"] == 0 and math.isnan(groups[0]["val/mae_3d"]["mean"])
    table = markdown_table(groups, ["val/mae_2d", "val/mae_3d"], 1000.0, "meV")
    assert "| `arm_a` | **320.0 ± 20.0**<br>300.0 (s0), 320.0 (s1), 340.0 (s2) | not logged | 3 (0) |" in table
    assert "2D-mode MAE (meV)" in table and "3D-mode MAE (meV)" in table


def test_a_claim_is_judged_against_the_spread_of_the_seeds():
    groups = aggregate(SYNTHETIC, NAMES, ["val/mae_2d", "val/mae_3d"])
    # B - A = -0.11, spread 0.02 + 0.014 -> reproduced; the other way round -> contradicted
    assert compare(groups, "arm_b", "arm_a", "val/mae_2d")[0] == "reproduced"
    assert compare(groups, "arm_a", "arm_b", "val/mae_2d")[0] == "contradicted"
    # C - A = -0.01 is smaller than the spread 0.04 -> no claim either way
    verdict, sentence = compare(groups, "arm_c", "arm_a", "val/mae_2d", 1000.0, "meV")
    assert verdict == "not resolved" and "difference -10.0 meV" in sentence and "spread (sum of the standard deviations) 40.0 meV" in sentence
    assert compare(groups, "arm_c", "arm_a", "val/mae_3d")[0] == "not measured"
    assert compare(groups, "arm_z", "arm_a", "val/mae_2d")[0] == "not measured"


def test_report_block_is_filled_and_text_around_it_kept(tmp_path):
    out = tmp_path / "sweep"
    for row in SYNTHETIC:  # run folders as `tmzoo sweep` leaves them, with a metrics.csv each
        log_dir = out / f"run_{row['run']:03d}" / "lightning_logs" / "version_0"
        log_dir.mkdir(parents=True)
        (log_dir.parent.parent / "run.json").write_text(json.dumps({k: row[k] for k in ("run", "config", "status", "seconds")}))
        (log_dir / "hparams.yaml").write_text(yaml.safe_dump({"data_info": {"target_units": ["eV"]}}))
        value = row["metrics"].get("val/mae_2d")
        lines = ["epoch,step,train/loss,val/mae_2d", "0,9,1.0,", f"0,9,,{2 * value if value else ''}", "1,19,0.5,", f"1,19,,{value or ''}"]
        (log_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    (out / "sweep.json").write_text(json.dumps({"command": "tmzoo sweep grid.yaml", "wall_seconds": 600.0, "cores": 2}))
    sweep_file = tmp_path / "grid.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "method": "grid", "metric": {"name": "val/mae_2d"},
        "parameters": {"config": {"values": [f"experiments/ablations/{a}.yaml" for a in ("arm_a", "arm_b", "arm_c")]},
                       SEED_PARAMETER: {"values": [0, 1, 2]}},
    }))
    claims = tmp_path / "claims.yaml"
    claims.write_text(yaml.safe_dump([{"claim": "B beats A", "better": "arm_b", "than": "arm_a", "metric": "val/mae_2d"}]))
    report = tmp_path / "docs" / "RESULTS.md"
    report.parent.mkdir()
    report.write_text(f"# Results\n\nMethod, by hand.\n\n{REPORT_BEGIN}\nold numbers\n{REPORT_END}\n\nNotes, by hand.\n")

    assert main([str(sweep_file), "--out", str(out), "--summarize-only", "--report", str(report), "--claims", str(claims)]) == 0
    text = report.read_text()
    assert text.startswith("# Results\n\nMethod, by hand.\n\n") and text.endswith("\n\nNotes, by hand.\n")
    assert "old numbers" not in text and "**8 of 9 runs finished.**" in text
    assert "**320.0 ± 20.0**" in text and "- B beats A: **reproduced**." in text
    assert "wall clock 10.0 min" in text and "run 5 (`arm_b" in text
    for name in ("summary.csv", "groups.csv", "curves.csv", "summary.png"):
        assert (report.parent / "results" / name).stat().st_size > 0
    curves = list(csv.DictReader(open(report.parent / "results" / "curves.csv")))
    assert len(curves) == 2 * 8 and {c["step"] for c in curves} == {"9", "19"}
    assert float(next(c for c in curves if c["run"] == "0" and c["step"] == "9")["val/mae_2d"]) == pytest.approx(0.60)
    groups = list(csv.DictReader(open(out / "groups.csv")))
    assert [(g["group"], float(g["mean"]), json.loads(g["seeds"])) for g in groups][1] == ("arm_b", pytest.approx(0.21), [0, 1])


@pytest.mark.slow
def test_parallel_runs_match_the_sweep_order(tmp_path, monkeypatch):
    """`--jobs 2`: runs in two child processes, rows in run order, each with its own config."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "sweep"
    code = main([
        str(SWEEP), "--max-runs", "2", "--jobs", "2", "--seeds", "3", "--out", str(out), "--base-args",
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false", "--data.init_args.batch_size=4", f"--data.init_args.cache_dir={tmp_path / 'cache'}",
    ])
    assert code == 0
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["status"] for r in rows] == ["ok", "ok"] and [r["run"] for r in rows] == ["0", "1"]
    for row, probs in zip(rows, ([0.2, 0.2, 0.6], [1.0, 0.0, 0.0])):
        config = yaml.safe_load(open(Path(row["log_dir"]) / "config.yaml"))
        assert config["model"]["init_args"]["mode_probs"] == probs and config["seed_everything"] == 3
        assert float(row["val/mae"]) > 0
