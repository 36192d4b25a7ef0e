"""What a rollout returns: completions (token ids, sampling log-probs, per-token policy versions) and groups."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Completion:
    prompt_index: int
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str
    policy_version: int  # the version that sampled the first token: staleness is bounded by it
    version_spans: list[tuple[int, int]] = field(default_factory=list)  # (version, tokens) in order, sampled tokens only
    loss_mask: list[int] | None = None  # multi-turn: 1 on sampled tokens, 0 on observations (None: all sampled)
    trajectory: dict | None = None  # multi-turn: messages, turns, reason, step_rewards, info
    prompt_ids: list[int] | None = None  # agents: this trajectory's own first prompt (None: the group's)
    branches: list["Completion"] = field(default_factory=list)  # agents: further trajectories sharing this reward

    @property
    def last_version(self) -> int:
        return self.version_spans[-1][0] if self.version_spans else self.policy_version

    def tokens_older_than(self, version: int) -> int:
        return sum(n for v, n in self.version_spans if v < version)


@dataclass
class GroupResult:
    """One prompt's completions from one engine, with when the engine started and finished it."""

    completions: list[Completion]
    prompt_token_ids: list[int]
    engine_index: int
    t_start: float
    t_end: float
    refused: str = ""  # the engine refused the prompt (e.g. longer than the context): no completions, skip the row

    @property
    def tokens(self) -> int:
        return sum(len(c.token_ids) for c in self.completions)


@dataclass
class RolloutResult:
    completions: list[Completion]
    prompt_token_ids: list[list[int]]
    seconds: float
    policy_version: int
    tokens: int = field(default=0)
