"""The hand-written fast paths compute what the plain PyTorch expressions they replace compute."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from test_tasks_tinydata import tiny_records
from tmzoo.data.dense import DenseMolecules, collate_dense
from tmzoo.models import DenoisingHead, TransformerM
from tmzoo.models.embeddings import _SummedRows
from tmzoo.models.geometry import gaussians
from tmzoo.models.layers import dropout, dropout_noise
from tmzoo.models.output import EncoderOutput


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("width", [8, 64])  # the two backward strategies
@pytest.mark.parametrize("padding_idx", [None, 0])
def test_summed_rows_match_a_summed_lookup_with_its_gradient(threads, width, padding_idx):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        rows = torch.randint(0, 50, (300, 9))
        rows[::3] = 0
        table = torch.randn(50, width, dtype=torch.float64, requires_grad=True)
        weights = torch.randn(300, width, dtype=torch.float64)
        fast = _SummedRows.apply(rows, table, padding_idx)
        (fast * weights).sum().backward()
        fast_grad, table.grad = table.grad, None
        plain = F.embedding(rows, table, padding_idx=padding_idx).sum(1)  # padding_idx: no gradient to that row
        (plain * weights).sum().backward()
        assert torch.allclose(fast, plain) and torch.allclose(fast_grad, table.grad)
    finally:
        torch.set_num_threads(before)


def test_edge_padding_row_gets_no_gradient_as_in_a_lookup(one_thread):
    torch.manual_seed(0)
    encoder = TransformerM(num_layers=1, embed_dim=16, ffn_dim=16, num_heads=2, num_kernels=4)
    batch = collate_dense(list(tiny_records())[:4])
    encoder(batch).tokens.sum().backward()
    grad = encoder.molecule_attn_bias.edge_encoder.weight.grad
    assert grad[0].abs().max() == 0 and grad[1:].abs().max() > 0


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_noise_keeps_the_expectation(p):
    torch.manual_seed(0)
    noise = dropout_noise((400, 500), p, torch.float32)
    dropped = (noise == 0).float().mean()
    assert abs(dropped - p) < 4e-3
    kept = noise[noise != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)), rtol=1e-4)
    assert abs(noise.mean() - 1) < 1e-2


def test_dropout_passes_through_in_eval_and_keeps_the_dtype():
    x = torch.randn(8, 5, 16, dtype=torch.bfloat16, requires_grad=True)
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0) is x
    y = dropout(x, 0.25)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and torch.equal(x.grad != 0, y != 0)
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_clamped_gaussians_equal_the_plain_formula_above_fp32_underflow():
    x = torch.linspace(-20, 40, 2001).view(-1, 1)
    mean, s = torch.linspace(0, 3, 16), torch.linspace(-2, 2, 16)
    std = s.abs() + 1e-2
    plain = torch.exp(-0.5 * ((x - mean) / std) ** 2) / ((2 * 3.14159) ** 0.5 * std)
    fast = gaussians(x, mean, s)
    assert torch.equal(fast[plain > 1e-30], plain[plain > 1e-30])
    assert fast.max() > 1 and (fast - plain).abs().max() < 1e-36
    with torch.no_grad():  # the in-place evaluation
        assert torch.equal(gaussians(x, mean, s), fast)


def test_denoising_head_equals_the_per_axis_attention_it_folds(one_thread):
    torch.manual_seed(0)
    head = DenoisingHead(16, 4).eval()
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    b, n = 3, 5
    out = EncoderOutput(
        tokens=torch.randn(b, n + 1, 16), atom_mask=torch.ones(b, n, dtype=torch.bool),
        bias=torch.randn(b, 4, n + 1, n + 1), direction=torch.randn(b, n, n, 3), modes=torch.zeros(b, dtype=torch.long),
    )
    atoms = out.atoms

    def heads(t):
        return t.view(b, n, 4, -1).transpose(1, 2)

    q = heads(head.q_proj(atoms)) * head.scaling
    k, v = heads(head.k_proj(atoms)), heads(head.v_proj(atoms))
    probs = torch.softmax(q @ k.transpose(-1, -2) + out.bias[:, :, 1:, 1:], dim=-1)
    o = torch.einsum("bhij,bijc,bhjd->bichd", probs, out.direction, v).reshape(b, n, 3, 16)
    plain = torch.cat([head.force_proj1(o[:, :, 0]), head.force_proj2(o[:, :, 1]), head.force_proj3(o[:, :, 2])], -1)
    assert torch.allclose(head(out), plain, atol=1e-5)


def test_dense_batch_pickles_as_one_buffer_and_back():
    batch = collate_dense(list(tiny_records())[:4])
    batch.extra.update(weight=torch.randn(4, 3, dtype=torch.float64)[:, ::2], flag=torch.tensor(True), names=["a"] * 4)
    back = pickle.loads(pickle.dumps(batch))
    assert type(back) is DenseMolecules and back.extra["names"] == ["a"] * 4
    for key in ("x", "mask", "degree", "pos", "has_pos", "spd", "path", "y", "idx"):
        ours, theirs = getattr(batch, key), getattr(back, key)
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs), key
    for key in ("weight", "flag"):
        assert torch.equal(batch.extra[key], back.extra[key])
    assert back.x.untyped_storage().data_ptr() == back.path.untyped_storage().data_ptr()  # one buffer
    batch.extra["weight"].requires_grad_(True)  # not packable: pickled field by field
    assert torch.equal(pickle.loads(pickle.dumps(batch)).extra["weight"], batch.extra["weight"])


def test_heads_predict_in_fp32_under_bf16_autocast():
    """A gap of ~5 eV rounded to bf16 moves in steps of 0.03 eV: the output layers run in fp32."""
    from tmzoo.models import GapHead, GraphRegressionHead
    from tmzoo.models.output import EncoderOutput

    torch.manual_seed(0)
    tokens = torch.randn(64, 5, 16)
    out = EncoderOutput(tokens=tokens, atom_mask=torch.ones(64, 4, dtype=torch.bool))
    for head in (GapHead(16), GraphRegressionHead(16, 2)):
        with torch.no_grad():
            head.lm_output_learned_bias.fill_(5.0) if isinstance(head, GapHead) else head.out_proj.bias.fill_(5.0)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = head(out)
            exact = head(out)
        assert low.dtype == torch.float32
        assert (low - exact).abs().max() < 0.01  # bf16 inside the head, not at its output
        on_bf16_grid = (low.to(torch.bfloat16).float() == low).float().mean()
        assert on_bf16_grid < 0.1  # not snapped to bf16's steps of 0.03 near 5
