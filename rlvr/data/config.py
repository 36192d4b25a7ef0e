"""Pydantic models for the recipe's `data:` section, and the one error type of this package."""
from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DataError(ValueError):
    """A data problem, with a one-line message naming the file and line, or the source and field."""


# Field names of the column mapping: any of them set means rows are built from columns (see rlvr/data/mapping.py).
MAPPING_FIELDS = ("prompt_key", "prompt_template", "system_prompt", "answer_key", "answer_extractor",
                  "verifier_key", "extra_keys")


class DataSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="local jsonl/json/csv/parquet file, a folder of such files, a "
                                               "datasets.save_to_disk directory, or hf:owner/name")
    hf: str | None = Field(None, description="Hugging Face Hub dataset id owner/name (same as path: hf:owner/name)")
    config: str | None = Field(None, description="hub dataset configuration (subset) name, e.g. 'main' for openai/gsm8k")
    split: str | None = Field(None, description="split to read from a DatasetDict directory or hub dataset (default: train)")
    revision: str | None = Field(None, description="hub dataset revision: branch, tag or commit (default: main)")
    fraction: float | None = Field(None, gt=0, le=1, description="take this fraction of the source's rows (0 < f <= 1)")
    count: int | None = Field(None, ge=0, description="take exactly this many rows (whole copies plus a seeded sample when more than available)")
    upsample: float | None = Field(None, gt=0, description="repeat the source this many times (2.5 = all rows twice plus half again)")
    prompt_key: str | None = Field(None, description="column holding the prompt: text (one user turn) or chat "
                                                     "messages (a list of role/content dicts)")
    prompt_template: str | None = Field(None, description="user turn built from row columns, e.g. "
                                                          "'{question}\\nAnswer with a number.' (str.format placeholders)")
    system_prompt: str | None = Field(None, description="system turn put first, unless the row's messages have one")
    answer_key: str | None = Field(None, description="column holding the ground truth (default: ground_truth)")
    answer_extractor: str | None = Field(None, description="take the ground truth out of the answer text: gsm8k (the "
                                                           "number after ####), boxed (the last \\boxed{}), or a regex "
                                                           "with one group")
    verifier: str | None = Field(None, description="verifier name for rows that name none (an error if no row uses it)")
    verifier_key: str | None = Field(None, description="column naming each row's verifier(s) (default: verifier, or "
                                                       "Tulu 3's dataset)")
    extra_keys: list[str] = Field(default_factory=list, description="further columns passed to the verifier as keyword "
                                                                    "arguments (plugins that take **row get them)")
    env: str | None = Field(None, description="environment for rows that name none (`env` column; None: single-turn)")
    name: str | None = Field(None, description="label of this source in reports and rows (default: the path)")

    @model_validator(mode="before")
    @classmethod
    def _hf_is_a_path(cls, data: Any) -> Any:
        # `hf: owner/name` and `path: hf:owner/name` are one thing; the rest of rlvr reads `path`.
        if isinstance(data, dict) and data.get("hf") is not None:
            if data.get("path") not in (None, f"hf:{data['hf']}"):  # a dumped config.yaml has both
                raise ValueError(f"data source {data['hf']}: give path or hf, not both")
            data = {**data, "path": f"hf:{data['hf']}"}
        return data

    @model_validator(mode="after")
    def _one_amount(self) -> "DataSourceConfig":
        if self.path is None:
            raise ValueError("data source: give path (a file, folder or hf:owner/name) or hf (a hub dataset id)")
        # Several amounts at once have no single meaning; refuse rather than guess.
        given = [k for k in ("fraction", "count", "upsample") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"data source {self.path}: give at most one of fraction/count/upsample, got {', '.join(given)}")
        if self.prompt_key and self.prompt_template:
            raise ValueError(f"data source {self.path}: give prompt_key or prompt_template, not both")
        ex = self.answer_extractor
        if ex not in (None, "gsm8k", "boxed"):
            try:
                groups = re.compile(ex).groups
            except re.error as e:
                raise ValueError(f"data source {self.path}: answer_extractor: not gsm8k, boxed or a valid regex ({e})") from None
            if groups != 1:
                raise ValueError(f"data source {self.path}: answer_extractor: a regex needs exactly one group, got {groups}")
        return self

    @property
    def label(self) -> str:
        return self.name or self.path

    @property
    def mapped(self) -> bool:
        """True when rows are built from columns rather than read as RLVR rows."""
        return any(getattr(self, k) for k in MAPPING_FIELDS)


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: list[DataSourceConfig] = Field(..., min_length=1, description="training sources, mixed in this order")
    eval: list[DataSourceConfig] = Field(default_factory=list, description="held-out sources for evaluation")
    seed: int = Field(0, description="seed for mixing, sampling and prompt order")
    max_prompt_tokens: int | None = Field(None, gt=0, description="drop prompts longer than this many tokens after the chat template")
    strict: bool = Field(False, description="raise on rows without ground truth or verifier instead of dropping them")
    eval_size: int | None = Field(None, gt=0, description="use at most this many eval rows (seeded sample)")
    cache_dir: str | None = Field(None, description="directory for the tokenised-prompt cache (none: no cache)")
