"""The PPO critic's pieces: the value model's layout and initialisation, explained variance, RNG state."""

import random

import numpy as np
import pytest
import torch

from rlvr.learners.actor import rng_state, set_rng_state
from rlvr.learners.critic import ValueModel
from rlvr.learners.losses import explained_variance


def _tiny_value_model():
    from transformers import Qwen2Config, Qwen2Model

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=16)
    return ValueModel(Qwen2Model(cfg), cfg.hidden_size)


def test_value_head_starts_at_zero_and_values_align_with_predicted_tokens():
    vm = _tiny_value_model()
    ids = torch.randint(0, 32, (3, 7))
    attn = torch.ones_like(ids)
    v = vm(ids, attn)
    # [B, L-1] like the learner's log-probs and response_mask, float32, and 0 before any update
    assert v.shape == (3, 6) and v.dtype == torch.float32
    assert torch.equal(v, torch.zeros(3, 6))


def test_value_of_a_position_depends_on_its_prefix_only():
    vm = _tiny_value_model()
    torch.nn.init.normal_(vm.value_head.weight)  # a trained head: values are no longer constant
    ids = torch.randint(0, 32, (1, 8))
    later = ids.clone()
    later[0, 5:] = (later[0, 5:] + 1) % 32
    v, v_later = vm(ids, torch.ones_like(ids)), vm(later, torch.ones_like(later))
    torch.testing.assert_close(v[0, :5], v_later[0, :5])  # V_t sees input_ids[:t+1]
    assert (v[0, 5:] - v_later[0, 5:]).abs().max() > 1e-4


def test_value_loss_gradient_reaches_the_backbone_once_the_head_is_nonzero():
    vm = _tiny_value_model()
    ids = torch.randint(0, 32, (2, 5))
    vm(ids, torch.ones_like(ids)).sum().backward()
    assert vm.value_head.weight.grad.abs().sum() > 0
    assert vm.backbone.embed_tokens.weight.grad.abs().sum() == 0  # zero head: nothing flows back yet
    vm.zero_grad()
    torch.nn.init.normal_(vm.value_head.weight)
    vm(ids, torch.ones_like(ids)).sum().backward()
    assert vm.backbone.embed_tokens.weight.grad.abs().sum() > 0


def test_explained_variance_by_hand():
    # returns [1, 2, 3] (and a padded 100): var 2/3. V = [1, 2, 2]: residuals [0, 0, 1],
    # var (1/9 + 1/9 + 4/9) / 3 = 2/9, so EV = 1 - (2/9) / (2/3) = 2/3.
    r, m = torch.tensor([[1.0, 2, 3, 100]]), torch.tensor([[1.0, 1, 1, 0]])
    torch.testing.assert_close(explained_variance(torch.tensor([[1.0, 2, 2, 0]]), r, m), torch.tensor(2 / 3))
    assert explained_variance(r, r, m).item() == pytest.approx(1.0)  # a perfect critic
    assert explained_variance(torch.full_like(r, 7.0), r, m).item() == pytest.approx(0.0)  # a constant one
    assert explained_variance(torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2)).item() == 0.0  # nothing to explain


def test_rng_state_round_trip():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    state = rng_state()
    draws = (random.random(), np.random.rand(), torch.rand(2))
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    set_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(2))
    assert draws[:2] == again[:2] and torch.equal(draws[2], again[2])
