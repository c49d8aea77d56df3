"""``tmzoo fit|validate|test|predict`` through LightningCLI: composition, links, loggers."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from tmzoo.cli.lightning import run_lightning_cli, wandb_offline_reason

ROOT = Path(__file__).resolve().parents[1]
SMALL = str(ROOT / "experiments" / "transformer_m_small.yaml")


@pytest.fixture
def tiny(tmp_path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text("data:\n  class_path: test_tasks_tinydata.TinyMolecules\n  init_args: {batch_size: 4, num_targets: 2}\n")
    return str(path)


def quick(tmp_path, *extra: str) -> list[str]:
    return ["--trainer.max_epochs=1", "--trainer.log_every_n_steps=1", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}", *extra]


def test_print_config_is_complete(tiny, capsys):
    with pytest.raises(SystemExit) as exit_:
        run_lightning_cli(["fit", "--config", SMALL, "--config", tiny, "--print_config"])
    assert exit_.value.code in (0, None)
    config = yaml.safe_load(capsys.readouterr().out)
    encoder = config["model"]["init_args"]["encoder"]
    assert encoder["class_path"] == "tmzoo.models.TransformerM"
    assert encoder["init_args"]["num_layers"] == 4 and encoder["init_args"]["num_kernels"] == 16
    assert config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == pytest.approx(1e-3)
    assert config["data"]["class_path"] == "test_tasks_tinydata.TinyMolecules"
    assert config["trainer"]["gradient_clip_val"] == 5.0 and config["seed_everything"] == 0


def test_fit_links_data_info_saves_config_and_csv_logs(tiny, tmp_path):
    regression = ["--model=tmzoo.tasks.Regression", "--model.init_args.loss=l1"]
    monitor = ["--trainer.callbacks.monitor=val/mae_standardised"]  # the pretraining YAML monitors val/mae
    args = ["fit", "--config", SMALL, "--config", tiny, *regression, *monitor, *quick(tmp_path)]
    cli = run_lightning_cli(args)
    assert type(cli.model).__name__ == "Regression" and cli.model.head.out_proj.out_features == 2
    assert cli.model.data_info["target_names"] == ["gap", "logp"]
    assert cli.model.target_std.tolist() == pytest.approx(cli.datamodule.target_std)
    assert isinstance(cli.trainer.loggers[0], CSVLogger)
    log_dir = Path(cli.trainer.log_dir)
    saved = yaml.safe_load(open(log_dir / "config.yaml"))
    assert saved["model"]["class_path"] == "tmzoo.tasks.Regression"
    metrics = (log_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/mae_standardised", "val/mae_gap_meV", "val/mae_logp", "train/loss"} <= set(metrics)

    ckpt = next((log_dir / "checkpoints").glob("*.ckpt"))
    checkpoint = torch.load(ckpt, weights_only=True)
    assert checkpoint["tmzoo"]["targets"] == ["gap", "logp"]
    assert checkpoint["hyper_parameters"]["data_info"]["target_units"] == ["eV", ""]
    from tmzoo.tasks import Regression

    rebuilt = Regression.load_from_checkpoint(ckpt)  # plain hyper-parameters, however the run started
    assert rebuilt.target_names == ["gap", "logp"] and rebuilt.encoder.config["num_layers"] == 4
    test = run_lightning_cli(["test", "--config", SMALL, "--config", tiny, *regression, *monitor, f"--ckpt_path={ckpt}",
                              f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"])
    assert "test/mae_gap_meV" in test.trainer.callback_metrics


def test_rerun_into_the_same_log_dir_overwrites_config(tiny, tmp_path):
    fixed = ["--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={tmp_path}", "--trainer.logger.version=fixed"]
    for _ in range(2):
        cli = run_lightning_cli(["fit", "--config", SMALL, "--config", tiny, *quick(tmp_path, *fixed)])
    assert Path(cli.trainer.log_dir).name == "fixed" and (Path(cli.trainer.log_dir) / "config.yaml").exists()


@pytest.fixture
def no_wandb_credentials(tmp_path, monkeypatch):
    """No API key (env or netrc), no WANDB_MODE; W&B writes under ``tmp_path``, quietly."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no.netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_wandb_config_logs_offline_without_credentials(tiny, tmp_path, no_wandb_credentials, caplog):
    cli = run_lightning_cli(["fit", "--config", SMALL, "--config", tiny, "--config", "wandb", *quick(tmp_path)])
    kinds = [type(lg) for lg in cli.trainer.loggers]
    assert kinds[0] is CSVLogger and WandbLogger in kinds
    wandb_logger = next(lg for lg in cli.trainer.loggers if isinstance(lg, WandbLogger))
    assert os.environ["WANDB_MODE"] in ("offline", "dryrun") and wandb_logger.save_dir == str(tmp_path)
    assert f"wandb sync {tmp_path / 'wandb'}/offline-run-*" in caplog.text
    import wandb

    wandb.finish()
    assert list(Path(tmp_path).rglob("offline-run-*")), "no offline W&B run to sync later"


def test_wandb_probes_the_host_of_wandb_base_url(tmp_path, no_wandb_credentials, monkeypatch):
    probed = []

    def unreachable(address, timeout):
        probed.append((address, timeout))
        raise OSError("unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setenv("WANDB_BASE_URL", "http://wandb.example.org:8080")
    assert wandb_offline_reason() == "no API key for wandb.example.org" and not probed
    (tmp_path / "no.netrc").write_text("machine wandb.example.org login user password KEY\n")
    assert wandb_offline_reason() == "wandb.example.org cannot be reached"
    assert probed == [(("wandb.example.org", 8080), 2)]
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: socket.socket())
    assert wandb_offline_reason() is None


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_wandb_mode_set_by_the_user_is_honoured(mode, tiny, tmp_path, no_wandb_credentials, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", mode)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("W&B's server probed"))
    cli = run_lightning_cli(["--config", SMALL, "--config", tiny, "--config", "wandb", *quick(tmp_path)], run=False)
    assert any(isinstance(lg, WandbLogger) for lg in cli.trainer.loggers) and os.environ["WANDB_MODE"] == mode


def test_predict_returns_de_standardised_predictions(tiny, tmp_path):
    cli = run_lightning_cli(["predict", "--config", SMALL, "--config", tiny, "--model=tmzoo.tasks.Regression",
                             f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"])
    assert cli is not None
    predictions = torch.cat(cli.trainer.predict_loop.predictions)
    assert predictions.shape == (4, 2)
    # a fresh head predicts near zero in standardised units, i.e. near the train mean
    mean = torch.tensor(cli.datamodule.target_mean)
    assert (predictions - mean).abs().max() < 3 * max(cli.datamodule.target_std)
