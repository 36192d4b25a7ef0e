"""Pydantic models for the recipe's `data:` section, and the one error type of this package."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DataError(ValueError):
    """A data problem, with a one-line message naming the file and line, or the source and field."""


class DataSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., description="jsonl file, parquet file, datasets.save_to_disk directory, or hf:owner/name")
    split: str | None = Field(None, description="split to read from a DatasetDict directory or hub dataset (default: train)")
    fraction: float | None = Field(None, gt=0, le=1, description="take this fraction of the source's rows (0 < f <= 1)")
    count: int | None = Field(None, ge=0, description="take exactly this many rows (whole copies plus a seeded sample when more than available)")
    upsample: float | None = Field(None, gt=0, description="repeat the source this many times (2.5 = all rows twice plus half again)")
    verifier: str | None = Field(None, description="verifier name for rows that name none")
    env: str | None = Field(None, description="environment for rows that name none (`env` column; None: single-turn)")
    name: str | None = Field(None, description="label of this source in reports and rows (default: the path)")

    @model_validator(mode="after")
    def _one_amount(self) -> "DataSourceConfig":
        # Several amounts at once have no single meaning; refuse rather than guess.
        given = [k for k in ("fraction", "count", "upsample") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"data source {self.path}: give at most one of fraction/count/upsample, got {', '.join(given)}")
        return self

    @property
    def label(self) -> str:
        return self.name or self.path


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: list[DataSourceConfig] = Field(..., min_length=1, description="training sources, mixed in this order")
    eval: list[DataSourceConfig] = Field(default_factory=list, description="held-out sources for evaluation")
    seed: int = Field(0, description="seed for mixing, sampling and prompt order")
    max_prompt_tokens: int | None = Field(None, gt=0, description="drop prompts longer than this many tokens after the chat template")
    strict: bool = Field(False, description="raise on rows without ground truth or verifier instead of dropping them")
    eval_size: int | None = Field(None, gt=0, description="use at most this many eval rows (seeded sample)")
    cache_dir: str | None = Field(None, description="directory for the tokenised-prompt cache (none: no cache)")
