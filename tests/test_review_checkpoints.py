"""Review of the weights-only checkpoint loader (issue 11): legitimate files it must still read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from conftest import tiny_pretraining_bundle
from tmzoo.checkpoints import UnsafeCheckpointError, load_bundle, safe_load, save_bundle
from tmzoo.checkpoints.bundle import atomic_save, spec_and_state


def _lightning_checkpoint(spec, state) -> dict:
    """What ``tmzoo fit`` writes with a monitoring ``ModelCheckpoint``: its best score is one
    scalar tensor kept under several keys (``best_model_score``, ``current_score``, ...)."""
    callback = ModelCheckpoint(monitor="val/mae")
    score = torch.tensor(0.8333)
    callback.best_k_models = {"epoch=0-step=2.ckpt": score}
    callback.best_model_path = callback.kth_best_model_path = "epoch=0-step=2.ckpt"
    callback.best_model_score = callback.current_score = callback.kth_value = score
    return {"state_dict": state, "tmzoo": spec, "callbacks": {callback.state_key: callback.state_dict()},
            "pytorch-lightning_version": "2.5.0", "epoch": 0, "global_step": 2}


def test_lightning_checkpoint_with_a_monitored_score_loads(tmp_path):
    spec, state = tiny_pretraining_bundle()
    path = tmp_path / "epoch=0-step=2.ckpt"
    atomic_save(_lightning_checkpoint(spec, state), path)
    checkpoint = safe_load(path)
    (callback,) = checkpoint["callbacks"].values()
    assert callback["best_model_score"].item() == pytest.approx(0.8333)
    assert spec_and_state(checkpoint, require_spec=False)[1].keys() == state.keys()
    load_bundle(path)


def test_one_weight_referenced_under_two_names_is_still_refused(tmp_path):
    """A model built from the file would allocate the weight twice: an amplification."""
    spec, state = tiny_pretraining_bundle()
    key_a, key_b = "encoder.layers.0.fc1.weight", "encoder.layers.0.fc2.weight"
    if state[key_a].shape != state[key_b].t().shape:
        pytest.skip("fixture shapes changed")
    state[key_b] = state[key_a].t()
    path = tmp_path / "tied.pt"
    save_bundle(spec, state, path)
    with pytest.raises(UnsafeCheckpointError, match="overlapping memory"):
        load_bundle(path)


def test_safe_globals_are_restored_when_torch_load_fails(tmp_path, monkeypatch):
    spec, state = tiny_pretraining_bundle()
    path = tmp_path / "model.pt"
    save_bundle(spec, state, path)
    before = set(map(repr, torch.serialization.get_safe_globals()))

    def failing_load(*args, **kwargs):
        raise RuntimeError("disk went away")

    monkeypatch.setattr(torch, "load", failing_load)
    with pytest.raises(ValueError, match="disk went away") as err:
        safe_load(path)
    assert str(path) in str(err.value)
    assert set(map(repr, torch.serialization.get_safe_globals())) == before


def test_legacy_pickle_with_a_zip_appended_is_checked_as_torch_reads_it(tmp_path):
    """torch.load takes a file for a zip only when it starts with ``PK\\x03\\x04``; a legacy pickle
    with a harmless zip appended was checked as that zip, and then loaded unchecked
    (``bytearray(n)`` from torch's wider allowlist: gigabytes from a 2 kB file)."""
    import io
    import pickle
    import zipfile

    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    info = {"protocol_version": PROTOCOL_VERSION, "little_endian": True}
    header = b"".join(pickle.dumps(x, protocol=2) for x in (MAGIC_NUMBER, PROTOCOL_VERSION, info))
    bytearray_1mb = b"\x80\x02c__builtin__\nbytearray\nJ\x40\x42\x0f\x00\x85R."  # bytearray(10**6)
    path = tmp_path / "polyglot.pt"
    path.write_bytes(header + bytearray_1mb + pickle.dumps([], protocol=2))
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    harmless = zipfile.ZipFile(buffer)
    with zipfile.ZipFile(path, "a") as appended:  # absolute offsets: both readers accept it
        for record in harmless.infolist():
            appended.writestr(record, harmless.read(record.filename))
    assert zipfile.is_zipfile(path)
    with pytest.raises(UnsafeCheckpointError, match="bytearray") as err:
        safe_load(path)
    assert str(path) in str(err.value)


def test_saved_checkpoints_honour_the_umask_and_write_through_symlinks(tmp_path):
    """``tmzoo convert`` / ``save_bundle`` output: like every other output (issue 11, outputs)."""
    import os
    import stat

    spec, state = tiny_pretraining_bundle()
    real = tmp_path / "real.pt"
    link = tmp_path / "link.pt"
    link.symlink_to(real)
    saved = os.umask(0o022)
    try:
        save_bundle(spec, state, tmp_path / "model.pt")
        save_bundle(spec, state, link)
    finally:
        os.umask(saved)
    assert stat.S_IMODE(os.stat(tmp_path / "model.pt").st_mode) == 0o644
    assert link.is_symlink() and real.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.pt", "model.pt", "real.pt"]
    load_bundle(link)


def test_convert_refuses_to_write_over_its_input(tmp_path):
    import shutil

    from tmzoo.checkpoints import convert_checkpoint

    source = tmp_path / "released.pt"
    shutil.copy(Path(__file__).parent / "fixtures" / "parity" / "golden_shared_official_format.pt", source)
    before = source.read_bytes()
    (tmp_path / "alias.pt").symlink_to(source)
    for target in (source, tmp_path / "alias.pt"):
        with pytest.raises(ValueError, match="is the input"):
            convert_checkpoint(source, target)
    assert source.read_bytes() == before


@pytest.mark.slow
def test_checkpoints_written_by_tmzoo_fit_load(tmp_path):
    """End to end: every ``.ckpt`` of a short monitored run (optimizer state, hyper-parameters,
    callback state) is read by ``load_bundle`` and by ``fit --model.init_args.pretrained``."""
    from tmzoo.cli.lightning import run_lightning_cli
    from tmzoo.tasks.pretrained import read_encoder_state

    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("data:\n  class_path: test_tasks_tinydata.TinyMolecules\n  init_args: {batch_size: 4, num_targets: 2}\n")
    small = Path(__file__).resolve().parents[1] / "experiments" / "transformer_m_small.yaml"
    run_lightning_cli(["fit", "--config", str(small), "--config", str(tiny), "--trainer.max_epochs=2",
                       "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                       "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}"])
    checkpoints = sorted(tmp_path.rglob("*.ckpt"))
    assert len(checkpoints) >= 2
    for path in checkpoints:
        assert "optimizer_states" in safe_load(path)
        load_bundle(path)
        assert read_encoder_state(path)[0]


def test_refusal_messages_hold_no_control_characters_from_the_file(tmp_path):
    """A crafted global name with terminal escapes (clear screen, bell) is shown escaped."""
    import io
    import zipfile

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buffer)
    source = zipfile.ZipFile(buffer)
    path = tmp_path / "escapes.pt"
    with zipfile.ZipFile(path, "w") as crafted:
        for name in source.namelist():
            data = b"\x80\x02c\x1b[2Jos\x07\nsys\x01tem\n)R." if name.endswith("data.pkl") else source.read(name)
            crafted.writestr(name, data)
    with pytest.raises(UnsafeCheckpointError) as err:
        safe_load(path)
    message = str(err.value)
    assert str(path) in message and "\\x1b[2Jos\\x07" in message
    assert all(c.isprintable() for c in message), repr(message)


def test_one_tensor_referenced_many_times_is_refused_without_listing_every_reference():
    """``[t] * N`` pickles as N two-byte memo reads: a 5 MB file of them took 1.5 GB to refuse."""
    import tracemalloc

    from tmzoo.checkpoints.safe_pickle import check_tensors

    repeated = {"x": [torch.zeros(2)] * 300_000}
    tracemalloc.start()
    try:
        with pytest.raises(Exception, match="overlapping memory"):
            check_tensors(repeated)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20, peak
