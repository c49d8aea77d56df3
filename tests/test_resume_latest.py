"""``fit --ckpt_path last`` resumes a killed run from its latest saved state, also after
validation has stopped improving (Lightning's ``save_last`` then lags at the best state)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from tmzoo.cli.lightning import newest_last_checkpoint, run_lightning_cli
from tmzoo.configs import available, config_root, with_bases
from tmzoo.tasks import Pretraining

ROOT = Path(__file__).resolve().parents[1]
SMALL = str(ROOT / "experiments" / "transformer_m_small.yaml")


@pytest.fixture
def validation_worsens(monkeypatch):
    """Validation predictions off by ``100 × global_step``: only the first validation is a best."""
    forward = Pretraining.forward

    def worse(self, batch, mode=None):
        out = forward(self, batch, mode)
        return out if self.training else out + 100.0 * self.global_step

    monkeypatch.setattr(Pretraining, "forward", worse)


class KillAfterStep(L.Callback):
    """A killed job (SIGKILL, OOM): stops after ``step`` optimizer steps, saving nothing."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args, **kwargs):
        if trainer.global_step >= self.step:
            raise RuntimeError("simulated kill")


class FirstStep(L.Callback):
    """Records the optimizer step a run starts from."""

    def on_train_start(self, trainer, pl_module):
        self.step = trainer.global_step


# 12 training molecules, batch 4: 3 steps per epoch. Per epoch: validations at steps 3, 6, 9;
# every 2 steps (the L12 layout: val_check_interval, check_val_every_n_epoch null): 2, 4, 6, 8.
# Only the first validation improves; the kill comes at step 8, after the checkpoints of step 6.
CADENCES = {
    "per_epoch": ([], 3),
    "every_n_steps": (["--trainer.val_check_interval=2", "--trainer.check_val_every_n_epoch=null"], 2),
}


@pytest.mark.parametrize("cadence", CADENCES)
def test_ckpt_path_last_resumes_the_latest_state_not_the_best(cadence, tmp_path, validation_worsens):
    overrides, best_step = CADENCES[cadence]
    data = tmp_path / "data.yaml"
    data.write_text("data:\n  class_path: test_tasks_tinydata.TinyMolecules\n  init_args: {batch_size: 4}\n")
    args = ["fit", "--config", SMALL, "--config", str(data), *overrides, "--trainer.max_steps=10",
            "--trainer.max_epochs=-1", "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}", "--ckpt_path=last"]
    with pytest.raises(RuntimeError, match="simulated kill"):
        run_lightning_cli([*args, "--trainer.callbacks+=test_resume_latest.KillAfterStep",
                           "--trainer.callbacks.step=8"])
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    step_of = {p.name: torch.load(p, weights_only=True)["global_step"] for p in checkpoints.glob("*.ckpt")}
    # the monitored best and Lightning's last.ckpt stay at the only improvement: the bug's cause
    assert step_of["last.ckpt"] == best_step and step_of[f"epoch=0-step={best_step}.ckpt"] == best_step
    assert step_of["last-state.ckpt"] == 6

    resumed = run_lightning_cli([*args, "--trainer.callbacks+=test_resume_latest.FirstStep"])
    assert Path(resumed.trainer.ckpt_path) == checkpoints / "last-state.ckpt"
    first_step = next(c for c in resumed.trainer.callbacks if isinstance(c, FirstStep))
    assert first_step.step == 6 and resumed.trainer.global_step == 10
    assert not (tmp_path / "lightning_logs" / "version_1").exists()
    best = next(c for c in resumed.trainer.checkpoint_callbacks if c.monitor == "val/mae")
    assert Path(best.best_model_path).name == f"epoch=0-step={best_step}.ckpt"  # the best is kept


def _callbacks(name: str) -> list[dict]:
    """``trainer.callbacks`` of a shipped experiment, its bases included (a later list replaces)."""
    found: list[dict] = []
    for path in with_bases(name):
        trainer = (yaml.safe_load(Path(path).read_text()) or {}).get("trainer") or {}
        found = trainer.get("callbacks", found)
    return found


#: the experiments that train with checkpoints (the ablation grid runs without any)
TRAINING = sorted(n for n, path in available().items() if config_root() / "experiments" in path.parents
                  and not n.startswith(("ablations/", "sweeps/", "loggers/")))


@pytest.mark.parametrize("name", TRAINING)
def test_every_training_experiment_keeps_its_latest_state_for_ckpt_path_last(name):
    checkpoints = [c.get("init_args") or {} for c in _callbacks(name) if c["class_path"].endswith("ModelCheckpoint")]
    latest = [c for c in checkpoints if c.get("monitor") is None]
    assert len(latest) == 1 and latest[0]["filename"].startswith("last"), name  # found by last*.ckpt
    assert checkpoints[0] is latest[0], name  # before the best's (its last.ckpt wins equal times)
    assert latest[0].get("dirpath") is None and latest[0].get("enable_version_counter") is False
    assert any(c.get("monitor") for c in checkpoints), name  # the best is kept too


def test_on_equal_times_the_newest_is_last_ckpt(tmp_path):
    """The best's ``last.ckpt`` is written after ``last-state.ckpt`` of the same step."""
    import os

    folder = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    for name in ("last-state.ckpt", "last.ckpt", "epoch=0-step=3.ckpt"):
        (folder / name).write_bytes(b"")
        os.utime(folder / name, ns=(10**18, 10**18))
    assert newest_last_checkpoint(tmp_path) == folder / "last.ckpt"
    os.utime(folder / "last-state.ckpt", ns=(10**18 + 1, 10**18 + 1))
    assert newest_last_checkpoint(tmp_path) == folder / "last-state.ckpt"
