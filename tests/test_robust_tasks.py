"""Training steps of the Lightning tasks on awkward batches stay finite.

Batches mix coincident atoms, a salt, a single atom, atoms 1e4 Å apart, a molecule without
coordinates and unknown (NaN) targets; every mode distribution is tried, in fp32 and under
bf16 autocast. The loss and every gradient must be finite; an all-unknown batch gives a
zero loss, not NaN.
"""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Batch

from test_numerics import with_coordinates, without_coordinates, zigzag
from tmzoo.models import DenoisingHead, GraphRegressionHead, TransformerM
from tmzoo.tasks import Pretraining, Regression

pytestmark = pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning")  # steps run without a Trainer


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (see conftest)."""


def encoder():
    return TransformerM(num_layers=2, embed_dim=16, ffn_dim=16, num_heads=4, num_kernels=8, droppath=0.1)


def awkward_batch(targets):
    molecules = [
        with_coordinates("CCO", [(1, 1, 1)] * 3),
        with_coordinates("[Na+].[Cl-]", [(0, 0, 0), (2.8, 0, 0)]),
        with_coordinates("C", [(0, 0, 0)]),
        with_coordinates("C.O", [(0, 0, 0), (1e4, 1e4, 1e4)]),
        without_coordinates("c1ccccc1"),
        with_coordinates("C" * 12, zigzag(12)),
    ]
    for data, y in zip(molecules, targets):
        data.y = torch.tensor([y], dtype=torch.float32)
    return Batch.from_data_list(molecules)


NAN = float("nan")
SOME_UNKNOWN = [[1.0, NAN], [NAN, 2.0], [3.0, 0.5], [NAN, NAN], [2.0, 1.0], [0.5, NAN]]
ALL_UNKNOWN = [[NAN, NAN]] * 6


def step_is_finite(task, batch, autocast: bool = False) -> torch.Tensor:
    task.train()
    task.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = task.training_step(batch, 0)
    assert torch.isfinite(loss), loss
    loss.backward()
    for name, p in task.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"
    return loss


@pytest.mark.parametrize("mode_probs", [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.2, 0.6]],
                         ids=["2d3d", "2d", "3d", "mixed"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_pretraining_step_is_finite(mode_probs, autocast):
    torch.manual_seed(0)
    task = Pretraining(encoder(), denoising_head=DenoisingHead, mode_probs=mode_probs)
    step_is_finite(task, awkward_batch(SOME_UNKNOWN), autocast)


def test_pretraining_step_with_no_known_gap_is_finite():
    torch.manual_seed(0)
    task = Pretraining(encoder(), denoising_head=DenoisingHead, mode_probs=[0.0, 1.0, 0.0])
    loss = step_is_finite(task, awkward_batch(ALL_UNKNOWN))
    assert loss.item() == 0.0  # 2D only: no denoising term, no known gap


@pytest.mark.parametrize("loss", ["l1", "l2"])
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
def test_regression_step_is_finite(loss, autocast):
    torch.manual_seed(0)
    info = {"target_names": ["a", "b"], "target_mean": [1.0, 0.5], "target_std": [2.0, 0.25]}
    task = Regression(encoder(), head=GraphRegressionHead, loss=loss, data_info=info)
    step_is_finite(task, awkward_batch(SOME_UNKNOWN), autocast)
    assert step_is_finite(task, awkward_batch(ALL_UNKNOWN), autocast).item() == 0.0
