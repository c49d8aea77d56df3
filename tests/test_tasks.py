"""Tasks: the pretraining objective, regression/affinity metrics, schedules, pretrained weights,
checkpoints that load_bundle reads, baselines and mixed precision."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Batch
from torch_geometric.utils import to_dense_batch

from test_tasks_tinydata import TinyMolecules, tiny_records
from tmzoo.checkpoints import load_bundle
from tmzoo.models import DenoisingHead, GraphRegressionHead, Mode, TransformerM
from tmzoo.models.baselines import GINVirtualNode, SchNetEncoder
from tmzoo.models.geometry import GaussianPairBasis
from tmzoo.tasks import (Affinity, Pretraining, Regression, WarmupLinearDecay, add_coordinate_noise,
                         describe_data, load_pretrained_encoder)
from tmzoo.tasks.metrics import FitResidualStd


def small_encoder(**kw) -> TransformerM:
    args = dict(num_layers=2, embed_dim=32, ffn_dim=32, num_heads=4, num_kernels=8, attention_dropout=0.0,
                activation_dropout=0.0, droppath=0.0)
    return TransformerM(**{**args, **kw})


def tiny_batch(n: int = 4) -> Batch:
    return Batch.from_data_list(list(tiny_records())[:n])


def trainer(tmp_path, **kw) -> L.Trainer:
    args = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                default_root_dir=tmp_path, enable_checkpointing=False)
    return L.Trainer(**{**args, **kw})


# ------------------------------------------------------------------ pretraining objective
def test_pretraining_loss_is_l1_plus_denoising_on_3d_only_molecules():
    torch.manual_seed(0)
    task = Pretraining(small_encoder(), denoising_head=DenoisingHead, mode_probs=[0.0, 0.0, 1.0]).train()
    batch = tiny_batch()
    pos_before = batch.pos.clone()
    torch.manual_seed(1)
    loss = task.training_step(batch, 0)
    assert torch.equal(batch.pos, pos_before)  # noise went to a copy

    torch.manual_seed(1)  # same draws: noise first, then the modes inside the encoder
    noisy, noise = add_coordinate_noise(batch, 0.2)
    out = task.encoder(noisy)
    assert (out.modes == Mode.ONLY_3D).all()
    gap = task.gap_head(out).squeeze(-1)
    l1 = (gap - batch.y[:, 0]).abs().sum() / 4
    noise_dense, mask = to_dense_batch(noise, batch.batch)
    cos = F.cosine_similarity(task.denoising_head(out), noise_dense, dim=-1)
    denoise = sum(((1 - cos[i])[mask[i]]).mean() for i in range(4)) / 4
    torch.testing.assert_close(loss, l1 + denoise, rtol=1e-5, atol=1e-6)
    assert noise.std().item() == pytest.approx(0.2, rel=0.3)


def test_denoising_loss_is_zero_without_3d_only_molecules():
    torch.manual_seed(0)
    task = Pretraining(small_encoder(), denoising_head=DenoisingHead, mode_probs=[0.5, 0.5, 0.0]).train()
    logged = {}
    task.log = lambda name, value, **kw: logged.__setitem__(name, value)
    task.training_step(tiny_batch(), 0)
    assert float(logged["train/denoise"]) == 0.0 and float(logged["train/l1"]) > 0
    torch.testing.assert_close(task.encoder.mode_probs, torch.tensor([0.5, 0.5, 0.0]))


def test_pretraining_validation_reports_2d_and_2d3d(tmp_path):
    torch.manual_seed(0)
    dm = TinyMolecules()
    task = Pretraining(small_encoder(), data_info=describe_data(dm))
    metrics = trainer(tmp_path).validate(task, datamodule=dm, verbose=False)[0]
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    task.eval()
    with torch.no_grad():
        mae_2d = (task(batch, Mode.ONLY_2D).squeeze(-1) - batch.y[:, 0]).abs().mean()
        mae_2d3d = (task(batch, Mode.BOTH).squeeze(-1) - batch.y[:, 0]).abs().mean()
    assert metrics["val/mae"] == pytest.approx(float(mae_2d), rel=1e-5)
    assert metrics["val/mae_2d"] == metrics["val/mae"]
    assert metrics["val/mae_2d3d"] == pytest.approx(float(mae_2d3d), rel=1e-5)
    assert metrics["val/mae_2d3d"] != metrics["val/mae_2d"]


def test_overfit_one_batch_with_transformer_m_small(tmp_path):
    from tmzoo.cli.lightning import run_lightning_cli
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    data = tmp_path / "data.yaml"
    data.write_text(
        "data:\n  class_path: test_tasks_tinydata.TinyMolecules\n  init_args: {batch_size: 8, gap_offset: 6.5}\n"
    )
    cli = run_lightning_cli([
        "fit", "--config", str(root / "experiments/transformer_m_small.yaml"), "--config", str(data),
        "--model.init_args.denoising_head=null", "--model.init_args.optimizer.init_args.lr=2e-3",
        "--trainer.overfit_batches=1", "--trainer.max_epochs=100",
        "--trainer.limit_val_batches=0", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.enable_checkpointing=false", "--trainer.callbacks=[]", f"--trainer.default_root_dir={tmp_path}",
    ])
    # gap targets centred near 0 (spread ~0.6 eV): the initial L1 is ~0.7, predicting the batch
    # mean would leave ~0.45; memorising the 8 molecules drives it towards 0
    batch = next(iter(cli.datamodule.train_dataloader()))
    mean_predictor = float((batch.y[:, 0] - batch.y[:, 0].median()).abs().mean())
    assert mean_predictor > 0.3
    assert float(cli.trainer.callback_metrics["train/loss"]) < 0.05


# ---------------------------------------------------------------------------- regression
def test_regression_standardises_masks_nan_and_reports_mev(tmp_path):
    torch.manual_seed(0)
    dm = TinyMolecules(num_targets=2)
    info = describe_data(dm)
    task = Regression(small_encoder(), head=GraphRegressionHead, loss="l1", data_info=info)
    assert task.head.out_proj.out_features == 2 and task.report_units == ["meV", ""]
    batch = tiny_batch()
    batch.y[0, 1] = float("nan")
    task.eval()
    with torch.no_grad():
        raw = task.head(task.encode(batch))
        pred = task(batch)
        mean, std = torch.tensor(info["target_mean"]), torch.tensor(info["target_std"])
        torch.testing.assert_close(pred, raw * std + mean)
        z = (batch.y - mean) / std
        known = torch.isfinite(z)
        expected = (raw - z).abs()[known].mean()
        torch.testing.assert_close(task._loss(*task._standardised(batch)), expected)

    metrics = trainer(tmp_path).validate(task, datamodule=dm, verbose=False)[0]
    dm.setup()
    vb = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        p = task(vb)
    assert metrics["val/mae_gap_meV"] == pytest.approx(1000 * float((p[:, 0] - vb.y[:, 0]).abs().mean()), rel=1e-4)
    assert metrics["val/mae_logp"] == pytest.approx(float((p[:, 1] - vb.y[:, 1]).abs().mean()), rel=1e-4)


def test_regression_without_units_does_not_scale(tmp_path):
    info = {"target_names": ["y"], "target_mean": [1.0], "target_std": [2.0]}
    task = Regression(small_encoder(), data_info=info)
    assert task.report_units == [""] and task.report_scale.tolist() == [1.0]


def test_affinity_metrics_known_answers(tmp_path):
    sd = FitResidualStd()
    p = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    y = torch.tensor([3.1, 4.9, 7.2, 8.8, 11.1])
    sd.update(p, y)
    slope, intercept = np.polyfit(p.numpy(), y.numpy(), 1)
    residual = y.numpy() - (slope * p.numpy() + intercept)
    assert float(sd.compute()) == pytest.approx(math.sqrt((residual**2).sum() / 4), rel=1e-5)
    exact = FitResidualStd()
    exact.update(p, 2 * p + 1)
    assert float(exact.compute()) == pytest.approx(0.0, abs=1e-6)

    torch.manual_seed(0)
    dm = TinyMolecules()
    task = Affinity(small_encoder(), data_info=describe_data(dm))
    metrics = trainer(tmp_path).validate(task, datamodule=dm, verbose=False)[0]
    assert {"val/rmse", "val/mae", "val/pearson", "val/sd"} <= set(metrics)
    assert metrics["val/rmse"] >= metrics["val/mae"] > 0


def test_warmup_linear_decay():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupLinearDecay(opt, warmup_steps=4, total_steps=14, end_lr=1e-9)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert lrs[9] == pytest.approx(0.5, abs=1e-6)
    assert lrs[14] == pytest.approx(1e-9) and lrs[15] == pytest.approx(1e-9)


# ----------------------------------------------------------- checkpoints and fine-tuning
def _fit_and_checkpoint(task, dm, tmp_path, steps=3):
    t = trainer(tmp_path, max_steps=steps, limit_val_batches=0)
    t.fit(task, datamodule=dm)
    path = tmp_path / f"{task.task_name}.ckpt"
    t.save_checkpoint(path)
    return path


@pytest.mark.parametrize("task_name", ["pretraining", "regression"])
def test_load_bundle_reproduces_task_predictions(task_name, tmp_path):
    torch.manual_seed(0)
    dm = TinyMolecules()
    info = describe_data(dm)
    if task_name == "pretraining":
        task = Pretraining(small_encoder(), denoising_head=DenoisingHead, data_info=info)
    else:
        task = Regression(small_encoder(), head=lambda c, t: GraphRegressionHead(c, t, readout="mean"), data_info=info)
    path = _fit_and_checkpoint(task, dm, tmp_path)
    checkpoint = torch.load(path, weights_only=True)  # plain data only
    assert checkpoint["tmzoo"]["task"] == task_name
    bundle = load_bundle(path)
    batch = tiny_batch(6)
    task.eval()
    with torch.no_grad():
        for mode in (Mode.BOTH, Mode.ONLY_2D):
            modes = torch.full((6,), int(mode))
            torch.testing.assert_close(bundle.predict(batch, modes), task(batch, mode), rtol=1e-5, atol=1e-6)


def test_pretrained_weights_load_into_regression_and_change_validation(tmp_path):
    torch.manual_seed(0)
    dm = TinyMolecules()
    info = describe_data(dm)
    pre = Pretraining(small_encoder(), denoising_head=DenoisingHead, data_info=info)
    path = _fit_and_checkpoint(pre, dm, tmp_path, steps=6)

    def val_loss(pretrained):
        torch.manual_seed(1)  # the same fresh head in both
        task = Regression(small_encoder(), data_info=info, pretrained=pretrained)
        return task, trainer(tmp_path).validate(task, datamodule=dm, verbose=False)[0]["val/loss"]

    tuned, loss_pre = val_loss(str(path))
    _, loss_fresh = val_loss(None)
    for key, value in pre.encoder.state_dict().items():
        torch.testing.assert_close(tuned.encoder.state_dict()[key], value)
    assert loss_pre != pytest.approx(loss_fresh, rel=1e-3)

    frozen = Regression(small_encoder(), data_info=info, pretrained=str(path), freeze_encoder=True)
    assert not any(p.requires_grad for p in frozen.encoder.parameters())
    assert all(p.requires_grad for p in frozen.head.parameters())


def test_pretrained_shape_mismatch_names_the_tensor(tmp_path):
    torch.manual_seed(0)
    dm = TinyMolecules()
    path = _fit_and_checkpoint(Pretraining(small_encoder(), data_info=describe_data(dm)), dm, tmp_path, steps=1)
    with pytest.raises(ValueError, match=r"tensor encoder\.\S+ has shape"):
        load_pretrained_encoder(small_encoder(embed_dim=16, ffn_dim=16), path)
    with pytest.raises(ValueError, match="missing"):
        load_pretrained_encoder(small_encoder(num_layers=3), path)


# ------------------------------------------------------------------------------ baselines
@pytest.mark.parametrize("encoder", [GINVirtualNode(num_layers=2, embed_dim=16), SchNetEncoder(16, 16, 2, 10, 5.0)])
def test_baselines_return_graph_token_and_mask(encoder):
    batch = tiny_batch(5)
    out = encoder.eval()(batch)
    n_max = int(torch.bincount(batch.batch).max())
    assert out.tokens.shape == (5, n_max + 1, 16) and out.atom_mask.shape == (5, n_max)
    assert out.atom_mask.sum() == batch.num_nodes
    graph = out.graph
    # a rotation of the coordinates does not change the graph state
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))
    rotated = batch.clone()
    rotated.pos = batch.pos @ q.T
    torch.testing.assert_close(encoder(rotated).graph, graph, rtol=1e-4, atol=1e-4)
    assert encoder.config["embed_dim"] == 16


# ------------------------------------------------------------------------ mixed precision
def test_gaussian_basis_stays_fp32_under_bf16_autocast():
    basis = GaussianPairBasis(num_kernels=8)
    dist = torch.rand(2, 5, 5)
    pair_type = torch.randint(1, 100, (2, 5, 5, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16  # autocast is on
        assert basis(dist.bfloat16(), pair_type).dtype == torch.float32


def test_bf16_mixed_training_has_no_nans_on_the_demo_data(tmp_path):
    from pathlib import Path

    from tmzoo.cli.lightning import run_lightning_cli

    root = Path(__file__).resolve().parents[1]
    cli = run_lightning_cli([
        "fit", "--config", str(root / "experiments/transformer_m_small.yaml"),
        "--config", str(root / "datamodules/qm9_demo.yaml"), "--trainer.precision=bf16-mixed",
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=8", "--trainer.limit_val_batches=2",
        "--trainer.log_every_n_steps=1", "--data.init_args.batch_size=8", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ])
    assert cli.trainer.precision == "bf16-mixed"
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())
    metrics = cli.trainer.callback_metrics
    assert {"train/loss", "train/denoise", "val/mae", "val/mae_2d3d"} <= set(metrics)
    assert all(math.isfinite(float(v)) for v in metrics.values())


def test_released_checkpoint_loads_into_a_fine_tuning_task():
    from pathlib import Path

    from tmzoo.tasks import read_encoder_state

    released = Path(__file__).parent / "fixtures" / "parity" / "golden_shared_official_format.pt"
    state, spec = read_encoder_state(released)
    args = spec["modules"]["encoder"]["init_args"]
    task = Regression(TransformerM(**args), pretrained=str(released), data_info={"target_names": ["homo", "lumo"]})
    for key, value in state.items():
        torch.testing.assert_close(task.encoder.state_dict()[key], value)
    assert task.head.out_proj.out_features == 2  # a fresh head sized by the data
    with pytest.raises(ValueError, match=r"tensor encoder\.\S+ has shape"):
        Regression(TransformerM(**{**args, "num_kernels": args["num_kernels"] * 2}), pretrained=str(released))


def test_regression_statistics_come_from_the_checkpoint():
    """Predicting a users' file (no statistics) with a fine-tuned checkpoint keeps its train mean/std."""
    from tmzoo.models import TransformerM
    from tmzoo.tasks import Regression

    def small():
        return TransformerM(num_layers=1, embed_dim=16, ffn_dim=16, num_heads=2, num_kernels=4)

    trained = Regression(small(), data_info={"target_names": ["gap"], "target_mean": [5.0], "target_std": [2.0]})
    checkpoint = {"state_dict": trained.state_dict()}
    trained.on_save_checkpoint(checkpoint)
    fresh = Regression(small(), data_info={"target_names": ["y"], "target_mean": [0.0], "target_std": [1.0]})
    fresh.load_state_dict(checkpoint["state_dict"])
    fresh.on_load_checkpoint(checkpoint)
    assert fresh.target_mean.tolist() == [5.0] and fresh.target_std.tolist() == [2.0]


def test_3d_only_encoder_is_refused_before_training_on_2d_validation(tmp_path):
    """PCQM4Mv2's valid split has no coordinates: a 3D-only model would fail (monitor missing) only at
    its first validation, possibly thousands of steps in; it is refused at the start instead."""
    import lightning as L

    from tmzoo.datamodules import PCQM4Mv2DataModule
    from tmzoo.models import GapHead, TransformerM
    from tmzoo.tasks import Pretraining

    data = PCQM4Mv2DataModule(cache_dir=str(tmp_path / "cache"), batch_size=8)
    encoder = TransformerM(num_layers=1, embed_dim=8, ffn_dim=8, num_heads=2, num_kernels=4, use_2d=False,
                           mode_probs=[0.0, 0.0, 1.0])
    task = Pretraining(encoder, gap_head=GapHead)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="no 2D channel"):
        trainer.fit(task, datamodule=data)
