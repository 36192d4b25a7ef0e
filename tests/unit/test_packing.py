"""Packed micro-batches (rlvr/learners/packing.py): the pure planning and layout functions, and a
packed forward through real models (the toy Qwen2 and a random SmolLM2-shaped Llama) giving the
same log-probs, entropy and every parameter's gradient as the padded one. float32 on CPU."""

import pytest
import torch

from rlvr.learners.fused import use_fused_kernels
from rlvr.learners.logprobs import ResponseLogprobs
from rlvr.learners.packing import bins_needed, block_causal_mask, cu_seqlens, micro_batch_counts, pack, packed_micro_batches, padding_fraction, position_ids, unpack_shifted
from rlvr.learners.partition import balanced_bins, balanced_groups, imbalance

# ---------------------------------------------------------------------------------------------
# bin-packing


def test_balanced_bins_lpt_by_hand():
    # heaviest first into the lightest bin: 9->A, 7->B, 6->B(7<9)... A=9+4, B=7+6 -> 13 / 13
    assert balanced_bins([4, 9, 6, 7], 2) == [[0, 1], [2, 3]]
    assert balanced_bins([5], 3) == [[0], [], []]  # more bins than items: empties
    assert balanced_bins([], 2) == [[], []]
    with pytest.raises(ValueError):
        balanced_bins([1], 0)


def test_balanced_bins_cover_every_index_once_and_balance():
    g = torch.Generator().manual_seed(0)
    w = torch.randint(5, 300, (97,), generator=g).tolist()
    bins = balanced_bins(w, 6)
    assert sorted(i for b in bins for i in b) == list(range(97))
    loads = [sum(w[i] for i in b) for b in bins]
    assert max(loads) - min(loads) <= max(w)  # LPT's bound: within one item of each other
    assert imbalance(loads) < 1.05
    # a contiguous split of the same weights (the unpacked plan's kind) is far less even here
    w_sorted = sorted(w)
    contiguous = [sum(w_sorted[i::6]) for i in range(6)]
    assert imbalance(loads) <= imbalance(contiguous)


def test_bins_needed_respects_the_budget():
    assert bins_needed([10, 10, 10, 10], 20) == 2
    assert bins_needed([10, 10, 10, 10], 40) == 1
    assert bins_needed([10, 10, 10, 10], 39) == 2
    # 3 x 12 in budget 20: ceil(36/20) = 2 bins would need 24 in one; 3 bins of 12 fit
    assert bins_needed([12, 12, 12], 20) == 3
    # a sequence over the budget gets a micro-batch of its own, the rest still packed
    assert bins_needed([50, 5, 5], 20) == 2
    assert bins_needed([], 8) == 1
    with pytest.raises(ValueError):
        bins_needed([3], 0)


def test_packed_micro_batches_plan():
    lengths = [30, 5, 7, 22, 9, 14, 3, 18]  # two minibatches: rows 0-3 and 4-7
    plan = packed_micro_batches(lengths, num_minibatches=2, max_tokens=32)
    assert [sorted(int(i) for mb in m for i in mb) for m in plan] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    for m in plan:
        for mb in m:
            assert sum(lengths[i] for i in mb.tolist()) <= 32
    assert micro_batch_counts(lengths, 2, 32) == [len(m) for m in plan] == [3, 2]
    # a rank made to run more micro-batches (another rank needs them) gets empty fillers
    forced = packed_micro_batches(lengths[:4], 1, 1000, counts=[5])
    assert len(forced[0]) == 5 and sum(mb.numel() == 0 for mb in forced[0]) == 1


def test_balanced_groups_over_ranks():
    tokens = [100, 10, 10, 10, 10, 10, 10, 10, 10, 10]
    shards = balanced_groups(tokens, 2)
    assert sorted(i for s in shards for i in s) == list(range(10))
    assert [sum(tokens[i] for i in s) for s in shards] == [100, 90]
    assert all(shards)  # each rank gets a group


# ---------------------------------------------------------------------------------------------
# packed layout


def test_position_ids_cu_seqlens_and_mask():
    assert position_ids([3, 1, 2]).tolist() == [0, 1, 2, 0, 0, 1]
    cu = cu_seqlens([3, 1, 2])
    assert cu.tolist() == [0, 3, 4, 6] and cu.dtype == torch.int32
    m = block_causal_mask([2, 3])
    expect = torch.tensor([[1, 0, 0, 0, 0],
                           [1, 1, 0, 0, 0],
                           [0, 0, 1, 0, 0],
                           [0, 0, 1, 1, 0],
                           [0, 0, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(m, expect)


def test_pack_and_unpack_layout():
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [1, 2, 3, 4]])
    attn = (ids != 0).long()
    attn[2] = 1
    # per predicted token: row 0 predicts 6, 7 (then padding), row 1 predicts 9, row 2 predicts 2, 3, 4
    shifted = torch.tensor([[1., 2., 0.], [3., 0., 0.], [4., 5., 6.]])
    ids_p, pos_p, sh_p = pack(ids, attn, shifted)
    assert ids_p.tolist() == [[5, 6, 7, 8, 9, 1, 2, 3, 4]]
    assert pos_p.tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    # packed position t scores packed token t+1; a sequence's last token would score the next
    # sequence's first: 0 there
    assert sh_p.tolist() == [[1., 2., 0., 3., 0., 4., 5., 6.]]
    assert torch.equal(unpack_shifted(sh_p, attn), shifted)
    # None passes through; unpack keeps gradients
    assert pack(ids, attn, None)[2] is None
    x = sh_p.clone().requires_grad_()
    unpack_shifted(x, attn).sum().backward()
    assert x.grad.tolist() == [[1.] * 8]  # every packed slot lands in one padded slot
    # a boundary slot goes where the padded layout has the same token's output (past the row's
    # last prediction, under mask 0): a critic's value at a row's last token, as unpacked
    boundary = torch.tensor([[0., 0., 7., 0., 8., 0., 0., 0.]])
    assert unpack_shifted(boundary, attn).tolist() == [[0., 0., 7.], [0., 8., 0.], [0., 0., 0.]]


def test_padding_fraction():
    assert padding_fraction([[4, 2], [3]], packed=False) == pytest.approx(1 - 9 / 11)
    assert padding_fraction([[4, 2], [3]], packed=True) == 0.0


def test_fused_kernels_mode():
    assert use_fused_kernels("auto", "cpu", available=True) is False  # a CPU run silently stays plain
    assert use_fused_kernels("auto", "cuda", available=False) is False
    assert use_fused_kernels("auto", "cuda", available=True) is True
    assert use_fused_kernels("off", "cuda", available=True) is False
    with pytest.raises(RuntimeError, match="liger-kernel"):
        use_fused_kernels("on", "cuda", available=False)
    with pytest.raises(RuntimeError, match="needs a GPU"):
        use_fused_kernels("on", "cpu", available=True)


def test_learner_config_fields():
    from pydantic import ValidationError

    from rlvr.learners.config import LearnerConfig

    cfg = LearnerConfig()
    assert cfg.packing is False and cfg.max_tokens_per_micro_batch >= 1 and cfg.fused_kernels == "auto"
    with pytest.raises(ValidationError, match="max_tokens_per_micro_batch"):
        LearnerConfig(max_tokens_per_micro_batch=0)
    with pytest.raises(ValidationError, match="fused_kernels"):
        LearnerConfig(fused_kernels="always")
    # YAML 1.1 reads a bare on/off as a boolean
    assert LearnerConfig(fused_kernels=True).fused_kernels == "on" and LearnerConfig(fused_kernels=False).fused_kernels == "off"


# ---------------------------------------------------------------------------------------------
# packed forward == padded forward, on real models


def _smollm2_shaped():
    """SmolLM2-135M's attention layout (9 query / 3 KV heads of 64, tied embeddings, RoPE 1e5)
    with 2 layers and a random init: no download."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=2,
                      num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=2048,
                      rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


def _toy():
    from rlvr.toy_model import build_model, build_tokenizer

    torch.manual_seed(0)
    return build_model(build_tokenizer())


def _rows(vocab: int, multi_turn: bool):
    """Ragged right-padded rows; multi-turn masks have holes (observation tokens) mid-response."""
    g = torch.Generator().manual_seed(1)
    lengths, prompt = [23, 9, 17, 30, 12], 6
    L = max(lengths)
    ids = torch.randint(1, vocab, (len(lengths), L), generator=g)
    attn = torch.zeros_like(ids)
    mask = torch.zeros(len(lengths), L - 1)
    for i, n in enumerate(lengths):
        attn[i, :n] = 1
        ids[i, n:] = 0
        mask[i, prompt - 1:n - 1] = 1
        if multi_turn and n > prompt + 6:
            mask[i, prompt + 2:prompt + 5] = 0  # a tool result inside the trajectory
    return ids, attn, mask


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("model_name, attn", [("toy", "sdpa"), ("toy", "eager"), ("smollm2-shaped", "sdpa")])
@pytest.mark.parametrize("multi_turn", [False, True])
def test_packed_forward_equals_padded(model_name, attn, multi_turn):
    model = _toy() if model_name == "toy" else _smollm2_shaped()
    model.set_attn_implementation(attn)
    assert model.config._attn_implementation == attn
    model.train()
    ids, attn, mask = _rows(model.config.vocab_size, multi_turn)
    assert model.dtype == torch.float32
    rl = ResponseLogprobs(chunk_size=16)
    out = {}
    for packed in (False, True):
        lp, ent = rl(model, ids, attn, mask, 0.8, with_entropy=True, entropy_grad=True, packed=packed)
        # a loss with per-sequence structure (seq-mean of token means) and the entropy
        seq = (lp * mask).sum(-1) / mask.sum(-1)
        out[packed] = (lp.detach(), ent.detach(), _grads(model, -seq.mean() + 0.1 * (ent * mask).sum() / mask.sum()))
    (lp0, ent0, g0), (lp1, ent1, g1) = out[False], out[True]
    assert lp1.shape == mask.shape
    assert (lp1[mask == 0] == 0).all() and (lp1[mask == 1] < 0).all()
    torch.testing.assert_close(lp1, lp0, atol=1e-4, rtol=0)
    torch.testing.assert_close(ent1, ent0, atol=1e-4, rtol=0)
    assert set(g1) == set(g0) and len(g0) == len(list(model.parameters()))
    scale = max(g.abs().max().item() for g in g0.values())
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-4 * scale, rtol=1e-3, msg=name)


def test_packing_without_sequence_boundaries_would_differ():
    """The check above is not vacuous: the same packed row with plain 0..N-1 positions (one long
    sequence, attention across the boundaries) gives different log-probs."""
    from rlvr.learners.logprobs import last_hidden_states

    model = _toy().eval()
    ids, attn, mask = _rows(model.config.vocab_size, False)
    ids_p, pos_p, _ = pack(ids, attn, mask)
    with torch.no_grad():
        right = last_hidden_states(model, ids_p, None, pos_p)
        wrong = last_hidden_states(model, ids_p, None, torch.arange(ids_p.shape[1])[None])
    n0 = int(attn[0].sum())
    torch.testing.assert_close(right[:, :n0], wrong[:, :n0])  # the first sequence sees nothing else either way
    assert (right[:, n0:] - wrong[:, n0:]).abs().max() > 1e-2
