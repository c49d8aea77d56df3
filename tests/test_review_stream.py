"""Adversarial review of streaming prediction: SIGTERM, resume with other settings, ``tmzoo predict``
applying the checkpoint's recorded featurisation."""

from __future__ import annotations

import csv
import os
import signal

import pytest
import torch

from conftest import tiny_pretraining_bundle
from tmzoo.checkpoints import save_bundle
from tmzoo.cli.infer import run_inference
from tmzoo.cli.main import main
from tmzoo.io import featurize
from tmzoo.tasks.writer import partial_path


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (see conftest)."""


def _checkpoint(path, seed: int = 0, **spec_changes):
    torch.manual_seed(seed)
    spec, state = tiny_pretraining_bundle()
    spec.update(spec_changes)
    save_bundle(spec, state, path)
    return str(path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def smiles_file(path, count: int):
    path.write_text("".join(f"{'C' * (i % 5 + 1)}O mol{i}\n" for i in range(count)))
    return path


def test_sigterm_stops_the_run_with_a_non_zero_status_and_keeps_the_rows(ckpt, tmp_path, monkeypatch):
    """``kill PID`` used to be swallowed by Lightning's handler: the run went on to the end, exit 0."""
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # never let the signal kill pytest
    smi = smiles_file(tmp_path / "in.smi", 40)
    real = featurize.featurize_record

    def terminated_at_10(record, *args, **kwargs):
        if record.index == 10:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(record, *args, **kwargs)

    monkeypatch.setattr(featurize, "featurize_record", terminated_at_10)
    out = tmp_path / "out.csv"
    try:
        rc = main(["infer", "--checkpoint", ckpt, "--input", str(smi), "--output", str(out), "--quiet",
                   "--workers", "0", "--batch-size", "4"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert rc == 128 + signal.SIGTERM
    assert not out.exists()
    rows = read(partial_path(out))
    assert 8 <= len(rows) < 40 and [int(r["index"]) for r in rows] == list(range(len(rows)))


def test_resume_refuses_a_partial_written_by_another_model_input_or_settings(ckpt, tmp_path, monkeypatch, capsys):
    smi = smiles_file(tmp_path / "in.smi", 20)
    other_smi = smiles_file(tmp_path / "other.smi", 20)
    other_ckpt = _checkpoint(tmp_path / "other.ckpt", seed=1)
    out = tmp_path / "out.csv"
    real = featurize.featurize_record

    def dies_at_13(record, *args, **kwargs):
        if record.index == 13:
            raise KeyboardInterrupt
        return real(record, *args, **kwargs)

    monkeypatch.setattr(featurize, "featurize_record", dies_at_13)
    base = ["infer", "--output", str(out), "--quiet", "--workers", "0", "--batch-size", "4", "--chunk-size", "4"]
    previous = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):
            main([*base, "--checkpoint", ckpt, "--input", str(smi)])
    finally:
        signal.signal(signal.SIGINT, previous)  # Lightning ignores Ctrl-C after the first
    monkeypatch.setattr(featurize, "featurize_record", real)
    kept = partial_path(out).read_bytes()
    assert kept.count(b"\n") > 1
    capsys.readouterr()
    for changed, named in ((["--checkpoint", other_ckpt, "--input", str(smi)], "model (weights)"),
                           (["--checkpoint", ckpt, "--input", str(other_smi)], "input file"),
                           (["--checkpoint", ckpt, "--input", str(smi), "--max-atoms", "3"], "featurisation")):
        assert main([*base, "--resume", *changed]) == 2, changed
        err = capsys.readouterr().err
        assert "cannot resume" in err and f"computed with another {named}" in err, err
        assert partial_path(out).read_bytes() == kept and not out.exists()
    assert main([*base, "--resume", "--checkpoint", ckpt, "--input", str(smi)]) == 0
    reference = tmp_path / "reference.csv"
    assert main(["infer", "--output", str(reference), "--quiet", "--workers", "0", "--batch-size", "4",
                 "--chunk-size", "4", "--checkpoint", ckpt, "--input", str(smi)]) == 0
    assert out.read_bytes() == reference.read_bytes()


def test_tmzoo_predict_applies_the_featurisation_recorded_in_ckpt_path(tmp_path):
    """``tmzoo predict --ckpt_path`` without ``--data.checkpoint`` read a 3D-only model trained with
    hydrogens in 2D without hydrogens; it must read molecules as ``tmzoo infer`` does."""
    from tmzoo.cli.lightning import run_lightning_cli

    ckpt = _checkpoint(tmp_path / "h3d.ckpt", featurization={"max_hops": 5, "reference_compatible": False,
                                                             "hydrogens": True}, eval_mode="3d")
    smi = tmp_path / "in.smi"
    smi.write_text("CCO ethanol\n")
    rows = {}
    for conformers in ("false", "true"):
        out = tmp_path / f"predict_{conformers}.csv"
        run_lightning_cli([
            "predict", "--model", "tmzoo.tasks.Pretraining", "--model.encoder", "tmzoo.models.TransformerM",
            "--model.encoder.num_layers", "1", "--model.encoder.embed_dim", "8", "--model.encoder.ffn_dim", "8",
            "--model.encoder.num_heads", "2", "--model.encoder.num_kernels", "4",
            "--model.gap_head", "tmzoo.models.GapHead",
            "--data", "tmzoo.datamodules.FilesDataModule", "--data.path", str(smi), "--data.conformers", conformers,
            "--ckpt_path", ckpt, "--trainer.default_root_dir", str(tmp_path / "run"),
            "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
            "--trainer.callbacks+=tmzoo.tasks.PredictionWriter", f"--trainer.callbacks.output={out}",
        ])
        (rows[conformers],) = read(out)
        inferred = tmp_path / f"infer_{conformers}.csv"
        run_inference(ckpt, smi, inferred, conformers=conformers == "true", progress=False, workers=0,
                      precision="32-true")
        (theirs,) = read(inferred)
        ours = rows[conformers]
        assert {k: v for k, v in ours.items() if k != "prediction"} == {k: v for k, v in theirs.items() if k != "prediction"}
        assert ours["prediction"] == theirs["prediction"] == "" or \
            abs(float(ours["prediction"]) - float(theirs["prediction"])) < 1e-5
    assert "--conformers" in rows["false"]["error"] and rows["true"]["mode"] == "3d"


def test_resume_after_a_kill_before_the_first_rows_records_the_new_settings(ckpt, tmp_path):
    """A partial holding only its header keeps nothing: the resumed run starts over and its own
    settings are recorded (a later resume with them is accepted, not refused)."""
    smi = smiles_file(tmp_path / "in.smi", 9)
    other_ckpt = _checkpoint(tmp_path / "other.ckpt", seed=1)
    out = tmp_path / "out.csv"
    partial = partial_path(out)
    partial.write_text("index,name,smiles,mode,prediction,error\n")
    settings = partial.with_name(partial.name + ".json")
    settings.write_text('{"columns": [], "model": "another", "data": null}')
    base = ["infer", "--output", str(out), "--quiet", "--workers", "0", "--batch-size", "4", "--input", str(smi)]
    assert main([*base, "--resume", "--checkpoint", other_ckpt]) == 0
    assert len(read(out)) == 9 and not partial.exists() and not settings.exists()


def test_a_new_run_says_it_discards_an_earlier_partial(ckpt, tmp_path, capsys):
    smi = smiles_file(tmp_path / "in.smi", 3)
    out = tmp_path / "out.csv"
    partial_path(out).write_text("index,name,smiles,mode,prediction,error\n0,a,C,2d,1.0,\n")
    assert main(["infer", "--output", str(out), "--quiet", "--workers", "0", "--input", str(smi),
                 "--checkpoint", ckpt]) == 0
    assert "discarding the earlier partial results" in capsys.readouterr().err
