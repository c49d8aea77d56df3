"""Scale benchmark (issue 10): the cache, the loader, the training step and ``tmzoo infer`` at full size.

    .venv/bin/python benchmarks/scale.py --quick   # a few minutes: 20,000 records, QM9's first 5,000
    .venv/bin/python benchmarks/scale.py           # full QM9 (127,831) and 1,000,000 records (long)

Inference: builds a ``.smi`` of ``--records`` records by repeating the real PCQM4Mv2 sample's
SMILES under new names (``mol<i>``), runs ``tmzoo infer`` on it in a subprocess and prints
molecules/s and peak memory (RSS of the largest process, and PSS summed over the process and
its loader workers, sampled every 0.1 s). Then the resume check: a second run is killed
(SIGKILL, whole process group) once about half the rows are in ``OUTPUT.partial``, rerun with
``--resume``, and its final CSV is compared byte for byte with the uninterrupted run's.
Targets (issue 10): peak RSS ≤ 1.5 GB and ≥ 1,000 molecules/s on 2 cores.
The checkpoint: ``--checkpoint FILE``, else ``demo-output/model.ckpt`` (``make demo``) when
it exists, else a checkpoint of the demo's shape (``experiments/transformer_m_small.yaml``:
4 layers × 64, random weights: same cost per molecule, meaningless predictions).

Cache and loader: QM9 (``--qm9-root``, default ``../shared/data/qm9/full``; ``--qm9-limit N``
uses its first N SDF records) and the PCQM4Mv2 sample are featurised into fresh caches
(``num_proc`` = cores): bytes per molecule (bound ≤ 1.5 KB on PCQM4Mv2), build molecules/s,
then one epoch of the QM9 datamodule's own train loader (transform in ``num_workers`` = cores
workers): molecules/s and worker CPU per molecule. CPU-time figures (``*_from_cpu``, ``cpu_ms``)
hold on a shared machine where wall-clock rates do not. The PCQM4Mv2 projection (3.38M train
molecules, 16 cores) scales the sample's CPU time per molecule.

Training step: the small shape of ``benchmarks/run.py`` (4 layers, 256 wide, batch 64),
``Pretraining.training_step`` + backward + clip + AdamW, fed by the QM9 train loader
(transform in the workers) and then by the same batches from memory; the ratio of the two
step times and the loader's wait per step say whether the loader keeps up.

Output: one ``name: value`` line per figure, with the machine and its load average before and
after. Not a test.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, load_smiles, sample_source  # noqa: E402

from tmzoo.datamodules.download import sha256sum  # noqa: E402

PYTHON = sys.executable


def build_smiles_file(path: Path, records: int) -> Path:
    """``records`` lines ``SMILES mol<i>``, repeating the sample's SMILES in order."""
    smiles = load_smiles()
    with open(path, "w") as handle:
        for i in range(records):
            handle.write(f"{smiles[i % len(smiles)]} mol{i}\n")
    return path


def demo_shaped_checkpoint(path: Path) -> Path:
    """A tmzoo checkpoint with the demo model's shape and random weights."""
    import torch

    from tmzoo.checkpoints import save_bundle
    from tmzoo.checkpoints.bundle import module_spec
    from tmzoo.models import DenoisingHead, GapHead, TransformerM

    torch.manual_seed(0)
    encoder = TransformerM(num_layers=4, embed_dim=64, ffn_dim=64, num_heads=4, num_kernels=16,
                           mode_probs=[0.2, 0.2, 0.6])
    modules = {"encoder": encoder, "gap_head": GapHead(64), "denoising_head": DenoisingHead(64, 4)}
    spec = {"format": 1, "task": "pretraining", "modules": {k: module_spec(m) for k, m in modules.items()},
            "featurization": {"max_hops": 5, "reference_compatible": False}, "targets": ["homolumogap"]}
    state = {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}
    save_bundle(spec, state, path)
    return path


def _sample(process: psutil.Process, cpu: dict[int, float]) -> tuple[int, int]:
    """(largest single RSS, summed PSS) over a process and its descendants, in bytes; records
    each one's CPU seconds so far in ``cpu`` (by pid).

    PSS splits pages the forked workers share with their parent, so the sum is the footprint."""
    largest = total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            info = p.memory_full_info()
            times = p.cpu_times()
        except psutil.Error:
            continue
        largest, total = max(largest, info.rss), total + getattr(info, "pss", info.rss)
        cpu[p.pid] = times.user + times.system
    return largest, total


def run_infer(args: list[str], kill_at_rows: int | None = None, partial: Path | None = None) -> dict:
    """Run ``tmzoo infer`` in its own process group; sample RSS; optionally SIGKILL it at a row count."""
    command = [PYTHON, "-m", "tmzoo.cli.main", "infer", *args]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    watched = psutil.Process(proc.pid)
    peak_single = peak_total = 0
    killed_at = first_rows = None
    cpu: dict[int, float] = {}
    while proc.poll() is None:
        single, total = _sample(watched, cpu)
        peak_single, peak_total = max(peak_single, single), max(peak_total, total)
        if partial is not None and partial.exists():
            rows = _rows(partial)
            if first_rows is None and rows > 0:
                first_rows = (time.perf_counter(), rows)
            if kill_at_rows is not None and rows >= kill_at_rows:
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = rows
        time.sleep(0.1)
    out, err = proc.communicate()
    end = time.perf_counter()
    main_cpu = cpu.pop(proc.pid, 0.0)
    return {"seconds": end - start, "rc": proc.returncode, "peak_rss": peak_single,
            "cpu_main": main_cpu, "cpu_workers": sum(cpu.values()),
            "peak_pss_tree": peak_total, "killed_at": killed_at, "first_rows": first_rows, "end": end,
            "stdout": out, "stderr": err}


def _rows(partial: Path) -> int:
    """Data rows in a partial CSV (lines after the header)."""
    try:
        with open(partial, "rb") as handle:
            return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b"")) - 1
    except OSError:
        return 0


def _steady_rate(run: dict, records: int) -> int | str:
    """Molecules/s from the first rows written to the end (start-up left out)."""
    if run["first_rows"] is None:
        return "n/a"
    seen_at, rows = run["first_rows"]
    return round((records - rows) / max(run["end"] - seen_at, 1e-9))


def _cpu_figures(run: dict, records: int, workers: int, cores: int = 2) -> dict:
    """CPU milliseconds per molecule (predicting process, loader workers) and the rate they allow on
    ``cores`` cores nobody else uses: a load-independent figure for a shared machine (start-up included)."""
    main = 1e3 * run["cpu_main"] / records
    feat = 1e3 * run["cpu_workers"] / records
    if workers == 0:
        limit = 1e3 / main
    else:
        limit = min(1e3 * cores / (main + feat), 1e3 / main, 1e3 * workers / max(feat, 1e-9))
    return {"infer_cpu_ms_per_mol_main": round(main, 3), "infer_cpu_ms_per_mol_workers": round(feat, 3),
            f"infer_mols_per_s_on_{cores}_idle_cores_from_cpu_time": round(limit)}


def infer_figures(workdir: Path, records: int, checkpoint: Path, workers: int | None, batch_size: int,
                  resume_check: bool) -> dict:
    """``tmzoo infer`` molecules/s and peak RSS, and the kill-then-resume check."""
    from tmzoo.cli.infer import default_workers
    from tmzoo.tasks.writer import partial_path

    source = build_smiles_file(workdir / "screen.smi", records)
    common = ["--checkpoint", str(checkpoint), "--input", str(source), "--quiet", "--batch-size", str(batch_size)]
    if workers is not None:
        common += ["--workers", str(workers)]
    full_out = workdir / "full.csv"
    full = run_infer([*common, "--output", str(full_out)], partial=partial_path(full_out))
    if full["rc"] != 0:
        raise RuntimeError(f"tmzoo infer failed ({full['rc']}):\n{full['stderr'][-3000:]}")
    figures = {
        "infer_records": records,
        "infer_seconds": round(full["seconds"], 1),
        "infer_mols_per_s": round(records / full["seconds"]),
        "infer_steady_mols_per_s": _steady_rate(full, records),
        "infer_peak_rss_mb": round(full["peak_rss"] / 2**20),
        "infer_peak_pss_all_processes_mb": round(full["peak_pss_tree"] / 2**20),
        "infer_summary": full["stdout"].strip().splitlines()[0] if full["stdout"].strip() else "",
        **_cpu_figures(full, records, default_workers() if workers is None else workers),
    }
    if not resume_check:
        return figures
    out = workdir / "resumed.csv"
    partial = partial_path(out)
    killed = run_infer([*common, "--output", str(out)], kill_at_rows=records // 2, partial=partial)
    figures["resume_killed_at_rows"] = killed["killed_at"]
    figures["resume_killed_rc"] = killed["rc"]
    resumed = run_infer([*common, "--output", str(out), "--resume"])
    kept = [line for line in resumed["stderr"].splitlines() if "resuming after" in line]
    figures["resume_kept"] = kept[0].split("resuming after ")[1].split(" rows")[0] if kept else "none"
    figures["resume_rc"] = resumed["rc"]
    figures["resume_seconds"] = round(resumed["seconds"], 1)
    figures["resume_equal_to_uninterrupted"] = out.exists() and sha256sum(out) == sha256sum(full_out)
    return figures


# ------------------------------------------------------------------ cache and loader figures
PCQM4MV2_TRAIN = 3_378_606  # molecules of PCQM4Mv2's train split (the 3D SDF)
PROJECTION_CORES = 16
BYTES_BOUND = 1500  # issue 10: cache ≤ 1.5 KB per PCQM4Mv2 molecule
QM9_FULL = ROOT.parent / "shared" / "data" / "qm9" / "full"
PCQM4MV2_SAMPLE = ROOT.parent / "shared" / "data" / "pcqm4mv2" / "sample1700"


def cores() -> int:
    return len(os.sched_getaffinity(0))


class CpuMeter:
    """CPU seconds of this process and of its descendants (worker processes) while in the
    ``with`` block: descendants are sampled every 0.1 s by a thread, since their times are
    lost when they exit (a few tenths of a second per worker may be missed: a lower bound)."""

    def __init__(self):
        self.me = psutil.Process()
        self._seen: dict[int, float] = {}
        self._base: dict[int, float] = {}
        self._stop = threading.Event()

    def _poll(self) -> None:
        for p in self.me.children(recursive=True):
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            self._seen[p.pid] = t.user + t.system

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self._poll()

    def __enter__(self) -> "CpuMeter":
        self._poll()
        self._base = dict(self._seen)
        t = self.me.cpu_times()
        self._main0 = t.user + t.system
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._poll()
        self._stop.set()
        self._thread.join()
        t = self.me.cpu_times()
        self.main = t.user + t.system - self._main0
        self.children = sum(v - self._base.get(pid, 0.0) for pid, v in self._seen.items())


def qm9_subset(root: Path, limit: int, workdir: Path) -> Path:
    """A QM9 raw folder under ``workdir`` with the first ``limit`` SDF records (the CSV and the
    uncharacterised list linked: the reader joins by name, so the labels stay right)."""
    raw = workdir / f"qm9-first-{limit}" / "raw"
    sdf = raw / "gdb9.sdf"
    if sdf.exists():
        return raw
    raw.mkdir(parents=True, exist_ok=True)
    with gzip.open(root / "gdb9.sdf.gz", "rt") as source, open(sdf.with_suffix(".partial"), "w") as out:
        records = 0
        for line in source:
            out.write(line)
            if line.startswith("$$$$"):
                records += 1
                if records == limit:
                    break
    os.replace(sdf.with_suffix(".partial"), sdf)
    for name in ("gdb9.sdf.csv.gz", "uncharacterized.txt"):
        (raw / name).symlink_to((root / name).resolve())
    return raw


def bytes_per_item(cache) -> np.ndarray:
    """Bytes every molecule takes in the cache's store (its rows of each attribute, plus one
    8-byte offset per attribute)."""
    total = 0
    store = cache.store
    for name, spec in store.layout.items():
        offsets = np.memmap(store.folder / f"{name}.off", dtype=np.int64, mode="r")
        row = np.dtype(spec["dtype"]).itemsize * int(np.prod(spec["shape"] or [1]))
        total = total + np.diff(np.asarray(offsets)) * row + 8
    return np.asarray(total)


def build_figures(prefix: str, dataset) -> tuple[dict, object, tuple[float, float]]:
    """Builds ``dataset``'s cache (fresh folder, ``num_proc`` = cores) and measures it."""
    with CpuMeter() as cpu:
        start = time.perf_counter()
        cache = dataset.load()
        seconds = time.perf_counter() - start
    manifest = cache.manifest
    attempted = manifest["count"] + manifest["failures"]
    main, workers = cpu.main / attempted, cpu.children / attempted
    figures = {
        f"{prefix}_molecules": manifest["count"],
        f"{prefix}_failed": manifest["failures"],
        f"{prefix}_cache_bytes_per_molecule": manifest["bytes_per_molecule"],
        f"{prefix}_cache_build_num_proc": manifest["num_proc"],
        f"{prefix}_cache_build_mols_per_s": manifest["molecules_per_second"],
        f"{prefix}_cache_build_wall_seconds": round(seconds, 1),
        f"{prefix}_cache_build_cpu_ms_per_mol_main": round(1e3 * main, 3),
        f"{prefix}_cache_build_cpu_ms_per_mol_workers": round(1e3 * workers, 3),
        f"{prefix}_cache_build_mols_per_s_per_worker_core_from_cpu": round(1 / max(workers, 1e-9)),
    }
    return figures, cache, (main, workers)


def transform_rate(dataset, limit: int) -> float:
    """Molecules/s of one core reading a split's molecules and transforming them (what one
    loader worker does per molecule, collation left out), single-threaded, in this process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        n = min(limit, len(dataset))
        with CpuMeter() as cpu:
            for i in range(n):
                dataset[i]
        return n / max(cpu.main, 1e-9)
    finally:
        torch.set_num_threads(threads)


def qm9_datamodule(root: Path, cache_dir: Path, workers: int, batch_size: int = 64):
    from tmzoo.datamodules import QM9DataModule

    dm = QM9DataModule(root=str(root), cache_dir=str(cache_dir), num_proc=cores(), batch_size=batch_size,
                       num_workers=workers)
    return dm


def cache_figures(workdir: Path, qm9_root: Path) -> tuple[dict, dict]:
    """Cache bytes per molecule and build molecules/s: QM9 (``qm9_root``) and the PCQM4Mv2 sample.

    Caches go to a fresh folder under ``workdir`` so they are built, not reused."""
    from tmzoo.datamodules import PCQM4Mv2Dataset

    cache_dir = workdir / f"caches-{os.getpid()}-{int(time.time())}"
    dm = qm9_datamodule(qm9_root, cache_dir, workers=cores())
    figures, _, _ = build_figures("qm9", dm.dataset)
    figures["qm9_source"] = str(qm9_root)
    sample = PCQM4Mv2Dataset(str(PCQM4MV2_SAMPLE), cache_dir=str(cache_dir), num_proc=cores(), lazy=True)
    pcq, cache, (main, workers) = build_figures("pcqm4mv2_sample", sample)
    figures.update(pcq)
    per_item = bytes_per_item(cache)
    has_pos = np.asarray(cache.store.column("has_pos")).reshape(-1).astype(bool)
    with_3d = float(per_item[has_pos].mean()) if has_pos.any() else float("nan")
    figures["pcqm4mv2_sample_cache_bytes_per_3d_molecule"] = round(with_3d, 1)
    figures["pcqm4mv2_sample_cache_bytes_bound"] = (
        f"<= {BYTES_BOUND}: {'met' if max(pcq['pcqm4mv2_sample_cache_bytes_per_molecule'], with_3d) <= BYTES_BOUND else 'NOT met'}")
    context = {"cache_dir": cache_dir, "qm9_dm": dm, "pcq_build_cpu": (main, workers),
               "pcq_bytes": with_3d if has_pos.any() else pcq["pcqm4mv2_sample_cache_bytes_per_molecule"]}
    return figures, context


def loader_epoch(prefix: str, dm) -> tuple[dict, float]:
    """One epoch of ``dm``'s own train loader (the first batch, worker start-up, left out):
    molecules/s and its workers' CPU per molecule (transform and collation)."""
    dm.prepare_data()
    dm.setup("fit")
    iterator = iter(dm.train_dataloader())
    next(iterator)
    seen = 0
    with CpuMeter() as cpu:
        start = time.perf_counter()
        for batch in iterator:
            seen += batch.num_graphs
        seconds = time.perf_counter() - start
    del iterator
    per_core = seen / max(cpu.children, 1e-9)
    return {
        f"{prefix}_loader_num_workers": dm.num_workers,
        f"{prefix}_loader_batch_size": dm.batch_size,
        f"{prefix}_loader_molecules": seen,
        f"{prefix}_loader_mols_per_s": round(seen / seconds),
        f"{prefix}_loader_cpu_ms_per_mol_workers": round(1e3 * cpu.children / max(seen, 1), 3),
        f"{prefix}_loader_mols_per_s_per_worker_core_from_cpu": round(per_core),
    }, per_core


def loader_figures(context: dict, quick: bool) -> dict:
    """Loader molecules/s with the transform in ``cores`` workers (the datamodules' own train
    loaders: QM9, and the PCQM4Mv2 sample's 3D train molecules), worker CPU per molecule, one
    core's transform rate in this process (collation left out), and the PCQM4Mv2 projection."""
    from tmzoo.datamodules import PCQM4Mv2DataModule

    dm = context["qm9_dm"]
    figures, _ = loader_epoch("qm9", dm)
    n = 2000 if quick else 20000
    figures["qm9_transform_mols_per_s_one_core"] = round(transform_rate(dm.splits["train"], n))
    pcq = PCQM4Mv2DataModule(root=str(PCQM4MV2_SAMPLE), cache_dir=str(context["cache_dir"]), num_proc=cores(),
                             batch_size=64, num_workers=cores())
    pcq_figures, pcq_per_core = loader_epoch("pcqm4mv2_sample", pcq)
    figures.update(pcq_figures)
    figures["pcqm4mv2_sample_transform_mols_per_s_one_core"] = round(transform_rate(pcq.splits["train"], n))
    # projection: 16 cores, PCQM4Mv2's train molecules at the sample's costs per molecule
    main, work = context["pcq_build_cpu"]
    build_rate = min(PROJECTION_CORES / (main + work), 1 / max(main, 1e-9))
    figures["projection_pcqm4mv2_16_cores_build_minutes"] = round(PCQM4MV2_TRAIN / build_rate / 60, 1)
    figures["projection_pcqm4mv2_16_cores_cache_gb"] = round(PCQM4MV2_TRAIN * context["pcq_bytes"] / 1e9, 2)
    figures["projection_pcqm4mv2_16_cores_loader_mols_per_s"] = round(PROJECTION_CORES * pcq_per_core)
    figures["projection_basis"] = (
        f"{PCQM4MV2_TRAIN:,} train molecules; build: the sample's build CPU time per molecule on "
        f"{PROJECTION_CORES} cores (bounded by the reading/writing process); cache: the sample's 3D "
        f"molecules' bytes; loader: {PROJECTION_CORES} workers at the sample loader's molecules/s per worker core")
    return figures


# ------------------------------------------------------------------------- training step
def step_figures(context: dict, quick: bool, precision: str) -> dict:
    """The small-shape training step fed (a) by the QM9 train loader with the transform in
    ``cores`` workers and (b) by the same loader's batches materialised beforehand."""
    from run import ADAMW, CLIP_NORM, SMALL, forward_context, tmzoo_task

    warnings.filterwarnings("ignore", message=".*self.trainer.* reference is not registered")

    torch.manual_seed(0)
    dm = qm9_datamodule(Path(context["qm9_dm"].dataset.source_root), context["cache_dir"], workers=cores(),
                        batch_size=SMALL.batch)
    dm.prepare_data()
    dm.setup("fit")
    task = tmzoo_task(SMALL)
    task.train()
    optimizer = torch.optim.AdamW(task.parameters(), **ADAMW)

    def step(batch, index: int) -> None:
        with forward_context(precision, "cpu"):
            loss = task.training_step(batch, index)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(task.parameters(), CLIP_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    warm, steps, rounds = (1, 5, 4) if quick else (1, 15, 8)
    loader = dm.train_dataloader()
    fed, waits, pre, ratios = [], [], [], []
    for _ in range(rounds):  # rounds alternate the sides, so drifting load hits both
        iterator, kept, fed_round, pre_round = iter(loader), [], [], []
        for i in range(warm + steps):  # (a) the loader feeds the step
            t0 = time.perf_counter()
            batch = next(iterator)
            t1 = time.perf_counter()
            step(batch, i)
            kept.append(batch)
            if i >= warm:
                fed_round.append(time.perf_counter() - t0)
                waits.append(t1 - t0)
        del iterator
        for i, batch in enumerate(kept):  # (b) the same batches, transformed beforehand
            t0 = time.perf_counter()
            step(batch, i)
            if i >= warm:
                pre_round.append(time.perf_counter() - t0)
        fed += fed_round
        pre += pre_round
        ratios.append(sum(fed_round) / sum(pre_round))
    med = statistics.median
    return {
        "train_step_config": (f"{SMALL.describe()}; {precision}; QM9 train loader, {dm.num_workers} workers; "
                              f"{rounds} rounds of {steps} steps after {warm} warm-up, fed by the loader, "
                              "then the same batches again from memory; ratio: median of the rounds' ratios"),
        "train_step_seconds_loader_fed": round(med(fed), 4),
        "train_step_seconds_prematerialised": round(med(pre), 4),
        "train_step_ratio_loader_fed_over_prematerialised": round(med(ratios), 3),
        "train_step_ratio_per_round": " ".join(f"{r:.3f}" for r in ratios),
        "train_step_loader_wait_ms_per_step_median": round(1e3 * med(waits), 2),
        "train_step_loader_wait_ms_per_step_mean": round(1e3 * statistics.fmean(waits), 2),
    }


def machine() -> str:
    """lscpu's model name and the usable cores."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name:")), "")
    except (OSError, subprocess.CalledProcessError):
        model = ""
    return f"{model or platform.processor() or 'unknown CPU'}, {cores()} usable cores"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a few minutes: --records 20000, --qm9-limit 5000, short step timing")
    parser.add_argument("--records", type=int, default=None, help="records of the .smi (default 1,000,000)")
    parser.add_argument("--workers", type=int, default=None, help="tmzoo infer --workers (default: its own)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="where the input and outputs go (default: a temp dir)")
    parser.add_argument("--no-resume-check", action="store_true")
    parser.add_argument("--qm9-root", type=Path, default=QM9_FULL, help="QM9 raw files (default: the shared full set)")
    parser.add_argument("--qm9-limit", type=int, default=None,
                        help="use the first N SDF records of QM9 only (a subset copy in the workdir)")
    parser.add_argument("--precision", default="32-true",
                        help="training-step precision (default: Lightning's and transformer_m_small's 32-true)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["infer", "cache", "step"],
                        help="parts to leave out")
    args = parser.parse_args(argv)
    records = args.records or (20_000 if args.quick else 1_000_000)
    qm9_limit = args.qm9_limit or (5_000 if args.quick else None)

    started = time.perf_counter()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tmzoo-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    print(f"load_before: {load()}", flush=True)
    figures: dict = {}
    if "infer" not in args.skip:
        checkpoint = args.checkpoint
        if checkpoint is None:
            demo = ROOT / "demo-output" / "model.ckpt"
            checkpoint = demo if demo.exists() else demo_shaped_checkpoint(workdir / "demo_shaped.ckpt")
        print(f"smiles_source: {sample_source()}")
        print(f"checkpoint: {checkpoint}", flush=True)
        figures.update(infer_figures(workdir, records, checkpoint, args.workers, args.batch_size,
                                     not args.no_resume_check))
        _print(figures)
    if "cache" not in args.skip or "step" not in args.skip:
        qm9_root = qm9_subset(args.qm9_root, qm9_limit, workdir) if qm9_limit else args.qm9_root
        done = len(figures)
        cache, context = cache_figures(workdir, qm9_root)
        if "cache" not in args.skip:
            figures.update(cache)
            figures.update(loader_figures(context, args.quick))
        if "step" not in args.skip:
            figures.update(step_figures(context, args.quick, args.precision))
        _print(figures, done)
    print(f"total_seconds: {time.perf_counter() - started:.0f}")
    print(f"load_after: {load()}")
    print(f"workdir: {workdir}")
    return 0


def _print(figures: dict, start: int = 0) -> None:
    for name, value in list(figures.items())[start:]:
        print(f"{name}: {value}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
