"""Running one request through its verifier(s), in whichever process does the checking.

Used by the worker processes and by the in-process mode (``workers: 0``). A check that raises
or runs past ``timeout_s`` becomes score 0 with an error string; nothing escapes from here.
"""
from __future__ import annotations

import asyncio
import math
import signal
import threading
import time
from typing import Any

from rlvr.verifiers.base import PluginError, VerifierTimeout, VerifyResult, to_result
from rlvr.verifiers.config import VerifierConfig
from rlvr.verifiers.registry import get_entry

MAX_ERROR_CHARS = 500

# (name, seconds, kind) per verifier call; kind is None, "error" or "timeout".
CallStat = tuple[str, float, str | None]


class _SoftTimer:
    """SIGALRM-based deadline for pure-Python work in the main thread.

    math-verify's own timeout uses ``signal.alarm`` too (whole seconds, main thread only);
    we switch it off and use this one, which takes fractional seconds and raises a
    BaseException that ``except Exception`` blocks in verifier code cannot swallow.
    Off the main thread it does nothing; the pool's hard kill is the backstop there.
    `fired` stays set once the deadline passed: some library code swallows even a BaseException
    (a bare `except:`) and returns an ordinary "not equal", which must still count as a timeout.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.active = threading.current_thread() is threading.main_thread()
        self.fired = False

    def __enter__(self):
        if self.active:
            self._old = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old)
        return False

    def _fire(self, signum, frame):
        self.fired = True
        raise VerifierTimeout()


_LOOP: asyncio.AbstractEventLoop | None = None


def _run_coro(coro):
    # One loop per process, reused: asyncio.run() per call would cost a loop set-up each time.
    global _LOOP
    if _LOOP is None or _LOOP.is_closed():
        _LOOP = asyncio.new_event_loop()
    return _LOOP.run_until_complete(coro)


def call_one(name: str, response: str, ground_truth: Any, prompt: str | None,
             config: VerifierConfig, extra: dict[str, Any] | None = None) -> tuple[VerifyResult, CallStat]:
    """One verifier on one sample, bounded by ``config.timeout_s``; never raises."""
    t0 = time.perf_counter()
    try:
        entry = get_entry(name)
    except PluginError as e:
        return VerifyResult(0.0, {}, str(e)), (name, 0.0, "error")
    kwargs: dict[str, Any] = {"prompt": prompt}
    if entry.wants_config:
        kwargs["config"] = config
    if extra and entry.wants_extra:
        kwargs.update(extra)
    kind: str | None = None
    timer = _SoftTimer(config.timeout_s)
    try:
        with timer:
            if entry.is_async:
                value = _run_coro(asyncio.wait_for(entry.fn(response, ground_truth, **kwargs), config.timeout_s))
            else:
                value = entry.fn(response, ground_truth, **kwargs)
        if timer.fired:  # the deadline passed inside code that swallowed it: the value is not a verdict
            raise VerifierTimeout()
        res = to_result(value)
    except (VerifierTimeout, asyncio.TimeoutError):
        kind = "timeout"
        res = VerifyResult(0.0, {}, f"timeout: check exceeded {config.timeout_s:g}s")
    except BaseException as e:  # noqa: BLE001 - SystemExit/KeyboardInterrupt from a plugin must not kill the worker
        kind = "error"
        res = VerifyResult(0.0, {}, _describe(e))
    if res.error and kind is None:
        kind = "error"  # a verifier may report its own error (e.g. sandbox missing) with score 0
    return res, (name, time.perf_counter() - t0, kind)


def run_request(response: str, ground_truth: Any, verifier: str | list[str], prompt: str | None,
                config: VerifierConfig, extra: dict[str, Any] | None = None) -> tuple[VerifyResult, list[CallStat]]:
    """All verifiers named on one row, combined per ``config.combine``."""
    names = [verifier] if isinstance(verifier, str) else list(verifier)
    if not names:
        return VerifyResult(0.0, {}, "no verifier named"), []
    if not isinstance(response, str):
        response = "" if response is None else str(response)
    if len(names) == 1:
        res, stat = call_one(names[0], response, ground_truth, prompt, config, extra)
        return res, [stat]
    parts: list[tuple[str, VerifyResult]] = []
    stats: list[CallStat] = []
    # {"math": "4", "format": {"tags": [...]}}: each verifier gets its own ground truth.
    per_name = isinstance(ground_truth, dict) and bool(ground_truth) and set(ground_truth) <= set(names)
    for name in names:
        truth = ground_truth.get(name) if per_name else ground_truth
        res, stat = call_one(name, response, truth, prompt, config, extra)
        parts.append((name, res))
        stats.append(stat)
    score = combine([(n, r.score) for n, r in parts], config)
    details = {n: {"score": r.score, "details": r.details, "error": r.error} for n, r in parts}
    errors = [f"{n}: {r.error}" for n, r in parts if r.error]
    return VerifyResult(score, details, "; ".join(errors) or None), stats


def combine(scores: list[tuple[str, float]], config: VerifierConfig) -> float:
    if config.combine == "product":
        return math.prod(s for _, s in scores)
    if config.combine == "weighted":
        ws = [(config.weights.get(n, 1.0), s) for n, s in scores]
        total = sum(w for w, _ in ws)
        return sum(w * s for w, s in ws) / total if total > 0 else 0.0
    return sum(s for _, s in scores) / len(scores)


def _describe(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "..."
