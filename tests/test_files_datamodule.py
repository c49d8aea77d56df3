"""The users'-files datamodule streams every record, in input order, failures as rows."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import torch

from tmzoo.datamodules.files import FilesDataModule
from tmzoo.models import Mode


def chunks(dm):
    dm.setup("predict")
    return list(dm.predict_dataloader())


def molecules(chunk):
    """The chunk's model batches as one PyG-like view: ``idx``, ``mode``, ``has_pos`` in input order."""
    order = chunk.order.argsort()
    return SimpleNamespace(**{key: torch.cat([getattr(b, key).view(-1) for b in chunk.batches])[order]
                              for key in ("idx", "mode", "has_pos")}, num_graphs=chunk.num_graphs)


def test_smiles_file_with_bad_records(tmp_path):
    smi = tmp_path / "in.smi"
    smi.write_text("CCO a\nxx b\nc1ccccc1 c\n")
    batches = chunks(FilesDataModule(str(smi), batch_size=2, chunk_size=2))
    assert [row for b in batches for row in b.rows] == [
        (0, "a", "CCO", "2d", ""),
        (1, "b", "xx", "", "RDKit cannot parse SMILES 'xx'"),
        (2, "c", "c1ccccc1", "2d", ""),
    ]
    assert [b.num_graphs for b in batches] == [1, 1]
    assert molecules(batches[0]).idx.tolist() == [0] and molecules(batches[1]).idx.tolist() == [2]
    assert molecules(batches[0]).mode.tolist() == [int(Mode.ONLY_2D)]
    assert not (tmp_path / "in.smi.failures.csv").exists()  # failures are rows of the predictions


def test_conformers_enable_3d(tmp_path):
    smi = tmp_path / "in.smi"
    smi.write_text("CCO\nCC(=O)O\n")
    (chunk,) = chunks(FilesDataModule(str(smi), mode="2d3d", conformers=True))
    batch = molecules(chunk)
    assert batch.has_pos.all() and batch.mode.tolist() == [int(Mode.BOTH)] * 2


def test_sdf_keeps_coordinates(parity_dir):
    dm = FilesDataModule(str(parity_dir / "golden_shared.sdf"))
    (chunk,) = chunks(dm)
    batch = molecules(chunk)
    assert batch.num_graphs == 6 and dm.has_coordinates
    assert batch.mode.tolist() == [int(Mode.BOTH)] * 6


def test_several_workers_keep_input_order(tmp_path):
    smi = tmp_path / "in.smi"
    lines = [("C" * (i % 7 + 1) if i % 5 else "C1CC") + f" m{i}" for i in range(23)]
    smi.write_text("\n".join(lines) + "\n")
    alone = [row for b in chunks(FilesDataModule(str(smi), batch_size=3, chunk_size=3)) for row in b.rows]
    parallel = chunks(FilesDataModule(str(smi), batch_size=3, chunk_size=3, num_workers=2))
    assert [row for b in parallel for row in b.rows] == alone
    assert [row[0] for row in alone] == list(range(23))
    assert [molecules(b).idx.tolist() for b in parallel][:2] == [[1, 2], [3, 4]]  # record 0 failed (ring not closed)


def test_tmzoo_predict_writes_the_infer_schema(tmp_path, parity_dir):
    """``tmzoo predict`` over a users' file writes the file ``tmzoo infer`` writes (same checkpoint)."""
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
    run_inference(ckpt, smi, tmp_path / "infer.csv", progress=False, workers=0, precision="32-true")
    with open(out, newline="") as handle:
        predicted = list(csv.DictReader(handle))
    with open(tmp_path / "infer.csv", newline="") as handle:
        inferred = list(csv.DictReader(handle))
    assert list(predicted[0]) == ["index", "name", "smiles", "mode", "prediction", "error"]
    assert [r["index"] for r in predicted] == ["0", "1", "2"] and "parse" in predicted[1]["error"]
    for ours, theirs in zip(predicted, inferred, strict=True):
        assert {k: v for k, v in ours.items() if k != "prediction"} == {k: v for k, v in theirs.items() if k != "prediction"}
        assert (ours["prediction"] == theirs["prediction"] == "") or abs(float(ours["prediction"]) - float(theirs["prediction"])) < 1e-5
