"""Offline charts of a run: reads run_dir/metrics.jsonl (+ eval.jsonl) and writes PNGs to run_dir/plots/."""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# chart file stem -> (title, y label, metric group). A key belongs to group g if it is g or
# starts with "g/" (so "reward/mean", "throughput/rollout_tokens_per_s").
CHARTS = [
    ("reward", "Reward", "reward", "reward"),
    # a fraction of groups, not a reward: its own chart (a collapse shows as a climb towards 1)
    ("groups_all_equal", "Groups whose rewards all agree (no learning signal)", "fraction", "reward/groups_all_equal"),
    ("kl", "KL divergence to reference", "KL", "kl"),
    ("entropy", "Policy entropy", "entropy (nats/token)", "entropy"),
    ("response_length", "Response length", "tokens", "response_length"),
    ("throughput", "Throughput", "per second", "throughput"),
    ("loss", "Loss", "loss", "loss"),
    # multi-turn environments (rlvr/environments): turns, and tool use per trajectory
    ("env_turns", "Turns per trajectory", "turns", "env/turns"),
    ("env_tool_call_rate", "Trajectories that called a tool", "fraction", "env/tool_call_rate"),
    ("env_tool_calls", "Tool calls per trajectory", "calls", "env/tool_calls"),
    ("env_tool_errors", "Tool errors per trajectory", "errors", "env/tool_errors"),
]


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write one PNG per chart that has data; returns the written paths in CHARTS order
    (accuracy, from eval.jsonl, after reward)."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"no metrics file: {metrics_path} (expected one JSON object per step)")
    metrics = read_series(metrics_path)
    evals = read_series(run_dir / "eval.jsonl") if (run_dir / "eval.jsonl").is_file() else {}

    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    out_dir = run_dir / "plots"
    written = []
    if not metrics:
        raise ValueError(f"{metrics_path} holds no steps yet: nothing to plot (the run logs a line per finished step)")
    own = {g for _, _, _, g in CHARTS}
    for stem, title, ylabel, group in CHARTS:
        # a key with a chart of its own (reward/groups_all_equal) stays out of its parent group's chart
        series = {k: v for k, v in metrics.items() if k == group or (k.startswith(group + "/") and k not in own)}
        if series:
            written.append(_chart(out_dir / f"{stem}.png", title, ylabel, series))
        if stem == "reward":
            acc = {k: v for k, v in evals.items() if "accuracy" in k}
            if acc:
                written.append(_chart(out_dir / "accuracy.png", "Eval accuracy", "accuracy", acc))
    if not written:
        raise ValueError(f"{metrics_path}: no chartable metrics (keys: {', '.join(sorted(metrics)[:6])})")
    return written


def read_series(path: Path) -> dict[str, list[tuple[float, float]]]:
    """key -> [(step, value)] for every finite numeric value. Unparsable lines are skipped with
    a warning: a live run may be halfway through writing its last line."""
    series: dict[str, list[tuple[float, float]]] = {}
    bad = 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += bool(line.strip())
                continue
            if not isinstance(rec, dict):
                bad += 1
                continue
            step = rec.get("step", n)
            for k, v in rec.items():
                if k != "step" and _finite(v) and _finite(step):
                    series.setdefault(k, []).append((float(step), float(v)))
    if bad:
        log.warning("%s: skipped %d unparsable line(s)", path, bad)
    return series


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _chart(path: Path, title: str, ylabel: str, series: dict[str, list[tuple[float, float]]]) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    std = {k[: -len("/std")]: dict(v) for k, v in series.items() if k.endswith("/std")}
    for key, points in sorted(series.items()):
        if key.endswith("/std"):
            continue
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, label=key, marker="o" if len(xs) < 20 else None, markersize=3)
        band = std.get(key[: -len("/mean")]) if key.endswith("/mean") else None
        if band:  # mean ± std shows the spread of rewards within a step
            sd = [band.get(x, 0.0) for x in xs]
            ax.fill_between(xs, [y - s for y, s in zip(ys, sd)], [y + s for y, s in zip(ys, sd)], alpha=0.2, label=f"{key} ± std")
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
