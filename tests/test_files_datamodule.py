"""The users'-files datamodule featurises every record it can and lists the others."""

from __future__ import annotations

import csv

from tmzoo.datamodules.files import FilesDataModule
from tmzoo.models import Mode


def test_smiles_file_with_bad_records(tmp_path):
    smi = tmp_path / "in.smi"
    smi.write_text("CCO a\nxx b\nc1ccccc1 c\n")
    dm = FilesDataModule(str(smi), batch_size=2)
    dm.setup("predict")
    graphs = dm.splits["predict"]
    assert [int(g.idx) for g in graphs] == [0, 2]
    assert all(int(g.mode) == Mode.ONLY_2D for g in graphs)
    with open(dm.failures_csv) as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"index": "1", "name": "b", "error": "RDKit cannot parse SMILES 'xx'"}]
    batch = next(iter(dm.predict_dataloader()))
    assert batch.num_graphs == 2 and batch.mode.tolist() == [1, 1]


def test_conformers_enable_3d(tmp_path):
    smi = tmp_path / "in.smi"
    smi.write_text("CCO\nCC(=O)O\n")
    dm = FilesDataModule(str(smi), mode="2d3d", conformers=True)
    dm.setup("predict")
    assert all(bool(g.has_pos) and int(g.mode) == Mode.BOTH for g in dm.splits["predict"])


def test_sdf_keeps_coordinates(parity_dir):
    dm = FilesDataModule(str(parity_dir / "golden_shared.sdf"))
    dm.setup("predict")
    assert len(dm.splits["predict"]) == 6 and dm.has_coordinates
    assert all(int(g.mode) == Mode.BOTH for g in dm.splits["predict"])


def test_tmzoo_predict_writes_one_row_per_featurised_record(tmp_path, parity_dir):
    """``tmzoo predict`` over a users' file agrees with ``tmzoo infer`` (same checkpoint)."""
    from tmzoo.checkpoints import convert_checkpoint
    from tmzoo.cli.infer import run_inference
    from tmzoo.cli.lightning import run_lightning_cli

    ckpt = tmp_path / "model.ckpt"
    convert_checkpoint(parity_dir / "golden_shared_official_format.pt", ckpt)
    smi = tmp_path / "in.smi"
    smi.write_text("CCO\nbad((\nc1ccccc1O\n")
    out = tmp_path / "predict.csv"
    run_lightning_cli([
        "predict",
        "--model", "tmzoo.tasks.Pretraining",
        "--model.encoder", "tmzoo.models.TransformerM",
        "--model.encoder.num_layers", "2", "--model.encoder.embed_dim", "32", "--model.encoder.ffn_dim", "48",
        "--model.encoder.num_heads", "4", "--model.encoder.num_kernels", "16",
        "--model.encoder.reference_compatible", "true",
        "--model.gap_head", "tmzoo.models.GapHead",
        "--model.denoising_head", "tmzoo.models.DenoisingHead",
        "--data", "tmzoo.datamodules.FilesDataModule", "--data.path", str(smi),
        "--data.reference_compatible", "true",
        "--ckpt_path", str(ckpt),
        "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "false",
        "--trainer.callbacks+=tmzoo.tasks.PredictionWriter", f"--trainer.callbacks.output={out}",
    ])
    with open(out) as handle:
        rows = list(csv.reader(handle))
    run_inference(ckpt, smi, tmp_path / "infer.csv", progress=False)
    with open(tmp_path / "infer.csv") as handle:
        inferred = {r["index"]: float(r["prediction"]) for r in csv.DictReader(handle) if r["prediction"]}
    assert [r[0] for r in rows[1:]] == ["0", "2"]
    for index, value in rows[1:]:
        assert abs(float(value) - inferred[index]) < 1e-5
