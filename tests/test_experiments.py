"""Every shipped experiment composes with ``datamodules/qm9_demo.yaml`` and trains one step."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tmzoo.cli.lightning import run_lightning_cli

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "experiments").rglob("*.yaml") if "sweeps" not in p.parts)
DEMO = ROOT / "datamodules" / "qm9_demo.yaml"


def test_every_experiment_is_listed():
    names = {Path(p).name for p in EXPERIMENTS}
    assert {
        "transformer_m_L12.yaml", "transformer_m_L18.yaml", "transformer_m_small.yaml", "graphormer_2d.yaml",
        "transformer_m_3d_only.yaml", "gin_vn.yaml", "schnet.yaml", "qm9.yaml", "pdbbind.yaml",
    } <= names


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_trains_one_step_on_qm9_demo(experiment, tmp_path):
    cli = run_lightning_cli([
        "fit", "--config", str(ROOT / experiment), "--config", str(DEMO),
        "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu", "--trainer.devices=1",
        "--trainer.enable_progress_bar=false", "--data.init_args.batch_size=4",
        f"--trainer.default_root_dir={tmp_path}",
    ])
    assert cli.trainer.global_step == 1
    loss = float(cli.trainer.callback_metrics["train/loss"])
    assert math.isfinite(loss) and loss > 0
    assert any(k.startswith("val/") for k in cli.trainer.callback_metrics)
    info = cli.model.data_info  # linked from the datamodule, not written in the YAML
    assert info["target_names"] == ["gap"] and info["target_units"] == ["eV"]
