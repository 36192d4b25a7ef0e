"""The recipe's ``environments:`` section: plugins, per-environment options, limits, reward."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class EnvironmentsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plugins: list[str] = Field(default_factory=list, description="modules or .py files (relative to the recipe) registering environments/tools "
                                                                 "(entry points in group 'rlvr.environments' load too; shipped by rlvr submit)")
    options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="constructor options per environment "
                                                                                "name, e.g. {tools: {tools: [calculator]}}")
    reward: Literal["verifier", "last", "sum", "verifier+sum"] = Field(
        "verifier", description="trajectory reward: the row's verifier on the final answer, the environment's last or "
                                "summed step rewards, or the verifier plus the summed step rewards")
    max_turns: int = Field(4, ge=1, description="assistant turns per trajectory; reaching it ends the trajectory (reason max_turns)")
    max_tokens_per_turn: int | None = Field(None, ge=1, description="tokens one assistant turn may generate (default: rollout.max_tokens)")
    max_total_tokens: int | None = Field(None, ge=1, description="prompt + all turns + observations (default: the engine's context)")
    trajectory_timeout_s: float = Field(300.0, gt=0, description="wall-clock limit of one trajectory's environment steps (reason timeout)")
    agent_threads: int | None = Field(None, ge=1, description="threads per rollout actor for synchronous (def) agents, "
                                                              "each holding one for its run (default: train.prompts_per_step x rollout.n)")
