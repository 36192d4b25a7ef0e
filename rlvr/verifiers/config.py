"""The recipe's ``verifiers:`` section."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class VerifierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(10.0, gt=0, description="wall-clock limit of one check (one sample, one verifier); "
                                                      "past it the sample scores 0 with error 'timeout'")
    workers: int = Field(2, ge=0, description="verifier worker processes; 0 runs checks in the calling process "
                                              "(no hard timeout, for debugging only)")
    combine: Literal["mean", "product", "weighted"] = Field(
        "mean", description="how a row naming several verifiers combines their scores")
    weights: dict[str, float] = Field(default_factory=dict, description="per-verifier weight for combine: weighted "
                                                                        "(missing names weigh 1.0)")
    plugins: list[str] = Field(default_factory=list, description="modules or .py files (relative to the recipe) to import "
                                                                 "for @register plugins; file.py:function registers a plain "
                                                                 "reward fn(completion, ground_truth, **row) under its name")
    ifeval_mode: Literal["strict", "loose"] = Field("strict", description="IFEval strict check, or loose (also "
                                                                          "accepts the response with first/last line "
                                                                          "or markdown asterisks removed)")
    code_all_or_nothing: bool = Field(False, description="code: score 1 only if every test passes, else 0 "
                                                         "(default: the fraction of tests passed)")
    code_timeout_s: float = Field(6.0, gt=0, description="code: wall-clock limit of one sandboxed program run "
                                                         "(all tests of one sample share one run)")
    code_memory_mb: int = Field(1024, gt=0, description="code: address-space limit of the sandboxed program")
    code_concurrency: int = Field(2, ge=1, description="code: sandboxes one worker runs at once (they mostly "
                                                       "wait on process start-up)")
    chunk_size: int = Field(32, ge=1, description="most samples sent to a worker at once (smaller balances "
                                                  "load better, larger costs less IPC)")
    kill_grace_s: float = Field(2.0, ge=0, description="extra seconds past timeout_s before a stuck worker "
                                                       "process is killed and replaced")
