"""Padding-free packed micro-batches: pure functions (no DeepSpeed, no model).

With `learner.packing` a micro-batch is a token budget, not a row count. Its sequences (prompt +
response, or a whole multi-turn trajectory) run through the model back to back in one row of
N = sum(lengths) tokens, with position ids that restart at 0 for every sequence. transformers (>=
4.5x) reads such position ids as packed sequences when no attention mask is given: sdpa and eager
attention get a block-diagonal causal mask, flash-attention-2 its varlen kernel (cu_seqlens), so
attention never crosses a sequence boundary and no FLOP goes to padding.

Only the model sees the packed row. Its per-position outputs (log-probs, entropy, values) are put
back into the right-padded [b, n-1] layout (`unpack_shifted`), where the losses run unchanged:
every token keeps exactly the weight it has unpacked, for every aggregation mode in losses.py.

Placement: rows go to micro-batches by a balanced bin-packing (longest first into the lightest
bin), so the micro-batches of a step, and the ranks' shards (`balanced_groups`), carry about the
same number of tokens and finish together.
"""

from __future__ import annotations

import math

import torch

from rlvr.learners.partition import balanced_bins, split_even


# ---------------------------------------------------------------------------------------------
# bin-packing


def bins_needed(lengths: list[int], max_tokens: int) -> int:
    """Fewest balanced bins (balanced_bins) in which no bin exceeds `max_tokens`, except that a
    sequence longer than the budget gets a bin of its own (it cannot be split)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if not lengths:
        return 1
    over = sum(n > max_tokens for n in lengths)  # each alone in a bin
    k = max(1, over + math.ceil(sum(n for n in lengths if n <= max_tokens) / max_tokens))
    while k < len(lengths):
        if all(len(b) == 1 or sum(lengths[i] for i in b) <= max_tokens for b in balanced_bins(lengths, k)):
            break
        k += 1
    return min(k, len(lengths))


def minibatch_blocks(n: int, num_minibatches: int) -> list[torch.Tensor]:
    """Row indices of each minibatch: contiguous blocks in rollout order, sizes differing by <= 1
    (the same minibatches as the unpacked path, rlvr.learners.batch.micro_batch_rows)."""
    return [torch.arange(s.start, s.stop) for s in split_even(n, num_minibatches)]


def packed_micro_batches(lengths: list[int], num_minibatches: int, max_tokens: int,
                         counts: list[int] | None = None) -> list[list[torch.Tensor]]:
    """Row indices of each micro-batch, minibatch by minibatch, each micro-batch at most
    `max_tokens` tokens (a longer sequence alone). `counts[m]` forces minibatch m's number of
    micro-batches (data-parallel ranks must run the same number: ZeRO's collectives pair them up);
    a forced count above the rows available leaves empty micro-batches (empty index tensors)."""
    out = []
    for m, block in enumerate(minibatch_blocks(len(lengths), num_minibatches)):
        lens = [lengths[i] for i in block.tolist()]
        k = counts[m] if counts is not None else bins_needed(lens, max_tokens)
        out.append([block[torch.tensor(b, dtype=torch.long)] for b in balanced_bins(lens, k)])
    return out


def micro_batch_counts(lengths: list[int], num_minibatches: int, max_tokens: int) -> list[int]:
    """Micro-batches each minibatch needs under the token budget (before agreeing with other ranks)."""
    return [bins_needed([lengths[i] for i in block.tolist()], max_tokens)
            for block in minibatch_blocks(len(lengths), num_minibatches)]


# ---------------------------------------------------------------------------------------------
# packed layout of one micro-batch


def position_ids(lengths: list[int]) -> torch.Tensor:
    """[N] positions restarting at 0 for every sequence: [0..l0-1, 0..l1-1, ...]."""
    return torch.cat([torch.arange(n) for n in lengths]) if lengths else torch.zeros(0, dtype=torch.long)


def cu_seqlens(lengths: list[int]) -> torch.Tensor:
    """[k+1] int32 cumulative sequence starts (flash-attention varlen's layout): [0, l0, l0+l1, ...]."""
    return torch.tensor([0] + list(lengths), dtype=torch.int32).cumsum(0, dtype=torch.int32)


def block_causal_mask(lengths: list[int]) -> torch.Tensor:
    """[N, N] bool, True where query i may attend key j: same sequence and j <= i."""
    seq = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths, dtype=torch.long))
    n = seq.shape[0]
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    return causal & (seq[:, None] == seq[None, :])


def pack(ids: torch.Tensor, attn: torch.Tensor, *shifted: torch.Tensor | None) -> tuple:
    """Right-padded ids/attn [b, n] (and per-position tensors [b, n-1], aligned with the predicted
    token like response_mask) -> packed ids [1, N], position ids [1, N] and each shifted tensor as
    [1, N-1]. Packed position t still scores packed token t+1; at each sequence's last token that
    is the next sequence's first token, so shifted values there are 0 (nothing to score)."""
    keep = attn.bool()
    ids_p = ids[keep][None]
    pos = (attn.long().cumsum(-1) - 1)[keep][None]
    out = [ids_p, pos]
    inside = pos[0, 1:] != 0  # position t and t+1 belong to one sequence
    for t in shifted:
        if t is None:
            out.append(None)
            continue
        full = torch.cat([t, t.new_zeros(t.shape[0], 1)], dim=1)  # [b, n]: the appended slot is each row's boundary
        out.append((full[keep][:-1] * inside.to(t.dtype))[None] if t.dtype.is_floating_point
                   else (full[keep][:-1] * inside)[None])
    return tuple(out)


def unpack_shifted(packed: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack` for a per-position tensor: [1, N-1] -> [b, n-1] right-padded. A boundary
    slot (a sequence's last token) lands on the padded slot of that same token, as the unpacked
    model would compute it; zeros past it. Differentiable (a scatter)."""
    keep = attn.bool()
    flat = torch.cat([packed[0], packed.new_zeros(1)])  # the last sequence's boundary slot
    full = packed.new_zeros(keep.shape).masked_scatter(keep, flat)
    return full[:, :-1]


def padding_fraction(micro_batch_lengths: list[list[int]], packed: bool) -> float:
    """Fraction of the token slots the model computes that are padding: micro-batches of rows
    padded to their longest ([b, max]) unpacked, none packed."""
    real = sum(sum(ls) for ls in micro_batch_lengths)
    if packed:
        slots = real
    else:
        slots = sum(len(ls) * max(ls) for ls in micro_batch_lengths if ls)
    return 1.0 - real / slots if slots else 0.0
