"""Engine failures decided by the error, on stand-ins (the real stack: tests/integration/test_faults_async.py
and test_engine_refusals.py):

- a multi-turn trajectory lets an engine call's failure pass (the scheduler reruns the group; the turns
  sampled before it are never trained), while the environment's own errors still cost only it;
- an engine error is classified: dead (restart), refused (vLLM's client errors: skip the row), other;
- the scheduler restarts only an engine that is dead or fails its health check; a refused group is
  delivered (flagged) and counted, never restarting anything;
- restart_engine returns only once the actor answers from a new process, and never kills an actor
  Ray already reports restarting;
- per-token versions: tokens streamed after a weight swap carry the new version; a LoRA request keeps
  its adapter's version to the end.
"""

import asyncio
import os
import time

import pytest
import ray

from rlvr.engines.completion import GroupResult
from rlvr.engines.scheduler import RolloutScheduler, actor_state, engine_failure, restart_engine
from rlvr.environments.base import Environment, Observation
from rlvr.environments.trajectory import Limits, run_trajectory
from rlvr.errors import EngineCallEnded, EngineDead, PromptRefused, engine_error_kind


class _Tok:
    """The least a trajectory needs of a tokenizer: one id per character, no chat template."""

    eos_token_id, eos_token, chat_template = 0, "", None

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) % 200 + 1 for c in t] for t in texts]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True, **_):
        return "".join(m["content"] for m in messages)


class _Echo(Environment):
    def __init__(self, fail_step: bool = False):
        self.fail_step = fail_step

    async def step(self, assistant_message):
        if self.fail_step:
            raise KeyError("the environment's own bug")
        return Observation(messages=[{"role": "user", "content": "again"}])


ROW = {"messages": [{"role": "user", "content": "hi"}]}


def _engine(fail_on_turn: int, error: Exception):
    calls = []

    async def generate(ids, budget):
        calls.append(len(ids))
        if len(calls) == fail_on_turn:
            raise error
        return [65, 66], [-0.5, -0.5], "stop", [(0, 2)]

    return generate, calls


@pytest.mark.parametrize("error", [EngineDead("engine core is dead"), RuntimeError("Ray lost the engine"),
                                   PromptRefused("prompt too long")])
def test_an_engine_failure_in_a_later_turn_leaves_the_trajectory(error):
    """Before: `except Exception` made it reason env_error with the first turns kept (trained with reward 0)."""
    generate, calls = _engine(2, error)
    with pytest.raises(type(error)):
        asyncio.run(run_trajectory(_Echo(), ROW, _Tok(), generate, Limits(max_turns=4)))
    assert len(calls) == 2


def test_the_environments_own_error_still_costs_only_the_trajectory():
    generate, _ = _engine(99, RuntimeError("unused"))
    traj = asyncio.run(run_trajectory(_Echo(fail_step=True), ROW, _Tok(), generate, Limits(max_turns=4)))
    assert traj.reason == "env_error" and "KeyError" in traj.error and traj.turns == 1


def test_engine_errors_are_classified_by_what_they_say():
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.engine.exceptions import EngineDeadError

    long_prompt = VLLMValidationError("The decoder prompt (length 80) is longer than the maximum model length of 64.")
    assert engine_error_kind(long_prompt, engine_errored=False) == "refused"
    assert engine_error_kind(PromptRefused("x"), engine_errored=False) == "refused"
    assert engine_error_kind(EngineDeadError(), engine_errored=False) == "dead"
    assert engine_error_kind(EngineDead("x"), engine_errored=False) == "dead"
    assert engine_error_kind(ValueError("anything"), engine_errored=True) == "dead"  # the engine core is gone
    assert engine_error_kind(ValueError("a bug"), engine_errored=False) == "other"


# ---------------------------------------------------------------- on a local Ray


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _stand_in(behaviour: str):
    """An engine actor whose first call fails as `behaviour` says (later calls answer), health always ok."""

    class Engine:
        calls = 0

        async def generate_groups(self, items):
            self.calls += 1
            for j, item in enumerate(items):
                if self.calls == 1 and behaviour == "dead":
                    raise EngineDead("engine core is dead")
                if self.calls == 1 and behaviour == "bug":
                    raise ValueError("a bug in the actor")
                if behaviour == "refuse" and item["prompt_index"] == 1:
                    yield j, GroupResult([], item["prompt_ids"], 0, 0.0, 0.0, refused="PromptRefused: too long")
                    continue
                await asyncio.sleep(0.01)
                yield j, GroupResult([], item["prompt_ids"], 0, 0.0, 0.0)

        async def health(self) -> dict:
            return {"calls": self.calls}

    return ray.remote(Engine).remote()


def test_a_dead_engine_is_recovered_a_healthy_one_is_not(local_ray):
    err = ray.exceptions.RayTaskError("generate_groups", "", EngineDead("x"))
    assert engine_failure(err.as_instanceof_cause()) and engine_failure(EngineDead("x"))
    assert not engine_failure(ray.exceptions.RayTaskError("generate_groups", "", ValueError("x")).as_instanceof_cause())
    assert not engine_failure(EngineCallEnded("x"))
    for behaviour, restarts in (("dead", 1), ("bug", 0)):
        recovered = []
        sched = RolloutScheduler([_stand_in(behaviour)], health_interval_s=30,
                                 on_engine_dead=lambda i, e: recovered.append((i, type(e).__name__)))
        batch = sched.submit([[1], [2]], n=2, temperature=1.0)
        assert sorted(k for k, _ in sched.stream(batch)) == [0, 1]
        assert len(recovered) == restarts, (behaviour, recovered)
        assert sched.reruns == 2 and sched.load == [0]  # both groups of the failed call ran again


def test_a_refused_prompt_is_delivered_flagged_and_counted_without_a_restart(local_ray):
    recovered = []
    sched = RolloutScheduler([_stand_in("refuse")], health_interval_s=30, on_engine_dead=lambda i, e: recovered.append(i))
    batch = sched.submit([[1], [2], [3]], n=2, temperature=1.0)
    got = dict(sched.stream(batch))
    assert sorted(got) == [0, 1, 2] and got[1].refused and not got[0].refused
    assert sched.refused == 1 and sched.reruns == 0 and not recovered


def _restartable(marker: str):
    @ray.remote(max_restarts=-1, max_task_retries=0)
    class Engine:
        def __init__(self):
            with open(marker, "a") as f:  # one line per process start
                f.write(f"{os.getpid()}\n")
            time.sleep(2.0)  # a slow start: Ray reports RESTARTING for a while

        def ready(self) -> str:
            return str(os.getpid())

    return Engine.remote()


def test_restart_engine_waits_for_a_new_process_and_never_kills_a_restarting_actor(local_ray, tmp_path):
    marker = str(tmp_path / "starts")
    engine = _restartable(marker)
    first = ray.get(engine.ready.remote())
    kills = []

    def kill(h):
        kills.append(1)
        ray.kill(h, no_restart=False)

    # A live actor (its EngineCore died, say): killed once, and only a new process's answer ends the wait.
    second = restart_engine(engine, first, RuntimeError("engine core is dead"), deadline_s=120, kill=kill)
    assert second != first and len(kills) == 1 and ray.get(engine.ready.remote()) == second
    # Already restarting (killed elsewhere; no actor error at hand): not killed again.
    ray.kill(engine, no_restart=False)
    deadline = time.time() + 30
    while actor_state(engine) != "RESTARTING" and time.time() < deadline:
        time.sleep(0.02)
    assert actor_state(engine) == "RESTARTING"
    third = restart_engine(engine, second, None, deadline_s=120, kill=kill)
    assert third not in (first, second) and len(kills) == 1
    assert open(marker).read().split() == [first, second, third]  # three processes, no fourth from a second kill


def test_prepare_drops_train_and_eval_rows_that_fill_the_context(toy_dir, tmp_path):
    """The toy's context is 64 tokens: a prompt of 64 or more leaves no room for an answer (vLLM refuses it)."""
    import json

    from rlvr.config import load_recipe
    from rlvr.loop.trainer import prepare

    ok = {"messages": [{"role": "user", "content": "What is 1 + 2?"}], "ground_truth": "3", "dataset": "math"}
    long = {**ok, "messages": [{"role": "user", "content": "What is 1 + 2? " * 8}]}
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [ok, long, ok, ok]))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [long, ok]))
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    recipe = load_recipe(root / "recipes" / "toy_addition_cpu.yaml", [
        f"model.path={toy_dir}/model", f"data.train.0.path={tmp_path}/train.jsonl", f"data.eval.0.path={tmp_path}/eval.jsonl",
        f"output_dir={tmp_path}", "logging.wandb=false"])
    prep = prepare(recipe)
    assert len(prep.train_rows) == 3 and len(prep.eval_rows) == 1
    assert "dropped 1 train and 1 eval row(s)" in prep.report and "context of 64" in prep.report


# ---------------------------------------------------------------- versions (finding 9), on a stand-in engine


class _Out:
    def __init__(self, ids, finish=None):
        from types import SimpleNamespace

        self.outputs = [SimpleNamespace(index=0, token_ids=ids, finish_reason=finish,
                                        logprobs=[{t: SimpleNamespace(logprob=-1.0)} for t in ids])]


class _StandInLLM:
    """Streams two tokens, waits for `gate`, then two more (the weight swap happens in between)."""

    errored = False

    def __init__(self):
        self.gate, self.started = asyncio.Event(), asyncio.Event()

    async def generate(self, prompt, params, request_id, lora_request=None):
        yield _Out([5, 6])
        self.started.set()
        await self.gate.wait()
        yield _Out([7, 8], finish="length")


def _tag_across_a_swap(lora: bool):
    from types import SimpleNamespace

    from rlvr.engines.async_llm import sampling_params
    from rlvr.engines.rollout import RolloutActor

    actor = RolloutActor("unused")
    actor.llm = llm = _StandInLLM()
    if lora:  # the request is given adapter 1 (version 3); the swap brings adapter 2 (version 4)
        actor.lora_request, actor._lora_versions, actor.policy_version = SimpleNamespace(lora_int_id=1), {1: 3}, 3
    else:
        actor.policy_version = 3

    async def go():
        task = asyncio.ensure_future(actor._sample([1, 2], sampling_params(n=1, temperature=1.0, top_p=1.0, max_tokens=4,
                                                                         greedy=False, stream=True)))
        await llm.started.wait()
        actor.policy_version = 4
        if lora:
            actor.lora_request, actor._lora_versions[2] = SimpleNamespace(lora_int_id=2), 4
        llm.gate.set()
        return await task

    ids, _, _, spans = asyncio.run(go())
    return ids[0], spans[0]


def test_tokens_after_a_swap_carry_the_new_version():
    assert _tag_across_a_swap(lora=False) == ([5, 6, 7, 8], [[3, 2], [4, 2]])


def test_a_lora_request_keeps_its_adapters_version_to_the_end():
    """A LoRA request runs with the adapter it was given, whenever its tokens arrive: before, the tokens after
    a sync were tagged with the new adapter's version, which never sampled them."""
    assert _tag_across_a_swap(lora=True) == ([5, 6, 7, 8], [[3, 4]])
