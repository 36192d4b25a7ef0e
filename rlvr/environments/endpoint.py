"""The OpenAI-compatible endpoint an agent talks to: `/v1/chat/completions`, `/v1/completions`, `/v1/models`.

One runs inside each rollout actor (aiohttp, in the actor's event loop) and serves the agents that
actor runs, so every call of a trajectory reaches the same engine and its prefix cache. It binds
to the node's cluster address only and answers a request only when it bears a live
per-trajectory key, as ``Authorization: Bearer KEY`` or in the path (``/k/KEY/v1/...``); a key
dies when its trajectory ends.

Exact ids. A chat request whose messages are an earlier request's messages, then the reply this
endpoint gave to it, then new messages, is answered from that call's exact ids (prompt +
completion) plus the new messages rendered as a delta (``template.render_delta``): what the model
saw is never re-tokenised. Any other request is rendered whole by the chat template. Where the
whole rendering differs from the exact ids (a template that re-renders earlier turns
differently), it is counted (``agent/rerender_mismatch``), never silently trained on.

Sampling is the recipe's: the request's ``temperature``, ``top_p`` and the like are ignored
(counted in ``agent/settings_overridden``); its ``max_tokens`` may only lower the recipe's
per-turn budget. ``n`` must be 1. Tool calls in the model's text are parsed by the agent's
``parser`` and returned as OpenAI ``tool_calls`` when the request offers ``tools``.

Limits and failures: a call past the session's ``max_turns`` gets 400 (the run ends with reason
max_turns); a call under which the engine died gets 503, and so does any later one of that
trajectory (``run_agent`` re-raises the EngineDead). Clients in this process (the handed one, and
``agent.shared_http_client()``) skip HTTP: their transport calls ``dispatch`` with the request.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from rlvr.environments.agent import Call
from rlvr.environments.base import content_text
from rlvr.errors import EngineDead

_SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty",
                    "repetition_penalty", "seed", "logit_bias")


@dataclass
class _Reply:
    messages: list  # the request's messages, normalised
    text: str  # the generated text (special tokens skipped)
    tool_call_ids: tuple
    call: Call
    seen_text: str | None = None  # the text of prompt + completion ids, where known: a continuation tokenises only what follows


@dataclass
class Session:
    """One trajectory's key, its engine call, its limits and what it recorded."""

    key: str
    generate: Any  # async (prompt ids, max new tokens) -> (ids, log-probs, finish reason, version spans)
    max_tokens: int
    max_total_tokens: int
    parser: str = "hermes"
    max_turns: int | None = None  # calls this trajectory may make (environments.max_turns); later ones are refused
    calls: list[Call] = field(default_factory=list)
    replies: list[_Reply] = field(default_factory=list)
    rerender_mismatch: int = 0
    settings_overridden: int = 0
    endpoint_seconds: list[float] = field(default_factory=list)  # per call: handler time minus engine time
    # per call: the CPU time the handler itself took (this thread's, outside the engine call): unlike the wall
    # time above it leaves out waits for the GIL held by the actor's other threads (Ray's, vLLM's, def agents')
    endpoint_cpu_seconds: list[float] = field(default_factory=list)
    ended: str = ""  # "max_turns" once a call past max_turns was refused
    engine_error: BaseException | None = None  # the engine died under a call: run_agent re-raises it (EngineDead)


def _norm(m: Any) -> tuple:
    """A message as the comparison sees it: role, text, tool-call ids, tool_call_id, name."""
    if not isinstance(m, dict):
        raise ValueError("messages: each message must be an object with a role")
    calls = tuple(c.get("id", "") for c in (m.get("tool_calls") or []) if isinstance(c, dict))
    return (m.get("role"), content_text(m) if m.get("content") is not None else "", calls,
            m.get("tool_call_id"), m.get("name"))


def _error(status: int, message: str, kind: str = "invalid_request_error"):
    from aiohttp import web

    return web.json_response({"error": {"message": message, "type": kind, "code": status}}, status=status)


def _engine_failed():
    return _error(503, "the engine serving this trajectory failed; its group is rerun on another engine", "server_error")


def _unauthorized():
    return _error(401, "no live trajectory key in Authorization: Bearer or the /k/KEY/ path", "authentication_error")


_ENDPOINTS: dict[tuple, "AgentEndpoint"] = {}  # this process's endpoints by (host, port), for InProcessTransport


class _Request:
    """What the handlers read of an aiohttp request, for one handed over in-process."""

    def __init__(self, key: str | None, headers, body: bytes):
        self.match_info = {"key": key} if key is not None else {}
        self.headers, self._body = headers, body

    async def json(self):
        return json.loads(self._body)


def _transports():
    """In-process httpx transports (the ``openai`` SDK's httpx): a request to an endpoint of this process goes
    straight to its handlers; anything else goes out over the network as usual."""
    try:  # the HTTP library the installed openai SDK is built on
        import httpx2 as httpx
    except ImportError:  # pragma: no cover - older SDKs
        import httpx

    def response(r, request):
        return httpx.Response(r.status, headers={"content-type": r.content_type, **{k: v for k, v in r.headers.items()
                                                                                     if k.lower() == "cache-control"}},
                              content=r.body, request=request)

    class InProcessAsyncTransport(httpx.AsyncBaseTransport):
        def __init__(self, **kw):
            self.fallback = httpx.AsyncHTTPTransport(**kw)

        async def handle_async_request(self, request):
            ep = _ENDPOINTS.get((request.url.host, request.url.port))
            if ep is None or ep._loop is not asyncio.get_running_loop():
                return await self.fallback.handle_async_request(request)
            return response(await ep.dispatch(request.method, request.url.path, request.headers, await request.aread()),
                            request)

        async def aclose(self) -> None:
            await self.fallback.aclose()

    class InProcessTransport(httpx.BaseTransport):
        """For synchronous agents in threads: the request runs in the endpoint's event loop."""

        def __init__(self, **kw):
            self.fallback = httpx.HTTPTransport(**kw)

        def handle_request(self, request):
            ep = _ENDPOINTS.get((request.url.host, request.url.port))
            if ep is None or _on_loop(ep._loop):  # from the loop's own thread it would wait on itself
                return self.fallback.handle_request(request)
            fut = asyncio.run_coroutine_threadsafe(ep.dispatch(request.method, request.url.path, request.headers,
                                                               request.read()), ep._loop)
            return response(fut.result(), request)

        def close(self) -> None:
            self.fallback.close()

    return InProcessAsyncTransport, InProcessTransport


def _on_loop(loop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class AgentEndpoint:
    def __init__(self, tokenizer, *, host: str = "127.0.0.1", model_name: str = "rlvr-policy"):
        self.tokenizer, self.host, self.model_name = tokenizer, host, model_name
        self.sessions: dict[str, Session] = {}
        self.port: int | None = None
        self.refused = 0  # requests without a live key
        self._runner = None
        self._loop = None
        self._ids = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def start(self) -> "AgentEndpoint":
        from aiohttp import web

        if self._runner is not None:
            return self
        app = web.Application(client_max_size=64 << 20)
        for prefix in ("", "/k/{key}"):
            app.router.add_post(prefix + "/v1/chat/completions", self._chat)
            app.router.add_post(prefix + "/v1/completions", self._completions)
            app.router.add_get(prefix + "/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, backlog=1024).start()
        self._loop = asyncio.get_running_loop()
        _ENDPOINTS[(self.host, self.port)] = self
        return self

    async def stop(self) -> None:
        _ENDPOINTS.pop((self.host, self.port), None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def dispatch(self, method: str, path: str, headers, body: bytes):
        """Serve one request handed over in-process (``InProcessTransport``): the same handlers as over HTTP,
        minus the sockets, HTTP parsing and connection pools. Returns an aiohttp ``web.Response``."""
        key = None
        if path.startswith("/k/"):
            _, _, key, path = path.split("/", 3)
            path = "/" + path
        handler = {("POST", "/v1/chat/completions"): self._chat, ("POST", "/v1/completions"): self._completions,
                   ("GET", "/v1/models"): self._models}.get((method, path))
        if handler is None:
            return _error(404, f"{method} {path}: not served here (/v1/chat/completions, /v1/completions, /v1/models)")
        return await handler(_Request(key, headers, body))

    def open_session(self, *, generate, max_tokens: int, max_total_tokens: int, parser: str = "hermes",
                     max_turns: int | None = None) -> Session:
        s = Session(secrets.token_urlsafe(24), generate, max_tokens, max_total_tokens, parser, max_turns)
        self.sessions[s.key] = s
        return s

    def close_session(self, key: str) -> None:
        self.sessions.pop(key, None)

    # ------------------------------------------------------------------ requests

    def _session(self, request) -> Session | None:
        key = request.match_info.get("key")
        if key is None:
            auth = request.headers.get("Authorization", "")
            key = auth[7:].strip() if auth.startswith("Bearer ") else None
        s = self.sessions.get(key) if key else None
        if s is None:
            self.refused += 1
        return s

    async def _body(self, request) -> dict:
        try:
            body = await request.json()
        except Exception:
            raise ValueError("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise ValueError("the request body must be a JSON object")
        if body.get("n", 1) not in (1, None):
            raise ValueError("n: only n=1 is served (one completion per call; the recipe sets the group size)")
        return body

    async def _models(self, request):
        from aiohttp import web

        if self._session(request) is None:
            return _unauthorized()
        return web.json_response({"object": "list", "data": [{"id": self.model_name, "object": "model", "owned_by": "rlvr"}]})

    def _turn_left(self, s: Session) -> None:
        """Refuses a call past the trajectory's max_turns (the run then ends with reason max_turns)."""
        if s.max_turns is not None and len(s.calls) >= s.max_turns:
            s.ended = "max_turns"
            raise ValueError(f"max_turns: this trajectory has made its {s.max_turns} calls (environments.max_turns)")

    def _budget(self, s: Session, body: dict, prompt_len: int) -> int:
        asked = body.get("max_completion_tokens") or body.get("max_tokens")
        if any(k in body and body[k] is not None for k in _SAMPLING_FIELDS):
            s.settings_overridden += 1
        budget = min(s.max_tokens, s.max_total_tokens - prompt_len)
        if isinstance(asked, int) and asked > 0:
            budget = min(budget, asked)
        if budget <= 0:
            raise ValueError(f"the prompt ({prompt_len} tokens) leaves no room under the trajectory's "
                             f"max_total_tokens ({s.max_total_tokens})")
        return budget

    async def _generate(self, s: Session, prompt_ids: list[int], budget: int) -> Call:
        if s.engine_error is not None:  # the engine is gone: a retry must not reach it again
            raise s.engine_error
        t_engine, cpu_engine = time.perf_counter(), time.thread_time()
        try:
            ids, lps, finish, spans = await s.generate(prompt_ids, budget)
        except EngineDead as e:  # not the agent's fault: run_agent re-raises it, the scheduler reruns the group
            s.engine_error = e
            raise
        engine_s, engine_cpu = time.perf_counter() - t_engine, time.thread_time() - cpu_engine
        eos = self.tokenizer.eos_token_id
        text = self.tokenizer.decode([t for t in ids if t != eos], skip_special_tokens=True)
        call = Call(list(prompt_ids), list(ids), list(lps), [tuple(x) for x in spans], finish, text, engine_s, engine_cpu)
        s.calls.append(call)
        return call

    @staticmethod
    def _record(s: Session, t0: float, cpu0: float, call: Call) -> None:
        s.endpoint_seconds.append(time.perf_counter() - t0 - call.seconds)
        s.endpoint_cpu_seconds.append(time.thread_time() - cpu0 - call.loop_cpu)

    def _opening_text(self, messages: list[dict], tools: list | None) -> str:
        """``render_opening``'s text (the chat template with the tools offered and the generation prompt)."""
        from rlvr.data.template import render_prompt

        if getattr(self.tokenizer, "chat_template", None) and tools:
            return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        return render_prompt(self.tokenizer, {"messages": messages})

    def _encode(self, text: str) -> list[int]:
        """``encode_prompts`` for one text, straight through the fast tokenizer's backend where there is one
        (the same ids; the ``transformers`` call around it costs ~0.5 ms, more than the tokenising)."""
        if not text:
            return []
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return backend.encode(text, add_special_tokens=False).ids
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _chat_prompt(self, s: Session, messages: list[dict], tools: list | None, norm: list) -> tuple[list[int], str | None]:
        """Exact ids when the request continues an earlier reply (see the module's doc), else the whole rendering;
        with the text those ids are (None where they are not one rendering's)."""
        from rlvr.environments.template import TemplateMismatchError, render_delta

        text = self._opening_text(messages, tools)
        for r in reversed(s.replies):
            n = len(r.messages)
            if len(norm) <= n + 1 or norm[:n] != r.messages:
                continue
            said = norm[n]
            if said[0] != "assistant" or not (said[1] == r.text or (r.tool_call_ids and said[2] == r.tool_call_ids)):
                continue
            if r.seen_text is not None and text.startswith(r.seen_text):
                # The usual case: the rendering extends what the model saw, as text: only the rest is tokenised,
                # so a call's cost does not grow with the history it re-sends.
                return r.call.prompt_ids + r.call.completion_ids + self._encode(text[len(r.seen_text):]), text
            full = self._encode(text)
            seen = len(r.call.prompt_ids) + len(r.call.completion_ids)
            if full[:len(r.call.prompt_ids)] == r.call.prompt_ids and full[len(r.call.prompt_ids):seen] == r.call.completion_ids:
                return full, text  # the whole rendering extends what the model saw
            eos = self.tokenizer.eos_token_id
            ended = bool(r.call.completion_ids) and r.call.completion_ids[-1] == eos
            so_far = [dict(m) for m in messages[:n]] + [{"role": "assistant", "content": r.text}]
            try:
                delta = render_delta(self.tokenizer, so_far, [dict(m) for m in messages[n + 1:]], tools or None,
                                     stop_text=self.tokenizer.eos_token if ended else "")
            except TemplateMismatchError:
                s.rerender_mismatch += 1
                return full, text
            exact = r.call.prompt_ids + r.call.completion_ids + delta
            if exact != full:
                s.rerender_mismatch += 1
                return exact, None
            return exact, text
        return self._encode(text), text

    def _tool_calls(self, s: Session, text: str, tools: list | None) -> list[dict]:
        from rlvr.environments.parsers import get_parser

        if not tools:
            return []
        calls, _ = get_parser(s.parser).parse(text)
        params = {t.get("function", {}).get("name"): list((t.get("function", {}).get("parameters") or {}).get("properties") or {})
                  for t in tools if isinstance(t, dict)}
        out = []
        for k, c in enumerate(calls):
            args = c.arguments
            if isinstance(args, str):  # one-argument syntaxes (compact): name it after the tool's only parameter
                names = params.get(c.name) or ["input"]
                args = {names[0]: args}
            self._ids += 1
            out.append({"id": f"call_{self._ids}_{k}", "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(args)}})
        return out

    async def _chat(self, request):
        from aiohttp import web

        t0, cpu0 = time.perf_counter(), time.thread_time()
        s = self._session(request)
        if s is None:
            return _unauthorized()
        try:
            body = await self._body(request)
            messages, tools = body.get("messages"), body.get("tools") or None
            if not isinstance(messages, list) or not messages:
                raise ValueError("messages: a non-empty list of messages is required")
            self._turn_left(s)
            norm = [_norm(m) for m in messages]
            prompt_ids, prompt_text = self._chat_prompt(s, messages, tools, norm)
            budget = self._budget(s, body, len(prompt_ids))
        except ValueError as e:
            return _error(400, str(e))
        try:
            call = await self._generate(s, prompt_ids, budget)
        except EngineDead:
            return _engine_failed()
        call.messages = messages  # parsed from this request: nobody else holds them
        tool_calls = self._tool_calls(s, call.text, tools)
        seen = None if prompt_text is None else prompt_text + self.tokenizer.decode(call.completion_ids)
        s.replies.append(_Reply(norm, call.text, tuple(c["id"] for c in tool_calls), call, seen))
        finish = "tool_calls" if tool_calls else ("length" if call.finish_reason == "length" else "stop")
        message = {"role": "assistant", "content": None if tool_calls else call.text}
        if tool_calls:
            message["tool_calls"] = tool_calls
        usage = {"prompt_tokens": len(prompt_ids), "completion_tokens": len(call.completion_ids),
                 "total_tokens": len(prompt_ids) + len(call.completion_ids)}
        rid, created = f"chatcmpl-{secrets.token_hex(8)}", int(time.time())
        if body.get("stream"):  # the whole reply is ready: its chunks go out as one event-stream body
            delta = dict(message)
            if tool_calls:
                delta["tool_calls"] = [dict(c, index=k) for k, c in enumerate(tool_calls)]
            sse = "".join(f"data: {json.dumps({'id': rid, 'object': 'chat.completion.chunk', 'created': created, 'model': self.model_name, 'choices': [choice]})}\n\n"
                          for choice in ({"index": 0, "delta": delta, "finish_reason": None},
                                         {"index": 0, "delta": {}, "finish_reason": finish}))
            self._record(s, t0, cpu0, call)
            return web.Response(body=(sse + "data: [DONE]\n\n").encode(), content_type="text/event-stream",
                                headers={"Cache-Control": "no-cache"})
        self._record(s, t0, cpu0, call)
        return web.json_response({"id": rid, "object": "chat.completion", "created": created, "model": self.model_name,
                                  "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                                  "usage": usage})

    async def _completions(self, request):
        from aiohttp import web

        from rlvr.data.template import encode_prompts

        t0, cpu0 = time.perf_counter(), time.thread_time()
        s = self._session(request)
        if s is None:
            return _unauthorized()
        try:
            body = await self._body(request)
            prompt = body.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
                prompt = prompt[0]  # one prompt in a list: the SDK's usual shape
            if isinstance(prompt, str):
                prompt_ids = encode_prompts(self.tokenizer, [prompt])[0]
            elif isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
                prompt_ids = list(prompt)
            else:
                raise ValueError("prompt: one string or one list of token ids")
            self._turn_left(s)
            budget = self._budget(s, body, len(prompt_ids))
        except ValueError as e:
            return _error(400, str(e))
        try:
            call = await self._generate(s, prompt_ids, budget)
        except EngineDead:
            return _engine_failed()
        self._record(s, t0, cpu0, call)
        return web.json_response({
            "id": f"cmpl-{secrets.token_hex(8)}", "object": "text_completion", "created": int(time.time()),
            "model": self.model_name,
            "choices": [{"index": 0, "text": call.text, "finish_reason": "length" if call.finish_reason == "length" else "stop",
                         "logprobs": None}],
            "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": len(call.completion_ids),
                      "total_tokens": len(prompt_ids) + len(call.completion_ids)}})
