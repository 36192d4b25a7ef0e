"""`rlvr bench rollout`: the RL loop's rollout path, as ratios measured in one run on one cluster.

1. In-loop rollout tokens/s ÷ raw `AsyncLLM` tokens/s: each training step's generation (the
   scheduler, one streaming call per engine, decoding, and the finished groups scored meanwhile),
   from its first group's start to its last group's end, against bare concurrent
   `AsyncLLM.generate` calls (final outputs only) on the same token ids, engine and sampling
   settings, in the same actor. Both timed inside the actor. Target ≥ 0.95. Also the rollout path
   alone (the same batch through the scheduler, nothing scored meanwhile), to tell the two apart.
2. Long tail: a tenth of the groups run 8x longer than the rest (per-group max_tokens, EOS ignored).
   Mean step time of the batch loop (`async_steps: 0`: generate, then learn, then sync) ÷ that of the
   streamed pipeline (`async_steps: 1` with `inflight_updates`: the next batch generates while this
   one is scored and learnt, and weight syncs do not wait for it). Target ≥ 1.5.
3. Step time with `train.async_steps: 1` ÷ max(generation, training) on the ordinary recipe: how close
   the pipeline comes to hiding the shorter phase behind the longer. Target ≤ 1.10.
4. Weight-sync GB/s for a 1 GB model-shaped set of tensors over gloo (rlvr/weights/bench.py). Target ≥ 2.

It lives beside the controller because it drives the whole loop.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "toy_addition_cpu.yaml"


def _long_tail(trainer, short: int, long: int):
    """Wrap trainer.submit: every tenth group of a sampled batch gets `long` tokens, the rest `short` (EOS ignored)."""
    original = trainer.submit

    def submit(prompts, *, greedy=False, per_group=None, rows=None):
        if greedy:
            return original(prompts, greedy=True, rows=rows)
        per_group = [{"max_tokens": long if k % 10 == 0 else short, "ignore_eos": True} for k in range(len(prompts))]
        return original(prompts, per_group=per_group, rows=rows)

    trainer.submit = submit
    return original


def _steps(trainer, n: int) -> list[dict]:
    return [trainer.train_step() for _ in range(n)]


def bench_rollout(recipe_path: str | None = None, steps: int = 8, overrides: list[str] = (), sync_gb: float = 1.0) -> dict:
    import ray

    from rlvr.weights.bench import bench_weight_sync
    from rlvr.config import load_recipe
    from rlvr.loop.trainer import Trainer, prepare
    from rlvr.data import encode_prompts, render_prompt

    recipe = load_recipe(recipe_path or DEFAULT_RECIPE, [
        f"train.steps={10 * steps + 10}", "train.eval_every=0", "train.save_every=0", "train.max_minutes=null",
        "logging.wandb=false", "logging.progress=false", "name=bench-rollout", "output_dir=runs/bench", *overrides])
    trainer = Trainer(prepare(recipe))
    out: dict = {"recipe": str(recipe_path or DEFAULT_RECIPE), "steps": steps}
    try:
        trainer.start()
        trainer.train_step()  # warm-up: first-call costs stay out of every measurement
        loop, raw, path = [], [], []
        for i in range(steps):
            # Raw AsyncLLM on the very same prompt ids, engine and sampling settings; before the step on odd
            # iterations and after it on even ones, so neither side always finds the prefix cache warm.
            stream = type(trainer.stream)(trainer.prep.train_rows, recipe.train.prompts_per_step, seed=recipe.data.seed)
            stream.load_state_dict(trainer.stream.state_dict())
            rows = stream.next_batch()
            prompts = [render_prompt(trainer.prep.tokenizer, r) for r in rows]
            ids = encode_prompts(trainer.prep.tokenizer, prompts)

            def raw_call():
                settings = {k: v for k, v in trainer._gen_kwargs(False).items() if k != "track_versions"}
                tokens, seconds = ray.get(trainer.rollouts[0].raw_generate.remote(ids, **settings))
                raw.append(tokens / seconds)

            def path_call():  # the rollout path alone: scheduler, streaming call, actor; nothing scored
                batch = trainer.submit(prompts, rows=rows)
                trainer.collect(batch)
                res = batch.results.values()
                path.append(sum(r.tokens for r in res) / (max(r.t_end for r in res) - min(r.t_start for r in res)))

            if i % 2:
                raw_call()
                path_call()
            loop.append(trainer.train_step()["throughput/rollout_tokens_per_s"])
            if not i % 2:
                path_call()
                raw_call()
        out["loop_tokens_per_s"] = statistics.median(loop)
        out["raw_tokens_per_s"] = statistics.median(raw)
        out["path_tokens_per_s"] = statistics.median(path)
        out["loop_over_raw"] = out["loop_tokens_per_s"] / out["raw_tokens_per_s"]
        out["path_over_raw"] = out["path_tokens_per_s"] / out["raw_tokens_per_s"]

        t = trainer.recipe.train
        t.async_steps = 1  # the same cluster, now pipelined
        trainer.train_step()  # fills the pipeline
        ms = _steps(trainer, steps)
        out["async_step_s"] = statistics.median(m["time/step"] for m in ms)
        out["async_generation_s"] = statistics.median(m["time/generation"] for m in ms)
        out["async_training_s"] = statistics.median(m["time/training"] for m in ms)
        out["async_step_over_max_phase"] = statistics.median(m["time/step"] / max(m["time/generation"], m["time/training"]) for m in ms)

        # Long tail: the batch loop, then the streamed pipeline with in-flight updates, same engines.
        trainer.drain()
        short, long = 4, 32
        _long_tail(trainer, short, long)
        t.async_steps, t.inflight_updates = 0, False
        trainer.train_step()
        batch_loop = _steps(trainer, steps)
        t.async_steps, t.inflight_updates = 1, True
        trainer.train_step()
        pipeline = _steps(trainer, steps)
        out["tail_tokens"] = (short, long)
        # Means, not medians: the pipeline's steps alternate between taking leftovers and waiting for a
        # fresh batch, and a median of such a series picks one kind.
        out["tail_batch_step_s"] = statistics.mean(m["time/step"] for m in batch_loop)
        out["tail_pipeline_step_s"] = statistics.mean(m["time/step"] for m in pipeline)
        out["tail_speedup"] = out["tail_batch_step_s"] / out["tail_pipeline_step_s"]
        out["tail_sequences_updated"] = statistics.median(m["inflight/sequences_updated"] for m in pipeline)
        out["tail_token_staleness"] = statistics.median(m["staleness/token_fraction"] for m in pipeline)
        trainer.drain()
    finally:
        trainer.shutdown()
    t0 = time.time()
    out["sync"] = bench_weight_sync(int(sync_gb * 1e9), backend="gloo")
    out["sync_seconds_total"] = time.time() - t0
    return out


def agent_load(trainer, rows: list[dict], agent: str = "ask_twice") -> dict:
    """Run every row as `agent` trajectories (rollout.n each) at once through the engines' endpoints: wall
    time, trajectories/s, and per call the time the endpoint added to the engine's (p50/p99)."""
    import ray

    from rlvr.data import render_prompt

    rows = [{**r, "env": agent} for r in rows]
    t0 = time.time()
    comps, _, _ = trainer.collect(trainer.submit([render_prompt(trainer.prep.tokenizer, r) for r in rows], rows=rows))
    seconds = time.time() - t0
    added = sorted(x for c in comps for x in c.trajectory["endpoint_seconds"])
    engine = sorted(x for c in comps for x in c.trajectory["engine_seconds"])
    stats = ray.get([a.agent_endpoint_stats.remote() for a in trainer.rollouts])

    def pct(xs, q):
        return 1e3 * xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    per_trajectory = [sum(c.trajectory["endpoint_seconds"]) for c in comps]
    cpu_per_trajectory = [sum(c.trajectory["endpoint_cpu_seconds"]) for c in comps]
    return {"trajectories": len(comps), "calls": len(added), "seconds": seconds, "trajectories_per_s": len(comps) / seconds,
            "endpoint_ms_per_trajectory": 1e3 * statistics.median(per_trajectory) if per_trajectory else float("nan"),
            "endpoint_cpu_ms_mean": 1e3 * statistics.mean(cpu_per_trajectory) if cpu_per_trajectory else float("nan"),
            "endpoint_cpu_ms_median": 1e3 * statistics.median(cpu_per_trajectory) if cpu_per_trajectory else float("nan"),
            "errors": sum(c.trajectory["reason"] != "done" for c in comps),
            "first_error": next((f"{c.trajectory['reason']}: {c.trajectory.get('error', '')}" for c in comps
                                 if c.trajectory["reason"] != "done"), ""), "open_sessions": sum(s["sessions"] for s in stats),
            "endpoint_ms_p50": pct(added, 0.5), "endpoint_ms_p99": pct(added, 0.99),
            "engine_ms_p50": pct(engine, 0.5), "engine_ms_p99": pct(engine, 0.99), "comps": comps}


def bench_agent(recipe_path: str | None = None, trajectories: int = 256, overrides: list[str] = (),
                vs_single_turn: bool = False, styles: list[str] | None = None) -> dict:
    """`rlvr bench agent`: trajectories at once through the endpoint. With `vs_single_turn`, samples/s of the
    plain single-turn path against each agent style (environments/bench_agents.py: one chat call per
    trajectory) on the same engine and prompts, and their ratios."""
    from rlvr.config import load_recipe
    from rlvr.loop.trainer import Trainer, prepare
    from rlvr.environments.bench_agents import MULTI_CALL, STYLES

    plugins = "environments.plugins=[rlvr.environments.bench_agents]" if vs_single_turn else None
    recipe = load_recipe(recipe_path or DEFAULT_RECIPE, ["train.eval_every=0", "train.save_every=0", "logging.wandb=false",
                                                         "logging.progress=false", "name=bench-agent", "output_dir=runs/bench",
                                                         *([plugins] if plugins else []), *overrides])
    trainer = Trainer(prepare(recipe))
    try:
        trainer.start()
        rows = trainer.prep.train_rows[:max(1, trajectories // recipe.rollout.n)]
        if not vs_single_turn:
            agent_load(trainer, rows[:2])  # warm-up: the endpoint starts, first-call costs stay out
            out = agent_load(trainer, rows)
            out.pop("comps")
            return out
        out = {"trajectories": len(rows) * recipe.rollout.n, "styles": {}}
        single_turn(trainer, rows[:2])  # warm-up
        out["single_turn"] = single_turn(trainer, rows)
        for style in styles or list(STYLES):
            # Warm-up at full size: a training step after the first finds the pool's threads started (a def
            # agent holds one each) and the shared clients built; the first step pays for them once.
            agent_load(trainer, rows, agent=STYLES[style])
            r = agent_load(trainer, rows, agent=STYLES[style])
            r.pop("comps")
            r["samples_per_s"] = r["trajectories_per_s"]
            r["ratio"] = r["samples_per_s"] / out["single_turn"]["samples_per_s"]
            out["styles"][style] = r
        if "handed" in out["styles"]:  # what a call costs the endpoint as the history it re-sends grows
            agent_load(trainer, rows, agent=MULTI_CALL)
            r = agent_load(trainer, rows, agent=MULTI_CALL)
            r.pop("comps")
            one = out["styles"]["handed"]
            r["over_one_call"] = r["endpoint_cpu_ms_median"] / one["endpoint_cpu_ms_median"]
            r["mean_over_one_call"] = r["endpoint_cpu_ms_mean"] / one["endpoint_cpu_ms_mean"]
            r["wall_over_one_call"] = r["endpoint_ms_per_trajectory"] / one["endpoint_ms_per_trajectory"]
            out["four_calls"] = r
        return out
    finally:
        trainer.shutdown()


def single_turn(trainer, rows: list[dict]) -> dict:
    """The plain path: the rows' prompts sampled rollout.n times each, as a training step does (no scoring)."""
    from rlvr.data import render_prompt

    t0 = time.time()
    comps, _, _ = trainer.collect(trainer.submit([render_prompt(trainer.prep.tokenizer, r) for r in rows]))
    seconds = time.time() - t0
    return {"samples": len(comps), "seconds": seconds, "samples_per_s": len(comps) / seconds}


def format_agent(r: dict) -> str:
    if "styles" in r:
        st = r["single_turn"]
        lines = [f"agent path vs single-turn, {r['trajectories']} trajectories at once, one chat call each, same engine and prompts",
                 f"  single-turn        {st['samples_per_s']:8.1f} samples/s ({st['seconds']:.2f}s)"]
        for style, a in r["styles"].items():
            lines.append(f"  agent {style:<12} {a['samples_per_s']:8.1f} samples/s ({a['seconds']:.2f}s) = {a['ratio']:.3f} of "
                         f"single-turn (target >= 0.33); errors {a['errors']}; endpoint adds p50 {a['endpoint_ms_p50']:.1f} ms, "
                         f"p99 {a['endpoint_ms_p99']:.1f} ms per call")
        if "four_calls" in r:
            f, one = r["four_calls"], r["styles"]["handed"]
            lines.append(f"  endpoint CPU per trajectory (median): 1 call {one['endpoint_cpu_ms_median']:.3f} ms, 4 calls "
                         f"re-sending the history {f['endpoint_cpu_ms_median']:.3f} ms = {f['over_one_call']:.2f}x "
                         f"(target <= 4); errors {f['errors']}" + (f" ({f['first_error'][:200]})" if f["errors"] else ""))
            lines.append(f"    mean (garbage collections of the whole process land in a few handlers): "
                         f"{one['endpoint_cpu_ms_mean']:.3f} ms vs {f['endpoint_cpu_ms_mean']:.3f} ms "
                         f"= {f['mean_over_one_call']:.2f}x")
            lines.append(f"    wall time the endpoint added per trajectory (median, GIL waits for the actor's other threads "
                         f"included): {one['endpoint_ms_per_trajectory']:.2f} ms vs {f['endpoint_ms_per_trajectory']:.2f} ms "
                         f"= {f['wall_over_one_call']:.2f}x")
        return "\n".join(lines)
    return (f"agent endpoint load: {r['trajectories']} concurrent trajectories ({r['calls']} calls) in {r['seconds']:.1f}s "
            f"= {r['trajectories_per_s']:.1f} trajectories/s; errors {r['errors']}, keys left open {r['open_sessions']}\n"
            f"  per call, added by the endpoint: p50 {r['endpoint_ms_p50']:.1f} ms, p99 {r['endpoint_ms_p99']:.1f} ms "
            f"(the engine's own time: p50 {r['engine_ms_p50']:.0f} ms, p99 {r['engine_ms_p99']:.0f} ms)")


def format_rollout(r: dict) -> str:
    from rlvr.weights.bench import format_result

    lines = [
        f"rlvr bench rollout ({r['recipe']}, {r['steps']} steps each)",
        f"  in-loop rollout {r['loop_tokens_per_s']:,.0f} tok/s / raw AsyncLLM {r['raw_tokens_per_s']:,.0f} tok/s "
        f"= {r['loop_over_raw']:.3f}   (target >= 0.95; same engine, prompts and settings)",
        f"    the rollout path alone (scheduler + actor, nothing scored meanwhile) {r['path_tokens_per_s']:,.0f} tok/s "
        f"= {r['path_over_raw']:.3f} of raw: the rest is streamed scoring sharing the CPU with the engine",
        f"  long tail ({r['tail_tokens'][1]} vs {r['tail_tokens'][0]} tokens for a tenth of the groups): batch loop mean step "
        f"{r['tail_batch_step_s']:.2f}s / streamed pipeline with in-flight updates {r['tail_pipeline_step_s']:.2f}s "
        f"= {r['tail_speedup']:.2f}x   (target >= 1.5)",
        f"    sequences updated mid-flight per step {r['tail_sequences_updated']:.0f}, "
        f"tokens from an older policy {r['tail_token_staleness']:.1%}",
        f"  async_steps=1: step {r['async_step_s']:.2f}s / max(generation {r['async_generation_s']:.2f}s, "
        f"training {r['async_training_s']:.2f}s) = {r['async_step_over_max_phase']:.3f}   (target <= 1.10)",
        f"  {format_result(r['sync'])}   (target >= 2 GB/s)",
    ]
    return "\n".join(lines)
