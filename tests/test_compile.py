"""The encoder compiles to one graph (no graph breaks) on a dense batch, in training and eval."""

from __future__ import annotations

import pytest
import torch

from test_tasks_tinydata import tiny_records
from tmzoo.data.dense import collate_dense
from tmzoo.models import TransformerM

pytestmark = pytest.mark.slow  # ~10 s of tracing


@pytest.mark.parametrize("training", [True, False])
def test_encoder_has_no_graph_breaks(training, one_thread):
    torch._dynamo.reset()
    torch.manual_seed(0)
    encoder = TransformerM(num_layers=1, embed_dim=16, ffn_dim=16, num_heads=2, num_kernels=4).train(training)
    records = list(tiny_records())
    records[1] = records[1].clone()
    records[1].has_pos = torch.tensor([False])  # a molecule without coordinates: 2D only
    explanation = torch._dynamo.explain(encoder)(collate_dense(records[:5]))
    reasons = [r.reason for r in explanation.break_reasons]
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, reasons
