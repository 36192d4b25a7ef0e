"""LLM judges: rubric rendering, score parsers (pure functions), and the async client.

The client talks either to rlvr's own judge engines (``rlvr.engines.judge.JudgeActor``: Ray actor
handles, or plain objects in the same process for ``rlvr verify`` / ``rlvr eval``) or to any
OpenAI-compatible endpoint. Every request has a timeout and a bounded number of retries, and at
most ``max_in_flight`` are outstanding; concurrent requests are batched by the engine (vLLM's
continuous batching). A judge that is down, slow or answers garbage costs only those samples:
score 0 with the reason, counted in the stats. The endpoint key is read from the environment
when the client starts and kept in memory only.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from rlvr.verifiers.base import VerifyResult
from rlvr.verifiers.model_config import JudgeConfig

MAX_REASON_CHARS = 300


# ----------------------------------------------------------------------------- pure functions

def truth_text(ground_truth: Any) -> str:
    if ground_truth is None:
        return ""
    return ground_truth if isinstance(ground_truth, str) else json.dumps(ground_truth, ensure_ascii=False, default=str)


def fill(template: str, prompt: str | None, response: str, ground_truth: Any, max_response_chars: int | None = None) -> str:
    """Replace {prompt}, {response}, {ground_truth} in one pass (other braces, e.g. JSON examples, stay)."""
    if max_response_chars is not None and len(response) > max_response_chars:
        response = response[:max_response_chars] + " [...]"
    values = {"prompt": prompt or "", "response": response, "ground_truth": truth_text(ground_truth)}
    return re.sub(r"\{(prompt|response|ground_truth)\}", lambda m: values[m.group(1)], template)


def render_rubric(cfg: JudgeConfig, prompt: str | None, response: str, ground_truth: Any) -> list[dict]:
    """The chat messages sent to the judge."""
    msgs = [{"role": "system", "content": cfg.system}] if cfg.system else []
    msgs.append({"role": "user", "content": fill(cfg.template, prompt, response, ground_truth, cfg.max_response_chars)})
    return msgs


class ParseError(ValueError):
    """The judge's reply holds no score the declared parser can read."""


def _short(text: str, n: int = 80) -> str:
    text = text.strip().replace("\n", " ")
    return repr(text if len(text) <= n else text[:n] + "...")


_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?")


def parse_yes_no(text: str) -> float:
    """1.0 for a reply whose first yes/no word is "yes", 0.0 for "no"."""
    m = _YES_NO.search(text or "")
    if not m:
        raise ParseError(f"no yes/no in the judge's reply {_short(text or '')}")
    return 1.0 if m.group(1).lower() == "yes" else 0.0


def scale_to_unit(value: float, lo: float, hi: float) -> float:
    """A score on [lo, hi] mapped to [0, 1]; outside the scale is a parse error."""
    if not math.isfinite(value) or not min(lo, hi) <= value <= max(lo, hi):
        raise ParseError(f"score {value:g} outside the scale [{min(lo, hi):g}, {max(lo, hi):g}]")
    return (value - lo) / (hi - lo)


def parse_scale(text: str, lo: float, hi: float) -> float:
    """The first number of the reply ("8", "Score: 8/10", "7.5 out of 10") on the scale [lo, hi], mapped to [0, 1]."""
    m = _NUMBER.search(text or "")
    if not m:
        raise ParseError(f"no number in the judge's reply {_short(text or '')}")
    return scale_to_unit(float(m.group(0)), lo, hi)


def _json_object(text: str) -> dict:
    t = (text or "").strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", t, re.DOTALL)
    if fence:
        t = fence.group(1).strip()
    try:
        obj = json.loads(t)
    except ValueError:
        start, end = t.find("{"), t.rfind("}")
        if start < 0 or end <= start:
            raise ParseError(f"no JSON object in the judge's reply {_short(text or '')}") from None
        try:
            obj = json.loads(t[start:end + 1])
        except ValueError:
            raise ParseError(f"no valid JSON object in the judge's reply {_short(text or '')}") from None
    if not isinstance(obj, dict):
        raise ParseError(f"the judge's JSON reply is a {type(obj).__name__}, not an object")
    return obj


def parse_json(text: str, field_name: str, lo: float, hi: float) -> float:
    """The field of the reply's JSON object: a number on [lo, hi] (mapped to [0, 1]), a bool, or yes/no."""
    obj = _json_object(text)
    if field_name not in obj:
        raise ParseError(f"the judge's JSON reply has no field '{field_name}' (fields: {sorted(obj)[:8]})")
    v = obj[field_name]
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, (int, float)):
        try:
            value = float(v)
        except OverflowError:  # an integer of hundreds of digits: off any scale
            raise ParseError(f"field '{field_name}' of the judge's JSON reply is too large: {_short(str(v), 40)}") from None
        return scale_to_unit(value, lo, hi)
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("yes", "true", "pass"):
            return 1.0
        if s in ("no", "false", "fail"):
            return 0.0
        try:
            return scale_to_unit(float(s), lo, hi)
        except ValueError:
            pass
    raise ParseError(f"field '{field_name}' of the judge's JSON reply is not a score: {_short(str(v), 40)}")


def parse_score(cfg: JudgeConfig, text: str) -> float:
    if cfg.parser == "yes_no":
        return parse_yes_no(text)
    if cfg.parser == "scale":
        return parse_scale(text, cfg.scale_min, cfg.scale_max)
    return parse_json(text, cfg.json_field, cfg.scale_min, cfg.scale_max)


def percentile(xs: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty list."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def sampling_dict(cfg: JudgeConfig) -> dict:
    return {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}


# ----------------------------------------------------------------------------- backends

@dataclass
class Reply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class EngineBackend:
    """rlvr's own judge engines: Ray actor handles, or local JudgeActor objects (same event loop)."""

    def __init__(self, engines: list):
        if not engines:
            raise ValueError("a judge needs at least one engine")
        self.engines = list(engines)
        self.load = [0] * len(self.engines)

    async def complete(self, messages: list[dict], sampling: dict, timeout_s: float) -> Reply:
        i = min(range(len(self.engines)), key=lambda j: self.load[j])  # least outstanding requests
        eng = self.engines[i]
        self.load[i] += 1
        try:
            if hasattr(getattr(eng, "judge", None), "remote"):  # a Ray actor handle
                import ray

                ref = eng.judge.remote(messages, sampling)
                try:
                    out = await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout_s)
                except asyncio.TimeoutError:
                    ray.cancel(ref)  # the actor's coroutine is cancelled: vLLM aborts the request
                    raise
            else:
                out = await asyncio.wait_for(eng.judge(messages, sampling), timeout_s)
        finally:
            self.load[i] -= 1
        return Reply(out["text"], out.get("prompt_tokens", 0), out.get("completion_tokens", 0))

    async def close(self) -> None:
        pass


class OpenAIBackend:
    """Any OpenAI-compatible chat-completions endpoint (the `openai` client, its own retries off)."""

    def __init__(self, cfg: JudgeConfig, api_key: str | None):
        self.cfg = cfg
        self._key = api_key or "EMPTY"  # local servers often want none; never logged
        self._client = None
        import openai  # noqa: F401 - a heavy import: paid at start-up, not inside the first timed request

    def __repr__(self) -> str:  # the key must not show up in a log line or a traceback's locals
        return f"OpenAIBackend(base_url={self.cfg.base_url!r}, model={self.cfg.model!r})"

    async def complete(self, messages: list[dict], sampling: dict, timeout_s: float) -> Reply:
        if self._client is None:
            from openai import AsyncOpenAI

            self._client = AsyncOpenAI(base_url=self.cfg.base_url, api_key=self._key, max_retries=0, timeout=timeout_s)
        resp = await asyncio.wait_for(self._client.chat.completions.create(
            model=self.cfg.model, messages=messages, temperature=sampling["temperature"], top_p=sampling["top_p"],
            max_tokens=sampling["max_tokens"]), timeout_s)
        choices = getattr(resp, "choices", None)
        if not choices:
            raise RuntimeError("the endpoint's reply has no choices")
        text = choices[0].message.content
        if not isinstance(text, str):
            raise RuntimeError("the endpoint's reply has no message content")
        usage = getattr(resp, "usage", None)
        return Reply(text, int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _describe(e: BaseException, key: str | None) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    if key and len(key) >= 4:
        text = text.replace(key, "***")  # an endpoint may echo the key back in an error
    return text if len(text) <= MAX_REASON_CHARS else text[:MAX_REASON_CHARS] + "..."


# ----------------------------------------------------------------------------- the client

@dataclass
class _Window:
    latencies: list[float] = field(default_factory=list)
    t_first: float | None = None
    t_last: float = 0.0


class JudgeClient:
    """Scores (prompt, response, ground truth) items with one judge; use from one event loop."""

    def __init__(self, name: str, cfg: JudgeConfig, backend):
        self.name, self.cfg, self.backend = name, cfg, backend
        self._sem: asyncio.Semaphore | None = None
        self.counts = {"requests": 0, "parse_failures": 0, "timeouts": 0, "errors": 0, "retries": 0,
                       "prompt_tokens": 0, "completion_tokens": 0}
        self._window = _Window()

    @classmethod
    def for_endpoint(cls, name: str, cfg: JudgeConfig) -> "JudgeClient":
        return cls(name, cfg, OpenAIBackend(cfg, os.environ.get(cfg.api_key_env)))

    async def score(self, items: list[tuple[str | None, str, Any]]) -> list[VerifyResult]:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.cfg.max_in_flight)
        return list(await asyncio.gather(*(self._guarded_one(p, r, t) for p, r, t in items)))

    async def _guarded_one(self, prompt: str | None, response: str, truth: Any) -> VerifyResult:
        """`_one`, with anything it did not foresee costing this sample (counted in `errors`), not the batch."""
        try:
            return await self._one(prompt, response, truth)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001
            self.counts["errors"] += 1
            return VerifyResult(0.0, {"judge": self.name}, f"judge '{self.name}' failed: " + _describe(e, None))

    async def _one(self, prompt: str | None, response: str, truth: Any) -> VerifyResult:
        cfg = self.cfg
        messages = render_rubric(cfg, prompt, response, truth)
        sampling = sampling_dict(cfg)
        async with self._sem:
            t0 = time.perf_counter()
            if self._window.t_first is None:
                self._window.t_first = t0
            reply, reason, kind = None, None, None
            for attempt in range(cfg.retries + 1):
                if attempt:
                    self.counts["retries"] += 1
                    await asyncio.sleep(cfg.retry_backoff_s * 2 ** (attempt - 1))
                try:
                    reply = await self.backend.complete(messages, sampling, cfg.timeout_s)
                    break
                except asyncio.TimeoutError:
                    reason, kind = f"timeout: judge '{self.name}' did not answer in {cfg.timeout_s:g}s", "timeouts"
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - a down or broken judge costs this sample, never the run
                    reason, kind = f"judge '{self.name}' request failed: " + _describe(e, getattr(self.backend, "_key", None)), "errors"
            t1 = time.perf_counter()
        self.counts["requests"] += 1
        self._window.latencies.append(t1 - t0)
        self._window.t_last = max(self._window.t_last, t1)
        if reply is None:
            self.counts[kind] += 1
            return VerifyResult(0.0, {"judge": self.name, "attempts": cfg.retries + 1}, f"{reason} (after {cfg.retries + 1} attempts)")
        self.counts["prompt_tokens"] += reply.prompt_tokens
        self.counts["completion_tokens"] += reply.completion_tokens
        details = {"judge": self.name, "reply": reply.text[:500]}
        try:
            score = parse_score(cfg, reply.text)
            if not math.isfinite(score):
                raise ParseError(f"non-finite score {score!r}")
        except Exception as e:  # noqa: BLE001 - whatever the reply holds, it costs this sample only
            self.counts["parse_failures"] += 1
            msg = str(e) if isinstance(e, ParseError) else _describe(e, None)
            return VerifyResult(0.0, details, f"parse failure: {msg}")
        return VerifyResult(score, details, None)

    def stats(self) -> dict[str, float]:
        """Cumulative counters, and requests/s and latency percentiles since the last call."""
        p = f"judge/{self.name}/"
        out = {p + k: float(v) for k, v in self.counts.items()}
        out[p + "tokens"] = float(self.counts["prompt_tokens"] + self.counts["completion_tokens"])
        w = self._window
        if w.latencies:
            busy = max(w.t_last - (w.t_first or w.t_last), 1e-9)
            out[p + "requests_per_s"] = len(w.latencies) / busy
            out[p + "latency_p50_s"] = percentile(w.latencies, 50)
            out[p + "latency_p99_s"] = percentile(w.latencies, 99)
        self._window = _Window()
        return out

    async def close(self) -> None:
        await self.backend.close()
