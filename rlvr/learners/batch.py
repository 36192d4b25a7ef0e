"""Turn scored rollouts into the learner's padded tensors, and shard them by whole groups."""

from __future__ import annotations

import torch

from rlvr.learners.partition import balanced_groups, split_even


def build_batch(prompt_ids: list[list[int]], response_ids: list[list[int]], rollout_logprobs: list[list[float]],
                rewards: list[float], *, group_size: int, pad_id: int, temperature: float,
                loss_masks: list[list[int] | None] | None = None, extra_of: list[int] | None = None) -> dict:
    """Right-padded prompt+response sequences with masks aligned to the *predicted* token.

    Position t of response_mask / rollout_logprobs ([B, L-1]) describes input_ids[:, t+1], the
    token the model predicts from position t: the layout of the learner's log-probs (rlvr/learners/logprobs.py).
    `loss_masks` (multi-turn): per response token, 1 where the policy sampled it, 0 on environment
    observations (no loss, no KL); None for a row means every response token was sampled.
    `extra_of` (agents' branches): the last len(extra_of) rows come after the group-shaped ones, row j
    of them sharing the advantage of row extra_of[j] (learners/advantages.extend_to_branches).
    """
    B = len(response_ids)
    extra = list(extra_of or [])
    assert B == len(prompt_ids) == len(rewards) == len(rollout_logprobs) and (B - len(extra)) % group_size == 0
    assert all(0 <= j < B - len(extra) for j in extra)
    L = max(len(p) + len(r) for p, r in zip(prompt_ids, response_ids))
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((B, L), dtype=torch.long)
    response_mask = torch.zeros((B, L - 1), dtype=torch.float)
    old = torch.zeros((B, L - 1), dtype=torch.float)
    for i, (p, r, lp) in enumerate(zip(prompt_ids, response_ids, rollout_logprobs)):
        n = len(p) + len(r)
        input_ids[i, :n] = torch.tensor(p + r)
        attention_mask[i, :n] = 1
        lm = loss_masks[i] if loss_masks is not None else None
        response_mask[i, len(p) - 1: n - 1] = 1 if lm is None else torch.tensor(lm, dtype=torch.float)
        old[i, len(p) - 1: len(p) - 1 + len(lp)] = torch.tensor(lp, dtype=torch.float)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask,
            "rollout_logprobs": old, "rewards": torch.tensor(rewards, dtype=torch.float),
            "group_size": group_size, "temperature": temperature,
            "total_tokens": float(response_mask.sum()), "total_sequences": float(B),
            **({"extra_of": torch.tensor(extra, dtype=torch.long)} if extra else {})}


def micro_batch_rows(lengths: torch.Tensor, num_minibatches: int, micro_batches: int) -> list[list[torch.Tensor]]:
    """Row indices of each micro-batch, minibatch by minibatch.

    Minibatches (one optimizer step each) are contiguous blocks of rows, as the rollout produced
    them; within one, rows are sorted by sequence length before being split evenly, so a
    micro-batch holds sequences of similar length and little padding survives its trim
    (veRL's dynamic batch size and OpenRLHF's packing attack the same waste). One optimizer
    step's gradient is a sum over its micro-batches, so how its rows are grouped does not change it.
    """
    out = []
    for block in split_even(len(lengths), num_minibatches):
        rows = torch.arange(block.start, block.stop)
        rows = rows[torch.argsort(lengths[rows], stable=True)]
        out.append([rows[s] for s in split_even(len(rows), micro_batches)])
    return out


def shard_by_groups(batch: dict, ranks: int, balance_tokens: bool = False) -> list[dict]:
    """Split a batch into `ranks` shards of whole groups (group statistics stay on one rank):
    contiguous and equal in groups, or with `balance_tokens` (packed learners, whose time goes
    with tokens, not rows) groups placed so that every rank gets about as many tokens."""
    g = batch["group_size"]
    extra_of = batch.get("extra_of")
    n_extra = 0 if extra_of is None else len(extra_of)
    main = batch["input_ids"].shape[0] - n_extra
    groups = main // g
    if groups < ranks:
        raise ValueError(f"{groups} prompt groups cannot be split over {ranks} learner ranks")
    if balance_tokens:
        group_tokens = batch["attention_mask"][:main].sum(-1).view(groups, g).sum(-1).tolist()
        parts = [torch.cat([torch.arange(i * g, (i + 1) * g) for i in idx]) for idx in balanced_groups(group_tokens, ranks)]
    else:
        parts = [torch.arange(s.start * g, s.stop * g) for s in split_even(groups, ranks)]
    shards = []
    for rows in parts:
        local = None
        if n_extra:  # branches go with the group of the row they share an advantage with
            where = {int(r): j for j, r in enumerate(rows)}
            mine = [j for j, src in enumerate(extra_of.tolist()) if src in where]
            local = torch.tensor([where[int(extra_of[j])] for j in mine], dtype=torch.long)
            rows = torch.cat([rows, main + torch.tensor(mine, dtype=torch.long)])
        shard = {k: (v[rows] if isinstance(v, torch.Tensor) and k != "extra_of" else v) for k, v in batch.items()}
        shard.pop("extra_of", None)
        if local is not None and len(local):
            shard["extra_of"] = local
        shards.append(shard)
    return shards


def pick_groups(informative: list[bool], stale: list[bool], target: int) -> list[int]:
    """Indices (in order) of the groups to train on, at most `target`.

    Fresh informative groups come first; fresh uninformative ones (all rewards equal: zero
    group-relative advantage, so harmless) only top up a batch that is still short after
    dynamic sampling's retries, keeping the batch shape fixed. Stale groups (from a policy
    more than async_steps versions old) are never trained on.
    """
    good = [i for i, (inf, old) in enumerate(zip(informative, stale)) if inf and not old]
    filler = [i for i, (inf, old) in enumerate(zip(informative, stale)) if not inf and not old]
    return sorted(good[:target] + filler[:max(0, target - len(good))])
