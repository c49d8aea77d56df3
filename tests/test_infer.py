"""``tmzoo infer`` end to end: one row per record, errors per record, exit codes."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch

from tmzoo.cli.main import main

CKPT_NAME = "golden_shared_official_format.pt"


def read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def ckpt(parity_dir):
    return str(parity_dir / CKPT_NAME)


#: largest difference bf16-mixed may make to the released-format checkpoint's outputs (eV)
BF16_TOLERANCE = 0.01


def test_sdf_predictions_match_reference(ckpt, parity_dir, tmp_path):
    out = tmp_path / "out.csv"
    assert main(["infer", "--checkpoint", ckpt, "--input", str(parity_dir / "golden_shared.sdf"),
                 "--output", str(out), "--precision", "32-true", "--quiet"]) == 0
    rows = read(out)
    golden = torch.load(parity_dir / "golden_outputs.pt", weights_only=True)
    assert [r["name"] for r in rows] == [f"mol{i}" for i in range(6)]
    assert all(r["mode"] == "2d3d" and r["error"] == "" for r in rows)
    predicted = torch.tensor([float(r["prediction"]) for r in rows])
    assert (predicted - golden["eval_2d3d_graph"][:, 0]).abs().max() <= 1e-5
    # explicit 2D mode on the same file gives the reference's 2D outputs
    assert main(["infer", "--checkpoint", ckpt, "--input", str(parity_dir / "golden_shared.sdf"),
                 "--output", str(out), "--mode", "2d", "--precision", "32-true", "--quiet"]) == 0
    predicted = torch.tensor([float(r["prediction"]) for r in read(out)])
    assert (predicted - golden["eval_2d_graph"][:, 0]).abs().max() <= 1e-5


def test_bf16_predictions_stay_close_to_the_reference(ckpt, parity_dir, tmp_path):
    """``--precision bf16-mixed`` (the default where bf16 is fast) against the fp32 reference outputs."""
    out = tmp_path / "out.csv"
    assert main(["infer", "--checkpoint", ckpt, "--input", str(parity_dir / "golden_shared.sdf"),
                 "--output", str(out), "--precision", "bf16-mixed", "--quiet"]) == 0
    golden = torch.load(parity_dir / "golden_outputs.pt", weights_only=True)["eval_2d3d_graph"][:, 0]
    predicted = torch.tensor([float(r["prediction"]) for r in read(out)])
    error = (predicted - golden).abs().max()
    print(f"bf16 max abs error {error:.3g}, golden range {golden.min():.3g}..{golden.max():.3g}")
    assert 0 < error <= BF16_TOLERANCE


def test_layer_weights_cast_once_give_the_same_bf16_predictions(ckpt, parity_dir):
    """``tmzoo infer`` in bf16-mixed keeps the Transformer layers' Linear weights in bf16: the
    values autocast would cast them to at every step, so the predictions are bit for bit the
    same; norms and heads keep fp32."""
    from torch_geometric.data import Batch

    from tmzoo.checkpoints import load_bundle
    from tmzoo.cli.infer import cast_layer_weights
    from tmzoo.io.featurize import RecordFeaturizer
    from tmzoo.io.records import read_records

    bundle = load_bundle(ckpt)
    batch = Batch.from_data_list([RecordFeaturizer()(r) for r in read_records(parity_dir / "golden_shared.sdf")])
    model = bundle.model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(batch)
        cast_layer_weights(model, torch.bfloat16)
        after = model(batch)
    assert torch.equal(before, after)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert dtypes["encoder.layers.0.fc1.weight"] == dtypes["encoder.layers.0.self_attn.q_proj.bias"] == torch.bfloat16
    assert dtypes["encoder.layers.0.final_layer_norm.weight"] == dtypes["gap_head.embed_out.weight"] == torch.float32


def test_smi_mixing_valid_and_invalid_records(ckpt, tmp_path):
    smi = tmp_path / "in.smi"
    smi.write_text("CCO ethanol\nC1CC invalid_ring\n\n[Na+].[Cl-] salt\nC methane\nnot-a-smiles\nCCCCCCCCCCCCCCCCCCCCCCCC chain\n")
    out = tmp_path / "out.csv"
    assert main(["infer", "--checkpoint", ckpt, "--input", str(smi), "--output", str(out), "--quiet"]) == 0
    rows = read(out)
    assert [int(r["index"]) for r in rows] == list(range(7))
    assert [r["name"] for r in rows][:2] == ["ethanol", "invalid_ring"]
    ok = [bool(r["prediction"]) for r in rows]
    assert ok == [True, False, False, True, True, False, True]
    assert all(r["error"] for r, good in zip(rows, ok) if not good)
    assert "parse" in rows[1]["error"] and "empty" in rows[2]["error"]
    assert all(r["mode"] == "2d" for r, good in zip(rows, ok) if good)


def test_3d_mode_without_coordinates_is_a_record_error(ckpt, tmp_path):
    csv_in = tmp_path / "in.csv"
    csv_in.write_text("name,smiles\na,CCO\nb,c1ccccc1\n")
    out = tmp_path / "out.csv"
    assert main(["infer", "--checkpoint", ckpt, "--input", str(csv_in), "--output", str(out), "--mode", "3d", "--quiet"]) == 0
    rows = read(out)
    assert [r["name"] for r in rows] == ["a", "b"]
    assert all(r["prediction"] == "" and "coordinates" in r["error"] for r in rows)
    assert main(["infer", "--checkpoint", ckpt, "--input", str(csv_in), "--output", str(out), "--mode", "3d",
                 "--conformers", "--quiet"]) == 0
    assert all(r["prediction"] and r["mode"] == "3d" for r in read(out))


def test_unreadable_inputs_exit_non_zero(ckpt, tmp_path, capsys):
    out = str(tmp_path / "out.csv")
    assert main(["infer", "--checkpoint", ckpt, "--input", str(tmp_path / "missing.smi"), "--output", out]) != 0
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "in.txt"
    bad.write_text("CCO\n")
    assert main(["infer", "--checkpoint", ckpt, "--input", str(bad), "--output", out]) != 0
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    smi = tmp_path / "in.smi"
    smi.write_text("CCO\n")
    assert main(["infer", "--checkpoint", str(garbage), "--input", str(smi), "--output", out]) != 0


def test_checkpoint_with_pickled_command_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    code = (
        "import os, torch\n"
        "class P:\n"
        f"    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
        f"torch.save({{'model': {{}}, 'extra_state': P()}}, '{evil}')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    smi = tmp_path / "in.smi"
    smi.write_text("CCO\n")
    result = subprocess.run(
        [sys.executable, "-m", "tmzoo.cli.main", "infer", "--checkpoint", str(evil), "--input", str(smi),
         "--output", str(tmp_path / "out.csv")],
        capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "refusing" in result.stderr
    assert not marker.exists()


def test_a_model_without_2d_channel_refuses_records_without_coordinates():
    from tmzoo.chem.molecule import MoleculeError
    from tmzoo.io.featurize import record_mode
    from tmzoo.models import Mode

    assert record_mode("auto", True, model_has_2d=False) == Mode.ONLY_3D
    with pytest.raises(MoleculeError, match="--conformers"):
        record_mode("auto", False, model_has_2d=False)
    with pytest.raises(MoleculeError, match="no 2D channel"):
        record_mode("2d", True, model_has_2d=False)
    assert record_mode("auto", False) == Mode.ONLY_2D  # a model with both channels reads it in 2D


def test_empty_csv_has_no_records(ckpt, tmp_path, capsys):
    """A 0-byte CSV is an input without records (as an empty .smi), not a missing 'smiles' column."""
    empty, out = tmp_path / "empty.csv", tmp_path / "out.csv"
    empty.write_bytes(b"")
    assert main(["infer", "--checkpoint", ckpt, "--input", str(empty), "--output", str(out), "--quiet"]) == 0
    assert read(out) == [] and "0 of 0 records" in capsys.readouterr().out


def test_share_cores_keeps_the_faster_thread_setting(monkeypatch):
    """The last two chunks of a period try the cores the workers leave and every core; the faster
    per molecule (waiting for the workers included) is kept, and the thread count restored at the end."""
    from types import SimpleNamespace

    import tmzoo.cli.infer as infer

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(infer, "_cores", lambda: 2)
    clock = iter([0.0, 1.0, 1.0, 2.0, 2.0, 6.0, 6.0, 7.0, 7.0])  # chunk 1 takes 1 s, chunk 2 takes 4 s
    monkeypatch.setattr(infer.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(infer, "idle_cores", lambda: 2.0)
    try:
        share = infer.ShareCores(workers=1, period=4)
        assert share.settings == [1, 2] and share.chosen == 2  # idle cores at the start: every core
        assert [share._trial(i) for i in range(8)] == [None, None, 1, 2] * 2  # a 2-chunk run tries nothing
        share.on_predict_start(None, None)
        chunk = SimpleNamespace(num_graphs=100)
        for batch_idx, threads_next in ((1, 1), (2, 2), (3, 1), (4, 1)):
            share.on_predict_batch_end(None, None, None, chunk, batch_idx)
            assert torch.get_num_threads() == threads_next
        assert share.chosen == 1  # 100 mol/s with 1 thread beat 25 mol/s with 2
        share.on_predict_end(None, None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_idle_cores_reads_a_share_of_this_process_cores():
    import tmzoo.cli.infer as infer

    idle = infer.idle_cores(0.05)
    assert idle is None or 0.0 <= idle <= infer._cores()
    start = infer.cpu_snapshot()  # over an interval this process spends computing: its own use is free to it
    sum(i * i for i in range(200_000))
    idle = infer.idle_cores(0.05, start)
    assert idle is None or 0.0 <= idle <= infer._cores()
