"""The on-disk featurisation cache shared by the file-backed datamodules.

A cache folder ``tmzoo-<name>-<key>`` holds a :mod:`~tmzoo.datamodules.storage` store, a
``failures.csv`` (:func:`tmzoo.io.files.write_failures`: index, name, error of every record
that could not be featurised) and ``manifest.json``, written last: a folder without a
manifest, or whose files do not match the sizes and checksums the manifest lists, is not a
cache and is rebuilt. The key hashes the featurisation settings (reader options, a format
version) and the identity (name, size, mtime) of every source file, so a changed setting or
source gives a new folder instead of a stale one. Folders are built under a temporary name
and renamed into place, under a lock file so that concurrent processes (DDP ranks) build once.

A valid cache is read without the lock and without opening anything for writing (a cache in
a read-only folder of another user works). The lock is a POSIX record lock (``lockf``), which
forked featurisation workers do not inherit; workers die with the process that started them.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import ctypes
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from tmzoo.chem.molecule import MoleculeError
from tmzoo.datamodules.storage import GraphStore, GraphWriter, encode, file_checksum
from tmzoo.io.files import FAILURES_FILE, atomic_write, write_failures

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, atomic rename still protects
    fcntl = None

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: compact dtypes, molecules without pair features, failures.csv "error"
FULL_CHECK_BYTES = 2 << 30  # caches below 2 GiB are checksummed on every load


class RecordMismatchError(RuntimeError):
    """Two source files disagree about a record (e.g. an SDF out of step with its CSV).

    Raised by a featuriser, it stops the whole build instead of dropping the record.
    """


class EmptyCacheError(ValueError):
    """Every record failed: no cache is left behind, the first errors are in the message."""


def user_cache_dir() -> Path:
    """``$TMZOO_CACHE``, else ``$XDG_CACHE_HOME/tmzoo``, else ``~/.cache/tmzoo``."""
    if os.environ.get("TMZOO_CACHE"):
        return Path(os.environ["TMZOO_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tmzoo"


def cache_key(settings: dict, sources: Sequence[Path]) -> str:
    """16 hex digits hashing the settings and the identity (name, size, mtime) of the source files."""
    stats = [(Path(p).name, Path(p).stat()) for p in sources]
    identities = [{"name": name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns} for name, stat in stats]
    payload = {"format": CACHE_FORMAT, "settings": settings, "sources": identities}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Failure:
    """A record left out of the cache, and why."""

    index: int
    error: str
    name: str = ""


@dataclass
class FeatureCache:
    """A loaded cache: the molecules, the records that failed, and the manifest."""

    folder: Path
    store: GraphStore
    failures: list[Failure]
    manifest: dict

    def __len__(self) -> int:
        return len(self.store)


def _record(index: int, name: str) -> str:
    return f"record {index} ({name})" if name else f"record {index}"


# --------------------------------------------------------------------------- workers
_FEATURIZE: Callable | None = None
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """Ends this worker when ``parent`` ends: ``PR_SET_PDEATHSIG`` on Linux, and a watchdog
    thread everywhere (also covers a parent that died before the ``prctl``)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # no prctl in this libc
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="tmzoo-parent-watch", daemon=True).start()


def _init_worker(featurize: Callable, parent: int | None = None) -> None:
    if parent is not None:
        _die_with_parent(parent)
    torch.set_num_threads(1)
    global _FEATURIZE
    _FEATURIZE = featurize


def _run(job: tuple[int, str, Any]):
    index, name, payload = job
    try:
        data = _FEATURIZE(payload)
        data.idx = torch.tensor([index])
        return index, name, encode(data), None
    except MoleculeError as err:
        return index, name, None, str(err)
    except RecordMismatchError as err:
        return index, name, err, None


def _run_chunk(jobs: list) -> list:
    return [_run(job) for job in jobs]


def _results(jobs: Iterable, featurize: Callable, num_proc: int, chunk: int = 64):
    """Featurisation results in job order; in worker processes when ``num_proc > 1``.

    At most ``4 * num_proc`` chunks are in flight, so neither the jobs (e.g. SDF text) nor
    the results pile up in memory when the reader or the writer is the slower side.
    """
    if num_proc <= 1:
        threads = torch.get_num_threads()
        _init_worker(featurize)
        try:
            yield from map(_run, jobs)
        finally:
            torch.set_num_threads(threads)  # the caller's process keeps its threads
        return
    # fork: workers inherit the imported modules (a fresh interpreter would spend seconds
    # importing torch, RDKit and Lightning); they run single-threaded torch only.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    jobs = iter(jobs)
    # concurrent.futures, not multiprocessing.Pool: when a worker dies (the OOM killer, a
    # crash inside RDKit) a Pool silently replaces it and waits forever for the lost chunk;
    # an executor reports BrokenProcessPool, and the chunks in flight are re-run (see _rerun).
    pool = _executor(context, num_proc, featurize)
    pending: collections.deque = collections.deque()
    try:
        while True:
            while len(pending) < 4 * num_proc and (batch := list(itertools.islice(jobs, chunk))):
                pending.append((batch, pool.submit(_run_chunk, batch)))
            if not pending:
                return
            batch, future = pending.popleft()
            try:
                yield from future.result()
            except BrokenProcessPool:
                pool.shutdown(wait=False, cancel_futures=True)
                for batch in [batch, *(b for b, _ in pending)]:
                    yield from _rerun(batch, context, featurize)
                pending.clear()
                pool = _executor(context, num_proc, featurize)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


WORKER_DIED = (
    "the featurisation process died on this record (killed by the operating system, e.g. "
    "out of memory, or crashed inside RDKit)"
)


def _executor(context, num_proc: int, featurize: Callable) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(num_proc, mp_context=context, initializer=_init_worker,
                               initargs=(featurize, os.getpid()))


def _rerun(batch: list, context, featurize: Callable) -> list:
    """Results of a chunk that was in flight when a worker died: in a fresh process, and
    record by record if that dies too, so only the record that kills its process fails."""
    try:
        with _executor(context, 1, featurize) as single:
            return single.submit(_run_chunk, batch).result()
    except BrokenProcessPool:
        if len(batch) == 1:
            index, name, _ = batch[0]
            log.warning("%s: %s", _record(index, name), WORKER_DIED)
            return [(index, name, None, WORKER_DIED)]
    return [result for job in batch for result in _rerun([job], context, featurize)]


# ------------------------------------------------------------------------ building
def build_cache(
    folder: Path,
    jobs: Iterable[tuple[int, str, Any]],
    featurize: Callable[[Any], Any],
    *,
    total: int | None = None,
    num_proc: int = 1,
    description: str = "featurising",
    manifest: dict | Callable[[], dict] | None = None,
) -> FeatureCache:
    """Featurises ``jobs`` (``(index, name, payload)``) into ``folder``, atomically.

    ``featurize(payload)`` returns a ``Data`` or raises :class:`MoleculeError` (the record
    is listed in ``failures.csv``) or :class:`RecordMismatchError` (the build stops).
    Runs in ``num_proc`` worker processes; prints the count and rate when done.
    ``manifest``: extra manifest fields, or a function giving them once ``jobs`` is consumed.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    temporary.mkdir()
    failures: list[Failure] = []
    start = time.perf_counter()
    try:
        writer = GraphWriter(temporary)
        bar = tqdm(total=total, desc=description, unit="mol", mininterval=1.0, file=sys.stderr)
        results = _results(jobs, featurize, num_proc)
        with bar, contextlib.closing(results):
            for index, name, data, problem in results:
                bar.update(1)
                if isinstance(data, RecordMismatchError):
                    raise RecordMismatchError(f"{_record(index, name)}: {data}")
                if data is None:
                    failures.append(Failure(index, problem, name))
                else:
                    writer.append(data)
        files = writer.close()
        if writer.count == 0 and failures:
            raise EmptyCacheError(
                f"{description}: none of the {len(failures)} records could be featurised; first errors: "
                + "; ".join(f"{_record(f.index, f.name)}: {f.error}" for f in failures[:3])
            )
        seconds = time.perf_counter() - start
        store_bytes = sum(entry["size"] for entry in files.values())
        failures_path = write_failures(temporary / FAILURES_FILE, [(f.index, f.name, f.error) for f in failures])
        files[FAILURES_FILE] = {"size": failures_path.stat().st_size, "blake2b": file_checksum(failures_path)}
        info = {
            **((manifest() if callable(manifest) else manifest) or {}),
            "format": CACHE_FORMAT,
            "count": writer.count,
            "failures": len(failures),
            "failures_file": FAILURES_FILE,
            "layout": writer.layout,
            "files": files,
            "bytes_per_molecule": round(store_bytes / max(writer.count, 1), 1),
            "seconds": round(seconds, 2),
            "molecules_per_second": round((writer.count + len(failures)) / max(seconds, 1e-9), 1),
            "num_proc": num_proc,
        }
        with atomic_write(temporary / "manifest.json") as handle:
            handle.write(json.dumps(info, indent=1, sort_keys=True, default=str))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(temporary, folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    message = (
        f"{description}: {writer.count} molecules in {seconds:.1f} s "
        f"({info['molecules_per_second']:.0f} molecules/s, {num_proc} process(es)); "
        f"{len(failures)} failed (listed in {folder / FAILURES_FILE})"
    )
    log.info(message)
    print(message, file=sys.stderr)
    return FeatureCache(folder, GraphStore(folder, writer.layout, writer.count), failures, info)


# ------------------------------------------------------------------------- loading
def load_cache(folder: Path, verify: str = "auto", report: bool = True) -> FeatureCache | None:
    """The cache in ``folder``, or ``None`` when it is missing, incomplete or corrupted.

    ``verify``: ``"size"`` checks file sizes, ``"full"`` also checksums, ``"auto"`` checksums
    caches below 2 GiB. Opens nothing for writing. ``report``: say why a cache is invalid.
    """
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        if manifest.get("format") != CACHE_FORMAT:
            raise ValueError(f"format {manifest.get('format')} is not {CACHE_FORMAT}")
        total = sum(entry["size"] for entry in files.values())
        checksums = verify == "full" or (verify == "auto" and total < FULL_CHECK_BYTES)
        for name, entry in files.items():
            path = folder / name
            if not path.is_file() or path.stat().st_size != entry["size"]:
                raise ValueError(f"{name} is missing or has the wrong size")
            if checksums and file_checksum(path) != entry["blake2b"]:
                raise ValueError(f"{name} does not match its checksum")
        with open(folder / manifest["failures_file"], newline="", encoding="utf-8") as handle:
            failures = [Failure(int(r["index"]), r["error"], r["name"]) for r in csv.DictReader(handle)]
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as err:
        if report:
            log.warning("cache %s is invalid (%s); it will be rebuilt", folder, err)
            print(f"cache {folder} is invalid ({err}); rebuilding", file=sys.stderr)
        return None
    store = GraphStore(folder, manifest["layout"], manifest["count"])
    return FeatureCache(folder, store, failures, manifest)


_THREAD_LOCKS: dict[str, threading.Lock] = {}  # POSIX locks do not exclude threads of one process


@contextlib.contextmanager
def folder_lock(folder: Path):
    """Exclusive lock on ``.<folder name>.lock`` beside ``folder`` (only a thread lock without fcntl).

    A POSIX record lock (``lockf``): it belongs to this process only, so worker processes
    forked while it is held do not keep it alive, and it ends with the process (SIGKILL too),
    or when the lock file is closed.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.parent / f".{folder.name}.lock"
    thread_lock = _THREAD_LOCKS.setdefault(str(path.resolve()), threading.Lock())  # setdefault is atomic
    with thread_lock, open(path, "a") as handle:
        if fcntl is not None:
            fcntl.lockf(handle, fcntl.LOCK_EX)
        yield


def load_or_build(
    folder: Path,
    jobs: Callable[[], Iterable[tuple[int, str, Any]]],
    featurize: Callable[[Any], Any],
    *,
    verify: str = "auto",
    **build_options,
) -> FeatureCache:
    """Loads the cache in ``folder``, building it from ``jobs()`` (:func:`build_cache` with
    ``build_options``) when it is not valid."""
    return load_or_run(folder, lambda: build_cache(folder, jobs(), featurize, **build_options), verify=verify)


def load_or_run(
    folder: Path, build: Callable[[], FeatureCache], *, verify: str = "auto", force: bool = False
) -> FeatureCache:
    """The valid cache in ``folder``, else the one ``build()`` writes there, under the folder's
    lock (so concurrent processes build once) after removing what killed builds left.

    A valid cache is loaded without taking the lock (nothing is opened for writing).
    ``force``: build even when a valid cache is there (PyG's ``force_reload``).
    """
    folder = Path(folder)
    if not force and (cache := load_cache(folder, verify=verify, report=False)) is not None:
        return cache
    with folder_lock(folder):
        if not force and (cache := load_cache(folder, verify=verify)) is not None:
            return cache
        for stale in folder.parent.glob(f".{folder.name}.tmp-*"):  # left by killed builds
            shutil.rmtree(stale, ignore_errors=True)
        return build()


def default_num_proc() -> int:
    """Worker processes for featurisation: the usable cores (at most 32)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, 32)


__all__ = [
    "CACHE_FORMAT", "EmptyCacheError", "FAILURES_FILE", "FeatureCache", "Failure", "RecordMismatchError", "build_cache",
    "cache_key", "default_num_proc", "folder_lock", "load_cache", "load_or_build", "load_or_run", "user_cache_dir",
]
