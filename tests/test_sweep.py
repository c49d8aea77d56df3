"""``tmzoo sweep``: the W&B sweep file, argument formatting as the agent does it, local runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args, load_sweep_config

from tmzoo.cli.sweep import command_args, configurations, grid_configurations, main

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
    assert "--wandb=true" not in args and "--wandb=true" in command_args(sweep, config, keep_wandb=True)


def test_grid_and_random_configurations():
    params = {"a": {"values": [1, 2]}, "b": {"values": [[0.5, 0.5], [1.0, 0.0]]}, "c": {"value": "x"}}
    grid = grid_configurations(params)
    assert len(grid) == 4 and grid[0] == {"a": 1, "b": [0.5, 0.5], "c": "x"}
    random_sweep = {"method": "random", "parameters": {**params, "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}}}
    drawn = configurations(random_sweep, max_runs=3, seed=1)
    assert drawn == configurations(random_sweep, max_runs=3, seed=1) and len(drawn) == 3
    assert all(1e-4 <= d["lr"] <= 1e-2 and d["b"] in ([0.5, 0.5], [1.0, 0.0]) for d in drawn)
    assert configurations({"method": "grid", "parameters": params}, max_runs=2) == grid[:2]


def test_sweep_runs_two_mode_distributions_offline(tmp_path, monkeypatch):
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
