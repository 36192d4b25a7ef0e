"""Faults and the async pipeline on the real stack (Ray + vLLM + DeepSpeed).

- (Two engines sharing a batch and both receiving every broadcast: tests/integration/test_elastic.py, which
  runs two engines anyway; the least-loaded routing itself: tests/unit/test_scheduler.py.)
- An engine killed during generation, during training, during the weight sync, or its EngineCore
  process killed under a live actor: restarted, re-synced, its groups run again; the run goes on, and
  each restart is said at once (an event row in metrics.jsonl, `engines/restarts`). The same run holds
  train and eval prompts longer than the context (put past `prepare`'s filter): the engine refuses them,
  they are skipped and counted, and no engine is restarted for them.
- With `train.async_steps: 1`, generation runs one policy version ahead: samples carry the version
  that produced them, staleness is 1 from the second step on, and nothing older is trained on.
  The same run checks DAPO's dynamic sampling and soft overlong penalty in the controller.
"""

import json
import os
import signal
import threading
import time

import pytest
import ray

from rlvr.config import load_recipe
from rlvr.loop.trainer import Trainer, prepare

pytestmark = pytest.mark.integration

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _trainer(toy_dir, out, name, *extra):
    recipe = load_recipe(ROOT / "recipes" / "toy_addition_cpu.yaml", [
        f"model.path={toy_dir}/model", f"data.train.0.path={toy_dir}/train.jsonl", f"data.eval.0.path={toy_dir}/eval.jsonl",
        "data.eval_size=16", "train.prompts_per_step=16", "train.eval_every=0", f"output_dir={out}", f"name={name}",
        "logging.wandb=false", "logging.progress=false", *extra])
    return Trainer(prepare(recipe))


def _pid(engine):
    return ray.get(engine.__ray_call__.remote(lambda self: __import__("os").getpid()))


def test_engine_dies_at_any_moment_and_the_run_goes_on(toy_dir, tmp_path):
    """An engine killed during generation, between generation and the weight sync (i.e. while the
    learner trains), during the broadcast itself, and vLLM's own EngineCore process killed under a
    live actor: each time the engine is restarted, re-synced, its unfinished groups run again, and
    the step completes on the current weights."""
    trainer = _trainer(toy_dir, tmp_path, "fault", "train.steps=6", "learner.lr=5e-3", "rollout.health_interval_s=1",
                       "rollout.engine_timeout_s=20")
    try:
        # Prompts over the toy's 64-token context, past prepare's filter (as if it could not know): every
        # fourth train row and one eval row. vLLM refuses them; they must cost their row, not an engine.
        long = "What is 1 + 2? " * 8
        for k in range(0, len(trainer.stream.rows), 4):
            trainer.stream.rows[k] = {**trainer.stream.rows[k], "messages": [{"role": "user", "content": long}]}
        trainer.prep.eval_rows[0] = {**trainer.prep.eval_rows[0], "messages": [{"role": "user", "content": long}]}
        trainer.start()
        m1 = trainer.train_step()
        assert m1["fault/rollout_restarts"] == 0 and m1["engines/restarts"] == 0
        trainer.evaluate()
        evals = [json.loads(line) for line in open(trainer.run_dir / "eval.jsonl")]
        assert evals[-1]["refused_prompts"] == 1 and trainer.faults["rollout_restarts"] == 0
        engine = trainer.rollouts[0]
        pids = [_pid(engine)]

        # 1. Killed while step 2's generation is in flight.
        original_submit = trainer.submit

        def submit_then_kill(*args, **kwargs):
            batch = original_submit(*args, **kwargs)
            threading.Timer(0.05, lambda: ray.kill(engine, no_restart=False)).start()
            return batch

        trainer.submit = submit_then_kill
        m2 = trainer.train_step()
        trainer.submit = original_submit
        assert m2["fault/rollout_restarts"] == 1 and m2["rollout/groups_rerun"] > 0
        assert m2["step"] == 2 and m2["policy_version"] == 2
        assert m2["response_length/mean"] > 0 and 0.0 <= m2["reward/mean"] <= 1.0  # the regenerated samples were trained on
        pids.append(_pid(engine))

        # 2. Killed after generation, before the weight sync (the learner was training).
        original_sync = trainer.sync_weights

        def kill_then_sync(*args, **kwargs):
            ray.kill(engine, no_restart=False)
            trainer.sync_weights = original_sync
            return original_sync(*args, **kwargs)

        trainer.sync_weights = kill_then_sync
        m3 = trainer.train_step()
        assert m3["fault/rollout_restarts"] == 2 and m3["policy_version"] == 3
        pids.append(_pid(engine))

        # 3. Killed inside the broadcast: the group is formed, the engine's receive is issued.
        original_broadcast = trainer._broadcast

        def kill_in_broadcast():
            trainer._broadcast = original_broadcast
            threading.Timer(0.01, lambda: ray.kill(engine, no_restart=False)).start()
            time.sleep(0.005)
            return original_broadcast()

        trainer._broadcast = kill_in_broadcast
        m4 = trainer.train_step()
        assert m4["fault/rollout_restarts"] == 3 and m4["policy_version"] == 4
        pids.append(_pid(engine))

        # 4. vLLM's EngineCore process SIGKILLed under a live actor (what an out-of-memory kill hits first).
        core = ray.get(engine.engine_core_pids.remote())
        assert core
        for p in core:  # from this process, not through the actor: no reply can race the engine's death
            os.kill(p, signal.SIGKILL)
        m5 = trainer.train_step()
        assert m5["fault/rollout_restarts"] == 4 and m5["policy_version"] == 5
        pids.append(_pid(engine))

        # After all of it the engine serves the learner's current weights, not an old or initial checkpoint.
        m6 = trainer.train_step()
        assert m6["drift/abs_logprob_diff"] < 1e-3, m6["drift/abs_logprob_diff"]
        assert m6["fault/rollout_restarts"] == 4 and m6["fault/recovery_seconds"] > 0 and m6["engines/restarts"] == 4
        assert sum(m["rollout/refused_prompts"] for m in (m1, m2, m3, m4, m5, m6)) > 0  # refused, never restarted
    finally:
        trainer.shutdown()
    assert len(set(pids)) == len(pids)  # a new actor process after every kill
    # Each restart was said at once: one event row per kill, in order, between the step rows.
    rows = [json.loads(line) for line in open(trainer.run_dir / "metrics.jsonl")]
    events = [r for r in rows if r.get("event") == "engine_restart"]
    assert [e["engines/restarts"] for e in events] == [1, 2, 3, 4], events
    assert [e["step"] for e in events] == [1, 2, 3, 4]  # each follows the step before the kill
    assert all(e["event/engine"] == 0 and e["event/recovery_seconds"] > 0 and e["event/error"] for e in events)
    assert events[2]["event/when"] == "during a weight sync"  # the kill inside the broadcast


def test_async_pipeline_with_dynamic_sampling_and_overlong_penalty(toy_dir, tmp_path):
    trainer = _trainer(toy_dir, tmp_path, "async", "train.steps=3", "train.async_steps=1", "algorithm.dynamic_sampling=true",
                       "algorithm.dynamic_sampling_max_retries=4", "algorithm.overlong_buffer=4")
    try:
        trainer.start()
        ms = [trainer.train_step() for _ in range(3)]
    finally:
        trainer.shutdown()
    assert [m["policy_version"] for m in ms] == [1, 2, 3]
    # Step 1 trains on version-0 samples; steps 2 and 3 on samples one version behind the learner.
    assert [m["staleness/max"] for m in ms] == [0, 1, 1]
    assert all(m["staleness/dropped_samples"] == 0 for m in ms)
    # Step 3's batch was generated while step 2 trained: it was ready, so waiting for it cost almost nothing.
    assert ms[2]["time/generation_wait"] < 0.5 * ms[2]["time/generation"], ms[2]
    # DAPO dynamic sampling: groups whose rewards all agree were replaced by fresh ones from the stream.
    assert sum(m["dynamic_sampling/groups_dropped"] for m in ms) > 0
    assert all(m["dynamic_sampling/informative_fraction"] == 1.0 for m in ms), [m["dynamic_sampling/extra_rounds"] for m in ms]
    # The soft overlong penalty (answers past max_tokens - 4 tokens) lowers the reward below the verifier's score.
    assert all(m["reward/mean"] < m["reward/verifier_mean"] for m in ms)
