"""One multi-turn trajectory, token in and token out: engine turns alternate with environment steps.

The engine is a coroutine given by the rollout actor (`generate(ids, max_tokens)`), so this file
knows nothing of vLLM and is unit-tested with a scripted one. Turn k+1's prompt is turn k's exact
ids, the ids the engine sampled, and the environment's answer rendered as a delta
(template.render_delta): nothing the engine saw is ever re-tokenised. Assistant tokens carry their
sampled log-probs and loss mask 1; observation tokens get mask 0 (no loss, no KL).

Limits end a trajectory with a reason: `max_turns`, `max_total_tokens`, `timeout` (the environment's
steps, together), `length` (a turn hit its token budget and the context has no room for more).
An environment that raises ends it with `env_error` (the controller gives it reward 0); tool
failures are the environment's business (ToolEnvironment turns them into error observations).
A failed engine call is never the trajectory's: it propagates (EngineDead: the scheduler reruns the
whole group on another engine and restarts this one; PromptRefused: the row is skipped), so turns
sampled before the failure are never trained.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from rlvr.environments.base import Environment, accumulate_info
from rlvr.environments.template import render_delta

# generate(prompt ids, max new tokens) -> (sampled ids, their log-probs, finish reason, [(version, tokens)])
Generate = Callable[[list[int], int], Awaitable[tuple[list[int], list[float], str, list[tuple[int, int]]]]]


class _EngineCallFailed(Exception):
    """Carries an engine call's error past the environment's `except Exception` (which costs a trajectory)."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


@dataclass
class Limits:
    max_turns: int = 4
    max_tokens_per_turn: int = 64
    max_total_tokens: int = 4096
    timeout_s: float = 300.0


@dataclass
class Trajectory:
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)  # after the prompt: assistant turns and observations
    logprobs: list[float] = field(default_factory=list)  # 0.0 on observation tokens
    loss_mask: list[int] = field(default_factory=list)  # 1 on assistant tokens, 0 on observation tokens
    messages: list[dict] = field(default_factory=list)  # the whole conversation, with roles
    final_text: str = ""  # the last assistant message: what the row's verifier checks
    step_rewards: list[float] = field(default_factory=list)
    turns: int = 0
    reason: str = "done"  # done | max_turns | max_total_tokens | timeout | length | env_error
    info: dict = field(default_factory=dict)  # tool_calls / tool_errors / tool_seconds per tool, summed over steps
    version_spans: list[tuple[int, int]] = field(default_factory=list)  # assistant tokens only
    error: str = ""

    @property
    def reset_failed(self) -> bool:
        """The environment failed at reset: no prompt, nothing sampled (the controller drops its group)."""
        return self.reason == "env_error" and not self.prompt_ids


def render_opening(tokenizer, messages: list[dict], tools: list[dict]) -> list[int]:
    """The first prompt's ids: the chat template with the tools offered and the generation prompt."""
    from rlvr.data.template import encode_prompts, render_prompt

    if getattr(tokenizer, "chat_template", None) and tools:
        text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
    else:
        text = render_prompt(tokenizer, {"messages": messages})
    return encode_prompts(tokenizer, [text])[0]


async def run_trajectory(env: Environment, row: dict, tokenizer, generate: Generate, limits: Limits) -> Trajectory:
    t0 = time.monotonic()
    try:
        messages = await asyncio.wait_for(env.reset(row), limits.timeout_s)
        tools = env.tools
        traj = Trajectory(render_opening(tokenizer, messages, tools), messages=list(messages))
    except Exception as e:  # a broken environment costs this trajectory, never the run
        return Trajectory([], reason="env_error", error=f"reset: {type(e).__name__}: {e}"[:500])
    eos = tokenizer.eos_token_id
    try:
        while True:
            room = limits.max_total_tokens - len(traj.prompt_ids) - len(traj.token_ids)
            if room <= 0:
                traj.reason = "max_total_tokens"
                break
            try:
                ids, lps, finish, spans = await generate(traj.prompt_ids + traj.token_ids, min(limits.max_tokens_per_turn, room))
            except Exception as e:
                raise _EngineCallFailed(e) from e
            traj.turns += 1
            traj.token_ids += ids
            traj.logprobs += list(lps) + [0.0] * (len(ids) - len(lps))
            traj.loss_mask += [1] * len(ids)
            for v, n in spans:
                if traj.version_spans and traj.version_spans[-1][0] == v:
                    traj.version_spans[-1] = (v, traj.version_spans[-1][1] + n)
                else:
                    traj.version_spans.append((v, n))
            content = tokenizer.decode(ids, skip_special_tokens=True)
            assistant = {"role": "assistant", "content": content}
            traj.messages.append(assistant)
            traj.final_text = content
            left = limits.timeout_s - (time.monotonic() - t0)
            if left <= 0:
                traj.reason = "timeout"
                break
            try:
                obs = await asyncio.wait_for(env.step(assistant), left)
            except asyncio.TimeoutError:
                traj.reason = "timeout"
                break
            traj.step_rewards.append(float(obs.reward))
            accumulate_info(traj.info, obs.info)
            if obs.done:
                traj.reason = "done"
                break
            if traj.turns >= limits.max_turns:
                traj.reason = "max_turns"
                break
            if finish == "length" and not obs.messages:
                traj.reason = "length"
                break
            ended_on_eos = bool(ids) and ids[-1] == eos
            delta = render_delta(tokenizer, traj.messages, obs.messages, tools or None,
                                 stop_text=tokenizer.eos_token if ended_on_eos else "")
            traj.messages += obs.messages
            if len(traj.prompt_ids) + len(traj.token_ids) + len(delta) >= limits.max_total_tokens:
                traj.reason = "max_total_tokens"
                break
            traj.token_ids += delta
            traj.logprobs += [0.0] * len(delta)
            traj.loss_mask += [0] * len(delta)
    except _EngineCallFailed as e:
        raise e.error from None  # the engine's failure, not the environment's: the caller decides by it
    except Exception as e:
        traj.reason, traj.error = "env_error", f"{type(e).__name__}: {e}"[:500]
    finally:
        try:
            await env.close()
        except Exception:
            pass
    return traj


def trajectory_reward(mode: str, verifier_score: float, traj: dict) -> float:
    """The recipe's `environments.reward`: verifier | last | sum | verifier+sum. A trajectory whose
    environment broke (`env_error`) gets 0 whatever was scored."""
    if traj.get("reason") == "env_error":
        return 0.0
    if traj.get("agent_reward") is not None:  # an agent that scores itself: its reward, whatever the mode
        return float(traj["agent_reward"])
    steps = traj.get("step_rewards") or []
    if mode == "verifier":
        return verifier_score
    if mode == "last":
        return steps[-1] if steps else 0.0
    if mode == "sum":
        return float(sum(steps))
    if mode == "verifier+sum":
        return verifier_score + float(sum(steps))
    raise ValueError(f"environments.reward: unknown mode {mode!r}")


def env_metrics(trajectories: list[dict], prefix: str = "env/") -> dict[str, float]:
    """Per-step means over trajectories: turns, tool calls/errors/seconds per tool, the share that called
    a tool at all, and the share ended by each limit (`truncated/<reason>`) or by a broken environment."""
    n = len(trajectories)
    if not n:
        return {}
    out = {f"{prefix}turns": sum(t["turns"] for t in trajectories) / n,
           f"{prefix}tool_call_rate": sum(bool(t["info"].get("tool_calls")) for t in trajectories) / n,
           # an agent past its timeout is an error too (reward 0; an environment's timeout only truncates)
           f"{prefix}errors": sum(t["reason"] == "env_error" or bool(t["info"].get("agent_timeouts"))
                                  for t in trajectories) / n,
           f"{prefix}reset_errors": float(sum(bool(t.get("reset_failed")) for t in trajectories))}
    for key in ("tool_calls", "tool_errors", "tool_seconds"):
        totals: dict[str, float] = {}
        for t in trajectories:
            for tool, v in (t["info"].get(key) or {}).items():
                totals[tool] = totals.get(tool, 0.0) + float(v)
        out.update({f"{prefix}{key}/{tool}": v / n for tool, v in totals.items()})
    agents = [t["info"] for t in trajectories if "agent_calls" in t["info"]]
    for key in ("calls", "branches", "rerender_mismatch", "settings_overridden", "queue_s"):
        if agents:
            out[f"agent/{key}"] = sum(i.get(f"agent_{key}", 0.0) for i in agents) / len(agents)
    for reason in ("max_turns", "max_total_tokens", "timeout", "length"):
        share = sum(t["reason"] == reason for t in trajectories) / n
        if share:
            out[f"{prefix}truncated/{reason}"] = share
    return out
