"""Agents under limits: their own thread pool and a clock that starts with them, timeouts scored 0 and
counted, environments.max_turns, engine failures passed on as EngineDead, call ids shipped linear, and
the shared in-process HTTP client. Real endpoint, real `openai` clients, a scripted engine."""

import asyncio
import pickle
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import openai
import pytest

from rlvr import toy_tools
from rlvr.environments.agent import AgentEnvironment, CallIds, agent_pool, run_agent, shared_http_client
from rlvr.environments.endpoint import AgentEndpoint
from rlvr.environments.trajectory import env_metrics, trajectory_reward
from rlvr.errors import EngineDead

ROOT = Path(__file__).resolve().parents[2]
ROW = {"messages": [{"role": "user", "content": "What is 2 + 3?"}], "ground_truth": "5"}


@pytest.fixture(scope="module")
def tok():
    return toy_tools.build_tokenizer()


def engine_saying(tok, text="5", dead_from_call=None):
    """An engine answering `text`; from call `dead_from_call` on (1-based) it is dead."""
    calls = []

    async def generate(ids, budget):
        calls.append(list(ids))
        if dead_from_call is not None and len(calls) >= dead_from_call:
            raise EngineDead("vLLM engine 0: engine core is dead")
        new = tok(text, add_special_tokens=False)["input_ids"][:budget - 1] + [tok.eos_token_id]
        await asyncio.sleep(0)
        return new, [-0.5] * len(new), "stop", [(0, len(new))]
    generate.calls = calls
    return generate


def _run_many(tok, fns, *, timeout_s=30.0, max_turns=None, engine=None, pool=None):
    async def go():
        ep = await AgentEndpoint(tok).start()
        settings = dict(generate=engine or engine_saying(tok), max_tokens=16, max_total_tokens=4096, max_turns=max_turns)
        try:
            runs = await asyncio.gather(*(run_agent(AgentEnvironment(fn), ROW, ep, settings, timeout_s, pool) for fn in fns),
                                        return_exceptions=True)
            return runs, ep
        finally:
            await ep.stop()
    return asyncio.run(go())


def _traj(run) -> dict:
    """The trajectory dict the rollout actor ships for a run (the fields scoring and metrics read)."""
    return {"reason": run.reason, "agent_reward": run.reward, "turns": len(run.calls), "info": run.info,
            "step_rewards": [] if run.reward is None else [run.reward]}


def test_sync_agents_get_their_own_pool_and_the_clock_starts_when_they_start(tok):
    threads = []

    def agent(seconds):
        def run(row, client):
            threads.append(threading.current_thread().name)
            r = client.chat.completions.create(model="p", messages=row["messages"])
            time.sleep(seconds)
            return r.choices[0].message.content
        return run

    # One thread: the second agent waits ~3 s for it, then runs 2 s. Its 4 s timeout counts from its start, so it
    # finishes (timed from its submission it would end at ~5 s); the wait shows as agent_queue_s.
    (first, second), _ = _run_many(tok, [agent(3.0), agent(2.0)], timeout_s=4.0, pool=agent_pool(1))
    assert first.reason == second.reason == "done" and second.answer == "5"
    assert second.info["agent_queue_s"] > 2.0 and first.info["agent_queue_s"] < 1.0
    assert threads and all(t.startswith("rlvr-agent") for t in threads)  # not the loop's default executor
    m = env_metrics([_traj(first), _traj(second)])
    assert m["agent/queue_s"] == pytest.approx((first.info["agent_queue_s"] + second.info["agent_queue_s"]) / 2)


def test_sync_agent_pool_is_sized_from_the_recipe():
    from rlvr.config import load_recipe
    from rlvr.loop.trainer import Trainer

    recipe = ROOT / "recipes" / "toy_addition_cpu.yaml"
    r = load_recipe(recipe, check_files=False)
    assert Trainer._env_kwargs(SimpleNamespace(recipe=r), {"env": "a"})["agent_threads"] == 64 * 8
    r = load_recipe(recipe, ["environments.agent_threads=7"], check_files=False)
    assert Trainer._env_kwargs(SimpleNamespace(recipe=r), {"env": "a"})["agent_threads"] == 7


def test_timed_out_agent_gets_reward_0_and_counts_as_an_error(tok):
    async def slow(row, client):
        await client.chat.completions.create(model="p", messages=row["messages"])  # a right answer, "5"...
        await asyncio.sleep(30)

    async def fine(row, client):
        return (await client.chat.completions.create(model="p", messages=row["messages"])).choices[0].message.content

    (late, ok), _ = _run_many(tok, [slow, fine], timeout_s=1.0)
    assert late.reason == "timeout" and late.reward == 0.0 and "1s" in late.error
    # ...which the verifier would score 1: a timed-out run is not scored, in any reward mode.
    assert trajectory_reward("verifier", 1.0, _traj(late)) == 0.0 and trajectory_reward("verifier", 1.0, _traj(ok)) == 1.0
    m = env_metrics([_traj(late), _traj(ok)])
    assert m["env/errors"] == 0.5 and m["env/truncated/timeout"] == 0.5


def test_max_turns_bounds_an_agent(tok):
    def looping(catch):
        async def run(row, client):
            messages = [dict(m) for m in row["messages"]]
            for _ in range(6):
                try:
                    r = await client.chat.completions.create(model="p", messages=messages)
                except openai.BadRequestError as e:
                    if catch:
                        assert "max_turns" in str(e)
                        return "gave up"
                    raise
                messages += [{"role": "assistant", "content": r.choices[0].message.content},
                             {"role": "user", "content": "again"}]
        return run

    (raising, catching), _ = _run_many(tok, [looping(False), looping(True)], max_turns=2)
    for run in (raising, catching):
        assert run.reason == "max_turns" and run.error == "" and len(run.calls) == 2 and run.reward is None
        assert len(run.segments) == 1 and run.segments[0].calls == 2
    assert raising.answer == "5" and catching.answer == "gave up"  # scored like a multi-turn trajectory at its limit


def test_call_ids_shipped_are_linear_in_the_conversation(tok):
    async def chatty(row, client):
        messages = [dict(m) for m in row["messages"]]
        for k in range(8):
            r = await client.chat.completions.create(model="p", messages=messages)
            messages += [{"role": "assistant", "content": r.choices[0].message.content},
                         {"role": "user", "content": f"and {k}?"}]
        fresh = await client.chat.completions.create(model="p", messages=row["messages"])  # a branch
        return fresh.choices[0].message.content

    (run,), _ = _run_many(tok, [chatty])
    calls = CallIds.of(run)
    plain = [[c.prompt_ids, c.completion_ids] for c in run.calls]
    assert list(calls) == plain and calls == plain and len(calls) == 9 and calls[-1] == plain[-1]
    assert pickle.loads(pickle.dumps(calls)) == plain
    # What is shipped is the trajectories' ids once, not every call's re-sent prompt.
    assert calls.shipped_ids == sum(len(s.ids) for s in run.segments)
    assert sum(len(p) + len(c) for p, c in plain) > 4 * calls.shipped_ids


def test_engine_death_under_an_agent_raises_engine_dead_not_env_error(tok):
    async def raising(row, client):
        await client.chat.completions.create(model="p", messages=row["messages"])
        await client.chat.completions.create(model="p", messages=row["messages"])  # the engine dies: 503 -> raises

    async def swallowing(row, client):
        await client.chat.completions.create(model="p", messages=row["messages"])
        try:
            await client.chat.completions.create(model="p", messages=row["messages"])
        except openai.APIStatusError as e:
            assert e.status_code == 503
        return "carried on"

    def sync(row, client):
        client.chat.completions.create(model="p", messages=row["messages"])
        client.chat.completions.create(model="p", messages=row["messages"])

    for fn in (raising, swallowing, sync):
        (out,), ep = _run_many(tok, [fn], engine=engine_saying(tok, dead_from_call=2))
        assert isinstance(out, EngineDead), (fn.__name__, out)
        assert not ep.sessions


def test_shared_client_survives_a_users_close_and_serves_their_own_clients(tok):
    async def own(row, client):
        async with openai.AsyncOpenAI(base_url=client.base_url, api_key=client.api_key,
                                      http_client=shared_http_client()) as mine:
            r = await mine.chat.completions.create(model="p", messages=row["messages"])
        return r.choices[0].message.content

    async def unchanged(row, client):  # the user's code as written: its own HTTP client, over the network
        async with openai.AsyncOpenAI(base_url=client.base_url, api_key=client.api_key, max_retries=0) as mine:
            r = await mine.chat.completions.create(model="p", messages=row["messages"], stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in r if c.choices])

    runs, _ = _run_many(tok, [own, own, unchanged])
    assert [r.reason for r in runs] == ["done"] * 3 and [r.answer for r in runs] == ["5"] * 3


def test_endpoint_cpu_time_per_call_leaves_out_the_engines(tok):
    """endpoint_cpu_seconds: the handler's own CPU per call; CPU burnt while the call awaited the engine (here the
    engine's own, on the endpoint's thread) is not the endpoint's."""
    say = engine_saying(tok)

    async def busy_engine(ids, budget):
        t = time.thread_time()
        while time.thread_time() - t < 0.3:
            pass
        return await say(ids, budget)

    async def twice(row, client):
        messages = [dict(m) for m in row["messages"]]
        r = await client.chat.completions.create(model="p", messages=messages)
        messages += [{"role": "assistant", "content": r.choices[0].message.content}, {"role": "user", "content": "?"}]
        return (await client.chat.completions.create(model="p", messages=messages)).choices[0].message.content

    (run,), _ = _run_many(tok, [twice], engine=busy_engine)
    assert run.reason == "done" and len(run.endpoint_cpu_seconds) == len(run.endpoint_seconds) == 2
    assert all(0 <= x < 0.15 for x in run.endpoint_cpu_seconds), run.endpoint_cpu_seconds
    assert all(c.seconds >= 0.3 for c in run.calls)
