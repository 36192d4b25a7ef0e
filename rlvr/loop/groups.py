"""A prompt's group of completions as the step sees it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Group:
    """One prompt's n completions with their scores, and the policy version that sampled them."""

    row: dict
    prompt: str
    prompt_ids: list[int]
    comps: list
    scores: list
    engine: int = 0
    t_finished: float = 0.0  # when its engine finished it
    t_scored: float = 0.0  # when its scores came back
    rewards: list[float] = field(default_factory=list)  # scores plus the overlong penalty, set once scored

    @property
    def version(self) -> int:
        return min(c.policy_version for c in self.comps)
