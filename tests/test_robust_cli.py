"""``tmzoo fit|validate|test|predict --ckpt_path URL`` never runs code pickled in the download.

Lightning reads a remote ``ckpt_path`` with ``weights_only=False`` unless told otherwise;
``TmzooCLI`` defaults ``weights_only`` to True (tmzoo checkpoints are plain data). Served
from a local HTTP server: a payload checkpoint is refused and its command never runs, a
real tmzoo checkpoint still resumes.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch

from tmzoo.cli.lightning import run_lightning_cli

ROOT = Path(__file__).resolve().parents[1]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A folder served over HTTP on localhost; yields (folder, base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # torch.hub's download cache
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def fit(tmp_path, *extra):
    return run_lightning_cli([
        "fit", "--config", str(ROOT / "experiments" / "transformer_m_small.yaml"),
        "--config", str(ROOT / "datamodules" / "qm9_demo.yaml"),
        "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.limit_val_batches=0",
        "--data.init_args.batch_size=4", f"--trainer.default_root_dir={tmp_path / 'run'}", *extra,
    ])


def test_remote_ckpt_path_with_a_payload_is_refused(tmp_path, served):
    folder, url = served
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6.0", "x": _Payload(marker)}, folder / "evil.ckpt")
    with pytest.raises(Exception, match="[Ww]eights only load failed"):
        fit(tmp_path, "--trainer.max_steps=1", f"--ckpt_path={url}/evil.ckpt")
    assert not marker.exists()


def test_remote_tmzoo_checkpoint_still_resumes(tmp_path, served):
    folder, url = served
    first = fit(tmp_path, "--trainer.max_steps=1")
    first.trainer.save_checkpoint(folder / "step1.ckpt")
    resumed = fit(tmp_path, "--trainer.max_steps=2", f"--ckpt_path={url}/step1.ckpt")
    assert resumed.trainer.global_step == 2
