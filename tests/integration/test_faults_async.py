"""Faults and the async pipeline on the real stack (Ray + vLLM + DeepSpeed).

- Two engines split a batch and both receive every weight broadcast.
- A vLLM engine killed while it generates is restarted by Ray, re-synced to the current weights,
  and its prompts are generated again; the step completes and the event is in the metrics.
- With `train.async_steps: 1`, generation runs one policy version ahead: samples carry the version
  that produced them, staleness is 1 from the second step on, and nothing older is trained on.
  The same run checks DAPO's dynamic sampling and soft overlong penalty in the controller.
"""

import threading

import pytest
import ray

from rlvr.config import load_recipe
from rlvr.controller import Trainer, prepare

pytestmark = pytest.mark.integration

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def _trainer(toy_dir, out, name, *extra):
    recipe = load_recipe(ROOT / "recipes" / "toy_addition_cpu.yaml", [
        f"model.path={toy_dir}/model", f"data.train.0.path={toy_dir}/train.jsonl", f"data.eval.0.path={toy_dir}/eval.jsonl",
        "data.eval_size=16", "train.prompts_per_step=16", "train.eval_every=0", f"output_dir={out}", f"name={name}",
        "logging.wandb=false", "logging.progress=false", *extra])
    return Trainer(prepare(recipe))


def test_killed_engine_is_restarted_resynced_and_regenerates(toy_dir, tmp_path):
    trainer = _trainer(toy_dir, tmp_path, "fault", "train.steps=3", "learner.lr=5e-3")
    try:
        trainer.start()
        m1 = trainer.train_step()
        assert m1["fault/rollout_restarts"] == 0
        engine = trainer.rollouts[0]
        pid_before = ray.get(engine.__ray_call__.remote(lambda self: __import__("os").getpid()))
        # Kill the engine while step 2's generation is in flight.
        original_submit = trainer.submit

        def submit_then_kill(*args, **kwargs):
            pending = original_submit(*args, **kwargs)
            threading.Timer(0.05, lambda: ray.kill(engine, no_restart=False)).start()
            return pending

        trainer.submit = submit_then_kill
        m2 = trainer.train_step()
        trainer.submit = original_submit
        assert m2["fault/rollout_restarts"] == 1
        assert m2["step"] == 2 and m2["policy_version"] == 2
        assert m2["response_length/mean"] > 0 and 0.0 <= m2["reward/mean"] <= 1.0  # the regenerated samples were trained on
        pid_after = ray.get(engine.__ray_call__.remote(lambda self: __import__("os").getpid()))
        assert pid_after != pid_before  # a new process: Ray restarted the actor
        # The restarted engine serves the learner's current weights, not the initial checkpoint.
        m3 = trainer.train_step()
        assert m3["drift/abs_logprob_diff"] < 1e-3, m3["drift/abs_logprob_diff"]
        assert m3["fault/rollout_restarts"] == 1
    finally:
        trainer.shutdown()


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


def test_two_engines_share_the_batch_and_both_receive_every_update(toy_dir, tmp_path):
    trainer = _trainer(toy_dir, tmp_path, "two-engines", "train.steps=2", "rollout.engines=2", "rollout.num_cpus=0.5",
                       "learner.lr=5e-3")
    try:
        trainer.start()
        before = ray.get([a.weights_fingerprint.remote() for a in trainer.rollouts])
        pending = trainer.submit(["<|user|>What is 1 + 2?<|assistant|>"] * 6)
        assert [s.stop - s.start for s in pending.parts] == [3, 3]  # equal shares before any speed is measured
        trainer.collect(pending)
        m = trainer.train_step()
        after = ray.get([a.weights_fingerprint.remote() for a in trainer.rollouts])
    finally:
        trainer.shutdown()
    assert before[0] == before[1] and after[0] == after[1]  # one broadcast reached both engines
    assert after[0] != before[0] and m["policy_version"] == 1
    assert all(sp > 1.0 for sp in trainer.engine_speed)  # both engines' speeds were measured for the next split
