"""Splitting work evenly: rows into slices, groups onto ranks, sequences into bins (pure functions the
batch and packing code both use)."""
from __future__ import annotations


def split_weighted(n: int, weights: list[float]) -> list[slice]:
    """Contiguous slices of range(n) sized in proportion to `weights` (largest remainders get the leftovers)."""
    total = sum(weights)
    exact = [n * w / total for w in weights]
    sizes = [int(x) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: exact[i] - sizes[i], reverse=True)[:n - sum(sizes)]:
        sizes[i] += 1
    out, start = [], 0
    for size in sizes:
        out.append(slice(start, start + size))
        start += size
    return out


def split_even(n: int, parts: int) -> list[slice]:
    """`parts` contiguous slices covering range(n), sizes differing by at most one (the first get the extras)."""
    return split_weighted(n, [1.0] * parts)


def balanced_bins(weights: list[int] | list[float], k: int) -> list[list[int]]:
    """Indices 0..len-1 split into `k` bins of near-equal total weight (greedy LPT: heaviest
    first, each into the currently lightest bin; ties go to the lower bin). Each bin's indices are
    ascending; bins may be empty when k > len(weights). Deterministic."""
    if k < 1:
        raise ValueError(f"need at least one bin, got {k}")
    loads = [0.0] * k
    bins: list[list[int]] = [[] for _ in range(k)]
    for i in sorted(range(len(weights)), key=lambda i: (-weights[i], i)):
        b = min(range(k), key=lambda j: (loads[j], j))
        bins[b].append(i)
        loads[b] += weights[i]
    return [sorted(b) for b in bins]


def balanced_groups(group_tokens: list[int], ranks: int) -> list[list[int]]:
    """Group indices of each data-parallel rank, balanced by tokens (a group stays on one rank:
    its advantage statistics are computed there). Every rank gets at least one group when there
    are at least `ranks` groups."""
    return balanced_bins(group_tokens, ranks)


def imbalance(loads: list[float]) -> float:
    """max / mean of per-rank (or per-micro-batch) tokens: 1.0 is perfectly balanced."""
    mean = sum(loads) / max(1, len(loads))
    return max(loads) / mean if mean > 0 else 1.0
