"""`rlvr bench step`: a recipe's RL step time, generation and training apart, for the recipe as written
and for each variant (`--vs KEY=VALUE[,KEY=VALUE]`), each a short real `rlvr train` run of its own.

Each variant runs in a fresh process and Ray cluster, one after another, so they never share the cores.
The first step is left out (start-up: imports, allocations, the engine's first batch); the figures are
medians over the remaining steps. Ratios are against the first variant, measured in the same command.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = (("time/generation", "generation s"), ("time/learner_compute", "learner s"), ("time/training", "training s"),
          ("time/weight_sync", "sync s"), ("time/step", "step s"))


def step_figures(metrics: list[dict], samples_per_step: int, skip: int = 1) -> dict[str, float]:
    """Median phase times over the steps after the first `skip`, and samples per second of step time."""
    rows = [m for m in metrics if "time/step" in m][skip:] or [m for m in metrics if "time/step" in m]
    if not rows:
        raise ValueError("the run logged no steps")
    out = {key: statistics.median(m.get(key, float("nan")) for m in rows) for key, _ in PHASES}
    out["samples/s"] = samples_per_step / out["time/step"] if out["time/step"] > 0 else float("nan")
    out["steps"] = len(rows)
    return out


def run_variant(recipe: str, overrides: list[str], steps: int, workdir: Path, label: str) -> dict[str, float]:
    """One `rlvr train` of `steps` steps with `overrides` (eval shrunk to one row, no checkpoints); its figures."""
    name = f"bench-{len(list(workdir.iterdir()))}"  # one run directory per variant
    cmd = [sys.executable, "-m", "rlvr.cli", "train", recipe, "--overwrite",
           "--set", f"train.steps={steps}", "--set", "train.eval_every=0", "--set", "train.save_every=0",
           "--set", "data.eval_size=1", "--set", f"output_dir={workdir}", "--set", f"name={name}",
           "--set", "logging.wandb=false", "--set", "logging.progress=false"]
    for o in overrides:
        cmd += ["--set", o]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"variant {label!r} failed (exit {proc.returncode}):\n{tail}")
    import yaml

    run = workdir / name
    config = yaml.safe_load((run / "config.yaml").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    figures = step_figures(metrics, config["train"]["prompts_per_step"] * config["rollout"]["n"])
    figures["wall s"] = time.time() - t0
    return figures


def bench_step(recipe: str, variants: list[str], steps: int, overrides: list[str] = ()) -> list[tuple[str, dict]]:
    """[(label, figures)] for the recipe as written (with `overrides`) and for each variant on top of it."""
    if steps < 2:
        raise ValueError("--steps must be at least 2 (the first step is start-up)")
    results = []
    with tempfile.TemporaryDirectory(prefix="rlvr-bench-step-") as tmp:
        for label in ["as written"] + list(variants):
            extra = [] if label == "as written" else [kv.strip() for kv in label.split(",") if kv.strip()]
            print(f"running {label} ({steps} steps)...", file=sys.stderr, flush=True)
            results.append((label, run_variant(recipe, list(overrides) + extra, steps, Path(tmp), label)))
    return results


def format_step(results: list[tuple[str, dict]]) -> str:
    base = results[0][1]
    head = f"{'variant':40s} " + " ".join(f"{title:>13s}" for _, title in PHASES) + f" {'samples/s':>10s}  ratio (step time)"
    lines = [head]
    for label, f in results:
        ratio = base["time/step"] / f["time/step"] if f["time/step"] else float("nan")
        lines.append(f"{label[:40]:40s} " + " ".join(f"{f[key]:13.2f}" for key, _ in PHASES)
                     + f" {f['samples/s']:10.2f}  {ratio:.2f}x")
    lines.append(f"(medians over {base['steps']} steps after the first; ratio: the first row's step time / this row's)")
    return "\n".join(lines)
