"""Policy/value losses, aggregation, KL and logits helpers against numbers worked out by hand."""

import math

import pytest
import torch

from rlvr.learners.losses import (
    AdaptiveKLController,
    FixedKLController,
    aggregate,
    kl_penalty,
    logprobs_and_entropy,
    make_kl_controller,
    policy_loss,
    truncated_is_weights,
    value_loss,
)

T = torch.tensor
LN2 = math.log(2)


def close(a, b, atol=1e-5):
    torch.testing.assert_close(a.detach().float(), torch.as_tensor(b, dtype=torch.float32), atol=atol, rtol=0)


def logp_pair(ratios):
    """(logprobs with grad, old_logprobs) whose ratio exp(lp - old) is exactly `ratios`."""
    old = torch.full((1, len(ratios)), -1.0)
    lp = (old + torch.log(T([ratios]))).requires_grad_()
    return lp, old


# ----------------------------------------------------------------------------- aggregation

LOSS = T([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])
MASK = T([[1, 1, 0], [1, 0, 0], [0, 0, 0]])  # row 2 is all padding


def test_aggregate_token_mean():
    close(aggregate(LOSS, MASK, "token-mean"), (1 + 2 + 4) / 3)


def test_aggregate_seq_modes():
    # per-row token means 1.5 and 4; the empty row is left out -> 2.75
    close(aggregate(LOSS, MASK, "seq-mean-token-mean"), 2.75)
    # per-row token sums 3, 4, 0 over 3 rows
    close(aggregate(LOSS, MASK, "seq-mean-token-sum"), 7 / 3)
    # sums 3 + 4 divided by B * constant: constant defaults to T = 3 -> 7 / 9; constant 10 -> 7 / 30
    close(aggregate(LOSS, MASK, "seq-mean-token-sum-norm"), 7 / 9)
    close(aggregate(LOSS, MASK, "seq-mean-token-sum-norm", constant=10), 7 / 30)
    with pytest.raises(ValueError, match="unknown loss aggregation 'mean'.*token-mean"):
        aggregate(LOSS, MASK, "mean")


# ----------------------------------------------------------------------------- PPO clip


def test_ppo_clip_higher_both_sides():
    # clip_low 0.2 -> [0.8, ...], clip_high 0.28 -> [..., 1.28]; L = max(-A r, -A clip(r))
    ratios = [1.27, 1.29, 0.70, 0.81, 0.79, 1.50]
    adv = T([[1.0, 1.0, 1.0, -1.0, -1.0, -1.0]])
    # A>0, r=1.27 inside:  -1.27                 grad dL/dlp = -A r = -1.27
    # A>0, r=1.29 outside: max(-1.29, -1.28) = -1.28, clipped, grad 0
    # A>0, r=0.70 < 0.8:   max(-0.70, -0.80) = -0.70, not clipped (pessimistic side), grad -0.7
    # A<0, r=0.81 inside:   0.81                 grad +0.81
    # A<0, r=0.79 outside: max(0.79, 0.80) = 0.80, clipped, grad 0
    # A<0, r=1.50 > 1.28:  max(1.50, 1.28) = 1.50, not clipped, grad +1.5
    lp, old = logp_pair(ratios)
    mask = torch.ones(1, 6)
    loss, m = policy_loss("ppo", lp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    close(loss, (-1.27 - 1.28 - 0.70 + 0.81 + 0.80 + 1.50) / 6)
    loss.backward()
    close(lp.grad, [[-1.27 / 6, 0, -0.70 / 6, 0.81 / 6, 0, 1.50 / 6]])
    close(m["policy/clip_frac"], 2 / 6)
    close(m["policy/clip_frac_high"], 1 / 6)
    close(m["policy/clip_frac_low"], 1 / 6)
    close(m["policy/ratio_mean"], sum(ratios) / 6)
    # approx_kl = mean(r - 1 - log r)
    close(m["policy/approx_kl"], sum(r - 1 - math.log(r) for r in ratios) / 6)


def test_ppo_padding_is_ignored_and_is_weights_scale():
    lp, old = logp_pair([1.1, 1.1, 50.0])  # the padded token has a crazy ratio; it must not matter
    adv = T([[1.0, 2.0, 1.0]])
    mask = T([[1.0, 1.0, 0.0]])
    loss, m = policy_loss("ppo", lp, old, adv, mask)
    close(loss, (-1.1 - 2.2) / 2)
    close(m["policy/clip_frac"], 0.0)
    w = T([[0.5, 2.0, 1.0]])
    loss_w, _ = policy_loss("ppo", lp, old, adv, mask, is_weights=w)
    close(loss_w, (-1.1 * 0.5 - 2.2 * 2.0) / 2)


def test_ppo_dual_clip():
    # A<0, r=5: standard clip gives max(5, 1.2) = 5; dual-clip caps it at -A * c = 3, grad 0
    # A<0, r=2: 2 < 3, unchanged, grad +2
    # A>0, r=5: dual-clip does not apply -> max(-5, -1.2) = -1.2
    lp, old = logp_pair([5.0, 2.0, 5.0])
    adv = T([[-1.0, -1.0, 1.0]])
    loss, m = policy_loss("ppo", lp, old, adv, torch.ones(1, 3), clip_c=3.0, agg="seq-mean-token-sum")
    close(loss, 3.0 + 2.0 - 1.2)
    loss.backward()
    close(lp.grad, [[0.0, 2.0, 0.0]])
    close(m["policy/dual_clip_frac"], 1 / 3)


def test_unknown_policy_loss():
    lp, old = logp_pair([1.0])
    with pytest.raises(ValueError, match=r"unknown policy loss 'ppo2'.*cispo.*gspo.*ppo"):
        policy_loss("ppo2", lp, old, T([[1.0]]), torch.ones(1, 1))


# ----------------------------------------------------------------------------- GSPO, CISPO


def test_gspo_sequence_ratio_and_clip():
    # row 0: log-ratios [0.1, 0.3, pad 5.0] -> s = exp(mean of valid) = exp(0.2) = 1.221403 (inside
    #   [0.8, 1.28]) -> each token's loss = -A s = -1.221403
    # row 1: log-ratios [0.4, 0.4] -> s = exp(0.4) = 1.491825 > 1.28 with A > 0 -> clipped: -1.28
    # seq-mean-token-mean: (-1.221403 - 1.28) / 2 = -1.250701
    old = torch.zeros(2, 3)
    lp = T([[0.1, 0.3, 5.0], [0.4, 0.4, 0.0]], requires_grad=True)
    mask = T([[1.0, 1, 0], [1, 1, 0]])
    adv = torch.ones(2, 3)
    loss, m = policy_loss("gspo", lp, old, adv, mask, clip_low=0.2, clip_high=0.28, agg="seq-mean-token-mean")
    close(loss, -1.250701)
    loss.backward()
    # d/dlp_t of 1/2 * (-A * exp(mean_t lp_t)) = -s / (2 * |y|) = -1.221403 / 4 on row 0; row 1 clipped
    close(lp.grad, [[-0.305351, -0.305351, 0], [0, 0, 0]])
    close(m["policy/clip_frac"], 0.5)
    # same gradient as the paper's sequence objective written directly
    lp2 = lp.detach().clone().requires_grad_()
    (-torch.exp((lp2[0, :2]).mean()) / 2).backward()
    close(lp.grad[0, :2], lp2.grad[0, :2])


def test_cispo_clips_weight_and_stops_its_gradient():
    # ratios [1.5, 0.5, 1.1], A = [1, 1, -1]; clip_low 1.0 (no lower bound), clip_high 0.28
    #   -> weights sg[w] = [1.28, 0.5, 1.1]; L_t = -w A logp_t
    # logp = -1 + ln r = [-0.594535, -1.693147, -0.904690]
    # L = 1.28 * 0.594535 + 0.5 * 1.693147 - 1.1 * 0.904690 = 0.761005 + 0.846574 - 0.995159 = 0.612420
    # dL/dlogp = -w A = [-1.28, -0.5, 1.1]: the weight is a constant (stop-gradient), and the clipped
    #   token (r = 1.5) still gets a gradient, unlike PPO
    lp, old = logp_pair([1.5, 0.5, 1.1])
    adv = T([[1.0, 1.0, -1.0]])
    loss, m = policy_loss("cispo", lp, old, adv, torch.ones(1, 3), clip_low=1.0, clip_high=0.28,
                          agg="seq-mean-token-sum")
    close(loss, 0.612420)
    loss.backward()
    close(lp.grad, [[-1.28, -0.5, 1.1]])
    close(m["policy/clip_frac"], 1 / 3)


def test_dual_clip_only_for_ppo():
    lp, old = logp_pair([1.0])
    with pytest.raises(ValueError, match="ppo loss only"):
        policy_loss("gspo", lp, old, T([[1.0]]), torch.ones(1, 1), clip_c=3.0)


# ----------------------------------------------------------------------------- KL


def test_kl_estimators_by_hand():
    # pi(y) = 0.5, pi_ref(y) = 0.25 -> d = ref - lp = -ln2; and the reverse, d = +ln2
    lp = torch.log(T([0.5, 0.25]))
    ref = torch.log(T([0.25, 0.5]))
    close(kl_penalty(lp, ref, "k1"), [LN2, -LN2])                                 # -d
    close(kl_penalty(lp, ref, "k2"), [0.5 * LN2**2, 0.5 * LN2**2])                 # d^2/2 = 0.240227
    close(kl_penalty(lp, ref, "k3"), [0.5 + LN2 - 1, 2 - LN2 - 1])                 # e^d - d - 1
    close(kl_penalty(lp, ref, "k3"), [0.193147, 0.306853])
    # a huge d is clamped (d <= 20, k3 <= 10) instead of overflowing
    close(kl_penalty(T([-40.0]), T([0.0]), "k3"), [10.0])
    with pytest.raises(ValueError, match="k4"):
        kl_penalty(lp, ref, "k4")


def test_adaptive_kl_controller():
    # Ziegler et al.: e = clip(KL/target - 1, -0.2, 0.2); beta *= 1 + e * n / horizon
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    c.update(9.0, n_steps=1000)   # e = min(0.5, 0.2) = 0.2 -> 0.1 * 1.02 = 0.102
    assert c.value == pytest.approx(0.102)
    c.update(3.0, n_steps=1000)   # e = max(-0.5, -0.2) = -0.2 -> 0.102 * 0.98 = 0.09996
    assert c.value == pytest.approx(0.09996)
    c.update(6.6, n_steps=5000)   # e = 0.1 -> * 1.05 = 0.104958
    assert c.value == pytest.approx(0.104958)
    f = FixedKLController(0.05)
    f.update(100.0, 1000)
    assert f.value == 0.05
    assert isinstance(make_kl_controller(0.05), FixedKLController)
    assert isinstance(make_kl_controller(0.05, target=6.0), AdaptiveKLController)


# ----------------------------------------------------------------------------- value loss, TIS


def test_value_loss_clipped():
    # V_old = 0.8, clip 0.2 -> V_clip in [0.6, 1.0]
    # t0: V = 1.0, R = 1.5: V_clip = 1.0, both errors 0.25                    -> 0.25
    # t1: V = 0.5, R = 0.0: V_clip = 0.6, err 0.25 < clipped err 0.36         -> 0.36 (clipped, no grad)
    # t2: V = 2.0, R = 0.0: V_clip = 1.0, err 4.0 > clipped err 1.0           -> 4.0
    # loss = 0.5 * (0.25 + 0.36 + 4.0) / 3 = 0.768333; grad = (V - R) / 3 where unclipped
    v = T([[1.0, 0.5, 2.0, 7.0]], requires_grad=True)   # last token is padding
    old, ret, mask = T([[0.8, 0.8, 0.8, 0.0]]), T([[1.5, 0.0, 0.0, 0.0]]), T([[1.0, 1, 1, 0]])
    loss, m = value_loss(v, old, ret, mask, clip=0.2)
    close(loss, 0.768333)
    loss.backward()
    close(v.grad, [[-0.5 / 3, 0, 2 / 3, 0]])
    close(m["value/clip_frac"], 1 / 3)
    # unclipped: 0.5 * (0.25 + 0.25 + 4.0) / 3 = 0.75
    close(value_loss(v, old, ret, mask, clip=None)[0], 0.75)


def test_truncated_is_weights_and_drift_metrics():
    # learner - rollout log-probs d = [ln 1.5, ln 3, ln 0.5, pad 10] -> w = min(e^d, 2) = [1.5, 2, 0.5, 0]
    # |d| mean over valid = (0.405465 + 1.098612 + 0.693147) / 3 = 0.732408, max = ln 3 = 1.098612
    # k3 = e^d - d - 1 = [0.094535, 0.901388, 0.193147] -> mean 0.396357
    rollout = torch.full((1, 4), -2.0)
    learner = rollout + T([[math.log(1.5), math.log(3.0), math.log(0.5), 10.0]])
    w, m = truncated_is_weights(learner, rollout, T([[1.0, 1, 1, 0]]), cap=2.0)
    close(w, [[1.5, 2.0, 0.5, 0.0]])
    close(m["drift/abs_logprob_diff_mean"], 0.732408)
    close(m["drift/max"], 1.098612)
    close(m["drift/kl"], 0.396357)
    close(m["drift/is_clip_frac"], 1 / 3)


# ----------------------------------------------------------------------------- logits helpers


def test_logprobs_and_entropy():
    # softmax(log [1, 2, 1]) = [0.25, 0.5, 0.25]; softmax(zeros(3)) is uniform
    logits = torch.log(T([[[1.0, 2.0, 1.0], [1.0, 1.0, 1.0]]]))  # [B=1, T=2, V=3]
    labels = T([[1, 0]])
    lp, ent = logprobs_and_entropy(logits, labels)
    close(lp, [[math.log(0.5), math.log(1 / 3)]])
    # H([.25, .5, .25]) = 0.5 ln4 + 0.5 ln2 = 1.5 ln2; H(uniform 3) = ln3
    close(ent, [[1.5 * LN2, math.log(3)]])
    # temperature 2 halves the logits: softmax(log [1, 2, 1] / 2) = [1, sqrt2, 1] / (2 + sqrt2)
    lp, _ = logprobs_and_entropy(logits, labels, 2.0)
    close(lp, [[math.log(math.sqrt(2) / (2 + math.sqrt(2))), math.log(1 / 3)]])
    # temperature 0 (greedy sampling) leaves the logits alone; bf16 in, float32 out
    close(logprobs_and_entropy(logits, labels, 0.0)[0], logprobs_and_entropy(logits, labels)[0])
    lp, ent = logprobs_and_entropy(logits.bfloat16(), labels)
    assert lp.dtype == ent.dtype == torch.float32
    assert logprobs_and_entropy(logits, labels, with_entropy=False)[1] is None


def test_entropy_grad_flag():
    logits = torch.randn(3, 5, requires_grad=True)
    labels = torch.tensor([0, 1, 2])
    lp, ent = logprobs_and_entropy(logits, labels, entropy_grad=False)
    assert lp.requires_grad and not ent.requires_grad
    _, ent_g = logprobs_and_entropy(logits, labels)
    close(ent, ent_g.detach())
    # dH/dz_j = p_j (E_p[z] - z_j)
    ent_g.sum().backward()
    p = torch.softmax(logits.detach(), -1)
    close(logits.grad, p * ((p * logits.detach()).sum(-1, keepdim=True) - logits.detach()))


# ----------------------------------------------------------------------------- gradient direction


@pytest.mark.parametrize("name", ["ppo", "gspo", "cispo"])
def test_sgd_step_raises_logprob_of_positive_advantage_tokens(name):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, requires_grad=True)  # [B, T, V]
    labels = torch.randint(0, 6, (2, 4))
    mask = torch.ones(2, 4)
    adv = T([[1.0] * 4, [-1.0] * 4])  # sequence 0 good, sequence 1 bad
    before = logprobs_and_entropy(logits, labels)[0].detach()
    loss, _ = policy_loss(name, logprobs_and_entropy(logits, labels)[0], before, adv, mask, agg="seq-mean-token-mean")
    loss.backward()
    with torch.no_grad():
        after = logprobs_and_entropy(logits - 0.5 * logits.grad, labels)[0]
    assert (after[0] > before[0]).all() and (after[1] < before[1]).all()


# ----------------------------------------------------------------------------- AlgorithmConfig


def test_algorithm_config_defaults_and_properties():
    from rlvr.learners.config import AlgorithmConfig

    cfg = AlgorithmConfig()
    assert (cfg.advantage, cfg.policy_loss, cfg.loss_agg, cfg.kl_estimator) == ("grpo", "ppo", "token-mean", "k3")
    assert not cfg.needs_critic and not cfg.needs_reference
    assert AlgorithmConfig(advantage="gae").needs_critic
    assert AlgorithmConfig(kl_coef=0.01).needs_reference
    assert AlgorithmConfig(kl_coef=0.01, adaptive_kl_target=6.0).needs_reference
    assert all(f.description for f in AlgorithmConfig.model_fields.values())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"advantage": "grpo2"}, r"advantage\n.*unknown advantage estimator 'grpo2'.*dr_grpo, gae, grpo"),
        ({"policy_loss": "ppo2"}, r"policy_loss\n.*unknown policy loss 'ppo2'.*cispo, gspo, ppo"),
        ({"loss_agg": "sum"}, r"loss_agg\n.*unknown loss aggregation 'sum'"),
        ({"kl_estimator": "k4"}, r"kl_estimator"),
        ({"clip_c": 0.5}, r"clip_c"),
        ({"policy_loss": "gspo", "clip_c": 3.0}, r"ppo only|'ppo' only"),
        ({"adaptive_kl_target": 6.0}, r"kl_coef > 0"),
        ({"kl_in_reward": True, "kl_coef": 0.05}, r"kl_in_reward needs a token-level advantage"),
        ({"clip_ratio": 0.2}, r"clip_ratio"),  # unknown keys are refused, not ignored
    ],
)
def test_algorithm_config_rejects(kwargs, match):
    from pydantic import ValidationError

    from rlvr.learners.config import AlgorithmConfig

    with pytest.raises(ValidationError, match=match):
        AlgorithmConfig(**kwargs)


# ----------------------------------------------------------------------------- stale samples (issue 21, finding 10)

def test_stale_samples_get_truncated_importance_weights_by_default():
    """With ppo_epochs 1 and num_minibatches 1 the PPO ratio is 1 (old log-probs are the current ones), so
    a sample drawn by an older policy (async_steps > 0) must be corrected by the importance weight against
    the engine's sampling log-probs: on by default (cap 2.0) when async_steps > 0, off when synchronous."""
    from pathlib import Path

    from rlvr.config import load_recipe
    from rlvr.loop.trainer import learner_algorithm
    from rlvr.learners.config import AlgorithmConfig, effective_tis_cap, off_policy_note
    from rlvr.learners.batch import build_batch
    from rlvr.learners.losses import tis_weights

    assert effective_tis_cap(None, 2) == 2.0 and effective_tis_cap(None, 0) == 0.0
    assert effective_tis_cap(0, 2) == 0.0 and effective_tis_cap(1.5, 0) == 1.5
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "toy_addition_cpu.yaml"
    algo = AlgorithmConfig.model_validate(learner_algorithm(load_recipe(recipe, ["train.async_steps=2"], check_files=False)))
    assert algo.tis_cap == 2.0
    assert not learner_algorithm(load_recipe(recipe, check_files=False))["tis_cap"]
    assert "truncated importance sampling" in off_policy_note(None, 2) and "none needed" in off_policy_note(None, 0)
    assert "stale samples train as on-policy" in off_policy_note(0, 2)
    assert "before temperature" in off_policy_note(None, 2, 0.7) and "warning" not in off_policy_note(None, 2, 1.0)

    # Two one-token responses to the same prompt: row 0 fresh (sampled by the current policy), row 1
    # stale (its sampling log-prob, from an older policy, was -2.0; the current policy gives it -1.0).
    batch = build_batch([[5, 6], [5, 6]], [[7], [8]], [[-1.0], [-2.0]], [1.0, 0.0], group_size=2, pad_id=0,
                        temperature=1.0)
    mask = batch["response_mask"]
    current = torch.tensor([[0.0, -1.0], [0.0, -1.0]])
    lp = current.clone().requires_grad_(True)
    w = tis_weights(algo.tis_cap, lp.detach(), batch["rollout_logprobs"], mask)
    assert w[0, 1].item() == pytest.approx(1.0) and w[1, 1].item() == pytest.approx(2.0)  # exp(1) capped at 2
    assert tis_weights(0.0, lp.detach(), batch["rollout_logprobs"], mask) is None
    adv = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    loss_w, m = policy_loss("ppo", lp, lp.detach(), adv, mask, is_weights=w)
    assert m["policy/ratio_mean"] == pytest.approx(1.0)  # the ratio alone cannot see the staleness
    (g_w,) = torch.autograd.grad(loss_w, lp)
    loss_1, _ = policy_loss("ppo", lp, lp.detach(), adv, mask)
    (g_1,) = torch.autograd.grad(loss_1, lp)
    assert g_w[0, 1].item() == pytest.approx(g_1[0, 1].item())  # the fresh row is unchanged
    assert g_w[1, 1].item() == pytest.approx(2.0 * g_1[1, 1].item())  # the stale row is reweighted
