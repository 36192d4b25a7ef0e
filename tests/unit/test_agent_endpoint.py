"""The agent endpoint over real HTTP on loopback, with the real `openai` client and a scripted engine.

The engine is a coroutine standing in for vLLM (the integration test uses the real one); everything
else is what runs in a rollout actor: the aiohttp endpoint, keys, exact-id prompts, tool-call
parsing, and the assembly of calls into trajectories.
"""

import asyncio
import importlib.util
import json
import re
import sys
from pathlib import Path

import openai
import pytest

from rlvr import toy_tools
from rlvr.environments import get_environment
from rlvr.environments.agent import Call, assemble, run_agent
from rlvr.environments.endpoint import AgentEndpoint
from rlvr.environments.template import render_delta
from rlvr.environments.trajectory import render_opening

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "tests" / "fixtures" / "environments" / "rlvr_test_agents.py"


@pytest.fixture(scope="module", autouse=True)
def agents():
    from rlvr.environments import load_environment_plugins

    load_environment_plugins([str(PLUGIN)])
    return sys.modules


@pytest.fixture(scope="module")
def tok():
    return toy_tools.build_tokenizer()  # a chat template with a tool role, and one token per byte


class ScriptedEngine:
    """Calls the calculator (compact syntax) for a fresh question, copies a tool result, else says 7."""

    def __init__(self, tok):
        self.tok, self.seen = tok, []

    async def __call__(self, ids, budget):
        self.seen.append((list(ids), budget))
        text = self.tok.decode(ids, skip_special_tokens=False)
        last = text.rsplit("<|assistant|>", 2)
        if text.endswith("<|assistant|>") and "<|tool|>" in last[-2]:
            out = last[-2].split("<|tool|>")[-1].split("<|eos|>")[0]
        elif m := re.search(r"What is (\d+) \* (\d+)\?<\|assistant\|>$", text):
            out = f"<tool>calculator: {m.group(1)} * {m.group(2)}</tool>"
        else:
            out = "7"
        new = self.tok(out, add_special_tokens=False)["input_ids"][:budget - 1] + [self.tok.eos_token_id]
        await asyncio.sleep(0)
        return new, [-0.5] * len(new), "stop", [(3, len(new))]


def _run(tok, name, row, *, max_tokens=40, timeout_s=30.0, **options):
    async def go():
        ep = await AgentEndpoint(tok).start()
        engine = ScriptedEngine(tok)
        try:
            run = await run_agent(get_environment(name, **options), row, ep,
                                  dict(generate=engine, max_tokens=max_tokens, max_total_tokens=128), timeout_s)
            return run, engine, ep
        finally:
            await ep.stop()
    return asyncio.run(go())


ROW = {"messages": [{"role": "user", "content": "What is 347 * 28?"}], "ground_truth": "9716"}


def test_tool_agent_one_trajectory_token_exact_and_masked(tok):
    run, engine, ep = _run(tok, "tool_agent", ROW, parser="compact")
    assert run.reason == "done" and run.answer == "9716" and len(run.calls) == 2 and len(run.segments) == 1
    first, second = run.calls
    assert [ids for ids, _ in engine.seen] == [first.prompt_ids, second.prompt_ids]
    # Turn 2's prompt is turn 1's exact ids plus the tool message rendered as a delta, never a re-tokenisation.
    delta = render_delta(tok, [*ROW["messages"], {"role": "assistant", "content": first.text}],
                         [{"role": "tool", "content": "9716"}])
    assert second.prompt_ids == first.prompt_ids + first.completion_ids + delta
    seg = run.segments[0]
    assert seg.prompt_ids == render_opening(tok, ROW["messages"], [])
    assert seg.token_ids == first.completion_ids + delta + second.completion_ids
    assert seg.loss_mask == [1] * len(first.completion_ids) + [0] * len(delta) + [1] * len(second.completion_ids)
    assert seg.logprobs == [-0.5] * len(first.completion_ids) + [0.0] * len(delta) + [-0.5] * len(second.completion_ids)
    assert seg.version_spans == [(3, len(first.completion_ids) + len(second.completion_ids))]
    # The agent re-sent the reply the OpenAI way (content None, tool_calls), which this template cannot
    # render as the model wrote it: the whole rendering differs, which is counted; the ids used are exact.
    assert run.info["agent_rerender_mismatch"] == 1 and run.info["agent_settings_overridden"] == 0
    assert not ep.sessions  # the key died with the trajectory


def test_history_resent_with_sampling_settings_and_budget(tok):
    run, engine, _ = _run(tok, "checking_agent", {"messages": [{"role": "user", "content": "What is 3 + 4?"}]})
    assert len(run.segments) == 1 and run.info["agent_rerender_mismatch"] == 0  # plain text re-renders exactly
    assert engine.seen[0][1] == 8  # the agent's max_tokens lowers the recipe's budget (40)...
    assert engine.seen[1][1] == 40  # ...and never raises it
    assert run.info["agent_settings_overridden"] == 1  # temperature=0.1 was ignored, and counted
    first, second = run.calls
    assert second.prompt_ids[:len(first.prompt_ids) + len(first.completion_ids)] == first.prompt_ids + first.completion_ids
    assert run.info["agent/first_right"] == 1.0 and run.answer == "7"


def test_branching_agent_yields_two_trajectories_primary_last(tok):
    run, _, _ = _run(tok, "branching_agent", {"messages": [{"role": "user", "content": "Hi"}]})
    assert len(run.segments) == 2 and run.info["agent_branches"] == 1
    assert run.primary is run.segments[1] and run.branches == [run.segments[0]]
    assert all(s.loss_mask == [1] * len(s.token_ids) for s in run.segments)


def test_raising_agent_costs_its_trajectory_only(tok):
    run, _, ep = _run(tok, "raising_agent", {"messages": [{"role": "user", "content": "Hi"}]})
    assert run.reason == "env_error" and "bug in the agent" in run.error and len(run.calls) == 1
    assert not ep.sessions


def test_sync_agent_streams_and_scoring_agent_uses_completions(tok):
    run, _, _ = _run(tok, "sync_agent", {"messages": [{"role": "user", "content": "Hi"}]})
    assert run.reason == "done" and run.answer == "7"
    run, engine, _ = _run(tok, "scoring_agent", {"messages": [{"role": "user", "content": "Hi"}]}, bonus=2.5)
    assert run.reward == 2.5 and engine.seen[0][1] == 4
    assert engine.seen[0][0] == tok("Hi", add_special_tokens=False)["input_ids"]


def test_slow_agent_times_out(tok):
    async def slow(row, client):
        await client.chat.completions.create(model="p", messages=row["messages"])
        await asyncio.sleep(30)
    from rlvr.environments.agent import AgentEnvironment

    async def go():
        ep = await AgentEndpoint(tok).start()
        try:
            return await run_agent(AgentEnvironment(slow), ROW, ep, dict(generate=ScriptedEngine(tok), max_tokens=40,
                                                                         max_total_tokens=128), 1.0)
        finally:
            await ep.stop()
    run = asyncio.run(go())
    assert run.reason == "timeout" and len(run.calls) == 1


def test_requests_without_a_live_key_are_refused(tok):
    async def go():
        ep = await AgentEndpoint(tok).start()
        s = ep.open_session(generate=ScriptedEngine(tok), max_tokens=8, max_total_tokens=128)
        out = {}
        for label, key in (("wrong", "not-a-key"), ("live", s.key)):
            client = openai.AsyncOpenAI(base_url=ep.base_url, api_key=key, max_retries=0)
            try:
                r = await client.chat.completions.create(model="p", messages=ROW["messages"])
                out[label] = r.choices[0].message.content
            except openai.AuthenticationError as e:
                out[label] = e.status_code
            await client.close()
        # The key in the path works too, for clients that cannot set a header.
        path = openai.AsyncOpenAI(base_url=f"http://{ep.host}:{ep.port}/k/{s.key}/v1", api_key="x", max_retries=0)
        out["path"] = (await path.models.list()).data[0].id
        ep.close_session(s.key)
        try:
            await path.models.list()
        except openai.AuthenticationError as e:
            out["closed"] = e.status_code
        await path.close()
        bad = openai.AsyncOpenAI(base_url=ep.base_url, api_key=ep.open_session(generate=ScriptedEngine(tok), max_tokens=8,
                                                                               max_total_tokens=128).key, max_retries=0)
        try:
            await bad.chat.completions.create(model="p", messages=ROW["messages"], n=2)
        except openai.BadRequestError as e:
            out["n2"] = str(e)
        await bad.close()
        await ep.stop()
        return out, ep.refused
    out, refused = asyncio.run(go())
    assert out["wrong"] == 401 and out["live"].startswith("<tool>") and out["path"] == "rlvr-policy"
    assert out["closed"] == 401 and refused == 2 and "only n=1" in out["n2"]


def test_assemble_joins_extensions_and_splits_rewrites():
    c = lambda p, r: Call(p, r, [-1.0] * len(r), [(0, len(r))], "stop", "x")
    a = c([1, 2], [3, 4])
    b = c([1, 2, 3, 4, 5], [6])  # extends a: 5 appended (mask 0), 6 generated
    other = c([9], [8])  # unrelated: a new trajectory
    d = c([1, 2, 3, 4, 5, 6, 7], [10])  # extends b, after `other`
    segs = assemble([a, b, other, d])
    assert len(segs) == 2
    assert segs[0].ids == [1, 2, 3, 4, 5, 6, 7, 10] and segs[0].loss_mask == [1, 1, 0, 1, 0, 1]
    assert segs[0].last_call == 3 and segs[1].ids == [9, 8] and segs[1].last_call == 2
    assert segs[0].version_spans == [(0, 4)]
