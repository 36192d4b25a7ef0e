"""`rlvr bench rollout`: the rollout path's overheads, as ratios measured in one run.

1. In-loop rollout tokens/s ÷ raw vLLM tokens/s: each training step's generation, timed from the
   driver (prompt rendering, reseeding, log-prob extraction, result collection included), against
   a bare `vllm.LLM.generate` on the same engine, same prompts and sampling settings, called
   through the same Ray actor and also timed from the driver. Target ≥ 0.95. The same ratio
   timed inside the engine is printed too.
2. Step time with `train.async_steps: 1` ÷ max(generation, training): how close the pipeline comes
   to hiding the shorter phase behind the longer. Same cluster, after the synchronous steps. Target ≤ 1.10.
3. Weight-sync GB/s for a 1 GB model-shaped set of tensors over gloo (rlvr/cluster/bench.py). Target ≥ 2.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "toy_addition_cpu.yaml"


def bench_rollout(recipe_path: str | None = None, steps: int = 8, overrides: list[str] = (), sync_gb: float = 1.0) -> dict:
    import ray

    from rlvr.cluster.bench import bench_weight_sync
    from rlvr.config import load_recipe
    from rlvr.controller import Trainer, prepare
    from rlvr.data import render_prompt

    recipe = load_recipe(recipe_path or DEFAULT_RECIPE, [
        f"train.steps={3 * steps + 2}", "train.eval_every=0", "train.save_every=0", "train.max_minutes=null",
        "logging.wandb=false", "logging.progress=false", "name=bench-rollout", "output_dir=runs/bench", *overrides])
    trainer = Trainer(prepare(recipe))
    out: dict = {"recipe": str(recipe_path or DEFAULT_RECIPE), "steps": steps}
    try:
        trainer.start()
        trainer.train_step()  # warm-up: first-call costs stay out of both measurements
        loop, raw, loop_engine, raw_engine = [], [], [], []

        def raw_call(prompts):  # timed from the driver, like the loop's generation: same Ray path both sides
            t0 = time.perf_counter()
            tokens, seconds = ray.get(trainer.rollouts[0].raw_generate.remote(prompts, **trainer._gen_kwargs(False)))
            raw.append(tokens / (time.perf_counter() - t0))
            raw_engine.append(tokens / seconds)

        for i in range(steps):
            # Raw vLLM on the very same prompts, engine and sampling settings; before the step on odd
            # iterations and after it on even ones, so neither side always finds the prefix cache warm.
            stream = type(trainer.stream)(trainer.prep.train_rows, recipe.train.prompts_per_step, seed=recipe.data.seed)
            stream.load_state_dict(trainer.stream.state_dict())
            prompts = [render_prompt(trainer.prep.tokenizer, row) for row in stream.next_batch()]
            if i % 2:
                raw_call(prompts)
            m = trainer.train_step()
            loop.append(m["throughput/rollout_tokens_per_s_wall"])
            loop_engine.append(m["throughput/rollout_tokens_per_s"])
            if not i % 2:
                raw_call(prompts)
        out["loop_tokens_per_s"] = statistics.median(loop)
        out["raw_tokens_per_s"] = statistics.median(raw)
        out["loop_over_raw"] = out["loop_tokens_per_s"] / out["raw_tokens_per_s"]
        out["engine_loop_over_raw"] = statistics.median(loop_engine) / statistics.median(raw_engine)

        trainer.recipe.train.async_steps = 1  # the same cluster, now pipelined
        trainer.train_step()  # fills the pipeline
        ratios, gen, train, step_t = [], [], [], []
        for _ in range(steps):
            m = trainer.train_step()
            longer = max(m["time/generation"], m["time/training"])
            ratios.append(m["time/step"] / longer)
            gen.append(m["time/generation"])
            train.append(m["time/training"])
            step_t.append(m["time/step"])
        out.update({"async_step_s": statistics.median(step_t), "async_generation_s": statistics.median(gen),
                    "async_training_s": statistics.median(train), "async_step_over_max_phase": statistics.median(ratios)})
    finally:
        trainer.shutdown()
    t0 = time.time()
    out["sync"] = bench_weight_sync(int(sync_gb * 1e9), backend="gloo")
    out["sync_seconds_total"] = time.time() - t0
    return out


def format_rollout(r: dict) -> str:
    from rlvr.cluster.bench import format_result

    lines = [
        f"rlvr bench rollout ({r['recipe']}, {r['steps']} steps each)",
        f"  in-loop rollout {r['loop_tokens_per_s']:,.0f} tok/s / raw vLLM {r['raw_tokens_per_s']:,.0f} tok/s "
        f"= {r['loop_over_raw']:.3f}   (target >= 0.95; both timed from the driver)",
        f"    timed inside the engine: rlvr's generate / bare LLM.generate = {r['engine_loop_over_raw']:.3f}",
        f"  async_steps=1: step {r['async_step_s']:.2f}s / max(generation {r['async_generation_s']:.2f}s, "
        f"training {r['async_training_s']:.2f}s) = {r['async_step_over_max_phase']:.3f}   (target <= 1.10)",
        f"  {format_result(r['sync'])}   (target >= 2 GB/s)",
    ]
    return "\n".join(lines)
