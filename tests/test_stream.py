"""Streaming prediction (``tmzoo infer`` and ``tmzoo predict``): rows written as chunks complete,
input order with several workers, ``--resume`` after a kill, damaged inputs, the output/input
guard and the checkpoint's recorded featurisation (hydrogens, evaluation mode)."""

from __future__ import annotations

import csv
import gzip
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from rdkit import Chem
from rdkit.Chem import AllChem
from torch_geometric.data import Batch

from conftest import tiny_pretraining_bundle
from tmzoo.checkpoints import load_bundle, save_bundle
from tmzoo.checkpoints.bundle import module_spec
from tmzoo.cli.infer import run_inference
from tmzoo.cli.main import main
from tmzoo.data import stream
from tmzoo.data.stream import RecordStream
from tmzoo.datamodules.files import FilesDataModule
from tmzoo.io import featurize
from tmzoo.io.featurize import RecordFeaturizer, record_mode
from tmzoo.io.records import Record
from tmzoo.models import GraphRegressionHead, TransformerM
from tmzoo.tasks.writer import PredictionWriter, partial_path, progress_total


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (see conftest)."""


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def smiles_file(path, count: int, bad=lambda i: i % 7 == 3):
    """``count`` records, the ``bad`` ones unparsable (an unclosed ring)."""
    lines = [("C1CC" if bad(i) else "C" * (i % 5 + 1) + "O") + f" mol{i}" for i in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- streaming
class _Probe(Callback):
    """After each batch: rows in the partial file, records read so far."""

    def __init__(self, partial, read):
        self.partial, self.read, self.seen = partial, read, []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        with open(self.partial) as handle:
            rows = sum(1 for _ in handle) - 1
        self.seen.append((batch_idx, rows, len(self.read)))


def test_rows_are_written_while_the_input_is_still_being_read(ckpt, tmp_path, monkeypatch):
    """Memory stays bounded: the input is read a few chunks ahead of the rows written, never whole."""
    chunk, count = 25, 1500
    smi = smiles_file(tmp_path / "big.smi", count, bad=lambda i: False)
    records_read, real = [], stream.read_records

    def counting(path, **kwargs):
        for record in real(path, **kwargs):
            records_read.append(record.index)
            yield record

    monkeypatch.setattr(stream, "read_records", counting)
    out = tmp_path / "out.csv"
    data = FilesDataModule(str(smi), batch_size=chunk, chunk_size=chunk)
    writer = PredictionWriter(str(out))
    probe = _Probe(partial_path(out), records_read)
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[writer, probe], enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    trainer.predict(load_bundle(ckpt).model, datamodule=data, return_predictions=False)
    assert len(probe.seen) == count // chunk
    for batch_idx, rows, records_read in probe.seen:
        assert rows == (batch_idx + 1) * chunk  # written as soon as the chunk is predicted
        assert records_read <= (batch_idx + 3) * chunk  # read at most two chunks ahead
    assert [int(r["index"]) for r in read(out)] == list(range(count))
    assert not partial_path(out).exists()


def test_several_workers_write_the_same_file_as_one_process(ckpt, tmp_path):
    smi = smiles_file(tmp_path / "in.smi", 40, bad=lambda i: i in (3, 4, 5) or i % 11 == 0)  # chunk 1 all bad
    outputs = []
    for workers in ("0", "2"):
        out = tmp_path / f"out{workers}.csv"
        assert main(["infer", "--checkpoint", ckpt, "--input", str(smi), "--output", str(out), "--quiet",
                     "--batch-size", "3", "--workers", workers]) == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    rows = read(tmp_path / "out2.csv")
    assert [int(r["index"]) for r in rows] == list(range(40))
    assert [r["name"] for r in rows] == [f"mol{i}" for i in range(40)]
    assert all(bool(r["error"]) == (i in (3, 4, 5) or i % 11 == 0) for i, r in enumerate(rows))


# ---------------------------------------------------------------- resume
class _Killed(BaseException):
    """Stands for SIGKILL: not an error a record can have."""


def test_resume_continues_a_killed_run_without_recomputing(ckpt, tmp_path, monkeypatch):
    smi = smiles_file(tmp_path / "in.smi", 40)
    reference = tmp_path / "reference.csv"
    run_inference(ckpt, smi, reference, batch_size=4, chunk_size=4, workers=0, progress=False)

    real = featurize.featurize_record

    def dies_at_25(record, *args, **kwargs):
        if record.index == 25:
            raise _Killed
        return real(record, *args, **kwargs)

    out = tmp_path / "out.csv"
    monkeypatch.setattr(featurize, "featurize_record", dies_at_25)
    with pytest.raises(_Killed):
        run_inference(ckpt, smi, out, batch_size=4, chunk_size=4, workers=0, progress=False)
    partial = partial_path(out)
    assert not out.exists() and partial.exists()
    with open(partial, "a") as handle:  # the kill cut a row in half
        handle.write('24,mol24,"CCCCC')

    featurised = []

    def counting(record, *args, **kwargs):
        featurised.append(record.index)
        return real(record, *args, **kwargs)

    monkeypatch.setattr(featurize, "featurize_record", counting)
    summary = run_inference(ckpt, smi, out, batch_size=4, chunk_size=4, workers=0, progress=False, resume=True)
    kept = summary["resumed_at"]
    assert 0 < kept <= 24 and kept % 4 == 0
    assert featurised == list(range(kept, 40))  # the finished part is not recomputed
    assert out.read_bytes() == reference.read_bytes()
    assert summary["records"] == 40 and summary["failed"] == sum(1 for r in read(reference) if r["error"])
    assert not partial.exists()


def test_resume_without_partial_starts_over_and_refuses_a_foreign_partial(ckpt, tmp_path, capsys):
    smi = smiles_file(tmp_path / "in.smi", 5)
    out = tmp_path / "out.csv"
    args = ["infer", "--checkpoint", ckpt, "--input", str(smi), "--output", str(out), "--quiet", "--workers", "0"]
    assert main([*args, "--resume"]) == 0 and len(read(out)) == 5
    assert "starting from the first record" in capsys.readouterr().err
    partial_path(out).write_text("index,value\n0,1.0\n")
    assert main([*args, "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err


# ---------------------------------------------------------------- inputs and outputs
def _sdf(count: int) -> str:
    blocks = []
    for i in range(count):
        mol = Chem.AddHs(Chem.MolFromSmiles("C" * (i % 4 + 1) + "O"))
        AllChem.EmbedMolecule(mol, randomSeed=i)
        mol = Chem.RemoveHs(mol)
        mol.SetProp("_Name", f"mol{i}")
        blocks.append(Chem.MolToMolBlock(mol) + "$$$$\n")
    return "".join(blocks)


@pytest.mark.parametrize(("kind", "workers"), [("sdf", "0"), ("sdf", "2"), ("smi", "2"), ("csv", "0")])
def test_damaged_gzip_keeps_the_rows_read_and_exits_non_zero(ckpt, tmp_path, capsys, kind, workers):
    count = 30 if kind == "sdf" else 3000
    text = {
        "sdf": lambda: _sdf(count),
        "smi": lambda: "".join(f"{'C' * (i % 9 + 1)}O mol{i}\n" for i in range(count)),
        "csv": lambda: "name,smiles\n" + "".join(f"mol{i},{'C' * (i % 9 + 1)}O\n" for i in range(count)),
    }[kind]()
    packed = gzip.compress(text.encode())
    source = tmp_path / f"in.{kind}.gz"
    source.write_bytes(packed[: len(packed) * 6 // 10])
    out = tmp_path / "out.csv"
    rc = main(["infer", "--checkpoint", ckpt, "--input", str(source), "--output", str(out), "--quiet",
               "--batch-size", "4", "--workers", workers])
    assert rc == 1
    err = capsys.readouterr().err
    assert "truncated or corrupt" in err and "records read before the damage" in err
    rows = read(out)
    assert 0 < len(rows) < count
    assert [r["name"] for r in rows] == [f"mol{i}" for i in range(len(rows))]
    assert all(r["prediction"] and r["mode"] == ("2d3d" if kind == "sdf" else "2d") for r in rows)
    assert not partial_path(out).exists()


def test_output_that_is_the_input_is_refused(ckpt, tmp_path, capsys):
    smi = smiles_file(tmp_path / "in.smi", 3)
    before = smi.read_bytes()
    link = tmp_path / "link.csv"
    link.symlink_to(smi)
    for output in (smi, link):
        assert main(["infer", "--checkpoint", ckpt, "--input", str(smi), "--output", str(output), "--quiet"]) == 2
        assert "is the input file" in capsys.readouterr().err
    assert smi.read_bytes() == before


def test_symlinked_output_is_written_through(ckpt, tmp_path):
    smi = smiles_file(tmp_path / "in.smi", 3)
    target = tmp_path / "results" / "preds.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "preds.csv"
    link.symlink_to(target)
    assert main(["infer", "--checkpoint", ckpt, "--input", str(smi), "--output", str(link), "--quiet"]) == 0
    assert link.is_symlink() and len(read(target)) == 3


def test_record_count_for_the_progress_bar(tmp_path):
    (tmp_path / "a.smi").write_text("CCO a\nCC b\nC c")
    (tmp_path / "b.csv").write_text("smiles,name\nCCO,a\nCC,b\n")
    (tmp_path / "c.sdf.gz").write_bytes(gzip.compress(_sdf(3).encode()))
    assert [progress_total(tmp_path / n) for n in ("a.smi", "b.csv", "c.sdf.gz")] == [3, 2, 3]
    assert progress_total(tmp_path / "missing.smi") is None


# ---------------------------------------------------------------- targets
def test_multi_target_columns_keep_the_target_names(tmp_path):
    torch.manual_seed(0)
    encoder = TransformerM(num_layers=1, embed_dim=8, ffn_dim=8, num_heads=2, num_kernels=4)
    head = GraphRegressionHead(8, num_targets=2)
    spec = {"format": 1, "task": "regression", "modules": {"encoder": module_spec(encoder), "head": module_spec(head)},
            "featurization": {"max_hops": 5, "reference_compatible": False}, "targets": ["mu", "alpha"],
            "target_mean": [1.0, 2.0], "target_std": [0.5, 3.0]}
    state = {**{f"encoder.{k}": v for k, v in encoder.state_dict().items()},
             **{f"head.{k}": v for k, v in head.state_dict().items()}}
    save_bundle(spec, state, tmp_path / "reg.ckpt")
    smi = smiles_file(tmp_path / "in.smi", 4)
    out = tmp_path / "out.csv"
    assert main(["infer", "--checkpoint", str(tmp_path / "reg.ckpt"), "--input", str(smi), "--output", str(out),
                 "--quiet"]) == 0
    rows = read(out)
    assert list(rows[0]) == ["index", "name", "smiles", "mode", "prediction", "prediction_mu", "prediction_alpha", "error"]
    assert rows[3]["error"] and rows[3]["prediction_alpha"] == ""
    assert all(r["prediction"] == r["prediction_mu"] and r["prediction_alpha"] for r in rows if not r["error"])
    # for `tmzoo predict --data.checkpoint`: the task is sized and named from the checkpoint, not `y`
    assert FilesDataModule(str(smi), checkpoint=str(tmp_path / "reg.ckpt")).target_names == ["mu", "alpha"]


# ---------------------------------------------------------------- recorded featurisation
def _with_hydrogens_and_conformer(smiles: str) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    return mol


def test_hydrogens_policy():
    ethanol = Chem.MolFromSmiles("CCO")
    sdf_with_h = _with_hydrogens_and_conformer("CCO")
    sdf_heavy = Chem.RemoveHs(sdf_with_h)
    with_h, without_h = RecordFeaturizer(hydrogens=True), RecordFeaturizer(hydrogens=False)
    # SMILES: hydrogens added for a model trained with them, none otherwise
    assert with_h(Record(0, "a", ethanol, "CCO")).num_nodes == 9
    assert without_h(Record(0, "a", ethanol, "CCO")).num_nodes == 3
    # SDF with hydrogens: kept with their coordinates, or removed
    kept = with_h(Record(0, "b", sdf_with_h))
    assert kept.num_nodes == 9 and torch.allclose(kept.pos, torch.tensor(sdf_with_h.GetConformer().GetPositions()).float())
    removed = without_h(Record(0, "b", sdf_with_h))
    assert removed.num_nodes == 3 and torch.equal(removed.x, without_h(Record(0, "a", ethanol)).x)
    # SDF of heavy atoms: the missing hydrogens are placed from the heavy atoms' coordinates
    added = with_h(Record(0, "c", sdf_heavy))
    assert added.num_nodes == 9 and bool(added.has_pos)
    c_h = (added.pos[3:] - added.pos[added.edge_index[1][added.edge_index[0] >= 3]]).norm(dim=1)
    assert ((c_h > 0.9) & (c_h < 1.2)).all()  # bond lengths of X-H


def test_checkpoint_featurisation_and_3d_eval_mode_are_applied(tmp_path):
    bundle = SimpleNamespace(featurization={"max_hops": 3, "reference_compatible": True, "hydrogens": True},
                             eval_mode="3d", encoder=SimpleNamespace(use_3d=True))
    smi = tmp_path / "in.smi"
    smi.write_text("CCO a\n")
    data = FilesDataModule(str(smi))
    data.apply_model(bundle)
    featurizer = data.featurizer()
    assert featurizer.transform_args == {"max_hops": 3, "reference_compatible": True}
    assert featurizer.hydrogens and featurizer.eval_mode == "3d"
    (chunk,) = list(data.predict_dataloader())
    assert chunk.num_graphs == 0 and "--conformers" in chunk.rows[0][4]
    conformers = FilesDataModule(str(smi), conformers=True)
    conformers.apply_model(bundle)
    (chunk,) = list(conformers.predict_dataloader())
    assert chunk.rows[0][3] == "3d" and chunk.batches[0].num_nodes == 9
    assert record_mode("auto", has_pos=True, eval_mode="2d").name == "ONLY_2D"
    assert record_mode("auto", has_pos=True, eval_mode=None).name == "BOTH"


def test_infer_applies_a_checkpoint_trained_with_hydrogens_in_3d(tmp_path):
    """A checkpoint recording ``hydrogens: true`` and ``eval_mode: 3d`` (the QM9 recipe): SMILES
    without coordinates get an error naming ``--conformers``; with it, hydrogens are added."""
    torch.manual_seed(0)
    spec, state = tiny_pretraining_bundle()
    spec["featurization"] = {"max_hops": 5, "reference_compatible": False, "hydrogens": True}
    spec["eval_mode"] = "3d"
    save_bundle(spec, state, tmp_path / "h3d.ckpt")
    smi = tmp_path / "in.smi"
    smi.write_text("CCO ethanol\n")
    out = tmp_path / "out.csv"
    args = ["infer", "--checkpoint", str(tmp_path / "h3d.ckpt"), "--input", str(smi), "--output", str(out), "--quiet",
            "--precision", "32-true"]
    assert main(args) == 0
    (row,) = read(out)
    assert not row["prediction"] and "--conformers" in row["error"]
    assert main([*args, "--conformers"]) == 0
    (row,) = read(out)
    assert row["mode"] == "3d"
    bundle = load_bundle(tmp_path / "h3d.ckpt")
    record = Record(0, "ethanol", Chem.MolFromSmiles("CCO"), "CCO")
    predicted = {}
    for hydrogens in (True, False):
        graph = RecordFeaturizer(hydrogens=hydrogens, eval_mode="3d", conformers=True)(record)
        batch = Batch.from_data_list([graph])
        with torch.no_grad():
            predicted[hydrogens] = float(bundle.predict(batch, batch.mode.view(-1))[0, 0])
    assert float(row["prediction"]) == pytest.approx(predicted[True], abs=1e-6)
    assert abs(predicted[True] - predicted[False]) > 1e-6  # the hydrogens made a difference


def test_ranks_share_the_chunks_without_overlap(tmp_path):
    """Under DDP each rank streams every other chunk; together they hold every record once."""
    smi = smiles_file(tmp_path / "in.smi", 23)
    featurizer = RecordFeaturizer()
    ranks = [[row[0] for chunk in RecordStream(smi, featurizer, 3, start=0, rank=r, world_size=2) for row in chunk.rows]
             for r in range(2)]
    assert ranks[0][:6] == [0, 1, 2, 6, 7, 8] and ranks[1][:6] == [3, 4, 5, 9, 10, 11]
    assert sorted(ranks[0] + ranks[1]) == list(range(23))
    resumed = [row[0] for chunk in RecordStream(smi, featurizer, 3, start=12) for row in chunk.rows]
    assert resumed == list(range(12, 23))


@pytest.mark.parametrize(
    "count, chunk, start, world", [(23, 3, 0, 1), (23, 3, 12, 1), (23, 3, 0, 2), (24, 4, 8, 3), (5, 8, 0, 2), (6, 3, 6, 1)]
)
def test_a_counted_stream_has_the_length_of_its_chunks(tmp_path, count, chunk, start, world):
    """With the record count known the stream's length is the number of chunks each rank yields
    (Lightning then does not wait for a second chunk before predicting the first)."""
    smi = smiles_file(tmp_path / "in.smi", count)
    for rank in range(world):
        chunks = RecordStream(smi, RecordFeaturizer(), chunk, start=start, rank=rank, world_size=world, total=count)
        assert len(chunks) == max(len(list(chunks)), 1)  # 1 for none: Lightning would skip the writer's end
    data = FilesDataModule(str(smi), batch_size=chunk, chunk_size=chunk)
    data.setup("predict")
    assert data.num_records == count and len(data.predict_dataloader()) == -(-count // chunk)
    with pytest.raises(TypeError):
        len(RecordStream(smi, RecordFeaturizer(), chunk))


def test_a_file_that_grows_while_read_is_an_error_not_a_silent_cut(tmp_path):
    smi = smiles_file(tmp_path / "in.smi", 10)
    with pytest.raises(ValueError, match="changed while it was read: it held 7 records"):
        list(RecordStream(smi, RecordFeaturizer(), 3, total=7))
