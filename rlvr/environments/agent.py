"""Agents trained as they are: the user's own code drives the model through an OpenAI-compatible client.

An agent is ``async def run(row, client) -> AgentResult | str | None`` (a plain function runs in a
thread and gets a synchronous ``openai.OpenAI``), registered with ``@register_agent("name")`` and
chosen by rows like any environment (``env: name``). ``client`` is a real ``openai`` client whose
``base_url`` is the rollout actor's endpoint (``endpoint.py``) and whose ``api_key`` is a key that
lives as long as this one trajectory; ``client.base_url`` and ``client.api_key`` serve any other
HTTP client. The endpoint records the exact ids of every call; ``assemble`` turns the calls into
trajectories for the learner.

Assembly is on token ids. A call whose prompt extends an earlier call's ids (prompt + completion:
the usual chat loop re-sending its history) continues that trajectory: the re-sent part is not
trained on again, the appended part (tool results, new user turns) gets loss mask 0, the new
completion mask 1. A call that extends none (the agent rewrote its history, or runs two
conversations) starts another trajectory; every trajectory of one run shares its reward. The
endpoint builds a continuing call's prompt from the earlier ids plus the new messages rendered as
a delta, so nothing the model saw is re-tokenised (see ``endpoint.py``).

The reward: ``AgentResult.reward`` when the agent gives one; otherwise the row's verifier scores
``AgentResult.answer`` (default: the last reply's text). An agent that raises or runs past the
trajectory timeout gets reward 0 with the reason; the run goes on.
"""
from __future__ import annotations

import asyncio
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from rlvr.environments.base import Environment, EnvironmentConfigError, Observation


@dataclass
class AgentResult:
    """What an agent returns: its final ``answer`` (for the row's verifier) and/or its own ``reward``."""

    answer: str | None = None
    reward: float | None = None
    info: dict = field(default_factory=dict)


@dataclass
class Call:
    """One model call made through the endpoint, as the engine saw it."""

    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    version_spans: list[tuple[int, int]]
    finish_reason: str
    text: str = ""
    seconds: float = 0.0  # the engine's time on it
    messages: list | None = None  # a chat call's request messages (None for /v1/completions)


@dataclass
class Segment:
    """A trajectory assembled from calls: the first call's prompt, then everything after it."""

    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    version_spans: list[tuple[int, int]] = field(default_factory=list)
    calls: int = 0
    last_call: int = -1  # index of its latest call among the run's calls

    @property
    def ids(self) -> list[int]:
        return self.prompt_ids + self.token_ids


def assemble(calls: list[Call]) -> list[Segment]:
    """Join calls into trajectories (see the module's doc). Each call continues the longest open
    trajectory whose ids are a prefix of its prompt; otherwise it starts a new one. Order kept."""
    segments: list[Segment] = []
    for k, c in enumerate(calls):
        best = None
        for s in segments:
            n = len(s.prompt_ids) + len(s.token_ids)
            if n <= len(c.prompt_ids) and c.prompt_ids[:n] == s.ids and (best is None or n > len(best.ids)):
                best = s
        if best is None:
            best = Segment(list(c.prompt_ids))
            segments.append(best)
        else:
            appended = c.prompt_ids[len(best.ids):]
            best.token_ids += appended
            best.logprobs += [0.0] * len(appended)
            best.loss_mask += [0] * len(appended)
        best.token_ids += c.completion_ids
        best.logprobs += list(c.logprobs) + [0.0] * (len(c.completion_ids) - len(c.logprobs))
        best.loss_mask += [1] * len(c.completion_ids)
        for v, n in c.version_spans:
            if best.version_spans and best.version_spans[-1][0] == v:
                best.version_spans[-1] = (v, best.version_spans[-1][1] + n)
            else:
                best.version_spans.append((v, n))
        best.calls += 1
        best.last_call = k
    return segments


class AgentEnvironment(Environment):
    """A registered agent with its recipe options (``parser``: how tool calls in the model's text become
    OpenAI ``tool_calls``; the rest go to the agent function as keyword arguments). The rollout actor
    runs it with ``run_agent``; ``step`` is never called."""

    def __init__(self, fn: Callable[..., Any], *, parser: str = "hermes", **options: Any):
        from rlvr.environments.parsers import get_parser

        get_parser(parser)  # an unknown parser fails here, with the registry's one-line error
        self.fn, self.parser, self.options = fn, parser, options

    async def step(self, assistant_message: dict) -> Observation:  # pragma: no cover - not a turn-based environment
        raise TypeError("an agent environment drives the model itself; run it with run_agent")


class _AgentFactory:
    """What the registry stores for an agent: called with the recipe's options, makes an AgentEnvironment."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.__doc__, self.__module__ = fn.__doc__, fn.__module__
        self.__qualname__ = getattr(fn, "__qualname__", repr(fn))

    def __call__(self, *, parser: str = "hermes", **options: Any) -> AgentEnvironment:
        params = inspect.signature(self.fn).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            for key in options:
                if key not in params or key in ("row", "client"):
                    raise EnvironmentConfigError(f"agent {self.fn.__name__!r}: unknown option '{key}'")
        return AgentEnvironment(self.fn, parser=parser, **options)


def register_agent(name: str, description: str = "") -> Callable[[Any], Any]:
    """Decorator registering ``run(row, client, **options)`` as the agent environment ``name``."""
    from rlvr.environments.registry import _ENVS, _register
    from rlvr.verifiers.registry import _first_line

    def deco(fn: Any) -> Any:
        if not callable(fn):
            raise EnvironmentConfigError(f"agent '{name}': {fn!r} is not a function")
        params = list(inspect.signature(fn).parameters)
        if params[:2] != ["row", "client"]:
            raise EnvironmentConfigError(f"agent '{name}': its function must take (row, client, ...), got ({', '.join(params)})")
        _register(_ENVS, "environment", name, _AgentFactory(fn), description or "agent: " + (_first_line(fn.__doc__) or fn.__name__), True)
        return fn
    return deco


@dataclass
class AgentRun:
    """One run of an agent: its trajectories (several when it branched), answer, reward and counters."""

    segments: list[Segment]
    answer: str
    reward: float | None
    reason: str  # done | timeout | env_error
    error: str = ""
    info: dict = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    endpoint_seconds: list[float] = field(default_factory=list)  # per call: time the endpoint added to the engine's

    @property
    def primary(self) -> Segment | None:
        """The trajectory holding the last call (the one that produced the answer); the others are branches."""
        return max(self.segments, key=lambda s: s.last_call) if self.segments else None

    @property
    def branches(self) -> list[Segment]:
        p = self.primary
        return [s for s in self.segments if s is not p]


async def run_agent(env: AgentEnvironment, row: dict, endpoint, session_settings: dict, timeout_s: float) -> AgentRun:
    """Run the agent once against ``endpoint`` (an AgentEndpoint) with a fresh per-trajectory key."""
    import openai

    session = endpoint.open_session(parser=env.parser, **session_settings)
    t0 = time.monotonic()
    reason, error, result = "done", "", None
    try:
        if inspect.iscoroutinefunction(env.fn):
            client = openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=session.key, max_retries=0, timeout=timeout_s)
            try:
                result = await asyncio.wait_for(env.fn(row, client, **env.options), timeout_s)
            finally:
                await client.close()
        else:
            client = openai.OpenAI(base_url=endpoint.base_url, api_key=session.key, max_retries=0, timeout=timeout_s)
            try:
                result = await asyncio.wait_for(asyncio.to_thread(env.fn, row, client, **env.options), timeout_s)
            finally:
                client.close()
    except asyncio.TimeoutError:
        reason, error = "timeout", f"the agent ran longer than {timeout_s:g}s"
    except Exception as e:  # the user's agent failed: this trajectory's reward, never the run
        reason, error = "env_error", f"{type(e).__name__}: {e}"[:500]
    finally:
        endpoint.close_session(session.key)
    segments = assemble(session.calls)
    if isinstance(result, str):
        result = AgentResult(answer=result)
    if result is not None and not isinstance(result, AgentResult):
        reason, error = "env_error", f"the agent returned {type(result).__name__}, not AgentResult, str or None"
        result = None
    answer = (result.answer if result is not None and result.answer is not None
              else (session.calls[-1].text if session.calls else ""))
    info = {"agent_calls": len(session.calls), "agent_trajectories": len(segments),
            "agent_branches": max(0, len(segments) - 1), "agent_rerender_mismatch": session.rerender_mismatch,
            "agent_settings_overridden": session.settings_overridden, "agent_seconds": time.monotonic() - t0}
    if result is not None:
        info.update({f"agent/{k}": v for k, v in result.info.items() if isinstance(v, (int, float))})
    return AgentRun(segments, answer, None if result is None else result.reward, reason, error, info,
                    session.calls, session.endpoint_seconds)


async def ask_twice(row, client):
    """Asks the row's question, then re-sends the history with "Are you sure?" and answers with the second reply."""
    messages = [dict(m) for m in row["messages"]]
    first = await client.chat.completions.create(model="policy", messages=messages)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Are you sure?"}]
    second = await client.chat.completions.create(model="policy", messages=messages)
    return second.choices[0].message.content


ask_twice_agent = _AgentFactory(ask_twice)  # the built-in example agent (registry.py), also `rlvr bench agent`'s
