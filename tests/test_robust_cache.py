"""Interrupted and concurrent preprocessing: the featurisation cache under SIGKILL.

``test_datamodule_cache.py`` (the datamodule's own tests) covers corrupted files, a missing
manifest and an in-process interruption (KeyboardInterrupt, where clean-up code runs).
Here the process is killed for real (SIGKILL: no ``finally``, no clean-up), while building,
while holding the build lock, or inside a worker process; and two processes build the
same cache at once. A half-written cache must never be read as complete, and the next run
must finish the job.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from tmzoo.chem.molecule import smiles_to_data
from tmzoo.data.transforms import transformer_m_transform
from tmzoo.datamodules import cache as cache_module

SMILES = ["CCO", "c1ccccc1", "CC(=O)O", "C1CC", "[Na+].[Cl-]", "CN", "O", "CCCC"] * 4  # one bad record per 8
FORK = multiprocessing.get_context("fork")


def featurize(smiles):
    return transformer_m_transform()(smiles_to_data(smiles))


def jobs():
    return [(i, f"m{i}", s) for i, s in enumerate(SMILES)]


def in_child(target, timeout: float = 60.0) -> int:
    """Run ``target`` in a forked child (modules already imported: starts instantly); its exit code.

    The child's own exceptions end it with code 1; ``os._exit(0)`` after success.
    """

    def main():
        torch.set_num_threads(1)  # no OpenMP team in a forked child
        try:
            target()
        except BaseException:  # noqa: BLE001 - reported through the exit code
            import traceback

            traceback.print_exc()
            os._exit(1)
        os._exit(0)

    child = FORK.Process(target=main)
    child.start()
    child.join(timeout)
    if child.is_alive():
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        pytest.fail(f"the child process hung for {timeout} s")
    return child.exitcode


def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)  # no finally, no clean-up, like the OOM killer


def assert_complete(cache):
    assert cache is not None
    assert len(cache) == 28 and [f.index for f in cache.failures] == [3, 11, 19, 27]
    assert all("parse" in f.error for f in cache.failures)
    assert [int(cache.store[k].idx) for k in range(3)] == [0, 1, 2]


def stale_builds(folder: Path) -> list[Path]:
    return sorted(folder.parent.glob(f".{folder.name}.tmp-*"))


def test_build_killed_mid_way_is_never_read_and_the_next_run_finishes(tmp_path):
    folder = tmp_path / "tmzoo-test-key"
    done = []

    def dying(smiles):
        done.append(smiles)
        if len(done) == 12:
            kill_self()
        return featurize(smiles)

    assert in_child(lambda: cache_module.load_or_build(folder, jobs, dying, total=len(SMILES))) == -signal.SIGKILL
    assert not folder.exists()
    stale = stale_builds(folder)
    assert len(stale) == 1 and not (stale[0] / "manifest.json").exists()  # half-written, unmarked
    assert cache_module.load_cache(folder) is None
    assert cache_module.load_cache(stale[0]) is None

    cache = cache_module.load_or_build(folder, jobs, featurize, total=len(SMILES))
    assert_complete(cache)
    assert not stale_builds(folder)  # the killed build's folder was swept away
    assert_complete(cache_module.load_cache(folder))


def test_kill_between_removing_the_old_cache_and_renaming_the_new_one(tmp_path, monkeypatch):
    """The window inside ``build_cache`` where neither folder is in place."""
    folder = tmp_path / "tmzoo-test-key"
    cache_module.load_or_build(folder, jobs, featurize)
    (folder / "pair_spd.bin").write_bytes(b"corrupt")  # forces a rebuild

    def child():
        real_replace = os.replace

        def dying_replace(src, dst):
            if Path(dst) == folder:
                kill_self()
            return real_replace(src, dst)

        monkeypatch.setattr(cache_module.os, "replace", dying_replace)
        cache_module.load_or_build(folder, jobs, featurize)

    assert in_child(child) == -signal.SIGKILL
    assert not folder.exists()  # the old, corrupt cache was removed; the new one never named
    assert len(stale_builds(folder)) == 1
    assert cache_module.load_cache(folder) is None
    assert_complete(cache_module.load_or_build(folder, jobs, featurize))
    assert not stale_builds(folder)


def test_lock_of_a_killed_process_is_released(tmp_path):
    folder = tmp_path / "tmzoo-test-key"

    def child():
        with cache_module.folder_lock(folder):
            kill_self()

    assert in_child(child) == -signal.SIGKILL
    assert (tmp_path / f".{folder.name}.lock").exists()
    assert in_child(lambda: assert_complete(cache_module.load_or_build(folder, jobs, featurize)), timeout=30) == 0


def test_two_processes_build_once_and_read_the_same_cache(tmp_path, monkeypatch):
    folder = tmp_path / "tmzoo-test-key"
    log = tmp_path / "builds.log"
    original = cache_module.build_cache

    def logged_build(*args, **kwargs):
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return original(*args, **kwargs)

    def slow(smiles):
        time.sleep(0.02)
        return featurize(smiles)

    monkeypatch.setattr(cache_module, "build_cache", logged_build)

    def child():
        assert_complete(cache_module.load_or_build(folder, jobs, slow))

    processes = [FORK.Process(target=child) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
            pytest.fail("concurrent builds hung")
        assert process.exitcode == 0
    assert len(log.read_text().split()) == 1  # the second process waited and loaded the first one's cache
    assert_complete(cache_module.load_cache(folder))


def test_a_worker_process_killed_mid_build_does_not_hang_the_build(tmp_path):
    """A worker dying (OOM killer, a crash inside RDKit) used to hang the build forever
    (multiprocessing.Pool waits for the lost chunk); now the record that kills its process is
    listed as a failure and every other record is kept, in order."""
    folder = tmp_path / "tmzoo-test-key"

    def crashing(smiles):
        if smiles == "CN":
            kill_self()
        return featurize(smiles)

    def child():
        cache_module.load_or_build(folder, jobs, crashing, num_proc=2)

    assert in_child(child, timeout=60) == 0
    cache = cache_module.load_cache(folder)
    assert cache is not None and len(cache) == 24
    died = [i for i, s in enumerate(SMILES) if s == "CN"]
    assert sorted(f.index for f in cache.failures) == sorted([3, 11, 19, 27] + died)
    assert all(f.error == cache_module.WORKER_DIED for f in cache.failures if f.index in died)
    kept = [int(cache.store[k].idx) for k in range(len(cache))]
    assert kept == [i for i, s in enumerate(SMILES) if s not in ("CN", "C1CC")]
    assert not stale_builds(folder)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_lock_is_not_kept_by_processes_forked_while_it_was_held(tmp_path):
    """A featurisation worker forked under the lock used to inherit it (flock), so a killed
    build left the lock held by its orphaned workers and every later run waited forever."""
    folder = tmp_path / "tmzoo-test-key"
    pid_file = tmp_path / "grandchild"

    def child():
        with cache_module.folder_lock(folder):
            grandchild = os.fork()
            if grandchild == 0:  # like a worker: sleeps on while its parent is killed
                os.closerange(3, 1 << 16)  # not the pipe in_child's join waits on
                time.sleep(30)
                os._exit(0)
            pid_file.write_text(str(grandchild))
            kill_self()

    try:
        assert in_child(child) == -signal.SIGKILL
        assert alive(int(pid_file.read_text()))
        assert in_child(lambda: cache_module.folder_lock(folder).__enter__(), timeout=10) == 0
    finally:
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


BUILDER = """
import sys, time
from tmzoo.chem.molecule import smiles_to_data
from tmzoo.datamodules import cache

def slow(smiles):
    with open(sys.argv[2], "a") as handle:
        handle.write(f"{__import__('os').getpid()}\\n")
    time.sleep(0.2)
    return smiles_to_data(smiles)

jobs = lambda: [(i, "", s) for i, s in enumerate(["CCO", "c1ccccc1", "CC(=O)O", "CN"] * 100)]
cache.load_or_build(sys.argv[1], jobs, slow if sys.argv[3] == "slow" else smiles_to_data, num_proc=2)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigkill_of_a_build_leaves_no_worker_and_the_rerun_finishes(tmp_path):
    import subprocess
    import sys

    folder, pids = tmp_path / "tmzoo-test-key", tmp_path / "pids"
    script = tmp_path / "build.py"
    script.write_text(BUILDER)
    parent = subprocess.Popen([sys.executable, str(script), str(folder), str(pids), "slow"])
    try:
        deadline = time.monotonic() + 120
        while len(set(pids.read_text().split()) if pids.exists() else ()) < 2:
            assert parent.poll() is None and time.monotonic() < deadline, "the workers never started"
            time.sleep(0.1)
    finally:
        parent.kill()
        parent.wait()
    workers = {int(p) for p in pids.read_text().split()}
    deadline = time.monotonic() + 5
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [p for p in workers if alive(p)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"workers {survivors} outlived their parent by 5 s"
    rerun = subprocess.run([sys.executable, str(script), str(folder), str(pids), "fast"], timeout=120)
    assert rerun.returncode == 0
    assert len(cache_module.load_cache(folder)) == 400


def test_a_finished_cache_is_read_without_opening_anything_for_writing(tmp_path, monkeypatch):
    folder = tmp_path / "tmzoo-test-key"
    cache_module.load_or_build(folder, jobs, featurize)
    lock = tmp_path / f".{folder.name}.lock"
    lock.unlink()
    real_open, real_os_open = open, os.open

    def read_only_open(file, mode="r", *args, **kwargs):
        assert not set(mode) & set("wax+"), f"{file} opened for writing"
        return real_open(file, mode, *args, **kwargs)

    def read_only_os_open(path, flags, *args, **kwargs):
        assert not flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT), f"{path} opened for writing"
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr("builtins.open", read_only_open)
    monkeypatch.setattr(os, "open", read_only_os_open)
    assert_complete(cache_module.load_or_build(folder, jobs, featurize))
    assert not lock.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_read_only_cache_of_another_user_is_read(tmp_path):
    """A datamodule cache under ``<root>/processed`` built by one user, read by another
    (``nobody``) who can write neither there nor in the folder above."""
    import shutil
    import tempfile

    from tmzoo.datamodules import QM9DataModule

    shared = Path(tempfile.mkdtemp(prefix="tmzoo-shared-"))
    try:
        shutil.copytree(Path(__file__).parent / "fixtures" / "qm9", shared / "qm9")
        QM9DataModule(str(shared / "qm9"), num_proc=1).load()
        assert list((shared / "qm9" / "processed").glob("tmzoo-qm9-*/manifest.json"))
        for path in [shared, *shared.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)

        def as_nobody():
            os.setgid(65534)
            os.setuid(65534)
            os.environ["TMZOO_CACHE"] = str(shared / "nowhere")  # would fail if used
            dm = QM9DataModule(str(shared / "qm9"), num_proc=1)
            dm.setup("fit")
            assert dm.load().folder.parent == shared / "qm9" / "processed"
            assert next(iter(dm.train_dataloader())).num_graphs == 17

        assert in_child(as_nobody) == 0
    finally:
        for path in [shared, *shared.rglob("*")]:
            path.chmod(0o755)
        shutil.rmtree(shared)
