"""Size-grouped batches (seeded, distributed, resumable without replay) and padding in workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler
from torch_geometric.data import Batch

from test_tasks_tinydata import TinyMolecules, tiny_records
from tmzoo.data.batching import SizeBatchSampler
from tmzoo.data.dense import DenseMolecules, collate_dense, to_dense
from tmzoo.data.resumable import ResumableDataLoader
from tmzoo.datamodules.base import MoleculeDataModule, molecule_loader

SIZES = np.random.default_rng(0).integers(1, 40, size=203)


def flat(batches) -> list[int]:
    return [i for b in batches for i in b]


def test_batches_cover_every_molecule_once_and_group_sizes():
    sampler = SizeBatchSampler(list(range(len(SIZES))), batch_size=16, sizes=SIZES, seed=1)
    batches = list(sampler)
    assert sorted(flat(batches)) == list(range(len(SIZES)))
    assert len(batches) == len(sampler) == 13
    # padded pair work: far below random batches of the same count
    grouped = sum(len(b) * SIZES[b].max() ** 2 for b in batches)
    shuffled = np.random.default_rng(0).permutation(len(SIZES))
    random = sum(len(b) * SIZES[b].max() ** 2 for b in np.array_split(shuffled, 13))
    assert grouped < 0.6 * random


def test_order_is_a_function_of_seed_and_epoch():
    def order(seed, epoch):
        sampler = SizeBatchSampler(list(SIZES), batch_size=8, sizes=SIZES, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(3, 0) == order(3, 0)
    assert order(3, 0) != order(3, 1) and order(3, 0) != order(4, 0)
    assert len(order(3, 0)) == len(order(3, 1))


def test_budget_caps_padded_atoms_and_keeps_batch_count_across_epochs():
    sampler = SizeBatchSampler(list(SIZES), batch_size=64, max_atoms=200, sizes=SIZES)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(flat(batches)) == list(range(len(SIZES)))
        assert all(len(b) * SIZES[b].max() <= 200 for b in batches)


@pytest.mark.parametrize("world", [2, 3])
def test_distributed_ranks_get_equal_counts_and_cover_the_data(world):
    ranks = [list(SizeBatchSampler(list(SIZES), 16, sizes=SIZES, num_replicas=world, rank=r)) for r in range(world)]
    assert len({len(r) for r in ranks}) == 1
    seen = flat(flat(ranks))
    assert set(seen) == set(range(len(SIZES))) and len(seen) < len(SIZES) + 16 * world
    # the world can come from the DistributedSampler Lightning injects
    injected = SizeBatchSampler(DistributedSampler(list(SIZES), num_replicas=world, rank=1), 16, sizes=SIZES)
    assert list(injected) == ranks[1]


def test_prediction_order_is_sorted_within_windows_only():
    sampler = SizeBatchSampler(list(SIZES), batch_size=4, sizes=SIZES, shuffle=False, window=40)
    order = flat(sampler)
    assert sorted(order) == list(range(len(SIZES)))
    for lo in range(0, len(SIZES), 40):  # window by window, in input order
        assert sorted(order[lo : lo + 40]) == list(range(lo, min(lo + 40, len(SIZES))))


class CountingDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items, self.reads = items, 0
        self.num_nodes_per_item = np.array([d.num_nodes for d in items])

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.reads += 1
        return self.items[i]


@pytest.mark.parametrize("by_size", [True, False])
def test_resume_restores_the_position_without_loading_consumed_batches(by_size):
    data = CountingDataset(list(tiny_records()))
    loader = molecule_loader(data, batch_size=3, shuffle=True, train=True, batch_by_size=by_size, seed=5)
    epoch0 = [b.idx.tolist() for b in loader]
    epoch1 = [b.idx.tolist() for b in loader]
    assert epoch0 != epoch1 and sorted(flat(epoch1)) == list(range(16))

    it = iter(loader)  # epoch 2, stopped after 2 batches
    seen = [next(it).idx.tolist() for _ in range(2)]
    state = loader.state_dict()
    assert state == {"seed": 5, "epoch": 2, "consumed": 2}
    rest_expected = [b.idx.tolist() for b in it]

    fresh = CountingDataset(data.items)
    restored = molecule_loader(fresh, batch_size=3, shuffle=True, train=True, batch_by_size=by_size, seed=99)
    restored.load_state_dict(state)
    rest = [b.idx.tolist() for b in restored]
    assert rest == rest_expected and sorted(flat(seen + rest)) == list(range(16))
    assert fresh.reads == len(flat(rest))  # nothing replayed
    assert restored.state_dict() == {"seed": 5, "epoch": 3, "consumed": 0}


def test_resumable_loader_takes_a_size_batch_sampler():
    data = list(tiny_records())
    sampler = SizeBatchSampler(data, batch_size=4)
    loader = ResumableDataLoader(data, batch_sampler=sampler, seed=2)
    assert isinstance(next(iter(loader)), Batch) and len(loader) == 4


def test_worker_padding_equals_padding_a_pyg_batch():
    records = list(tiny_records())[:7]
    ours, theirs = collate_dense(records), to_dense(Batch.from_data_list(records))
    for name in ("x", "mask", "degree", "pos", "has_pos", "spd", "path", "y", "idx"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert ours.num_graphs == 7 and "y" in ours and "mode" not in ours
    with pytest.raises(AttributeError, match="dense_batches=False"):
        ours.edge_index


def test_dense_loader_with_workers_and_its_batch_interface():
    loader = molecule_loader(list(tiny_records()), batch_size=5, num_workers=1)
    batches = list(loader)
    assert all(isinstance(b, DenseMolecules) for b in batches)
    assert sorted(flat(b.idx.tolist() for b in batches)) == list(range(16))
    moved = batches[0].to("cpu", dtype=torch.float64)
    assert moved.pos.dtype == torch.float64 and moved.x.dtype == torch.long


class DefaultLoaderMolecules(TinyMolecules):
    """``TinyMolecules`` with the datamodule's own training loader (dense, grouped by size)."""

    train_dataloader = MoleculeDataModule.train_dataloader


@pytest.mark.slow
def test_resume_with_the_default_loader_is_exact(tmp_path):
    import test_resume
    from tmzoo.cli.lightning import run_lightning_cli

    def args(root, extra):
        argv = test_resume._args(tmp_path, root, extra)
        (tmp_path / "data.yaml").write_text(
            "data:\n  class_path: test_batching.DefaultLoaderMolecules\n  init_args: {batch_size: 4}\n"
        )
        return argv

    full = run_lightning_cli(args("full", []))
    assert isinstance(full.trainer.train_dataloader.batch_sampler, SizeBatchSampler)
    with pytest.raises(RuntimeError, match="simulated preemption"):
        run_lightning_cli(args("cut", ["{class_path: test_resume.CrashAfterStep, init_args: {step: 5}}"]))
    resumed = run_lightning_cli(args("cut", []) + ["--ckpt_path=last"])
    assert resumed.trainer.global_step == full.trainer.global_step == 6
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=f"{key} differs after resume")


def test_lightning_reinjects_its_distributed_sampler_and_keeps_the_settings():
    """DDP: Lightning rebuilds the batch sampler from its saved arguments with a ``DistributedSampler``."""
    from lightning.fabric.utilities.data import _replace_dunder_methods, _update_dataloader
    from torch.utils.data import BatchSampler, DataLoader

    data = list(tiny_records())
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        loader = molecule_loader(data, 3, max_atoms_per_batch=12)  # as in a datamodule hook
    ranks = []
    for rank in range(2):
        rebuilt = _update_dataloader(loader, DistributedSampler(data, num_replicas=2, rank=rank, shuffle=False))
        sampler = rebuilt.batch_sampler
        assert (sampler.rank, sampler.num_replicas, sampler.max_atoms, sampler.shuffle) == (rank, 2, 12, False)
        ranks.append([b.idx.tolist() for b in rebuilt])
    assert len(ranks[0]) == len(ranks[1]) and set(flat(flat(ranks))) == set(range(16))  # padded by repeats
