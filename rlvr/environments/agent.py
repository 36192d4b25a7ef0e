"""Agents trained as they are: the user's own code drives the model through an OpenAI-compatible client.

An agent is ``async def run(row, client) -> AgentResult | str | None`` (a plain function runs in a
thread and gets a synchronous ``openai.OpenAI``), registered with ``@register_agent("name")`` and
chosen by rows like any environment (``env: name``). ``client`` is a real ``openai`` client whose
``base_url`` is the rollout actor's endpoint (``endpoint.py``) and whose ``api_key`` is a key that
lives as long as this one trajectory; ``client.base_url`` and ``client.api_key`` serve any other
HTTP client. The handed client reaches the endpoint in-process (``shared_http_client``: no sockets, no
per-client SSL context); pass that to an ``openai`` client you build yourself for the same. The endpoint
records the exact ids of every call; ``assemble`` turns the calls into trajectories for the learner.

Assembly is on token ids. A call whose prompt extends an earlier call's ids (prompt + completion:
the usual chat loop re-sending its history) continues that trajectory: the re-sent part is not
trained on again, the appended part (tool results, new user turns) gets loss mask 0, the new
completion mask 1. A call that extends none (the agent rewrote its history, or runs two
conversations) starts another trajectory; every trajectory of one run shares its reward. The
endpoint builds a continuing call's prompt from the earlier ids plus the new messages rendered as
a delta, so nothing the model saw is re-tokenised (see ``endpoint.py``).

The reward: ``AgentResult.reward`` when the agent gives one; otherwise the row's verifier scores
``AgentResult.answer`` (default: the last reply's text). An agent that raises or runs past the
trajectory timeout (counted from its start; a ``def`` agent's wait for a thread of its pool is apart)
gets reward 0 with the reason; the run goes on. A call past ``max_turns`` is refused and the run ends
with reason max_turns. An engine that died under a call is re-raised as EngineDead (the group is rerun).
"""
from __future__ import annotations

import asyncio
import inspect
import threading
import time
import weakref
from dataclasses import dataclass, field
from collections.abc import Sequence
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
    loop_cpu: float = 0.0  # CPU the endpoint's thread spent on other tasks while it waited for the engine
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


def assemble(calls: list[Call], where: list | None = None) -> list[Segment]:
    """Join calls into trajectories (see the module's doc). Each call continues the longest open
    trajectory whose ids are a prefix of its prompt; otherwise it starts a new one. Order kept.
    ``where``, when given, receives per call (trajectory index, prompt length): its prompt is that
    trajectory's ids up to there, its completion the ids after (``CallIds``)."""
    segments: list[Segment] = []
    for k, c in enumerate(calls):
        best = None
        for s in segments:
            n = len(s.prompt_ids) + len(s.token_ids)
            if n <= len(c.prompt_ids) and (best is None or n > len(best.prompt_ids) + len(best.token_ids)) \
                    and c.prompt_ids[:len(s.prompt_ids)] == s.prompt_ids and c.prompt_ids[len(s.prompt_ids):n] == s.token_ids:
                best = s
        if best is None:
            best = Segment(list(c.prompt_ids))
            segments.append(best)
        else:
            appended = c.prompt_ids[len(best.prompt_ids) + len(best.token_ids):]
            best.token_ids += appended
            best.logprobs += [0.0] * len(appended)
            best.loss_mask += [0] * len(appended)
        if where is not None:
            where.append((segments.index(best), len(c.prompt_ids)))
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


class CallIds(Sequence):
    """Every call's ``(prompt ids, completion ids)``, as shipped to the driver: stored as slices of the
    run's trajectories (each call's prompt is its trajectory's ids up to it), so the transfer grows
    with the conversation, not with its square as a list of every call's re-sent prompt would."""

    def __init__(self, segments: list[Segment], where: list[tuple[int, int]], completion_lens: list[int]):
        self.ids = [s.ids for s in segments]
        self.spans = [(k, p, p + n) for (k, p), n in zip(where, completion_lens)]

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        k, p, e = self.spans[i]
        return [self.ids[k][:p], self.ids[k][p:e]]

    def __eq__(self, other) -> bool:
        return list(self) == list(other)

    def __repr__(self) -> str:
        return f"CallIds({list(self)!r})"

    @classmethod
    def of(cls, run: "AgentRun") -> "CallIds":
        return cls(run.segments, run.where, [len(c.completion_ids) for c in run.calls])

    @property
    def shipped_ids(self) -> int:
        """Ids this object holds (what the transfer carries)."""
        return sum(len(x) for x in self.ids)


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
    where: list[tuple[int, int]] = field(default_factory=list)  # per call: (trajectory index, prompt length)
    endpoint_cpu_seconds: list[float] = field(default_factory=list)  # per call: the endpoint handler's own CPU time

    @property
    def primary(self) -> Segment | None:
        """The trajectory holding the last call (the one that produced the answer); the others are branches."""
        return max(self.segments, key=lambda s: s.last_call) if self.segments else None

    @property
    def branches(self) -> list[Segment]:
        p = self.primary
        return [s for s in self.segments if s is not p]


def _http_clients() -> dict:
    """This process's shared HTTP clients for agents (see ``shared_http_client``)."""
    global _HTTP
    if _HTTP is None:
        import openai
        try:  # the HTTP library the installed openai SDK is built on
            import httpx2 as httpx
        except ImportError:  # pragma: no cover - older SDKs
            import httpx

        class _Shared:
            """A close that leaves the shared client open: an agent's ``async with`` or ``close()`` on its
            own ``openai`` client must not close it for the other trajectories."""

            async def aclose(self) -> None:
                pass

            def close(self) -> None:
                pass

        class SharedAsyncClient(_Shared, openai.DefaultAsyncHttpxClient):
            pass

        class SharedClient(_Shared, openai.DefaultHttpxClient):
            pass

        # The endpoint is on this node: no connection cap (the agents' concurrency is the recipe's); the
        # client's timeout (run_agent gives the handed ones the trajectory's) or run_agent's bounds a call.
        from rlvr.environments.endpoint import _transports

        transports = _transports()
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=4096)
        # Requests to this process's endpoint skip HTTP altogether (InProcessTransport); others go out as usual.
        _HTTP = {"async": weakref.WeakKeyDictionary(), "sync": SharedClient(transport=transports[1](limits=limits)),
                 "new_async": lambda: SharedAsyncClient(transport=transports[0](limits=limits))}
    return _HTTP


_HTTP: dict | None = None


def shared_http_client(sync: bool = False):
    """The ``httpx`` client this process's agents share: pass it as ``http_client=`` to an ``openai`` client you
    build yourself (``openai.AsyncOpenAI(base_url=client.base_url, api_key=client.api_key,
    http_client=shared_http_client())``) and building that client costs ~0.2 ms instead of ~25 ms (a fresh one
    makes an SSL context, even for the endpoint's http URL), and its requests to this process's endpoint go
    in-process (no sockets or HTTP parsing; other URLs go out over the network as usual). ``sync=True``: the ``httpx.Client`` for a plain
    ``def`` agent's ``openai.OpenAI``. Closing either is a no-op; they live as long as the process (the async
    one, as long as its event loop)."""
    h = _http_clients()
    if sync:
        return h["sync"]
    loop = asyncio.get_running_loop()
    c = h["async"].get(loop)
    if c is None:
        c = h["async"][loop] = h["new_async"]()
    return c


_POOLS: dict[int, Any] = {}


def agent_pool(threads: int):
    """The thread pool synchronous (``def``) agents run in: their own, ``threads`` wide (the recipe's
    ``environments.agent_threads``), not the event loop's small default executor that tools share."""
    from concurrent.futures import ThreadPoolExecutor

    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rlvr-agent")
        threading.Thread(target=_start_threads, args=(pool, threads), daemon=True, name="rlvr-agent-pool-start").start()
    return pool


def _start_threads(pool, threads: int) -> None:
    """Start the pool's threads from this side thread: a pool starts a thread inside ``submit``, which waits
    for the new thread to take the GIL (up to a switch interval each under load: 512 cold starts cost the
    first step seconds, with the event loop blocked); started here, the agents find them idle."""
    gate = threading.Barrier(threads + 1)

    def hold():
        try:
            gate.wait(timeout=120)
        except threading.BrokenBarrierError:
            pass
    for _ in range(threads):
        pool.submit(hold)
    try:
        gate.wait(timeout=120)
    except threading.BrokenBarrierError:
        pass


def _skip_platform_probe(client) -> None:
    """A new ``AsyncOpenAI`` probes the platform for its headers on its first request in a thread of the
    loop's default executor: one thread hop per trajectory, queued behind tools. The answer never changes."""
    global _PLATFORM
    if getattr(client, "_platform", 0) is None:
        if _PLATFORM is None:
            from openai._base_client import get_platform

            _PLATFORM = get_platform()
        client._platform = _PLATFORM


_PLATFORM = None


async def _run_sync(env: "AgentEnvironment", row: dict, client, timeout_s: float, pool, info: dict):
    """Run a ``def`` agent in ``pool``: its clock starts when a thread takes it; the wait before that is
    ``agent_queue_s`` (bounded by ``timeout_s`` too, so a pool held by hung agents cannot stall the run)."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()
    t_queue = time.monotonic()

    def body():
        loop.call_soon_threadsafe(started.set)
        return env.fn(row, client, **env.options)

    fut = loop.run_in_executor(pool, body)
    try:
        await asyncio.wait_for(started.wait(), timeout_s)
    except asyncio.TimeoutError:
        fut.cancel()  # not started: it never will
        info["agent_queue_s"] = time.monotonic() - t_queue
        raise asyncio.TimeoutError(f"waited {timeout_s:g}s for a thread of the agent pool ({pool._max_workers} "
                                   "threads, all busy: environments.agent_threads)") from None
    info["agent_queue_s"] = time.monotonic() - t_queue
    return await asyncio.wait_for(fut, timeout_s)


async def run_agent(env: AgentEnvironment, row: dict, endpoint, session_settings: dict, timeout_s: float,
                    pool=None) -> AgentRun:
    """Run the agent once against ``endpoint`` (an AgentEndpoint) with a fresh per-trajectory key.
    ``session_settings`` go to ``endpoint.open_session`` (``max_turns`` among them). A ``def`` agent runs in
    ``pool`` (default: ``agent_pool(64)``); its timeout starts when it starts. Raises EngineDead when the engine
    failed under one of its calls: the group is rerun elsewhere, not trained as this agent's failure."""
    import openai

    session = endpoint.open_session(parser=env.parser, **session_settings)
    t0 = time.monotonic()
    reason, error, result = "done", "", None
    info: dict = {"agent_queue_s": 0.0}
    try:
        if inspect.iscoroutinefunction(env.fn):
            client = openai.AsyncOpenAI(base_url=endpoint.base_url, api_key=session.key, max_retries=0, timeout=timeout_s,
                                        http_client=shared_http_client())
            _skip_platform_probe(client)
            result = await asyncio.wait_for(env.fn(row, client, **env.options), timeout_s)
        else:
            client = openai.OpenAI(base_url=endpoint.base_url, api_key=session.key, max_retries=0, timeout=timeout_s,
                                   http_client=shared_http_client(sync=True))
            result = await _run_sync(env, row, client, timeout_s, pool or agent_pool(64), info)
    except asyncio.TimeoutError as e:
        reason, error = "timeout", str(e) or f"the agent ran longer than {timeout_s:g}s"
    except Exception as e:  # the user's agent failed: this trajectory's reward, never the run
        reason, error = "env_error", f"{type(e).__name__}: {e}"[:500]
    finally:
        endpoint.close_session(session.key)
    if session.engine_error is not None:  # the engine failed, not the agent: the scheduler's to handle
        raise session.engine_error
    if session.ended == "max_turns" and reason in ("done", "env_error"):
        reason, error = "max_turns", ""  # scored like a multi-turn trajectory that reached its limit
    where: list = []
    segments = assemble(session.calls, where)
    if isinstance(result, str):
        result = AgentResult(answer=result)
    if result is not None and not isinstance(result, AgentResult):
        reason, error = "env_error", f"the agent returned {type(result).__name__}, not AgentResult, str or None"
        result = None
    answer = (result.answer if result is not None and result.answer is not None
              else (session.calls[-1].text if session.calls else ""))
    info.update({"agent_calls": len(session.calls), "agent_trajectories": len(segments),
                 "agent_branches": max(0, len(segments) - 1), "agent_rerender_mismatch": session.rerender_mismatch,
                 "agent_settings_overridden": session.settings_overridden, "agent_seconds": time.monotonic() - t0,
                 "agent_timeouts": float(reason == "timeout")})
    if result is not None:
        info.update({f"agent/{k}": v for k, v in result.info.items() if isinstance(v, (int, float))})
    # A run past its timeout is not scored (its last reply may be anything): reward 0, as for a raising agent.
    reward = 0.0 if reason == "timeout" else (None if result is None else result.reward)
    return AgentRun(segments, answer, reward, reason, error, info, session.calls, session.endpoint_seconds, where,
                    session.endpoint_cpu_seconds)


async def ask_twice(row, client):
    """Asks the row's question, then re-sends the history with "Are you sure?" and answers with the second reply."""
    messages = [dict(m) for m in row["messages"]]
    first = await client.chat.completions.create(model="policy", messages=messages)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Are you sure?"}]
    second = await client.chat.completions.create(model="policy", messages=messages)
    return second.choices[0].message.content


ask_twice_agent = _AgentFactory(ask_twice)  # the built-in example agent (registry.py), also `rlvr bench agent`'s
