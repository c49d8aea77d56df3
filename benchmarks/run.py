"""tmzoo benchmarks: every figure measured against its baseline in the same run.

    .venv/bin/python benchmarks/run.py --quick     # < ~1 min on 2 cores, small model
    .venv/bin/python benchmarks/run.py             # real sizes (L12 training step)
    .venv/bin/python benchmarks/run.py --device cuda   # adds bf16 / L12 batch-256 GPU figures

Prints one ``name: value`` line per figure. See ``benchmarks/README.md`` for what each
figure means, the baselines and the latest results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import baselines  # noqa: E402
from common import PCQM4MV2_MOLECULES, load_smiles, sample_source  # noqa: E402
from fast_paths import fast_path_bond_codes_many  # noqa: E402

from tmzoo.chem.molecule import mol_from_smiles, mol_to_data  # noqa: E402
from tmzoo.chem.paths import path_bond_codes  # noqa: E402
from tmzoo.data.transforms import AddShortestPaths, transformer_m_transform  # noqa: E402


def emit(name: str, value) -> None:
    if isinstance(value, float):
        value = f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    print(f"{name}: {value}", flush=True)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def interleaved_rates(tasks: dict, items: list, rounds: int, chunk: int = 100) -> dict[str, float]:
    """Items/s of each ``task(chunk_of_items)``, summed over ``rounds`` passes over ``items``.

    The tasks take turns on every chunk of ``chunk`` items (order alternating), so a change in
    machine load during the run hits all of them alike.
    """
    total = {name: 0.0 for name in tasks}
    names = list(tasks)
    turn = 0
    for _ in range(rounds):
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            turn += 1
            for name in names if turn % 2 else names[::-1]:
                t0 = time.perf_counter()
                tasks[name](part)
                total[name] += time.perf_counter() - t0
    return {name: rounds * len(items) / t for name, t in total.items()}


# ------------------------------------------------------------------------- featurisation
def _add_paths_many(graphs: list, max_hops: int = 5) -> None:
    """What ``AddShortestPaths`` adds, for a list of graphs at once (the batched proposal)."""
    results = fast_path_bond_codes_many(
        [(g.edge_index.numpy(), g.edge_attr.numpy(), g.num_nodes) for g in graphs], max_hops
    )
    for g, (dist, codes) in zip(graphs, results):
        n = g.num_nodes
        g.pair_spd = torch.from_numpy(dist.reshape(n * n).astype("int16"))
        g.pair_path = torch.from_numpy(codes.reshape(n * n, max_hops, -1))


def bench_featurisation(quick: bool) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # single-core rates
    smiles = load_smiles(300 if quick else None)
    rounds = 2 if quick else 3
    graphs = [mol_to_data(mol_from_smiles(s), use_coordinates=False) for s in smiles]
    emit("featurize_molecules", len(graphs))
    emit("featurize_mean_atoms", statistics.mean(g.num_nodes for g in graphs))

    paths = AddShortestPaths()
    arrays = [(g.edge_index.numpy(), g.edge_attr.numpy(), g.num_nodes) for g in graphs]
    rates = interleaved_rates(  # each task gets the same molecules (by position)
        {
            "tmzoo": lambda part: [path_bond_codes(*arrays[k]) for k in part],
            "baseline": lambda part: [
                baselines.shortest_path_features(graphs[k].edge_index, graphs[k].edge_attr, graphs[k].num_nodes)
                for k in part
            ],
            "transform": lambda part: [paths(graphs[k]) for k in part],
            "batched": lambda part: fast_path_bond_codes_many([arrays[k] for k in part]),
            "fw_only": lambda part: [baselines.floyd_warshall(_adjacency(graphs[k])) for k in part],
        },
        list(range(len(graphs))),
        rounds,
    )
    emit("featurize_mols_per_s", rates["tmzoo"])
    emit("featurize_baseline_mols_per_s", rates["baseline"])
    emit("featurize_speedup", rates["tmzoo"] / rates["baseline"])
    emit("featurize_transform_speedup", rates["transform"] / rates["baseline"])
    emit("featurize_baseline_fw_share", rates["baseline"] / rates["fw_only"])
    emit("featurize_batched_speedup", rates["batched"] / rates["baseline"])

    transform = transformer_m_transform()
    rates = interleaved_rates(
        {
            "tmzoo": lambda part: [transform(mol_to_data(mol_from_smiles(s), use_coordinates=False)) for s in part],
            "baseline": lambda part: [baselines.reference_pipeline(s) for s in part],
        },
        smiles,
        rounds,
    )
    emit("featurize_end_to_end_mols_per_s", rates["tmzoo"])
    emit("featurize_end_to_end_baseline_mols_per_s", rates["baseline"])
    emit("featurize_end_to_end_speedup", rates["tmzoo"] / rates["baseline"])
    hours = lambda rate: PCQM4MV2_MOLECULES / (16 * rate) / 3600  # noqa: E731
    emit("pcqm4mv2_projected_hours_16core", hours(rates["tmzoo"]))
    emit("pcqm4mv2_projected_hours_16core_baseline", hours(rates["baseline"]))
    torch.set_num_threads(threads)


def _adjacency(g):
    adj = torch.zeros(g.num_nodes, g.num_nodes, dtype=torch.bool)
    adj[g.edge_index[0], g.edge_index[1]] = True
    return adj.numpy()


# ------------------------------------------------------------------------- training step
QUICK_STEP = dict(num_layers=4, embed_dim=128, ffn_dim=128, num_heads=32, num_kernels=128, batch_size=64, num_batches=1)
FULL_STEP = dict(num_layers=12, embed_dim=768, ffn_dim=768, num_heads=32, num_kernels=128, batch_size=64, num_batches=1)


def bench_train_step(quick: bool, device: str) -> None:
    import train_step as ts

    cfg = ts.StepConfig(**(QUICK_STEP if quick else FULL_STEP))
    emit("train_step_config", cfg.describe() + f", {device}")
    loss_diff, grad_diff, grad_max = ts.parity(cfg)
    emit("train_step_loss_diff", loss_diff)
    emit("train_step_grad_maxdiff", grad_diff)
    emit("train_step_grad_maxdiff_relative", grad_diff / grad_max)
    rates = ts.time_steps(cfg, repeats=8 if quick else 4, device=device)
    emit("train_step_mols_per_s", rates["tmzoo"])
    emit("train_step_baseline_mols_per_s", rates["naive"])
    emit("train_step_speedup", rates["speedup"])
    mem = {v: _memory_subprocess(cfg, v, device) for v in ("tmzoo", "naive")}
    emit("train_step_memory_mb", mem["tmzoo"]["step_bytes"] / 2**20)
    emit("train_step_baseline_memory_mb", mem["naive"]["step_bytes"] / 2**20)
    emit("train_step_memory_ratio", mem["tmzoo"]["step_bytes"] / mem["naive"]["step_bytes"])
    emit("train_step_memory_method", mem["tmzoo"]["how"] + ", fresh process per variant")


def _memory_subprocess(cfg, variant: str, device: str) -> dict:
    env = dict(os.environ)
    # every tensor of >= 64 KiB gets its own mapping and goes back to the OS when freed,
    # so RSS follows live tensors instead of glibc's cached heap
    env.update(MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="131072", BENCH_THREADS=str(torch.get_num_threads()))
    cmd = [
        sys.executable, str(HERE / "train_step.py"), "--variant", variant,
        "--config", json.dumps(asdict(cfg)), "--steps", "1", "--device", device,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------------- inference
INFER_MODEL = dict(num_layers=6, embed_dim=256, ffn_dim=256, num_heads=16, num_kernels=64)


def bench_inference(quick: bool, device: str) -> None:
    from torch_geometric.data import Batch

    from tmzoo.models import GapHead, TransformerM

    smiles = load_smiles(256 if quick else 1024)
    torch.manual_seed(0)
    encoder = TransformerM(**INFER_MODEL).to(device).eval()
    head = GapHead(INFER_MODEL["embed_dim"]).to(device).eval()
    transform = transformer_m_transform()
    batch_size = 64

    def run(part: list) -> None:
        with torch.no_grad():
            for i in range(0, len(part), batch_size):
                datas = [transform(mol_to_data(mol_from_smiles(s), use_coordinates=False)) for s in part[i : i + batch_size]]
                head(encoder(Batch.from_data_list(datas).to(device)))
            if device.startswith("cuda"):
                torch.cuda.synchronize()

    run(smiles[:batch_size])  # warm-up
    rate = interleaved_rates({"tmzoo": run}, smiles, 2, chunk=len(smiles))["tmzoo"]
    emit("inference_config", f"L{INFER_MODEL['num_layers']} C{INFER_MODEL['embed_dim']} H{INFER_MODEL['num_heads']} "
         f"K{INFER_MODEL['num_kernels']}, batch {batch_size}, {device}, SMILES -> gap prediction")
    emit("inference_mols_per_s", rate)


# ------------------------------------------------------------------------- GPU
def bench_gpu(quick: bool) -> None:
    if not torch.cuda.is_available():
        emit("gpu", "not available")
        return
    import train_step as ts

    emit("gpu", torch.cuda.get_device_name(0))
    cfg = ts.StepConfig(**{**FULL_STEP, "batch_size": 64 if quick else 256, "num_batches": 1, "bf16": True})
    rates = ts.time_steps(cfg, repeats=3, device="cuda")
    emit("gpu_train_step_config", cfg.describe() + ", cuda")
    emit("gpu_train_step_mols_per_s", rates["tmzoo"])
    emit("gpu_train_step_baseline_mols_per_s", rates["naive"])
    emit("gpu_train_step_speedup", rates["speedup"])
    emit("gpu_reference_mols_per_s_per_a100", 1400.0)
    mem = {}
    for v in ("tmzoo", "naive"):
        try:
            mem[v] = _memory_subprocess(cfg, v, "cuda")["step_bytes"]
        except subprocess.CalledProcessError:  # out of memory
            mem[v] = float("nan")
    emit("gpu_train_step_memory_mb", mem["tmzoo"] / 2**20)
    emit("gpu_train_step_baseline_memory_mb", mem["naive"] / 2**20)
    emit("gpu_train_step_memory_ratio", mem["tmzoo"] / mem["naive"])


def main() -> None:
    parser = argparse.ArgumentParser(description="tmzoo benchmarks")
    parser.add_argument("--quick", action="store_true", help="small sizes, under about a minute on 2 cores")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (training and inference figures)")
    parser.add_argument("--only", nargs="*", choices=("featurize", "train", "inference", "gpu"), default=None)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="intra-op threads for the CPU training/inference figures (default 1: see README)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda given but no CUDA device is available")
    parts = set(args.only or ("featurize", "train", "inference", "gpu"))
    start = time.perf_counter()
    emit("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    emit("machine", f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads")
    emit("data", sample_source())
    if "featurize" in parts:
        bench_featurisation(args.quick)
    if "train" in parts:
        bench_train_step(args.quick, args.device)
    if "inference" in parts:
        bench_inference(args.quick, args.device)
    if "gpu" in parts:
        bench_gpu(args.quick)
    emit("wall_s", time.perf_counter() - start)


if __name__ == "__main__":
    main()
