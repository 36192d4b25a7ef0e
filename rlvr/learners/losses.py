"""Policy losses (selected by name), loss aggregation, KL to a reference, value loss,
truncated importance sampling, and the logits -> log-prob / entropy helpers.

All tensors are [B, T] over response tokens with a 0/1 `mask`; the learner computes
`logprobs` with grad, everything "old"/"ref"/"rollout" without.

    loss, metrics = policy_loss("ppo", logprobs, old_logprobs, advantages, mask,
                                clip_low=0.2, clip_high=0.28, agg="token-mean")

Metrics are detached 0-d tensors (no host sync here; call float() when logging).
"""

from __future__ import annotations

from typing import Callable, Literal

import torch

from rlvr.learners.advantages import masked_mean

# ---------------------------------------------------------------------------------------------
# aggregation

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def aggregate(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean", constant: float | None = None) -> torch.Tensor:
    """Reduce a per-token loss [B,T] to a scalar. The mode changes what is optimised:

    * "token-mean": sum(loss * mask) / sum(mask). Every token weighs the same, so long
      responses carry more total weight (DAPO's token-level loss; the default).
    * "seq-mean-token-mean": mean over sequences of (per-sequence token mean). Every sequence
      weighs the same, so a token of a short response weighs more (original GRPO; GSPO).
      Sequences without valid tokens are left out of the sequence mean.
    * "seq-mean-token-sum": mean over sequences of the per-sequence token *sum*; scale grows
      with length (use with care: the gradient scale depends on response length).
    * "seq-mean-token-sum-norm": sum(loss * mask) / (B * constant), i.e. token sums divided by a
      constant instead of each length (Dr. GRPO). `constant` defaults to T = mask.shape[-1];
      pass the max response length so the scale does not change with each batch's padding.

    Under micro-batching each call only sees its micro-batch; the "mean" denominators are then
    per micro-batch, which is exact only when micro-batches are equal in tokens/sequences.
    """
    mask = mask.to(loss_mat.dtype)
    if mode == "token-mean":
        return masked_mean(loss_mat, mask)
    tok_sum = (loss_mat * mask).sum(-1)
    if mode == "seq-mean-token-mean":
        n_tok = mask.sum(-1)
        has = (n_tok > 0).to(loss_mat.dtype)
        return (tok_sum / n_tok.clamp(min=1) * has).sum() / has.sum().clamp(min=1)
    if mode == "seq-mean-token-sum":
        return tok_sum.mean()
    if mode == "seq-mean-token-sum-norm":
        c = float(mask.shape[-1]) if constant is None else float(constant)
        return tok_sum.sum() / (tok_sum.shape[0] * c)
    raise ValueError(f"unknown loss aggregation {mode!r}; valid: {', '.join(AGG_MODES)}")


# ---------------------------------------------------------------------------------------------
# policy losses

# A policy loss returns (per-token loss [B,T], {metric name: per-token tensor to masked-mean}).
PolicyLossFn = Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
POLICY_LOSSES: dict[str, PolicyLossFn] = {}

# exp() of a log-ratio beyond this overflows/saturates; such tokens are garbage anyway.
_MAX_LOG_RATIO = 20.0


def register_policy_loss(name: str) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Decorator: `@register_policy_loss("ppo")` adds a policy loss to the registry."""

    def deco(fn: PolicyLossFn) -> PolicyLossFn:
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss {name!r} is already registered")
        POLICY_LOSSES[name] = fn
        return fn

    return deco


def policy_loss(
    name: str,
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float | None = None,
    agg: str = "token-mean",
    agg_constant: float | None = None,
    is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token loss of the policy loss `name`, times the optional (detached) truncated-IS
    weights `is_weights[B,T]`, aggregated with `agg`. Returns (scalar loss, metrics):
    policy/loss, policy/clip_frac (+ _low/_high), policy/approx_kl (k3 estimate of
    KL(old || new) on the sampled tokens), policy/ratio_mean, policy/ratio_max, and for PPO with
    clip_c policy/dual_clip_frac.
    """
    fn = POLICY_LOSSES.get(name)
    if fn is None:
        raise ValueError(f"unknown policy loss {name!r}; valid: {', '.join(sorted(POLICY_LOSSES))}")
    mask = response_mask.to(logprobs.dtype)
    old_logprobs = old_logprobs.detach()
    advantages = advantages.detach()
    loss_mat, stats = fn(logprobs, old_logprobs, advantages, mask, clip_low=clip_low, clip_high=clip_high, clip_c=clip_c)
    if is_weights is not None:
        loss_mat = loss_mat * is_weights.detach()
    loss = aggregate(loss_mat, mask, agg, agg_constant)

    with torch.no_grad():
        log_ratio = (logprobs.detach() - old_logprobs).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
        ratio = log_ratio.exp()
        metrics = {
            "policy/loss": loss.detach(),
            "policy/approx_kl": masked_mean(ratio - 1 - log_ratio, mask),
            "policy/ratio_mean": masked_mean(ratio, mask),
            # amax of the masked tensor (padding -> 0) avoids a host sync on `if mask.any()`
            "policy/ratio_max": (ratio * mask).amax() if ratio.numel() else ratio.new_zeros(()),
        }
        for k, v in stats.items():
            metrics[f"policy/{k}"] = masked_mean(v.to(mask.dtype), mask)
    return loss, metrics


def _log_ratio(logprobs: torch.Tensor, old_logprobs: torch.Tensor) -> torch.Tensor:
    return (logprobs - old_logprobs).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)


def _clipped_surrogate(ratio, advantages, clip_low, clip_high):
    """PPO pessimistic surrogate: max(-A r, -A clip(r, 1-lo, 1+hi)) plus which side clipped."""
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_low, 1 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    stats = {
        # clip active = the gradient is cut: r too high for A>0, or too low for A<0.
        "clip_frac_high": (advantages > 0) & (ratio > 1 + clip_high),
        "clip_frac_low": (advantages < 0) & (ratio < 1 - clip_low),
    }
    stats["clip_frac"] = stats["clip_frac_high"] | stats["clip_frac_low"]
    return loss, stats


@register_policy_loss("ppo")
def ppo(logprobs, old_logprobs, advantages, mask, *, clip_low, clip_high, clip_c=None):
    """PPO clip (Schulman et al. 2017, arXiv:1707.06347), with separate bounds (DAPO clip-higher,
    Yu et al. 2025, arXiv:2503.14476) and optional dual-clip (Ye et al. 2020, arXiv:1912.09729):

        r = exp(logp - logp_old)
        L = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))
        if clip_c and A < 0:  L = min(L, -A clip_c)      (bounds the loss when r >> 1)
    """
    ratio = _log_ratio(logprobs, old_logprobs).exp()
    loss, stats = _clipped_surrogate(ratio, advantages, clip_low, clip_high)
    if clip_c is not None:
        if clip_c <= 1.0:
            raise ValueError(f"dual-clip needs clip_c > 1, got {clip_c}")
        bound = -advantages * clip_c
        dual = (advantages < 0) & (loss > bound)
        loss = torch.where(dual, bound, loss)
        stats["dual_clip_frac"] = dual
    return loss, stats


@register_policy_loss("gspo")
def gspo(logprobs, old_logprobs, advantages, mask, *, clip_low, clip_high, clip_c=None):
    """GSPO (Zheng et al. 2025, arXiv:2507.18071), token form ("GSPO-token"):

        s_i = exp(mean_{t valid} (logp_t - logp_old_t))      (sequence-level ratio)
        s_it = sg[s_i] * exp(logp_t - sg[logp_t])           (= s_i in value; grad s_i * dlogp_t)
        L_it = max(-A_it s_it, -A_it clip(s_it, 1 - clip_low, 1 + clip_high))

    With one advantage per sequence and agg="seq-mean-token-mean" this is exactly the paper's
    sequence objective. The paper's clip ranges are tiny (~3e-4 / 4e-4), not PPO's 0.2.
    """
    if clip_c is not None:
        raise ValueError("dual-clip (clip_c) is defined for the ppo loss only")
    seq_log_ratio = ((logprobs - old_logprobs) * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    log_s = seq_log_ratio.detach()[:, None] + logprobs - logprobs.detach()
    ratio = log_s.clamp(max=_MAX_LOG_RATIO).exp()
    return _clipped_surrogate(ratio, advantages, clip_low, clip_high)


@register_policy_loss("cispo")
def cispo(logprobs, old_logprobs, advantages, mask, *, clip_low, clip_high, clip_c=None):
    """CISPO (MiniMax-M1, arXiv:2506.13585): clip the importance weight, not the update:

        L_t = -sg[clip(r_t, 1 - clip_low, 1 + clip_high)] * A_t * logp_t

    Every token keeps a gradient (A * w * dlogp); only its weight is bounded. MiniMax use no
    lower bound in practice (clip_low >= 1.0) and tune clip_high.
    """
    if clip_c is not None:
        raise ValueError("dual-clip (clip_c) is defined for the ppo loss only")
    ratio = _log_ratio(logprobs, old_logprobs).detach().exp()
    weight = ratio.clamp(max(0.0, 1 - clip_low), 1 + clip_high)
    loss = -weight * advantages * logprobs
    high, low = ratio > 1 + clip_high, ratio < 1 - clip_low
    return loss, {"clip_frac": high | low, "clip_frac_high": high, "clip_frac_low": low}


# ---------------------------------------------------------------------------------------------
# KL to a reference policy

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: Literal["k1", "k2", "k3"] = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) on tokens sampled from pi (Schulman, "Approximating
    KL divergence", 2020), with d = ref_logprobs - logprobs:

        k1 = -d                 unbiased, high variance, can be negative
        k2 = d^2 / 2            biased, low variance, >= 0
        k3 = exp(d) - d - 1     unbiased, low variance, >= 0

    For k3, d is clamped to [-20, 20] and the result to <= 10 (as veRL/OpenRLHF do): one token
    the policy made far likelier than the reference would otherwise give exp(d) blow-ups.
    Differentiable in `logprobs`; use it in the loss (aggregate) or, detached, in token_rewards.
    """
    d = ref_logprobs - logprobs
    if kind == "k1":
        return -d
    if kind == "k2":
        return 0.5 * d.square()
    if kind == "k3":
        d = d.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
        return (d.exp() - d - 1).clamp(max=10.0)
    raise ValueError(f"unknown KL estimator {kind!r}; valid: {', '.join(KL_ESTIMATORS)}")


class FixedKLController:
    """A constant KL coefficient (`.value`); `update` does nothing."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, arXiv:1909.08593, sec. 2.2):

        e = clip(KL / target - 1, -0.2, 0.2)
        beta <- beta * (1 + e * n_steps / horizon)

    `n_steps` is the number of samples (or steps) the KL was measured over; the coefficient moves
    by at most 20% per `horizon` samples, up when the KL is above target and down below it.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int = 10000):
        if init_kl_coef <= 0 or target <= 0 or horizon <= 0:
            raise ValueError("adaptive KL needs init_kl_coef > 0, target > 0 and horizon > 0")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        err = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + err * n_steps / self.horizon


def make_kl_controller(kl_coef: float, target: float | None = None, horizon: int = 10000):
    """Adaptive controller when a target is given, else a fixed coefficient."""
    if target is None:
        return FixedKLController(kl_coef)
    return AdaptiveKLController(kl_coef, target, horizon)


# ---------------------------------------------------------------------------------------------
# value loss


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip: float | None = 0.2,
    agg: str = "token-mean",
    agg_constant: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped value loss (as in OpenAI baselines ppo2):

        V_clip = V_old + clip(V - V_old, -clip, clip)
        L = 0.5 * max((V - R)^2, (V_clip - R)^2)        (clip=None: 0.5 * (V - R)^2)

    Returns (scalar, {value/loss, value/clip_frac, value/mean, value/error}).
    """
    mask = mask.to(values.dtype)
    old_values, returns = old_values.detach(), returns.detach()
    err = (values - returns).square()
    if clip is None:
        loss_mat, clipped = err, torch.zeros_like(err, dtype=torch.bool)
    else:
        v_clip = old_values + (values - old_values).clamp(-clip, clip)
        err_clip = (v_clip - returns).square()
        loss_mat, clipped = torch.maximum(err, err_clip), err_clip > err
    loss = 0.5 * aggregate(loss_mat, mask, agg, agg_constant)
    with torch.no_grad():
        metrics = {
            "value/loss": loss.detach(),
            "value/clip_frac": masked_mean(clipped.to(mask.dtype), mask),
            "value/mean": masked_mean(values.detach(), mask),
            "value/error": masked_mean(err.detach(), mask),
        }
    return loss, metrics


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(R - V) / Var(R) over the masked tokens (population variances): 1 for a perfect
    critic, 0 for one no better than predicting the mean return, negative for a worse one.
    0 when the returns have no variance (nothing to explain)."""
    with torch.no_grad():
        mask = mask.to(values.dtype)
        var_r = masked_mean((returns - masked_mean(returns, mask)).square(), mask)
        res = returns - values
        var_res = masked_mean((res - masked_mean(res, mask)).square(), mask)
        return torch.where(var_r > 0, 1 - var_res / var_r.clamp(min=1e-12), torch.zeros_like(var_r))


# ---------------------------------------------------------------------------------------------
# truncated importance sampling (rollout engine vs learner drift)


def tis_weights(cap: float | None, learner_logprobs_old: torch.Tensor, rollout_logprobs: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor | None:
    """The learner's per-token importance weights: min(exp(learner_old - rollout), cap) on the mask, or
    None when `cap` is 0/None (off). `rollout_logprobs` are the engine's sampling (behaviour) log-probs,
    so a sample from an older policy gets a weight away from 1 even when the PPO ratio is 1."""
    if not cap:
        return None
    diff = (learner_logprobs_old - rollout_logprobs).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    return diff.exp().clamp(max=cap) * mask


def truncated_is_weights(
    learner_logprobs_old: torch.Tensor, rollout_logprobs: torch.Tensor, mask: torch.Tensor, cap: float = 2.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Truncated IS correction for sampling with vLLM but training with the learner
    (Yao et al. 2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training"):

        w_t = min(exp(logp_learner_old_t - logp_rollout_t), cap)        (0 on padding)

    Multiply into the per-token policy loss (`policy_loss(..., is_weights=w)`). Metrics:
    drift/kl (k3 estimate of KL(rollout || learner) on the sampled tokens),
    drift/abs_logprob_diff_mean, drift/max (largest |diff|), drift/is_clip_frac (weights capped).
    """
    with torch.no_grad():
        mask = mask.to(learner_logprobs_old.dtype)
        diff = (learner_logprobs_old - rollout_logprobs).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
        ratio = diff.exp()
        weights = ratio.clamp(max=cap) * mask
        absdiff = diff.abs() * mask
        metrics = {
            "drift/kl": masked_mean(kl_penalty(rollout_logprobs, learner_logprobs_old, "k3"), mask),
            "drift/abs_logprob_diff_mean": masked_mean(absdiff, mask),
            "drift/max": absdiff.amax() if absdiff.numel() else absdiff.new_zeros(()),
            "drift/is_clip_frac": masked_mean((ratio > cap).to(mask.dtype), mask),
        }
    return weights, metrics


# ---------------------------------------------------------------------------------------------
# logits -> log-probs / entropy


def logprobs_and_entropy(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0, *,
                         with_entropy: bool = True, entropy_grad: bool = True):
    """log softmax(z)[label] and the entropy of softmax(z) per position, z = logits / temperature, in float32.

    One logsumexp serves both: log p[label] = z[label] - lse(z), H = lse(z) - sum_v softmax(z)_v z_v.
    Divide by the temperature vLLM sampled with (0, greedy, and 1 leave z alone). The entropy is
    None without `with_entropy`; `entropy_grad=False` computes it outside the graph (a metric only,
    when entropy_coef is 0), which spares the backward pass one more [.., V] tensor.
    Shapes: logits [..., V], labels [...] -> ([...], [...] or None).
    """
    z = logits.float()
    if temperature not in (0.0, 1.0):
        z = z / temperature
    lse = torch.logsumexp(z, -1)
    lp = z.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - lse
    if not with_entropy:
        return lp, None
    if not entropy_grad:
        z, lse = z.detach(), lse.detach()
    return lp, lse - (torch.exp(z - lse.unsqueeze(-1)) * z).sum(-1)
