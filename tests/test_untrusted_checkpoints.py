"""Checkpoints from the internet: loading never runs code pickled inside them.

Every payload below would create a marker file if anything from it were executed; each test
asserts that the load is refused with a message naming the problem *and* that the marker
was never created. Legitimate files (plain tensors, fairseq-era objects, numpy, both torch
serialisation formats) still load.
"""

from __future__ import annotations

import argparse
import builtins
import collections
import io
import os
import pathlib
import pickle
import posix
import subprocess
import sys
import tarfile
import types
import zipfile

import numpy as np
import pytest
import torch

from conftest import tiny_pretraining_bundle
from tmzoo.checkpoints import UnsafeCheckpointError, load_bundle, safe_load, save_bundle


# ------------------------------------------------------------------ helpers
class _Reduce:
    """Pickles as ``func(*args)`` — the classic pickle payload."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _torch_zip_with_pickle(path: pathlib.Path, data_pkl: bytes) -> pathlib.Path:
    """A torch zip checkpoint whose ``data.pkl`` is ``data_pkl`` (hand-written opcodes)."""
    base = path.with_suffix(".base")
    torch.save({"x": 1}, base)
    with zipfile.ZipFile(base) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = data_pkl if info.filename.endswith("/data.pkl") else zin.read(info.filename)
            zout.writestr(info.filename, data)
    base.unlink()
    return path


def _legacy_with_pickle(path: pathlib.Path, data_pkl: bytes) -> pathlib.Path:
    """A torch < 1.6 (non-zip) checkpoint: magic, protocol, sys info, the pickle, storage keys."""
    from torch.serialization import MAGIC_NUMBER, PROTOCOL_VERSION

    buf = io.BytesIO()
    pickle.dump(MAGIC_NUMBER, buf, protocol=2)
    pickle.dump(PROTOCOL_VERSION, buf, protocol=2)
    pickle.dump({"protocol_version": PROTOCOL_VERSION, "little_endian": True}, buf, protocol=2)
    buf.write(data_pkl)
    pickle.dump([], buf, protocol=2)
    path.write_bytes(buf.getvalue())
    return path


def _global_call(module: str, name: str, arg: str) -> bytes:
    """Protocol-2 opcodes for ``module.name(arg)`` (no need for the module to exist here)."""
    return (
        b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n"
        + b"X" + len(arg.encode()).to_bytes(4, "little") + arg.encode() + b"\x85R."
    )


def _build_on_global(module: str, name: str, attr: str, value_global: bytes = b"builtins\nlist") -> bytes:
    """Opcodes that push a class and BUILD ``(None, {attr: value})`` on it: monkeypatching."""
    return (
        b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n"
        + b"(N}X" + len(attr).to_bytes(4, "little") + attr.encode()
        + b"c" + value_global + b"\nstb."
    )


def _past_torch(obj) -> dict:
    """``obj`` beside an argparse Namespace (a released file's stand-in), as in a released file."""
    return {"args": argparse.Namespace(arch="x"), "obj": obj}


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a pickled payload was executed"


def _assert_refused(path, *names):
    with pytest.raises(UnsafeCheckpointError) as err:
        safe_load(path)
    message = str(err.value)
    assert str(path) in message
    assert "refusing" in message and "nothing from the file was executed" in message
    for name in names:
        assert name in message
    return message


# ------------------------------------------------------- classic payloads
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize(
    "payload, named",
    [
        (lambda m: _Reduce(os.system, f"touch {m}"), "system"),
        (lambda m: _Reduce(posix.system, f"touch {m}"), "posix.system"),
        (lambda m: _Reduce(builtins.eval, f"open({str(m)!r}, 'w').close()"), "builtins.eval"),
        (lambda m: _Reduce(builtins.exec, f"open({str(m)!r}, 'w').close()"), "builtins.exec"),
        (lambda m: _Reduce(subprocess.Popen, ["touch", str(m)]), "subprocess.Popen"),
        (lambda m: _Reduce(subprocess.call, ["touch", str(m)]), "subprocess.call"),
        (lambda m: _Reduce(pathlib.Path.touch, pathlib.Path(m)), "getattr"),
    ],
    ids=["os.system", "posix.system", "eval", "exec", "Popen", "subprocess.call", "Path.touch"],
)
def test_reduce_payload_is_refused(tmp_path, marker, payload, named, legacy):
    path = tmp_path / "evil.pt"
    torch.save(payload(marker), path, _use_new_zipfile_serialization=not legacy)
    _assert_refused(path, named)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize(
    "module, name",
    [
        ("nt", "system"),
        ("posix", "system"),
        ("os", "system"),
        ("os", "popen"),
        ("builtins", "eval"),
        ("__builtin__", "eval"),
        ("builtins", "getattr"),
        ("builtins", "__import__"),
        ("importlib", "import_module"),
        ("runpy", "run_path"),
        ("pickle", "loads"),
        ("torch", "load"),
        ("torch.serialization", "load"),
        ("torch.jit", "load"),
        ("torch.storage", "_load_from_bytes"),
        ("torch._utils", "_rebuild_qtensor"),
        ("copyreg", "_reconstructor"),
        ("functools", "partial"),
        ("operator", "attrgetter"),
        ("numpy", "load"),
        ("numpy.testing._private.utils", "runstring"),
        ("webbrowser", "open"),
        ("shutil", "rmtree"),
        ("lightning.pytorch.core", "LightningModule"),
    ],
)
def test_unknown_global_is_refused(tmp_path, marker, module, name, legacy):
    data = _global_call(module, name, f"touch {marker}")
    make = _legacy_with_pickle if legacy else _torch_zip_with_pickle
    path = make(tmp_path / "evil.pt", data)
    shown = "builtins" if module == "__builtin__" else module
    _assert_refused(path, f"{shown}.{name}")


def test_protocol0_text_pickle_is_refused(tmp_path, marker):
    data = f"cos\nsystem\n(Vtouch {marker}\ntR.".encode()
    _assert_refused(_legacy_with_pickle(tmp_path / "p0.pt", data), "os.system")
    _assert_refused(_torch_zip_with_pickle(tmp_path / "p0z.pt", data), "os.system")


def test_raw_pickle_file_is_refused(tmp_path, marker):
    """Not a torch file at all, just ``pickle.dump(payload)``."""
    path = tmp_path / "raw.pkl"
    path.write_bytes(pickle.dumps(_Reduce(os.system, f"touch {marker}"), protocol=2))
    with pytest.raises((UnsafeCheckpointError, ValueError)) as err:
        safe_load(path)
    assert str(path) in str(err.value)


def test_nested_payload_inside_valid_tmzoo_checkpoint(tmp_path, marker):
    spec, state = tiny_pretraining_bundle()
    good = tmp_path / "good.pt"
    save_bundle(spec, state, good)
    assert load_bundle(good).target_names == ["homolumogap"]

    evil = tmp_path / "evil.pt"
    deep = {"a": [1, 2, {"b": (_Reduce(os.system, f"touch {marker}"),)}]}
    torch.save({"state_dict": state, "tmzoo": spec, "hyper_parameters": deep}, evil)
    _assert_refused(evil, "system")
    with pytest.raises(UnsafeCheckpointError):
        load_bundle(evil)

    evil_spec = dict(spec, targets=[_Reduce(builtins.eval, f"open({str(marker)!r}, 'w')")])
    torch.save({"state_dict": state, "tmzoo": evil_spec}, evil)
    with pytest.raises(UnsafeCheckpointError, match="builtins.eval"):
        load_bundle(evil)


def test_payload_smuggled_through_torch_storage_load_from_bytes(tmp_path, marker):
    inner = io.BytesIO()
    torch.save(_Reduce(os.system, f"touch {marker}"), inner)
    path = tmp_path / "evil.pt"
    torch.save({"w": _Reduce(torch.storage._load_from_bytes, inner.getvalue())}, path)
    _assert_refused(path, "torch.storage._load_from_bytes")


# ----------------------------------------- allowed globals used the wrong way
@pytest.mark.parametrize(
    "module, name",
    [
        ("pathlib", "Path"),
        ("pathlib", "PosixPath"),
        ("torch", "UntypedStorage"),
        ("torch", "TypedStorage"),
        ("torch.nn.parameter", "Parameter"),
        ("collections", "OrderedDict"),
        ("argparse", "Namespace"),
    ],
)
def test_build_on_a_class_cannot_monkeypatch_it(tmp_path, module, name):
    """``BUILD`` with (None, {attr: value}) on a class would setattr on it, process-wide."""
    before = {
        "Path": pathlib.Path.__repr__,
        "PurePosixPath": pathlib.PurePosixPath.__repr__,
        "UntypedStorage": torch.UntypedStorage.__repr__,
        "TypedStorage": torch.TypedStorage.__repr__,
        "Parameter": torch.nn.Parameter.__repr__,
    }
    path = _torch_zip_with_pickle(tmp_path / "poison.pt", _build_on_global(module, name, "__repr__"))
    with pytest.raises(UnsafeCheckpointError, match="sets attributes of the class"):
        safe_load(path)
    assert pathlib.Path.__repr__ is before["Path"]
    assert pathlib.PurePosixPath.__repr__ is before["PurePosixPath"]
    assert torch.UntypedStorage.__repr__ is before["UntypedStorage"]
    assert torch.TypedStorage.__repr__ is before["TypedStorage"]
    assert torch.nn.Parameter.__repr__ is before["Parameter"]
    assert repr(pathlib.Path("/x")) == "PosixPath('/x')"


def test_storage_classes_are_values_not_callables(tmp_path):
    """``torch.UntypedStorage(10**12)`` would try to allocate a terabyte."""
    data = b"\x80\x02ctorch\nUntypedStorage\n\x8a\x06\x00\x10\xa5\xd4\xe8\x00\x85R."
    path = _torch_zip_with_pickle(tmp_path / "alloc.pt", data)
    _assert_refused(path, "UntypedStorage", "REDUCE")


def test_defaultdict_factory_must_be_a_container(tmp_path, marker):
    path = tmp_path / "dd.pt"
    torch.save(_past_torch(collections.defaultdict(argparse.Namespace)), path)
    _assert_refused(path, "default factory", "Namespace")
    torch.save(_past_torch(collections.defaultdict(list, a=[1])), path)
    assert safe_load(path)["obj"]["a"] == [1]


@pytest.mark.parametrize("codec", ["rot13", "zlib_codec", "base64_codec", "idna", "punycode"])
def test_codecs_encode_only_with_pickle_text_codecs(tmp_path, codec):
    import codecs

    path = tmp_path / "codec.pt"
    torch.save(_past_torch(_Reduce(codecs.encode, "abc", codec)), path)
    _assert_refused(path, "codecs.encode", codec)
    torch.save(_past_torch(_Reduce(codecs.encode, "abc", "latin1")), path)
    assert safe_load(path)["obj"] == b"abc"


def test_backward_hooks_on_tensors_are_refused(tmp_path):
    base = torch.arange(3.0)
    storage = torch.storage.TypedStorage(wrap_storage=base.untyped_storage(), dtype=torch.float32, _internal=True)
    rebuild = torch._utils._rebuild_tensor_v2
    path = tmp_path / "hooks.pt"
    torch.save(_past_torch(_Reduce(rebuild, storage, 0, (3,), (1,), False, collections.OrderedDict([(0, set)]))), path)
    _assert_refused(path, "backward hooks")
    torch.save(_past_torch(_Reduce(rebuild, storage, 0, (3,), (1,), False, collections.OrderedDict())), path)
    assert torch.equal(safe_load(path)["obj"], base)


def test_rebuild_from_type_cannot_call_arbitrary_values(tmp_path):
    path = tmp_path / "rt.pt"
    torch.save(_past_torch(_Reduce(torch._tensor._rebuild_from_type_v2, torch.Tensor, torch.Tensor, (10,), {})), path)
    _assert_refused(path, "rebuilds a tensor with Tensor")


def test_parameter_state_cannot_set_dunder_attributes(tmp_path):
    data = torch.ones(2)
    rebuild = torch._utils._rebuild_parameter_with_state
    path = tmp_path / "ps.pt"
    state = {"__class__": torch.Tensor}
    torch.save(_past_torch(_Reduce(rebuild, data, True, collections.OrderedDict(), state)), path)
    _assert_refused(path, "__class__")
    torch.save(_past_torch(_Reduce(rebuild, data, True, collections.OrderedDict(), {"tag": "ok"})), path)
    loaded = safe_load(path)["obj"]
    assert isinstance(loaded, torch.nn.Parameter) and loaded.tag == "ok"


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_numpy_object_arrays_and_subclasses_are_refused(tmp_path, marker):
    path = tmp_path / "np.pt"
    torch.save({"a": np.asarray([_Reduce(os.system, f"touch {marker}")], dtype=object)}, path)
    _assert_refused(path, "system")
    torch.save({"m": np.matrix([[1, 2]])}, path)
    _assert_refused(path, "matrix")


# --------------------------------------------------------- container formats
class _ScriptedWithSetstate(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))

    @torch.jit.export
    def __getstate__(self):
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]):
        print("TORCHSCRIPT-CODE-RAN")
        self.w = state[0]
        self.training = state[1]

    def forward(self, x):
        return x * self.w


def test_torchscript_archive_is_refused(tmp_path, capfd):
    """``torch.load`` hands TorchScript zips to ``torch.jit.load``, which runs their code."""
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(_ScriptedWithSetstate()), path)
    capfd.readouterr()
    with pytest.raises(UnsafeCheckpointError, match="TorchScript"):
        safe_load(path)
    assert "TORCHSCRIPT-CODE-RAN" not in capfd.readouterr().out
    with pytest.raises(UnsafeCheckpointError):
        load_bundle(path)


def test_legacy_tar_format_is_refused(tmp_path):
    """torch < 0.4 tar files are extracted by tarfile (links included) before unpickling."""
    path = tmp_path / "old.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        link = tarfile.TarInfo("storages")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/hostname"
        tar.addfile(link)
        for name, payload in (("tensors", pickle.dumps(0, protocol=2)), ("pickle", pickle.dumps({}, protocol=2))):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    _assert_refused(path, "tar")


# ------------------------------------------------------ broken, not malicious
def test_missing_empty_truncated_and_garbage_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        safe_load(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError):
        safe_load(tmp_path)  # a directory
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        safe_load(empty)
    good = tmp_path / "good.pt"
    torch.save({"w": torch.randn(64, 64)}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.pt"):
        safe_load(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match="garbage.pt"):
        safe_load(garbage)


# ------------------------------------------------------------ still loads
def _fake_fairseq(monkeypatch):
    """Register a stand-in ``fairseq`` package so its objects can be pickled here."""
    fairseq = types.ModuleType("fairseq")
    meters = types.ModuleType("fairseq.logging.meters")

    class AverageMeter:
        def __init__(self):
            self.val, self.count = 3.0, 2

    AverageMeter.__module__ = "fairseq.logging.meters"
    AverageMeter.__qualname__ = "AverageMeter"
    meters.AverageMeter = AverageMeter
    monkeypatch.setitem(sys.modules, "fairseq", fairseq)
    monkeypatch.setitem(sys.modules, "fairseq.logging", types.ModuleType("fairseq.logging"))
    monkeypatch.setitem(sys.modules, "fairseq.logging.meters", meters)
    return AverageMeter


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_legitimate_objects_still_load(tmp_path, monkeypatch, zip_format):
    """Everything a released/fairseq/Lightning-era file holds comes back (through the stand-ins)."""
    AverageMeter = _fake_fairseq(monkeypatch)
    linear = torch.nn.Linear(3, 2)
    state = linear.state_dict()
    param = torch.nn.Parameter(torch.randn(4))
    view = torch.arange(10.0)[2:6]
    obj = {
        "model": state,
        "args": argparse.Namespace(lr=0.1, arch="x", tags={1, 2}),
        "meter": AverageMeter(),
        "np": np.arange(5, dtype=np.float32),
        "np_scalar": np.float64(2.5),
        "dd": collections.defaultdict(list, a=[1]),
        "path": pathlib.Path("/a/b"),
        "param": param,
        "view": view,
        "misc": (complex(1, 2), slice(1, 5), frozenset([3]), torch.Size([2, 3]), torch.device("cpu"), torch.float16),
        "bf16": torch.ones(2, dtype=torch.bfloat16),
    }
    path = tmp_path / "legit.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # torch alone refuses it: the stand-ins are under test
    out = safe_load(path)
    assert torch.equal(out["model"]["weight"], state["weight"])
    assert out["model"]._metadata == state._metadata
    assert out["args"].lr == 0.1 and out["args"].tags == {1, 2}
    assert out["meter"].val == 3.0 and "placeholder" in repr(out["meter"])
    assert out["np"].tolist() == [0, 1, 2, 3, 4] and out["np_scalar"] == 2.5
    assert out["dd"]["a"] == [1]
    assert str(out["path"]) == "/a/b"
    assert isinstance(out["param"], torch.nn.Parameter) and torch.equal(out["param"], param)
    assert torch.equal(out["view"], view)
    assert out["misc"] == obj["misc"]
    assert out["bf16"].dtype == torch.bfloat16


# ------------------------------------------------------------ tmzoo specs
def _tiny_spec_and_state():
    return tiny_pretraining_bundle()


@pytest.mark.parametrize(
    "class_path",
    ["os.system", "builtins.eval", "subprocess.Popen", "torch.nn.Linear", "tmzoo_evil.Model", "ostmzoo.models.X"],
)
def test_spec_naming_a_foreign_class_is_refused(tmp_path, marker, class_path):
    spec, state = _tiny_spec_and_state()
    spec["modules"]["encoder"] = {"class_path": class_path, "init_args": {"command": f"touch {marker}"}}
    path = tmp_path / "spec.pt"
    save_bundle(spec, state, path)
    with pytest.raises(ValueError, match="only tmzoo classes may be rebuilt"):
        load_bundle(path)


@pytest.mark.parametrize(
    "class_path", ["tmzoo.models.embeddings.torch", "tmzoo.checkpoints.safe_pickle.Placeholder", "tmzoo.models.Mode"]
)
def test_spec_naming_a_tmzoo_non_module_is_refused(tmp_path, class_path):
    spec, state = _tiny_spec_and_state()
    spec["modules"]["gap_head"] = {"class_path": class_path, "init_args": {}}
    path = tmp_path / "spec.pt"
    save_bundle(spec, state, path)
    with pytest.raises(ValueError, match="not a torch module"):
        load_bundle(path)


def test_shape_mismatch_names_the_tensor(tmp_path):
    spec, state = _tiny_spec_and_state()
    key = "encoder.layers.0.fc1.weight"
    state[key] = torch.zeros(16, 8)
    path = tmp_path / "shape.pt"
    save_bundle(spec, state, path)
    with pytest.raises(ValueError, match=r"encoder\.layers\.0\.fc1\.weight has shape \(16, 8\) in the checkpoint but \(8, 8\)"):
        load_bundle(path)


def test_spec_asking_for_another_model_size_names_the_tensor(tmp_path):
    """Weights of a 2-head model under a spec that says 4 heads."""
    spec, state = _tiny_spec_and_state()
    spec["modules"]["encoder"]["init_args"]["num_heads"] = 4
    path = tmp_path / "heads.pt"
    save_bundle(spec, state, path)
    with pytest.raises(ValueError, match=r"tensor encoder\.\S+ has shape"):
        load_bundle(path)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    spec, state = _tiny_spec_and_state()
    state.pop("gap_head.embed_out.weight")
    state["gap_head.extra"] = torch.zeros(1)
    path = tmp_path / "keys.pt"
    save_bundle(spec, state, path)
    with pytest.raises(ValueError, match=r"missing \['gap_head\.embed_out\.weight'\], unexpected \['gap_head\.extra'\]"):
        load_bundle(path)


def test_not_a_checkpoint_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match="not a tmzoo checkpoint"):
        load_bundle(path)


def _malformed_specs():
    spec, _ = _tiny_spec_and_state()
    encoder = spec["modules"]["encoder"]
    return {
        "spec is a string": "hello",
        "spec is a list": [1],
        "modules is a string": dict(spec, modules="x"),
        "no modules": {k: v for k, v in spec.items() if k != "modules"},
        "no encoder": dict(spec, modules={"gap_head": spec["modules"]["gap_head"]}),
        "class_path not a string": dict(spec, modules=dict(spec["modules"], encoder={"class_path": 5})),
        "init_args a list": dict(spec, modules=dict(spec["modules"], encoder=dict(encoder, init_args=[1]))),
        "unknown init arg": dict(spec, modules=dict(spec["modules"], encoder=dict(encoder, init_args={"bogus": 1}))),
        "missing tmzoo module": dict(spec, modules=dict(spec["modules"], encoder={"class_path": "tmzoo.nothere.X"})),
        "missing tmzoo class": dict(spec, modules=dict(spec["modules"], encoder={"class_path": "tmzoo.models.Nope"})),
        "target mean not numbers": dict(spec, target_mean="abc"),
        "featurization a string": dict(spec, featurization="x"),
        "featurization extra key": dict(spec, featurization={"max_hops": 5, "evil": 1}),
        "featurization wrong type": dict(spec, featurization={"max_hops": "5"}),
    }


@pytest.mark.parametrize("case", list(_malformed_specs()))
def test_malformed_spec_is_a_value_error(tmp_path, case):
    """Anything a checkpoint's plain-data spec gets wrong is reported, not a traceback."""
    _, state = _tiny_spec_and_state()
    path = tmp_path / "spec.pt"
    torch.save({"state_dict": state, "tmzoo": _malformed_specs()[case]}, path)
    with pytest.raises(ValueError) as err:
        load_bundle(path)
    assert str(err.value)


@pytest.mark.parametrize("state", ["x", {"encoder.w": 1.0}, [torch.zeros(1)]], ids=["string", "floats", "list"])
def test_malformed_state_dict_is_a_value_error(tmp_path, state):
    spec, _ = _tiny_spec_and_state()
    path = tmp_path / "state.pt"
    torch.save({"state_dict": state, "tmzoo": spec}, path)
    with pytest.raises(ValueError):
        load_bundle(path)


def test_zip_checked_with_torchs_own_reader(tmp_path, monkeypatch):
    """A TorchScript archive is refused even if Python's zipfile lists nothing (two zip
    parsers can disagree on a crafted file; torch.load uses its own)."""
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(_ScriptedWithSetstate()), path)

    class Blind(zipfile.ZipFile):
        def namelist(self):
            return []

    monkeypatch.setattr(zipfile, "ZipFile", Blind)
    monkeypatch.setattr(zipfile, "is_zipfile", lambda p: False)
    with pytest.raises(UnsafeCheckpointError, match="TorchScript"):
        safe_load(path)


@pytest.mark.parametrize(
    "change",
    [{"embed_dim": 10**6, "ffn_dim": 10**6}, {"num_layers": 10**4}, {"num_layers": 10**9}, {"num_kernels": 10**9}],
    ids=["wide", "deep", "very-deep", "many-kernels"],
)
def test_spec_asking_for_a_giant_model_fails_before_allocating_it(tmp_path, change):
    """A few-kB file whose spec asks for terabytes must be refused, not attempted (OOM)."""
    import multiprocessing
    import resource

    spec, state = _tiny_spec_and_state()
    spec["modules"]["encoder"]["init_args"].update(change)
    path = tmp_path / "giant.pt"
    save_bundle(spec, state, path)
    outcome = tmp_path / "outcome.txt"

    def child():  # in a child with a 4 GiB address-space cap, so a regression cannot OOM the machine
        torch.set_num_threads(1)  # no OpenMP team in a forked child
        with open("/proc/self/statm") as handle:
            used = int(handle.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + (4 << 30), resource.RLIM_INFINITY))
        try:
            load_bundle(path)
            outcome.write_text("loaded")
        except ValueError as err:
            outcome.write_text(f"ValueError: {err}")
        except BaseException as err:  # noqa: BLE001
            outcome.write_text(f"{type(err).__name__}: {err}")
        os._exit(0)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(60)
    if process.is_alive():
        process.kill()
        pytest.fail("loading a giant spec did not fail fast")
    result = outcome.read_text()
    assert result.startswith("ValueError:"), result
    assert "has shape" in result or "more parameters than" in result or "more than the checkpoint's" in result


@pytest.mark.parametrize(
    "model",
    [
        {"encoder.molecule_encoder.layers.0.fc1.weight": "not a tensor"},
        {"encoder.molecule_encoder.atom_feature.atom_encoder.weight": torch.zeros(3, 4)},
        {"encoder.molecule_encoder.unknown": torch.zeros(1)},
    ],
    ids=["not-a-tensor", "missing-weights", "unknown-key"],
)
def test_malformed_released_checkpoint_is_a_value_error(tmp_path, model):
    source = tmp_path / "released.pt"
    torch.save({"model": model, "args": argparse.Namespace(dropout=argparse.Namespace())}, source)
    with pytest.raises(ValueError):
        load_bundle(source)
    with pytest.raises(ValueError):
        from tmzoo.checkpoints import convert_checkpoint

        convert_checkpoint(source, tmp_path / "out.ckpt")
    assert not (tmp_path / "out.ckpt").exists()
