"""The Transformer-M ablation family (``experiments/ablations/``): arms differ only where they
should, one arm trains on the QM9 fixture through the sweep file, runs repeat exactly."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from wandb.sdk.launch.sweeps.utils import load_sweep_config

from tmzoo.cli.lightning import run_lightning_cli
from tmzoo.cli.sweep import SEED_PARAMETER, command_args, configurations, load_claims, main, prepare_data

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster

ROOT = Path(__file__).resolve().parents[1]
ABLATIONS = ROOT / "experiments" / "ablations"
GRID = ABLATIONS / "grid.yaml"
ARMS = {
    "arm_a_2d_only": ([0.0, 1.0, 0.0], False),
    "arm_b_joint_denoise": ([0.2, 0.2, 0.6], True),
    "arm_c_uniform_denoise": ([1 / 3, 1 / 3, 1 / 3], True),
    "arm_d_joint_no_denoise": ([0.2, 0.2, 0.6], False),
}


def fixture_args(tmp_path: Path, steps: int = 2) -> list[str]:
    """Overrides that point the ablation at the 21-molecule QM9 fixture for ``steps`` steps."""
    return [
        f"--data.init_args.root={ROOT / 'tests' / 'fixtures' / 'qm9'}",
        "--data.init_args.split_sizes=[15,3,3]",
        f"--data.init_args.cache_dir={tmp_path / 'cache'}",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_proc=1",
        f"--trainer.max_steps={steps}",
        f"--trainer.val_check_interval={steps}",
        "--model.init_args.lr_scheduler.init_args.warmup_steps=1",
    ]


def test_grid_is_a_wandb_sweep_of_four_arms_by_three_seeds():
    sweep = load_sweep_config(str(GRID))  # what `wandb sweep FILE` reads
    assert sweep["metric"] == {"name": "val/mae_2d", "goal": "minimize"}
    assert sweep["command"][0] == "${program}" and sweep["command"][-1] == "${args}"
    runs = configurations(sweep, None)
    assert len(runs) == 12
    assert {Path(r["config"]).stem for r in runs} == set(ARMS)
    assert sorted(r[SEED_PARAMETER] for r in runs) == [0] * 4 + [1] * 4 + [2] * 4
    for run in runs:
        assert (ROOT / run["config"]).exists()
    for claim in load_claims(ABLATIONS / "claims.yaml"):
        assert {claim["better"], claim["than"]} <= set(ARMS) and claim["metric"].startswith("val/mae_")


def test_arms_differ_only_in_mode_distribution_and_denoising(tmp_path):
    """Same model size, optimiser, schedule and steps for every arm; the split is the same."""
    shared = None
    for arm, (probs, denoising) in ARMS.items():
        cli = run_lightning_cli([  # run=False: no subcommand
            "--config", str(ABLATIONS / "base.yaml"), "--config", str(ABLATIONS / "data_qm9_gap.yaml"),
            "--config", str(ABLATIONS / f"{arm}.yaml"), *fixture_args(tmp_path),
            f"--trainer.default_root_dir={tmp_path / arm}",
        ], run=False)
        model = cli.model
        assert model.encoder.mode_probs.tolist() == pytest.approx(probs)
        assert (model.denoising_head is not None) == denoising
        config = cli.config
        same = {
            "encoder": {k: v for k, v in model.encoder.config.items() if k != "mode_probs"},
            "gap_head": [tuple(p.shape) for p in model.gap_head.parameters()],
            "optimizer": str(config.model.init_args.optimizer),
            "schedule": str(config.model.init_args.lr_scheduler),
            "noise_std": model.noise_std,
            "trainer": {k: config.trainer[k] for k in ("max_steps", "val_check_interval", "gradient_clip_val", "precision")},
            "train": cli.datamodule.record_indices("train").tolist(),
            "val": cli.datamodule.record_indices("val").tolist(),
        }
        shared = shared or same
        assert same == shared, arm


def test_one_arm_trains_through_the_sweep_file_with_finite_metrics(tmp_path, monkeypatch):
    """Run 4 of the grid (arm B, seed 1) for a few steps on the fixture, as `tmzoo sweep` runs it."""
    monkeypatch.chdir(ROOT)  # the sweep's command names configs relative to the repository
    out = tmp_path / "sweep"
    code = main([str(GRID), "--only", "4", "--out", str(out), "--base-args", *fixture_args(tmp_path, steps=3),
                 "--trainer.enable_progress_bar=false"])
    assert code == 0
    (row,) = list(csv.DictReader(open(out / "summary.csv")))
    assert row["status"] == "ok" and row["group"] == "arm_b_joint_denoise" and json.loads(row[SEED_PARAMETER]) == 1
    for metric in ("val/mae_2d", "val/mae_2d3d"):
        assert math.isfinite(float(row[metric])) and float(row[metric]) > 0
    config = yaml.safe_load(open(Path(row["log_dir"]) / "config.yaml"))
    assert config["seed_everything"] == 1 and config["trainer"]["max_steps"] == 3
    assert config["model"]["init_args"]["mode_probs"] == [0.2, 0.2, 0.6]
    assert (out / "summary.md").read_text().count("arm_b_joint_denoise") == 1
    # rerunning the run with its seed (`--only 4` again) repeats its validation MAE
    assert main([str(GRID), "--only", "4", "--out", str(out), "--base-args", *fixture_args(tmp_path, steps=3),
                 "--trainer.enable_progress_bar=false"]) == 0
    (rerun,) = list(csv.DictReader(open(out / "summary.csv")))
    assert rerun["log_dir"] != row["log_dir"] and float(rerun["val/mae_2d"]) == pytest.approx(float(row["val/mae_2d"]), rel=1e-4)
    assert json.loads((out / "sweep.json").read_text())["reruns"][0]["runs"] == [4]


def _validation_mae(tmp_path: Path, seed: int, name: str) -> float:
    cli = run_lightning_cli([
        "fit", "--config", str(ABLATIONS / "base.yaml"), "--config", str(ABLATIONS / "data_qm9_gap.yaml"),
        "--config", str(ABLATIONS / "arm_b_joint_denoise.yaml"), *fixture_args(tmp_path),
        f"--seed_everything={seed}", f"--trainer.default_root_dir={tmp_path / name}",
    ])
    return float(cli.trainer.callback_metrics["val/mae_2d"])


def test_a_run_repeats_with_its_seed_and_changes_with_another(tmp_path):
    first, again, other = (_validation_mae(tmp_path, s, n) for s, n in ((1, "a"), (1, "b"), (2, "c")))
    assert again == pytest.approx(first, rel=1e-4)
    assert abs(other - first) > 1e-4 * first  # the seed reaches the run


def test_parallel_sweeps_build_the_featurisation_cache_before_the_runs(tmp_path):
    """`--jobs N` instantiates the first run once so its children read one finished cache."""
    sweep = load_sweep_config(str(GRID))
    args = command_args(sweep, configurations(sweep, None)[0]) + fixture_args(tmp_path)
    prepare_data(args + [f"--trainer.default_root_dir={tmp_path / 'prepare'}", "--trainer.logger=false"])
    (cache,) = (tmp_path / "cache").glob("tmzoo-qm9-*")
    assert json.loads((cache / "manifest.json").read_text())["count"] == 21


def test_one_validation_pass_reads_every_molecule_in_each_mode(tmp_path):
    """The logged MAEs equal the MAEs of the trained model's predictions in 2D, 3D and 2D+3D mode."""
    import torch

    from tmzoo.models import Mode

    cli = run_lightning_cli([
        "fit", "--config", str(ABLATIONS / "base.yaml"), "--config", str(ABLATIONS / "data_qm9_gap.yaml"),
        "--config", str(ABLATIONS / "arm_b_joint_denoise.yaml"), *fixture_args(tmp_path),
        f"--trainer.default_root_dir={tmp_path / 'run'}",
    ])
    logged = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("val/")}
    assert {"val/mae_2d", "val/mae_3d", "val/mae_2d3d"} <= set(logged)
    model = cli.model.eval()
    errors = {Mode.ONLY_2D: [], Mode.ONLY_3D: [], Mode.BOTH: []}
    with torch.no_grad():
        for batch in cli.datamodule.val_dataloader():
            for mode, found in errors.items():
                found.append((model(batch, mode).view(-1) - batch.y.view(-1)).abs())
    expected = {name: float(torch.cat(errors[mode]).mean()) for name, mode in
                (("val/mae_2d", Mode.ONLY_2D), ("val/mae_3d", Mode.ONLY_3D), ("val/mae_2d3d", Mode.BOTH))}
    assert len(set(expected.values())) == 3  # the modes really differ
    for name, value in expected.items():
        assert logged[name] == pytest.approx(value, rel=1e-5), name
