"""The environment interface for multi-turn rollouts, and the one-step case.

A rollout with an environment goes: ``reset(row)`` gives the opening conversation; the policy
writes an assistant message; ``step(message)`` answers with an ``Observation`` (new messages
to append, e.g. tool results or test feedback, and ``done``); repeat until ``done``. One
instance serves one trajectory, so an environment may keep per-trajectory state (attempts
made, a Python session) in plain attributes; a factory (see ``registry.py``) makes a fresh one
for each trajectory.

Everything here is engine-free: no vLLM, no Ray, no tokenizer. Tokens are the rollout
actor's business (``template.render_delta`` gives the ids a step appends).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field


class EnvironmentConfigError(ValueError):
    """A bad environment configuration (unknown name, bad option, bad row, plugin problem).

    The message is one line that names the field, so the CLI can print it as is.
    """


@dataclass
class Observation:
    """What the environment answers to one assistant message.

    ``messages`` are appended to the conversation (tool results, feedback); ``reward`` is the
    environment's own reward for this step (how rewards combine with verifiers is the
    recipe's ``environments.reward``); ``done`` ends the trajectory; ``info`` holds counters
    and details for metrics (per step: the caller sums them, see ``accumulate_info``).
    """
    messages: list[dict]
    reward: float = 0.0
    done: bool = False
    info: dict = field(default_factory=dict)


class Environment(abc.ABC):
    """One trajectory's environment. Subclasses implement ``step``; the rest has defaults."""

    async def reset(self, row: dict) -> list[dict]:
        """The opening conversation of the trajectory: by default the row's ``messages``.

        Subclasses that need the row (ground truth, tests) keep what they need here.
        A copy is returned so the caller may append to it freely.
        """
        try:
            return [dict(m) for m in row["messages"]]
        except (KeyError, TypeError):
            raise EnvironmentConfigError("row: needs a 'messages' list of {role, content} dicts") from None

    @abc.abstractmethod
    async def step(self, assistant_message: dict) -> Observation:
        """React to the policy's message ``{"role": "assistant", "content": ...}``."""

    @property
    def tools(self) -> list[dict]:
        """JSON schemas of the tools offered, passed to the chat template as ``tools=``."""
        return []

    async def close(self) -> None:
        """Release per-trajectory resources (called once the trajectory ends); default: nothing."""


class SingleTurn(Environment):
    """The one-step environment: the first answer ends the trajectory.

    Existing single-turn rows are this degenerate case: the reward comes from the row's
    verifier, so the observation carries none of its own.
    """

    async def step(self, assistant_message: dict) -> Observation:
        return Observation(messages=[], done=True)


def content_text(message: dict) -> str:
    """A message's content as text: a string as is, OpenAI-style ``[{"type": "text", ...}]``
    parts joined, ``None`` (a message with only tool calls) as ``""``."""
    content = message.get("content") if isinstance(message, dict) else None
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def accumulate_info(total: dict, info: dict) -> dict:
    """Add one step's ``info`` into a trajectory total, in place; returns ``total``.

    Numbers are summed, nested dicts (``tool_calls``, ``tool_errors``...) merged the same way,
    anything else is overwritten by the newer value.
    """
    for key, value in info.items():
        old = total.get(key)
        if isinstance(value, dict):
            total[key] = accumulate_info(old if isinstance(old, dict) else {}, value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) \
                and isinstance(old, (int, float)) and not isinstance(old, bool):
            total[key] = old + value
        else:
            total[key] = value
    return total
