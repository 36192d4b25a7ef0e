"""ResponseLogprobs (chunked LM head at the response positions) equals the full-logits computation:
values, entropy and every parameter's gradient, on a real (toy) Qwen2 model."""

import pytest
import torch

from rlvr.learners.logprobs import ResponseLogprobs
from rlvr.learners.losses import logprobs_and_entropy
from rlvr.toy_model import build_model, build_tokenizer


@pytest.fixture(scope="module")
def toy():
    model = build_model(build_tokenizer())
    model.train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (4, 20), generator=g)
    attn = torch.ones_like(ids)
    attn[2, 15:] = 0  # right padding
    mask = torch.zeros(4, 19)
    mask[:, 8:] = 1
    mask[2, 14:] = 0
    return model, ids, attn, mask


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _reference(model, ids, attn, mask, temperature):
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
    lp, ent = logprobs_and_entropy(logits, ids[:, 1:], temperature)
    return lp * mask, ent * mask


@pytest.mark.parametrize("chunk_size,compile", [(7, False), (4096, False), (5, True)])
def test_matches_full_logits(toy, chunk_size, compile):
    model, ids, attn, mask = toy
    lp, ent = ResponseLogprobs(chunk_size, compile=compile)(model, ids, attn, mask, 0.7, with_entropy=True, entropy_grad=True)
    g = _grads(model, (lp * mask).sum() + 0.1 * (ent * mask).sum())
    ref_lp, ref_ent = _reference(model, ids, attn, mask, 0.7)
    g_ref = _grads(model, ref_lp.sum() + 0.1 * ref_ent.sum())
    assert lp.shape == ent.shape == mask.shape
    torch.testing.assert_close(lp, ref_lp.detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(ent, ref_ent.detach(), atol=1e-5, rtol=0)
    assert (lp[mask == 0] == 0).all() and (lp[mask == 1] < 0).all()
    for name in g_ref:
        torch.testing.assert_close(g[name], g_ref[name], atol=1e-5, rtol=1e-4, msg=name)


def test_no_grad_pass_and_metric_only_entropy(toy):
    model, ids, attn, mask = toy
    rl = ResponseLogprobs(6)
    with torch.no_grad():
        lp, ent = rl(model, ids, attn, mask, 1.0)
    assert ent is None and not lp.requires_grad
    lp2, ent2 = rl(model, ids, attn, mask, 1.0, with_entropy=True, entropy_grad=False)
    assert lp2.requires_grad and not ent2.requires_grad
    torch.testing.assert_close(lp, lp2.detach())


def test_all_masked_micro_batch_still_backpropagates(toy):
    """Overlong filtering can mask every sample of a micro-batch: the loss is 0 but backward must work."""
    model, ids, attn, mask = toy
    lp, _ = ResponseLogprobs(8)(model, ids, attn, torch.zeros_like(mask), 1.0)
    assert (lp == 0).all()
    g = _grads(model, lp.sum())
    assert all(v.abs().sum() == 0 for v in g.values())
