"""The three agent styles `rlvr bench agent --vs-single-turn` measures, one chat call each (loaded as a
plugin: `environments.plugins: [rlvr.environments.bench_agents]`).

- ``handed``: uses the ``client`` it is handed;
- ``own_client``: builds its own ``openai.AsyncOpenAI`` per trajectory from ``client.base_url`` and
  ``client.api_key``, as code written against the OpenAI API does;
- ``own_shared``: the same with ``http_client=shared_http_client()`` (the documented cheap way);
- ``sync``: a plain ``def`` agent with the synchronous client it is handed;
- ``four_calls``: the handed client, four calls re-sending the whole history each time (what a chat loop
  does): its endpoint overhead per trajectory against ``handed``'s shows whether a call's cost grows with
  the history it re-sends.
"""
from __future__ import annotations

import openai

from rlvr.environments.agent import register_agent, shared_http_client


@register_agent("bench_handed")
async def bench_handed(row, client):
    """One chat call with the handed client."""
    reply = await client.chat.completions.create(model="policy", messages=row["messages"])
    return reply.choices[0].message.content


@register_agent("bench_own_client")
async def bench_own_client(row, client):
    """One chat call with its own AsyncOpenAI built from the handed client's base_url and api_key."""
    async with openai.AsyncOpenAI(base_url=client.base_url, api_key=client.api_key) as own:
        reply = await own.chat.completions.create(model="policy", messages=row["messages"])
    return reply.choices[0].message.content


@register_agent("bench_own_shared")
async def bench_own_shared(row, client):
    """bench_own_client with the documented cheap construction: the process's shared HTTP client."""
    async with openai.AsyncOpenAI(base_url=client.base_url, api_key=client.api_key,
                                  http_client=shared_http_client()) as own:
        reply = await own.chat.completions.create(model="policy", messages=row["messages"])
    return reply.choices[0].message.content


@register_agent("bench_sync")
def bench_sync(row, client):
    """One chat call from a plain function with the synchronous client."""
    reply = client.chat.completions.create(model="policy", messages=row["messages"])
    return reply.choices[0].message.content


@register_agent("bench_four_calls")
async def bench_four_calls(row, client):
    """Four chat calls with the handed client, each re-sending the history and one more user turn."""
    messages = [dict(m) for m in row["messages"]]
    for _ in range(4):
        reply = await client.chat.completions.create(model="policy", messages=messages)
        messages += [{"role": "assistant", "content": reply.choices[0].message.content},
                     {"role": "user", "content": "?"}]  # short: the toy's context is 64 tokens
    return reply.choices[0].message.content


STYLES = {"handed": "bench_handed", "own_client": "bench_own_client", "own_shared": "bench_own_shared", "sync": "bench_sync"}
MULTI_CALL = "bench_four_calls"  # measured against "handed" for the endpoint's cost per trajectory
