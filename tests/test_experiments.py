"""Every shipped experiment composes with ``datamodules/qm9_demo.yaml`` (or its own data) and
trains one step; fine-tuning experiments build their encoder from a pretrained file."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import LearningRateMonitor

from test_tasks_tinydata import write_properties_csv
from tmzoo.cli.lightning import run_lightning_cli

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "experiments").glob("**/*.yaml")
                     if not {"sweeps", "ablations", "loggers"} & set(p.parts))
DEMO = ROOT / "datamodules" / "qm9_demo.yaml"
PRETRAINED = ROOT / "tests" / "fixtures" / "checkpoints" / "tiny_pretraining.ckpt"


def test_every_experiment_is_listed():
    names = {Path(p).name for p in EXPERIMENTS}
    assert {
        "transformer_m_L12.yaml", "transformer_m_L18.yaml", "transformer_m_small.yaml", "graphormer_2d.yaml",
        "transformer_m_3d_only.yaml", "gin_vn.yaml", "schnet.yaml", "qm9.yaml", "pdbbind.yaml", "own_data.yaml",
    } <= names


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_trains_one_step_on_qm9_demo(experiment, tmp_path):
    """One step each; experiments with a LearningRateMonitor run without a logger (the monitor
    is dropped, not a crash)."""
    has_lr_monitor = "LearningRateMonitor" in (ROOT / experiment).read_text()
    if experiment.endswith("own_data.yaml"):
        data = ["--data.path", write_properties_csv(tmp_path / "props.csv"), "--data.targets", "[gap]",
                "--data.target_units", "[eV]"]
    else:
        data = ["--config", str(DEMO), "--data.init_args.batch_size=4"]
    pretrained = [f"--model.init_args.pretrained={PRETRAINED}"] if "finetune/" in experiment else []
    cli = run_lightning_cli([
        "fit", "--config", str(ROOT / experiment), *data, *pretrained,
        "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu", "--trainer.devices=1",
        "--trainer.enable_progress_bar=false", *(["--trainer.logger=false"] if has_lr_monitor else []),
        f"--trainer.default_root_dir={tmp_path}",
    ])
    assert cli.trainer.global_step == 1
    loss = float(cli.trainer.callback_metrics["train/loss"])
    assert math.isfinite(loss) and loss > 0
    assert any(k.startswith("val/") for k in cli.trainer.callback_metrics)
    info = cli.model.data_info  # linked from the datamodule, not written in the YAML
    assert info["target_names"] == ["gap"] and info["target_units"] == ["eV"]
    assert not any(isinstance(c, LearningRateMonitor) for c in cli.trainer.callbacks) or not has_lr_monitor
