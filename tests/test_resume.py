"""A run stopped mid-epoch and resumed with ``--ckpt_path last`` ends with the weights of the
uninterrupted run (same seed)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from tmzoo.cli.lightning import run_lightning_cli
from tmzoo.data.resumable import ResumableDataLoader

EXPERIMENT = Path(__file__).resolve().parents[1] / "experiments" / "transformer_m_small.yaml"


class CrashAfterStep(L.Callback):
    """Simulates a killed job after ``step`` optimizer steps (before that step's checkpoint, as
    Lightning runs ModelCheckpoint last)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args, **kwargs):
        if trainer.global_step >= self.step:
            raise RuntimeError("simulated preemption")


def _args(tmp_path: Path, root: str, extra: list[str]) -> list[str]:
    data = tmp_path / "data.yaml"
    data.write_text("data:\n  class_path: test_tasks_tinydata.TinyMolecules\n  init_args: {batch_size: 4}\n")
    ckpt_dir = tmp_path / root / "ckpt"
    trainer = tmp_path / f"{root}_trainer.yaml"
    trainer.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        f"      init_args: {{dirpath: {ckpt_dir}, save_last: true, every_n_train_steps: 1, save_top_k: 0}}\n"
        + "".join(f"    - {c}\n" for c in extra)
    )
    return [
        "fit", "--config", str(EXPERIMENT), "--config", str(data), "--config", str(trainer),
        "--trainer.max_steps=6", "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false", "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path / root}",
    ]


def test_resumed_run_matches_uninterrupted(tmp_path):
    # 12 training molecules, batch 4: 3 steps per epoch; the crash at step 5 leaves last.ckpt at
    # step 4, in the middle of epoch 2
    full = run_lightning_cli(_args(tmp_path, "full", []))
    with pytest.raises(RuntimeError, match="simulated preemption"):
        run_lightning_cli(_args(tmp_path, "cut", ["{class_path: test_resume.CrashAfterStep, init_args: {step: 5}}"]))
    assert torch.load(tmp_path / "cut" / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 4
    resumed = run_lightning_cli(_args(tmp_path, "cut", []) + ["--ckpt_path=last"])
    assert resumed.trainer.global_step == full.trainer.global_step == 6
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs after resume")


def test_resumable_loader_skips_consumed_batches():
    data = list(range(10))
    loader = ResumableDataLoader(data, batch_size=2, shuffle=True, seed=3)
    first = [b.tolist() for b in loader]
    again = ResumableDataLoader(data, batch_size=2, shuffle=True, seed=3)
    it = iter(again)
    seen = [next(it).tolist() for _ in range(2)]
    state = again.state_dict()
    assert state == {"seed": 3, "epoch": 0, "consumed": 2}
    restored = ResumableDataLoader(data, batch_size=2, shuffle=True, seed=99)
    restored.load_state_dict(state)
    assert [b.tolist() for b in restored] == first[2:]
    assert seen == first[:2]
    second_epoch = [b.tolist() for b in restored]
    assert second_epoch != first and sorted(sum(second_epoch, [])) == data  # reshuffled, complete
    assert restored.state_dict() == {"seed": 3, "epoch": 2, "consumed": 0}  # end of epoch 1


def test_loader_survives_lightning_adding_a_distributed_sampler():
    """DDP: Lightning re-creates the train loader with a ``DistributedSampler`` (and a generator)."""
    from lightning.fabric.utilities.data import _update_dataloader
    from torch.utils.data import DistributedSampler

    from tmzoo.chem.molecule import smiles_to_data

    data = [smiles_to_data(s) for s in ("C", "CC", "CCC", "CCCC")]
    loader = ResumableDataLoader(data, batch_size=2, shuffle=True, seed=1)
    sampler = DistributedSampler(data, num_replicas=2, rank=0, shuffle=False)
    rebuilt = _update_dataloader(loader, sampler)
    assert isinstance(rebuilt, ResumableDataLoader)
    assert sum(batch.num_graphs for batch in rebuilt) == 2


class SigtermAtStep(L.Callback):
    """Sends SIGTERM to its own process after ``step`` optimizer steps (a preempted job)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args, **kwargs):
        if trainer.global_step == self.step:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)


def _tiny_data(tmp_path: Path) -> str:
    data = tmp_path / "data.yaml"
    data.write_text("data:\n  class_path: test_tasks_tinydata.TinyMolecules\n  init_args: {batch_size: 4}\n")
    return str(data)


def test_ckpt_path_last_resumes_the_run_in_its_own_folder(tmp_path):
    """The shipped YAML's default logger: the second invocation continues version_0."""
    common = ["fit", "--config", str(EXPERIMENT), "--config", _tiny_data(tmp_path), "--trainer.limit_val_batches=0",
              "--trainer.max_epochs=-1", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
              "--ckpt_path=last"]
    first = run_lightning_cli([*common, "--trainer.max_steps=3"])
    run_dir = Path(first.trainer.log_dir)
    assert first.trainer.ckpt_path is None and run_dir.name == "version_0"  # nothing to resume yet: step 0
    second = run_lightning_cli([*common, "--trainer.max_steps=5"])
    assert Path(second.trainer.ckpt_path) == run_dir / "checkpoints" / "last.ckpt"
    assert Path(second.trainer.log_dir) == run_dir and not (tmp_path / "lightning_logs" / "version_1").exists()
    assert second.trainer.global_step == 5
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5


def _val_args(tmp_path: Path, root: str, extra: list[str]) -> list[str]:
    trainer = tmp_path / f"{root}_trainer.yaml"
    trainer.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        f"      init_args: {{dirpath: {tmp_path / root / 'ckpt'}, save_last: true, monitor: val/mae, save_top_k: 1}}\n"
        + "".join(f"    - {c}\n" for c in extra)
    )
    return [
        "fit", "--config", str(EXPERIMENT), "--config", _tiny_data(tmp_path), "--config", str(trainer),
        "--trainer.max_steps=7", "--trainer.max_epochs=-1", "--trainer.val_check_interval=2",
        "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
        "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path / root}",
    ]


def test_resume_from_a_mid_epoch_validation_checkpoint_is_exact(tmp_path):
    # 3 steps per epoch, validation after the 2nd batch of each epoch (steps 2, 5): the
    # checkpoint saved by the validation at step 2 is in the middle of epoch 1; the crash comes at step 4
    full = run_lightning_cli(_val_args(tmp_path, "full", []))
    with pytest.raises(RuntimeError, match="simulated preemption"):
        run_lightning_cli(_val_args(tmp_path, "cut", ["{class_path: test_resume.CrashAfterStep, init_args: {step: 4}}"]))
    assert torch.load(tmp_path / "cut" / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 2
    resumed = run_lightning_cli(_val_args(tmp_path, "cut", []) + ["--ckpt_path=last"])
    assert resumed.trainer.global_step == full.trainer.global_step == 7
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs after resume")


def test_sigterm_saves_a_checkpoint_and_exits_non_zero(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "tmzoo.cli.main", "fit", "--config", str(EXPERIMENT), "--config", _tiny_data(tmp_path),
            "--trainer.max_steps=50", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
            "--trainer.callbacks+=test_resume.SigtermAtStep", "--trainer.callbacks.step=2",
            f"--trainer.default_root_dir={tmp_path}"]
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 143, (result.stdout + result.stderr)[-3000:]
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2
