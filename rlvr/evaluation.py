"""Evaluation numbers from scored samples: accuracy, unbiased pass@k, per-verifier and per-source.

Pure functions only (no engine, no files): `rlvr eval` (rlvr/cli/eval.py) and the trainer's
periodic evaluation (Trainer.evaluate) both turn their completions into records with
`sample_records` and summarise them with `summarize`, so the two report the same numbers.

A record is a dict with at least `prompt_index`, `source` (the data source's label), `verifier`
(the row's verifier names) and `score`; a sample is correct when its score is >= 1.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021 for one prompt: n samples, c of them correct.

    1 - C(n-c, k) / C(n, k), computed as 1 - prod_{i=n-c+1..n} (1 - k/i): the binomials
    overflow floats for large n, the product does not.
    """
    if not (n >= 1 and 0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs n >= 1, 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every k-subset contains a correct sample
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def ks_for(n: int) -> list[int]:
    """The k reported for n samples per prompt: 1, the powers of two below n, and n."""
    ks, k = {1, n}, 2
    while k < n:
        ks.add(k)
        k *= 2
    return sorted(ks)


def sample_records(rows: Sequence[dict], completions: Sequence[Any], results: Sequence[Any],
                   prompts: Sequence[str] | None = None) -> list[dict]:
    """One record per completion, in the completions' order.

    rows: the normalised data rows (rlvr.data); completions: objects with `prompt_index`, `text`,
    `finish_reason`, `policy_version` (rollout Completion); results: VerifyResult-likes with
    `score` and `error`, aligned with completions; prompts: the rendered prompts, kept when given.
    """
    if len(completions) != len(results):
        raise ValueError(f"{len(completions)} completions but {len(results)} verifier results")
    seen: dict[int, int] = defaultdict(int)
    out = []
    for c, res in zip(completions, results):
        row = rows[c.prompt_index]
        rec = {"prompt_index": c.prompt_index, "sample": seen[c.prompt_index], "source": row["source"],
               "index": row["index"], "verifier": list(row["verifier"]), "score": float(res.score)}
        seen[c.prompt_index] += 1
        if prompts is not None:
            rec["prompt"] = prompts[c.prompt_index]
        rec.update({"completion": c.text, "finish_reason": c.finish_reason, "policy_version": c.policy_version,
                    "ground_truth": row["ground_truth"]})
        if getattr(res, "error", None):
            rec["error"] = res.error
        traj = getattr(c, "trajectory", None)
        if traj:  # a multi-turn trajectory: the whole conversation, with roles
            rec.update({"messages": traj["messages"], "turns": traj["turns"], "end": traj["reason"]})
        out.append(rec)
    return out


def _group_stats(by_prompt: dict[int, list[float]], ks: list[int]) -> dict[str, float]:
    scores = [s for ss in by_prompt.values() for s in ss]
    stats = {"prompts": len(by_prompt), "samples": len(scores),
             "accuracy": sum(s >= 1.0 for s in scores) / len(scores),
             "mean_score": sum(scores) / len(scores)}
    for k in ks:
        stats[f"pass@{k}"] = sum(pass_at_k(len(ss), sum(s >= 1.0 for s in ss), k)
                                 for ss in by_prompt.values()) / len(by_prompt)
    return stats


def summarize(records: Iterable[dict]) -> dict[str, Any]:
    """Accuracy, mean score and pass@k (k in ks_for(n)) overall, per verifier and per source.

    Every prompt must have the same number of samples n. A row naming several verifiers counts
    under each of them (its combined score), as the trainer's reward/<name> does.
    """
    records = list(records)
    if not records:
        raise ValueError("no samples to summarise")
    by_prompt: dict[int, list[float]] = defaultdict(list)
    meta: dict[int, tuple[str, list[str]]] = {}
    for r in records:
        by_prompt[r["prompt_index"]].append(float(r["score"]))
        meta.setdefault(r["prompt_index"], (r["source"], list(r["verifier"])))
    sizes = {len(ss) for ss in by_prompt.values()}
    if len(sizes) != 1:
        raise ValueError(f"every prompt needs the same number of samples, got sizes {sorted(sizes)}")
    n = sizes.pop()
    ks = ks_for(n)
    groups: dict[str, dict[str, dict[int, list[float]]]] = {"verifier": defaultdict(dict), "source": defaultdict(dict)}
    for p, ss in by_prompt.items():
        source, verifiers = meta[p]
        groups["source"][source][p] = ss
        for name in dict.fromkeys(verifiers):  # a name listed twice on a row counts once
            groups["verifier"][name][p] = ss
    summary: dict[str, Any] = {"n": n, **_group_stats(by_prompt, ks)}
    for kind, by_label in groups.items():
        summary[kind] = {label: _group_stats(ps, ks) for label, ps in sorted(by_label.items())}
    return summary


COUNTS = ("n", "prompts", "samples")


def flat_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's rates as flat metric keys: accuracy, mean_score, pass@k, verifier/<name>/accuracy,
    source/<label>/pass@1, ... Counts are left out: they do not change during a run."""
    out = {k: v for k, v in summary.items() if not isinstance(v, dict) and k not in COUNTS}
    for kind in ("verifier", "source"):
        for label, stats in summary.get(kind, {}).items():
            out.update({f"{kind}/{label}/{k}": v for k, v in stats.items() if k not in COUNTS})
    return out


def summary_table(summary: dict[str, Any], title: str = "evaluation"):
    """A rich Table: one line overall, then one per verifier and per source."""
    from rich.table import Table

    ks = [k for k in summary if k.startswith("pass@")]
    table = Table(title=f"{title} (n={summary['n']} per prompt)")
    # A long source label (a path) folds onto several lines rather than squeezing the numbers.
    table.add_column("group", overflow="fold", min_width=14)
    for col in ("prompts", "accuracy", "mean", *ks):
        table.add_column(col, justify="right")

    def add(label: str, stats: dict) -> None:
        table.add_row(label, str(stats["prompts"]), f"{stats['accuracy']:.1%}", f"{stats['mean_score']:.3f}",
                      *(f"{stats[k]:.1%}" for k in ks))

    add("all", summary)
    for kind in ("verifier", "source"):
        for label, stats in summary.get(kind, {}).items():
            add(f"{kind} {label}", stats)
    return table
