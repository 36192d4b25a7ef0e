"""Code with test feedback: the model submits a program, sees which tests fail, tries again.

Each assistant message is one attempt: its last ```python block (the ``code`` verifier's
``extract_program``) runs against the row's ``ground_truth`` tests in the sandbox, with the
code verifier's own machinery (``parse_tests``, ``run_tests``), so a row scores the same here
as under the ``code`` verifier. While tests fail and attempts remain, the failing tests and
the first error come back as a user message. The trajectory ends when every test passes or
after ``max_attempts``; the final step's reward is that last attempt's score (fraction of tests
passed, or 1/0 with ``all_or_nothing``), earlier steps carry none.
"""
from __future__ import annotations

import asyncio
import re

from rlvr.environments.base import Environment, EnvironmentConfigError, Observation, content_text
from rlvr.environments.python_tool import sandbox_slot
from rlvr.environments.tools import truncate
from rlvr.verifiers.code_exec import extract_program, parse_tests, run_tests
from rlvr.verifiers.sandbox import SandboxUnavailable

_FENCE_RE = re.compile(r"```")


class CodeFeedbackEnvironment(Environment):
    """Up to ``max_attempts`` submissions against the row's tests; feedback after each failure.

    ``show_tests``: the feedback quotes the failing test statements (or stdin cases), not only
    how many failed. ``timeout_s``/``memory_mb``: the sandbox limits of one attempt.
    """

    def __init__(self, *, max_attempts: int = 3, timeout_s: float = 6.0, memory_mb: int = 1024,
                 all_or_nothing: bool = False, show_tests: bool = True, max_feedback_chars: int = 2000):
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise EnvironmentConfigError(f"max_attempts: must be an integer >= 1, got {max_attempts!r}")
        if not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
            raise EnvironmentConfigError(f"timeout_s: must be a positive number of seconds, got {timeout_s!r}")
        self.max_attempts, self.timeout_s, self.memory_mb = max_attempts, float(timeout_s), memory_mb
        self.all_or_nothing, self.show_tests, self.max_feedback_chars = all_or_nothing, show_tests, max_feedback_chars
        self.attempts = 0
        self._tests: dict | None = None

    async def reset(self, row: dict) -> list[dict]:
        messages = await super().reset(row)
        try:
            self._tests = parse_tests(row["ground_truth"])
        except KeyError:
            raise EnvironmentConfigError("ground_truth: a code_feedback row needs tests in 'ground_truth'") from None
        except (ValueError, TypeError) as e:
            raise EnvironmentConfigError(f"ground_truth: not usable as code tests: {e}") from None
        self.attempts = 0
        return messages

    async def step(self, assistant_message: dict) -> Observation:
        if self._tests is None:
            raise RuntimeError("CodeFeedbackEnvironment.step called before reset")
        self.attempts += 1
        last = self.attempts >= self.max_attempts
        text = content_text(assistant_message)
        info = {"attempts": 1}
        if not _FENCE_RE.search(text.rsplit("</think>", 1)[-1]):
            feedback = "error: no ```python code block found."
            info.update(passed=0, total=self._n_tests(), no_code=1)
            return self._answer(0.0, feedback, last, info)
        try:
            out = await asyncio.to_thread(self._run, extract_program(text))
        except SandboxUnavailable:
            raise  # a broken installation, not a model error: say so loudly
        except Exception as e:  # noqa: BLE001 - scored as a failed attempt, the run goes on
            info.update(passed=0, total=self._n_tests(), error=f"{type(e).__name__}: {e}")
            return Observation(messages=[], reward=0.0, done=True, info=info)
        passed = out["passed"]
        n = len(passed)
        score = (sum(passed) / n if n else 0.0)
        if self.all_or_nothing:
            score = 1.0 if n and all(passed) else 0.0
        info.update(passed=sum(passed), total=n)
        if out.get("timed_out"):
            info["timeouts"] = 1
        if n and all(passed):
            return Observation(messages=[], reward=score, done=True, info=info)
        return self._answer(score, self._feedback(passed, out.get("reason")), last, info)

    def _run(self, program: str) -> dict:
        with sandbox_slot():
            return run_tests(program, self._tests, timeout_s=self.timeout_s, memory_mb=self.memory_mb)

    def _answer(self, score: float, feedback: str, last: bool, info: dict) -> Observation:
        if last:
            return Observation(messages=[], reward=score, done=True, info=info)
        left = self.max_attempts - self.attempts
        feedback += f"\nSubmit the corrected program in a ```python block ({left} attempt{'s' if left > 1 else ''} left)."
        return Observation(messages=[{"role": "user", "content": truncate(feedback, self.max_feedback_chars)}],
                           reward=0.0, done=False, info=info)

    def _n_tests(self) -> int:
        return len(self._tests["inputs"] if self._tests["mode"] == "io" else self._tests["tests"])

    def _feedback(self, passed: list[bool], reason: str | None) -> str:
        n = len(passed)
        lines = [f"{sum(passed)} of {n} tests passed."]
        if reason:
            lines.append(f"First failure: {reason}")
        if self.show_tests:
            failing = [i for i, ok in enumerate(passed) if not ok]
            for i in failing[:5]:
                if self._tests["mode"] == "io":
                    lines.append(f"Failing case {i}: input {self._tests['inputs'][i]!r}, "
                                 f"expected output {self._tests['outputs'][i]!r}")
                else:
                    lines.append(f"Failing test {i}: {self._tests['tests'][i].strip()}")
            if len(failing) > 5:
                lines.append(f"... and {len(failing) - 5} more failing tests")
        return "\n".join(lines)
