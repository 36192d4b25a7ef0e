"""Advantage estimators, selected by name, plus the reward-side DAPO helpers.

Conventions (all functions here are pure and run without grad):
  * `rewards[B]` is one outcome reward per response; responses of one prompt are
    consecutive, `group_size` of them, so B = n_prompts * group_size.
  * `response_mask[B, T]` is 1 on response tokens that take part in the loss, 0 on padding
    (and on anything else excluded, e.g. tool output or filtered truncations).
  * every estimator returns `(advantages[B, T], returns[B, T])`, zero where the mask is 0.
    For critic-free estimators `returns` equals `advantages` (there is no value target).

    adv, ret = compute_advantages("grpo", rewards, mask, group_size=8)
"""

from __future__ import annotations

from typing import Callable

import torch

AdvantageFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]
ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {}
# Estimators that accept per-token rewards (e.g. -kl_coef * KL when the KL goes into the reward).
TOKEN_REWARD_ESTIMATORS: set[str] = set()


def register_advantage(name: str, *, token_rewards: bool = False) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: `@register_advantage("grpo")` adds an estimator to the registry."""

    def deco(fn: AdvantageFn) -> AdvantageFn:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADVANTAGE_ESTIMATORS[name] = fn
        if token_rewards:
            TOKEN_REWARD_ESTIMATORS.add(name)
        return fn

    return deco


def compute_advantages(
    name: str,
    rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_size: int,
    *,
    values: torch.Tensor | None = None,
    token_rewards: torch.Tensor | None = None,
    gamma: float = 1.0,
    lam: float = 1.0,
    eps: float = 1e-6,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    **kw,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the estimator registered as `name`; returns float32 `(advantages[B,T], returns[B,T])`.

    `all_reduce(t) -> sum of t over the data-parallel ranks`: given when the batch is sharded, so
    that estimators whitening over the whole batch (reinforce_pp*, gae) use the global statistics
    and N ranks compute what one rank would; per-group estimators ignore it.
    """
    fn = ADVANTAGE_ESTIMATORS.get(name)
    if fn is None:
        raise ValueError(f"unknown advantage estimator {name!r}; valid: {', '.join(sorted(ADVANTAGE_ESTIMATORS))}")
    if token_rewards is not None and name not in TOKEN_REWARD_ESTIMATORS:
        # Silently dropping a KL-in-reward term would train without the KL the config asked for.
        raise ValueError(
            f"advantage {name!r} uses outcome rewards only; token_rewards need one of "
            f"{', '.join(sorted(TOKEN_REWARD_ESTIMATORS))} (or put the KL in the loss)"
        )
    if rewards.dim() != 1 or rewards.shape[0] != response_mask.shape[0]:
        raise ValueError(f"rewards must be [B] with B = response_mask.shape[0], got {tuple(rewards.shape)}")
    if group_size < 1 or rewards.shape[0] % group_size:
        raise ValueError(f"batch of {rewards.shape[0]} is not a whole number of groups of {group_size}")
    mask = response_mask.float()
    with torch.no_grad():
        return fn(
            rewards.detach().float(),
            mask,
            group_size,
            values=None if values is None else values.detach().float(),
            token_rewards=None if token_rewards is None else token_rewards.detach().float(),
            gamma=gamma,
            lam=lam,
            eps=eps,
            all_reduce=all_reduce,
            **kw,
        )


# ---------------------------------------------------------------------------------------------
# masked statistics


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum(x * mask) / sum(mask) over `dim` (all elements if None); 0 where the mask is empty."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-6,
                  all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(x - mean) / (std + eps) with mean and (population) std over the masked elements only.

    shift_mean=False adds the mean back (scale only). Masked-out positions come back as 0.
    all_reduce (sums a tensor over ranks): statistics over every rank's shard, not just this one.
    """
    total = all_reduce or (lambda t: t)
    mask = mask.to(x.dtype)
    sums = total(torch.stack([(x * mask).sum(), mask.sum()]))
    n = sums[1].clamp(min=1)
    mean = sums[0] / n
    std = (total(((x - mean) ** 2 * mask).sum()) / n).sqrt()
    out = (x - mean) / (std + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last position where mask is 1, per row (0 for an all-zero row)."""
    T = mask.shape[-1]
    return (T - 1 - mask.flip(-1).float().argmax(-1)).clamp(min=0)


def token_level_rewards(rewards: torch.Tensor, mask: torch.Tensor, token_rewards: torch.Tensor | None) -> torch.Tensor:
    """Outcome reward on the last valid token of each row, plus optional per-token rewards (e.g. -beta*KL)."""
    out = torch.zeros_like(mask) if token_rewards is None else token_rewards * mask
    has_tokens = mask.sum(-1) > 0  # an empty response has nowhere to put its reward
    idx = last_token_index(mask)
    rows = torch.arange(mask.shape[0], device=mask.device)
    out[rows, idx] += rewards * has_tokens
    return out


def discounted_returns(token_rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + gamma * G_{t+1}, where masked positions are skipped (they neither add nor discount)."""
    returns = torch.zeros_like(token_rewards)
    running = torch.zeros_like(token_rewards[:, 0])
    for t in reversed(range(token_rewards.shape[1])):
        m = mask[:, t]
        running = m * (token_rewards[:, t] + gamma * running) + (1 - m) * running
        returns[:, t] = running
    return returns * mask


def _groups(rewards: torch.Tensor, group_size: int, name: str, min_size: int = 2) -> torch.Tensor:
    if group_size < min_size:
        raise ValueError(f"{name} needs group_size >= {min_size} (a group baseline of one sample is the sample)")
    return rewards.view(-1, group_size)


# ---------------------------------------------------------------------------------------------
# estimators


@register_advantage("grpo")
def grpo(rewards, mask, group_size, *, eps=1e-6, **_):
    """GRPO (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300): A_i = (r_i - mean_g r) / (std_g r + eps).

    std is the unbiased (n-1) sample std, as in the reference implementations (TRL, veRL).
    A group whose rewards all agree gets A = 0 (0 / eps): it carries no learning signal.
    """
    g = _groups(rewards, group_size, "grpo")
    adv = (g - g.mean(-1, keepdim=True)) / (g.std(-1, keepdim=True) + eps)
    adv = adv.reshape(-1, 1) * mask
    return adv, adv


@register_advantage("dr_grpo")
def dr_grpo(rewards, mask, group_size, **_):
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training", arXiv:2503.20783):
    A_i = r_i - mean_g r. No std division (it up-weights too-easy/too-hard prompts); pair it with
    loss_agg="seq-mean-token-sum-norm" to also drop the 1/|o_i| length bias.
    """
    g = _groups(rewards, group_size, "dr_grpo")
    adv = (g - g.mean(-1, keepdim=True)).reshape(-1, 1) * mask
    return adv, adv


@register_advantage("rloo")
def rloo(rewards, mask, group_size, **_):
    """RLOO (Ahmadian et al. 2024, arXiv:2402.14740; Kool et al. 2019):
    A_i = r_i - (sum_g r - r_i) / (G - 1), the mean of the *other* samples as baseline.
    """
    g = _groups(rewards, group_size, "rloo")
    baseline = (g.sum(-1, keepdim=True) - g) / (group_size - 1)
    adv = (g - baseline).reshape(-1, 1) * mask
    return adv, adv


@register_advantage("reinforce_pp", token_rewards=True)
def reinforce_pp(rewards, mask, group_size, *, token_rewards=None, gamma=1.0, eps=1e-6, all_reduce=None, **_):
    """REINFORCE++ (Hu 2025, arXiv:2501.03262): token rewards r_t = [outcome at the last token]
    + token_rewards_t (e.g. -beta * KL_t), returns G_t = sum_{k>=t} gamma^(k-t) r_k, and
    A = whiten(G) over all valid tokens of the *global* batch (no per-prompt baseline).
    Returns the un-whitened G.
    """
    returns = discounted_returns(token_level_rewards(rewards, mask, token_rewards), mask, gamma)
    return masked_whiten(returns, mask, eps=eps, all_reduce=all_reduce), returns


@register_advantage("reinforce_pp_baseline", token_rewards=True)
def reinforce_pp_baseline(rewards, mask, group_size, *, token_rewards=None, gamma=1.0, eps=1e-6, all_reduce=None, **_):
    """REINFORCE++-baseline (Hu 2025, arXiv:2501.03262): subtract the group mean from the outcome
    reward first (removes per-prompt difficulty), then proceed as REINFORCE++ (returns, global whitening).
    """
    g = _groups(rewards, group_size, "reinforce_pp_baseline")
    centred = (g - g.mean(-1, keepdim=True)).reshape(-1)
    return reinforce_pp(centred, mask, group_size, token_rewards=token_rewards, gamma=gamma, eps=eps, all_reduce=all_reduce)


@register_advantage("gae", token_rewards=True)
def gae(rewards, mask, group_size, *, values=None, token_rewards=None, gamma=1.0, lam=1.0, eps=1e-6, whiten=True,
        all_reduce=None, **_):
    """GAE (Schulman et al. 2016, arXiv:1506.02438) with a critic `values[B,T]`:
    delta_t = r_t + gamma V_{t+1} - V_t (V after the last token = 0),
    A_t = delta_t + gamma lam A_{t+1}, returns = A + V (the value target, un-whitened);
    A is then whitened over valid tokens (whiten=False to skip). Token rewards as in REINFORCE++.
    Masked positions are skipped: V and A of the next valid token carry through them.
    """
    if values is None:
        raise ValueError("gae needs values[B,T] from a critic")
    r = token_level_rewards(rewards, mask, token_rewards)
    values = values * mask
    adv = torch.zeros_like(r)
    next_value = torch.zeros_like(r[:, 0])
    last_gae = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):
        m = mask[:, t]
        delta = r[:, t] + gamma * next_value - values[:, t]
        cur = delta + gamma * lam * last_gae
        next_value = m * values[:, t] + (1 - m) * next_value
        last_gae = m * cur + (1 - m) * last_gae
        adv[:, t] = last_gae
    adv = adv * mask
    returns = (adv + values) * mask
    if whiten:
        adv = masked_whiten(adv, mask, eps=eps, all_reduce=all_reduce)
    return adv, returns


# ---------------------------------------------------------------------------------------------
# DAPO reward-side helpers (Yu et al. 2025, arXiv:2503.14476)


def dynamic_sampling_filter(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """DAPO dynamic sampling: indices of groups whose rewards do NOT all agree.

    An all-correct or all-wrong group has zero group-relative advantage, so it only dilutes
    the batch. Use `group_rows(kept, group_size)` to turn group indices into row indices.
    """
    g = rewards.view(-1, group_size)
    return torch.nonzero((g != g[:, :1]).any(-1)).flatten()


def group_rows(group_idx: torch.Tensor, group_size: int) -> torch.Tensor:
    """Row indices of the given groups, in order: group k -> rows k*G .. k*G+G-1."""
    offs = torch.arange(group_size, device=group_idx.device)
    return (group_idx[:, None] * group_size + offs).flatten()


def overlong_penalty(lengths: torch.Tensor, max_len: int, cache_len: int, penalty_factor: float = 1.0) -> torch.Tensor:
    """DAPO soft overlong punishment, added to the outcome reward (per response):

        0                                  if L <= max_len - cache_len
        ((max_len - cache_len) - L) / cache_len   if max_len - cache_len < L <= max_len  (0 .. -1)
        -1                                 if L > max_len
    times `penalty_factor`. `max_len` is the generation limit, `cache_len` the buffer before it.
    """
    lengths = lengths.float()
    start = max_len - cache_len
    pen = ((start - lengths) / cache_len).clamp(min=-1.0, max=0.0)
    return pen * penalty_factor


def sampled_turn_lengths(n_tokens: int, loss_mask: list[int] | None) -> list[int]:
    """Lengths of the runs of sampled tokens (loss mask 1) in a response: one per generated turn of a
    multi-turn trajectory (observations between them have mask 0); the whole response when the mask is None."""
    if loss_mask is None:
        return [n_tokens]
    runs, cur = [], 0
    for m in loss_mask:
        if m:
            cur += 1
        elif cur:
            runs.append(cur)
            cur = 0
    return runs + [cur] if cur or not runs else runs


def response_overlong_penalty(token_ids: list[list[int]], loss_masks: list[list[int] | None], max_len: int,
                              cache_len: int, penalty_factor: float = 1.0) -> torch.Tensor:
    """DAPO's overlong penalty per response, on generated tokens only: each generated turn against the
    per-turn budget `max_len`, the longest turn deciding (tool observations and the other turns do not
    count: a trajectory is punished only when one of its turns ran into its own limit)."""
    longest = [max(sampled_turn_lengths(len(ids), m)) for ids, m in zip(token_ids, loss_masks)]
    return overlong_penalty(torch.tensor(longest, dtype=torch.long), max_len, cache_len, penalty_factor)


def overlong_filter(response_mask: torch.Tensor, truncated: torch.Tensor) -> torch.Tensor:
    """DAPO overlong filtering: zero the loss mask of truncated completions (finish_reason ==
    "length"), so a cut-off answer is neither rewarded nor punished for being cut."""
    return response_mask * (~truncated.bool()).to(response_mask.dtype)[:, None]


def extend_to_branches(adv: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, extra_of: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns for the rows after the group-shaped ones: an agent's further trajectories
    (branches, see environments/agent.py). Row j takes its source row's (``extra_of[j]``) mean advantage
    and return over the source's tokens, on each of its own tokens: the run's outcome credit, shared."""
    n = adv.shape[0]
    src = mask[:n][extra_of]
    denom = src.sum(-1).clamp(min=1)
    own = mask[n:]
    a = ((adv[extra_of] * src).sum(-1) / denom)[:, None] * own
    r = ((returns[extra_of] * src).sum(-1) / denom)[:, None] * own
    return torch.cat([adv, a]), torch.cat([returns, r])
