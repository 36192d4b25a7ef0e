"""Step time with judge rewards ÷ step time with a rule verifier, on one cluster (issue #15's target: ≤ 1.15
when the judge has its own engine).

One Trainer on the toy recipe with a judge declared (its own vLLM engine, its own bundle in the plan). Phases
alternate between rows naming only `math` and rows naming `[math, judge]` (the judge's engine is reserved in
both, idle in the first), `--steps` steps each, repeated `--rounds` times so that load drift on a shared
machine hits both alike. The first step of the run is a warm-up and is dropped. Prints the median step times,
the ratio, and the judge's requests/s and latency.

  python bench/judge_step_ratio.py --judge toy       # a tiny judge: the judge path's own overhead
  python bench/judge_step_ratio.py --judge smollm2   # SmolLM2-135M-Instruct, yes/no rubric (compute-bound on CPU)
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def judge_override(which: str) -> str:
    if which == "toy":  # the toy policy as a judge: reads the response, answers a number (parsed on a 0-999 scale)
        return ("judges={judge: {path: .cache/rlvr/toy-addition/model, system: null, template: '{response}', "
                "parser: scale, scale_min: 0, scale_max: 999, max_tokens: 4, max_model_len: 64}}")
    return "judges={judge: {path: .cache/rlvr/smollm2-135m, max_tokens: 2, max_model_len: 1024}}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--judge", choices=["toy", "smollm2"], default="toy")
    p.add_argument("--steps", type=int, default=3, help="steps per phase")
    p.add_argument("--rounds", type=int, default=2, help="rule/judge phase pairs")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--cpus", type=int, default=3, help="cluster.num_cpus (learner 1 + engine 1 + judge 1)")
    p.add_argument("--set", action="append", default=[], help="more recipe overrides")
    a = p.parse_args()

    from rlvr.config import load_recipe
    from rlvr.loop.trainer import Trainer, prepare

    total = 1 + 2 * a.steps * a.rounds
    recipe = load_recipe(ROOT / "recipes" / "toy_addition_cpu.yaml", [
        f"train.steps={total + 1}", f"train.prompts_per_step={a.prompts}", f"rollout.n={a.n}", "train.eval_every=0",
        "train.max_minutes=null", "logging.wandb=false", "logging.progress=false", "name=bench-judge",
        "output_dir=runs/bench", f"cluster.num_cpus={a.cpus}", judge_override(a.judge), *a.set])
    trainer = Trainer(prepare(recipe))
    rows = trainer.prep.train_rows  # the stream hands out these dicts: renaming their verifiers switches phases
    out = {"rule": [], "judge": [], "judge_stats": []}
    try:
        trainer.start()
        for r in rows:
            r["verifier"] = ["math"]
        trainer.train_step()  # warm-up
        for _ in range(a.rounds):
            for phase, names in (("rule", ["math"]), ("judge", ["math", "judge"])):
                for r in rows:
                    r["verifier"] = names
                for _ in range(a.steps):
                    m = trainer.train_step()
                    out[phase].append(m["time/step"])
                    if phase == "judge":
                        out["judge_stats"].append({k.split("/")[-1]: m[k] for k in m if k.startswith("judge/judge/")})
    finally:
        trainer.shutdown()
    rule, judge = statistics.median(out["rule"]), statistics.median(out["judge"])
    rps = statistics.median(s["requests_per_s"] for s in out["judge_stats"] if "requests_per_s" in s)
    p50 = statistics.median(s["latency_p50_s"] for s in out["judge_stats"] if "latency_p50_s" in s)
    p99 = statistics.median(s["latency_p99_s"] for s in out["judge_stats"] if "latency_p99_s" in s)
    last = out["judge_stats"][-1]
    res = {"judge": a.judge, "samples_per_step": a.prompts * a.n, "rule_step_s": rule, "judge_step_s": judge,
           "ratio": judge / rule, "judge_requests_per_s": rps, "judge_latency_p50_s": p50, "judge_latency_p99_s": p99,
           "parse_failures": last.get("parse_failures"), "timeouts": last.get("timeouts"), "errors": last.get("errors"),
           "rule_steps": out["rule"], "judge_steps": out["judge"]}
    print(json.dumps(res, indent=1))
    print(f"step time with judge rewards / with the rule verifier: {judge:.2f}s / {rule:.2f}s = {judge / rule:.2f}x "
          f"(target <= 1.15); judge {rps:.1f} requests/s, p50 {p50:.2f}s, p99 {p99:.2f}s")


if __name__ == "__main__":
    main()
