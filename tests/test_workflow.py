"""A researcher's own workflows: fine-tune a checkpoint on your own CSV, test it, rebuild it
from its checkpoint; the featurisation and evaluation mode recorded; schedules and units."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch

from test_tasks_tinydata import TinyMolecules, tiny_records, write_properties_csv
from tmzoo.checkpoints import load_bundle
from tmzoo.cli.lightning import run_lightning_cli
from tmzoo.models import Mode, TransformerM
from tmzoo.tasks import Pretraining, Regression, WarmupLinearDecay, describe_data

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "checkpoints" / "tiny_pretraining.ckpt"
RELEASED = ROOT / "tests" / "fixtures" / "parity" / "golden_shared_official_format.pt"
OWN_DATA = str(ROOT / "experiments" / "finetune" / "own_data.yaml")


def quick_trainer(tmp_path, **kw) -> L.Trainer:
    args = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                default_root_dir=tmp_path, enable_checkpointing=False, limit_val_batches=0, max_steps=2)
    return L.Trainer(**{**args, **kw})


# ------------------------------------------------------------- checkpoints rebuild themselves
def test_committed_checkpoint_keeps_loading():
    """A tmzoo checkpoint written by this version (format drift guard)."""
    checkpoint = torch.load(FIXTURE, weights_only=True)
    assert checkpoint["tmzoo"]["featurization"] == {"max_hops": 5, "reference_compatible": False, "hydrogens": False}
    assert checkpoint["tmzoo"]["eval_mode"] == "2d"
    assert "_instantiator" not in checkpoint["hyper_parameters"]
    task = Pretraining.load_from_checkpoint(FIXTURE)
    bundle = load_bundle(FIXTURE)
    from torch_geometric.data import Batch

    batch = Batch.from_data_list(list(tiny_records())[:4])
    task.eval()
    with torch.no_grad():
        expected = task(batch, Mode.ONLY_2D)
        got = bundle.predict(batch, torch.full((4,), int(Mode.ONLY_2D)))
    assert torch.isfinite(expected).all()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_fine_tuned_task_loads_after_the_pretraining_file_is_gone(tmp_path):
    pretrained = tmp_path / "pretrained.ckpt"
    shutil.copyfile(FIXTURE, pretrained)
    torch.manual_seed(0)
    dm = TinyMolecules(num_targets=2)
    task = Regression(pretrained=str(pretrained), encoder_args={"dropout": 0.1}, eval_mode="3d",
                      data_info=describe_data(dm))
    assert task.encoder.config["num_layers"] == 2 and task.encoder.config["dropout"] == 0.1  # the file's shape
    trainer = quick_trainer(tmp_path)
    trainer.fit(task, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "ft.ckpt")
    pretrained.unlink()
    loaded = Regression.load_from_checkpoint(tmp_path / "ft.ckpt")
    assert loaded.state_dict().keys() == task.state_dict().keys()
    for key, value in task.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    assert loaded.eval_mode == Mode.ONLY_3D and loaded.target_names == ["gap", "logp"]
    spec = torch.load(tmp_path / "ft.ckpt", weights_only=True)["tmzoo"]
    assert spec["eval_mode"] == "3d" and spec["featurization"]["hydrogens"] is False


def test_encoder_shape_mismatch_names_the_settings():
    encoder = TransformerM(num_layers=3, embed_dim=16, ffn_dim=16, num_heads=2, num_kernels=4)
    with pytest.raises(ValueError, match=r"checkpoint: 2 layers × 8 .*config: 3 × 16 .*num_layers=3"):
        Regression(encoder, pretrained=str(FIXTURE))


def test_qm9_keeps_hydrogens_in_the_recorded_featurisation():
    from tmzoo.datamodules.qm9 import QM9DataModule
    from tmzoo.tasks.data_info import keeps_hydrogens

    assert keeps_hydrogens(object.__new__(QM9DataModule)) is True
    assert keeps_hydrogens(TinyMolecules()) is False


def test_released_file_switches_the_data_featurisation_in_one_place(tmp_path):
    """Fine-tuning from a released file: no featurisation flag, no mismatch warning."""
    args = ["--config", OWN_DATA, "--data.path", write_properties_csv(tmp_path / "p.csv"), "--data.targets", "[gap]",
            "--model.init_args.pretrained", str(RELEASED), f"--trainer.default_root_dir={tmp_path}"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = run_lightning_cli(args, run=False)
    assert cli.datamodule.featurization["reference_compatible"] is True
    assert cli.model.data_info["featurization"]["reference_compatible"] is True
    assert not [w for w in caught if "featurization" in str(w.message)]


# --------------------------------------------------------------------- your own labelled file
def test_fine_tune_on_a_csv_then_test_writes_per_molecule_predictions(tmp_path):
    pretrained = tmp_path / "demo.ckpt"
    shutil.copyfile(FIXTURE, pretrained)
    props = write_properties_csv(tmp_path / "props.csv")
    common = ["--data.path", props, "--data.targets", "[gap, logp]", f"--trainer.default_root_dir={tmp_path}"]
    fit = run_lightning_cli(["fit", "--config", OWN_DATA, *common, "--model.init_args.pretrained", str(pretrained),
                             "--trainer.max_steps=2", "--trainer.enable_progress_bar=false"])
    log_dir = Path(fit.trainer.log_dir)
    split = json.loads((log_dir / "split.json").read_text())
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(16)) and split["split_kind"] == "scaffold"
    assert fit.model.target_mean.tolist() == pytest.approx(fit.datamodule.target_mean)
    last = log_dir / "checkpoints" / "last.ckpt"
    pretrained.unlink()  # the fine-tuned checkpoint holds the weights
    test = run_lightning_cli(["test", "--config", OWN_DATA, *common, f"--ckpt_path={last}",
                              "--trainer.enable_progress_bar=false"])
    metrics = test.trainer.callback_metrics
    assert {"test/mae_gap", "test/mae_logp", "test/mae_standardised"} <= set(metrics)
    rows = list(csv.DictReader(open(Path(test.trainer.log_dir) / "test_predictions.csv")))
    assert [int(r["index"]) for r in rows] == split["test"]
    assert set(rows[0]) == {"index", "gap", "logp", "prediction_gap", "prediction_logp"}
    mae = sum(abs(float(r["gap"]) - float(r["prediction_gap"])) for r in rows) / len(rows)
    assert float(metrics["test/mae_gap"]) == pytest.approx(mae, rel=1e-4)


def test_splits_are_seeded_and_scaffolds_never_shared(tmp_path):
    from tmzoo.datamodules.properties import PropertiesDataModule

    props = write_properties_csv(tmp_path / "props.csv")

    def split(kind, seed):
        dm = PropertiesDataModule(props, ["gap", "logp"], split=kind, seed=seed)
        dm.setup()
        return dm, {k: dm.record_indices(k).tolist() for k in ("train", "val", "test")}

    dm, scaffold = split("scaffold", 0)
    assert split("scaffold", 0)[1] == scaffold
    by_index = dict(zip(range(16), dm._scaffolds))
    groups = [{by_index[i] for i in scaffold[k]} for k in ("train", "val", "test")]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert split("random", 0)[1] != split("random", 1)[1]
    y = torch.cat([d.y for d in dm.splits["train"] + dm.splits["val"] + dm.splits["test"]])
    assert torch.isnan(y).sum() == 1  # the empty logp label is unknown, not 0


def test_a_bad_label_is_reported_and_the_others_go_on(tmp_path):
    from tmzoo.datamodules.properties import PropertiesDataModule

    path = tmp_path / "bad.csv"
    path.write_text("smiles,y\nCCO,1.0\nCC,abc\nnot_a_smiles,2\nCCC,3\nCCCC,4\nCCN,5\n")
    dm = PropertiesDataModule(str(path), ["y"], split="random")
    dm.setup()
    reasons = {index: error for index, _, error in dm.failures}
    assert set(reasons) == {1, 2} and "not a number" in reasons[1]
    assert sum(len(dm.splits[k]) for k in ("train", "val", "test")) == 4


# ------------------------------------------------------------------------- schedules, units
def test_schedule_lengths_come_from_the_run_and_a_short_run_is_warned():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupLinearDecay(opt, warmup_steps=None, total_steps=None)
    sched.set_run_length(40)
    assert (sched.warmup_steps, sched.total_steps) == (4, 40)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)  # the first step is a warm-up step
    with pytest.warns(UserWarning, match="warm-up lasts 60000"):
        WarmupLinearDecay(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
                          warmup_steps=60000).set_run_length(40)


def test_pure_bf16_is_refused_with_a_clear_message(tmp_path):
    data = tmp_path / "d.yaml"
    data.write_text("data:\n  class_path: test_tasks_tinydata.TinyMolecules\n")
    with pytest.raises(ValueError, match="bf16-mixed"):
        run_lightning_cli(["fit", "--config", str(ROOT / "experiments" / "transformer_m_small.yaml"), "--config",
                           str(data), "--trainer.precision=bf16-true", f"--trainer.default_root_dir={tmp_path}"])


# ------------------------------------------------------------- one featurisation everywhere
@pytest.mark.slow
def test_tmzoo_test_and_infer_agree_on_qm9_test_molecules(tmp_path):
    """QM9 keeps hydrogens and is read in 3D: ``infer`` on the test molecules' SDF records must
    give what ``tmzoo test`` gave through the datamodule (the recorded featurisation and mode)."""
    import gzip

    from tmzoo.cli.infer import main as infer

    common = ["--config", str(ROOT / "experiments" / "finetune" / "qm9.yaml"),
              "--config", str(ROOT / "datamodules" / "qm9_demo.yaml"), "--data.init_args.batch_size=16",
              "--trainer.precision=32-true", "--trainer.devices=1", "--trainer.enable_progress_bar=false",
              f"--trainer.default_root_dir={tmp_path}"]
    fit = run_lightning_cli(["fit", *common, f"--model.init_args.pretrained={FIXTURE}", "--trainer.max_steps=20",
                             "--trainer.limit_val_batches=2"])
    last = Path(fit.trainer.log_dir) / "checkpoints" / "last.ckpt"
    test = run_lightning_cli(["test", *common, f"--ckpt_path={last}", "--trainer.limit_test_batches=3"])
    rows = list(csv.DictReader(open(Path(test.trainer.log_dir) / "test_predictions.csv")))
    assert len(rows) == 48

    blocks = gzip.open(ROOT / "src" / "tmzoo" / "demo_data" / "qm9" / "raw" / "gdb9.sdf.gz", "rt").read().split("$$$$\n")
    sdf = tmp_path / "test_molecules.sdf"
    sdf.write_text("".join(blocks[int(r["index"])] + "$$$$\n" for r in rows))
    assert infer(["--checkpoint", str(last), "--input", str(sdf), "--output", str(tmp_path / "infer.csv"), "--quiet"]) == 0
    inferred = list(csv.DictReader(open(tmp_path / "infer.csv")))
    assert [r["mode"] for r in inferred] == ["3d"] * 48 and not any(r["error"] for r in inferred)
    for through_test, through_infer in zip(rows, inferred):
        assert float(through_infer["prediction"]) == pytest.approx(float(through_test["prediction_gap"]), rel=1e-3, abs=1e-4)
    mae_test = float(test.trainer.callback_metrics["test/mae_gap_meV"]) / 1000
    mae_infer = sum(abs(float(a["prediction"]) - float(b["gap"])) for a, b in zip(inferred, rows)) / 48
    assert mae_infer == pytest.approx(mae_test, rel=0.01)


def test_sdf_properties_train_with_their_coordinates(tmp_path):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from tmzoo.datamodules.properties import PropertiesDataModule

    path = tmp_path / "props.sdf"
    writer = Chem.SDWriter(str(path))
    for i, smiles in enumerate(["CCO", "CCN", "c1ccccc1", "CCCC", "CC(=O)O"]):
        mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
        AllChem.EmbedMolecule(mol, randomSeed=0)
        mol = Chem.RemoveHs(mol)
        mol.SetProp("y", str(1.5 * i))
        writer.write(mol)
    writer.close()
    dm = PropertiesDataModule(str(path), ["y"])
    dm.setup()
    graphs = dm.splits["train"] + dm.splits["val"] + dm.splits["test"]
    assert sorted(float(g.y) for g in graphs) == [0.0, 1.5, 3.0, 4.5, 6.0]
    assert dm.has_coordinates and all(bool(g.has_pos) for g in graphs)
    with pytest.raises(ValueError, match="no record has a value"):
        PropertiesDataModule(str(path), ["absent"]).setup()


def test_a_checkpoint_keeps_its_target_names_on_data_that_has_none():
    """``tmzoo predict`` on a users' file: the columns are the model's targets, not ``y``."""
    def small():
        return TransformerM(num_layers=1, embed_dim=16, ffn_dim=16, num_heads=2, num_kernels=4)

    trained = Regression(small(), data_info={"target_names": ["gap"], "target_units": ["eV"],
                                             "target_mean": [5.0], "target_std": [2.0]})
    checkpoint = {"state_dict": trained.state_dict()}
    trained.on_save_checkpoint(checkpoint)
    fresh = Regression(small(), data_info={"target_names": ["y"]})
    fresh.load_state_dict(checkpoint["state_dict"])
    fresh.on_load_checkpoint(checkpoint)
    assert fresh.target_names == ["gap"] and fresh.metric_names == ["gap_meV"]
