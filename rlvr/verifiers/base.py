"""Plain data types shared by every verifier: the request, the result, and the one error type."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


class PluginError(RuntimeError):
    """A verifier registration or plugin-loading problem, with a one-line message."""


class VerifierTimeout(BaseException):
    """Raised inside a worker when a check runs past its deadline.

    A BaseException on purpose: verifier code (and libraries such as math-verify) often wrap
    their work in ``except Exception``; a timeout must not be swallowed there and turned
    into an ordinary "wrong answer".
    """


@dataclass
class VerifyResult:
    score: float
    details: dict = field(default_factory=dict)
    error: str | None = None


@dataclass
class VerifyRequest:
    response: str
    ground_truth: Any
    verifier: str | list[str]
    prompt: str | None = None
    question: str | None = None  # the row's last user message (LLM judges read it rather than the rendered prompt)
    extra: dict[str, Any] | None = None  # the row's extra columns (a source's extra_keys), for verifiers taking **row

    def names(self) -> list[str]:
        return [self.verifier] if isinstance(self.verifier, str) else list(self.verifier)

    @classmethod
    def for_completions(cls, rows: list[dict], prompts: list[str], completions: list) -> list["VerifyRequest"]:
        """One request per completion (anything with .text and .prompt_index), from its prompt's row."""
        return [cls(c.text, rows[c.prompt_index]["ground_truth"], rows[c.prompt_index]["verifier"], prompts[c.prompt_index],
                    _last_user(rows[c.prompt_index]), rows[c.prompt_index].get("extra"))
                for c in completions]


def _last_user(row: dict) -> str | None:
    for m in reversed(row.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            return m.get("content")
    return None


def to_result(value: Any) -> VerifyResult:
    """Normalise what a verifier returned (float, bool, (float, dict) or VerifyResult).

    Scores are clamped to [0, 1]; NaN or a wrong type is an error, not a silent 0, so a
    broken plugin shows up in the stats.
    """
    if isinstance(value, VerifyResult):
        res = value
    elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):
        res = VerifyResult(_as_float(value[0]), dict(value[1]))
    else:
        res = VerifyResult(_as_float(value), {})
    score = _as_float(res.score)
    if math.isnan(score):
        raise ValueError("verifier returned NaN")
    res.score = min(1.0, max(0.0, score))
    if not isinstance(res.details, dict):
        res.details = {"details": res.details}
    return res


def _as_float(v: Any) -> float:
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, (int, float)):
        return float(v)
    raise TypeError(f"verifier must return a float, bool, (float, dict) or VerifyResult, got {type(v).__name__}")
