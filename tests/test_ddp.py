"""Two-process DDP on CPU (gloo) through the CLI: ``--trainer.strategy=ddp --trainer.devices=2``."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_ddp(tmp_path: Path, data: list[str], *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable, "-m", "tmzoo.cli.lightning", "fit",
        "--config", str(ROOT / "experiments" / "transformer_m_small.yaml"), *data,
        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
        "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}", *extra,
    ]
    return run_ranks(args, tmp_path, env)


def run_ranks(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """Run a multi-process command; on timeout its whole process group is killed and the test fails."""
    # own process group, so a hung rank is killed with its launcher on timeout
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"DDP run timed out:\n{(out + err)[-3000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def check_run(result: subprocess.CompletedProcess, tmp_path: Path) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "GLOBAL_RANK: 1" in output and "MEMBER: 2/2" in output
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    assert any(r.get("val/mae") for r in rows)
    checkpoint = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=True)
    assert checkpoint["global_step"] == 2 and checkpoint["tmzoo"]["task"] == "pretraining"


def test_ddp_two_processes_on_tiny_data(tmp_path):
    data = tmp_path / "data.yaml"
    data.write_text("data:\n  class_path: test_tasks_tinydata.TinyMolecules\n  init_args: {batch_size: 2}\n")
    check_run(run_ddp(tmp_path, ["--config", str(data)]), tmp_path)


@pytest.mark.slow
def test_ddp_two_processes_on_qm9_demo(tmp_path):
    demo = ["--config", str(ROOT / "datamodules" / "qm9_demo.yaml"), "--data.init_args.batch_size=4"]
    check_run(run_ddp(tmp_path, demo), tmp_path)


@pytest.mark.slow
def test_ddp_predict_streams_every_record_once(tmp_path, parity_dir):
    """``tmzoo predict`` of a users' file on two ranks: each rank writes its chunks, together every
    record once (the stream's length, counted on rank 0, is the same on both ranks)."""
    from tmzoo.checkpoints import convert_checkpoint

    ckpt = tmp_path / "model.ckpt"
    convert_checkpoint(parity_dir / "golden_shared_official_format.pt", ckpt)
    smi = tmp_path / "in.smi"
    smi.write_text("CCO\nbad((\nc1ccccc1O\nCCN\nCC(=O)O\nC1CC1\nO\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [
        sys.executable, "-m", "tmzoo.cli.lightning", "predict",
        "--model", "tmzoo.tasks.Pretraining", "--model.encoder", "tmzoo.models.TransformerM",
        "--model.encoder.num_layers", "2", "--model.encoder.embed_dim", "32", "--model.encoder.ffn_dim", "48",
        "--model.encoder.num_heads", "4", "--model.encoder.num_kernels", "16",
        "--model.encoder.reference_compatible", "true", "--model.gap_head", "tmzoo.models.GapHead",
        "--model.denoising_head", "tmzoo.models.DenoisingHead",
        "--data", "tmzoo.datamodules.FilesDataModule", "--data.path", str(smi), "--data.batch_size", "2",
        "--data.chunk_size", "2", "--data.reference_compatible", "true", "--ckpt_path", str(ckpt),
        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.callbacks+=tmzoo.tasks.PredictionWriter", f"--trainer.callbacks.output={tmp_path / 'out.csv'}",
    ]
    result = run_ranks(args, tmp_path, env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    ranks = [list(csv.DictReader(open(tmp_path / f"out.rank{r}.csv"))) for r in range(2)]
    assert [row["index"] for row in ranks[0]] == ["0", "1", "4", "5"]
    assert [row["index"] for row in ranks[1]] == ["2", "3", "6"]
    assert "parse" in ranks[0][1]["error"] and all(row["prediction"] for rows in ranks for row in rows if not row["error"])
