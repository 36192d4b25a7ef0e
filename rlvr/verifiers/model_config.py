"""The recipe's ``judges:`` and ``reward_models:`` sections: model-scored verifiers.

Each entry is a verifier name: a row naming ``style`` is scored by ``judges.style`` (or by
``reward_models.style``). A row may also name plain ``judge`` / ``reward_model`` when the recipe
declares exactly one of that kind. Model-scored verifiers combine with rule-based ones on a row
like any verifiers do (``verifiers.combine``).
"""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_SYSTEM = "You are a strict grader. Answer only with the word yes or the word no."
DEFAULT_TEMPLATE = ("Question:\n{prompt}\n\nReference answer:\n{ground_truth}\n\nResponse:\n{response}\n\n"
                    "Does the response answer the question correctly? Answer yes or no.")
PLACEHOLDERS = ("{prompt}", "{response}", "{ground_truth}")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class JudgeConfig(BaseModel):
    """An LLM judge: a rubric prompt in, a score out by the declared parser."""

    model_config = ConfigDict(extra="forbid")

    # where the judge runs: its own vLLM engine(s), or an OpenAI-compatible endpoint
    path: str | None = Field(None, description="checkpoint directory or Hub id (org/name) of a judge model rlvr serves "
                                                "itself on its own vLLM engine(s) (give this or base_url)")
    revision: str | None = Field(None, description="Hub branch, tag or commit when path is a Hub id (default main)")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. http://host:8000/v1 "
                                                    "(give this or path)")
    model: str = Field("default", description="model name sent to the endpoint (base_url only)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the endpoint's key (read "
                                                           "at start-up, never written to the run dir or logs)")
    # own engines: resources in the placement plan
    engines: int = Field(1, ge=1, description="vLLM engines (Ray actors) serving this judge (path only)")
    num_cpus: float = Field(1, gt=0, description="CPUs reserved per judge engine in Ray")
    num_gpus: float = Field(0, ge=0, description="GPUs reserved per judge engine in Ray (0 on a CPU machine)")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per judge engine (tensor parallelism)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="judge weights' dtype in vLLM")
    max_model_len: int | None = Field(2048, ge=16, description="judge engine context length (None: the model's)")
    kv_cache_gib: float = Field(1.0, gt=0, description="KV-cache size per judge engine in GiB (CPU)")
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="fraction of GPU memory a judge engine may take")
    # the rubric and the score
    system: str | None = Field(DEFAULT_SYSTEM, description="system message of the rubric (None: none)")
    template: str = Field(DEFAULT_TEMPLATE, description="rubric user message; {prompt}, {response} and "
                                                        "{ground_truth} are replaced (other braces are kept)")
    parser: Literal["yes_no", "scale", "json"] = Field("yes_no", description="how the score is read from the reply: "
                                                                             "yes/no, a number on a scale, or a JSON field")
    scale_min: float = Field(0.0, description="scale/json: the score that maps to 0")
    scale_max: float = Field(10.0, description="scale/json: the score that maps to 1")
    json_field: str = Field("score", description="json: the field holding the score (number, bool or yes/no)")
    max_response_chars: int = Field(8000, ge=1, description="the response is cut to this many characters in the rubric")
    # sampling
    temperature: float = Field(0.0, ge=0, description="judge sampling temperature (0: greedy)")
    top_p: float = Field(1.0, gt=0, le=1, description="judge nucleus sampling threshold")
    max_tokens: int = Field(16, ge=1, description="most tokens of one judge reply")
    # requests
    timeout_s: float = Field(30.0, gt=0, description="wall-clock limit of one judge request")
    retries: int = Field(2, ge=0, description="extra attempts after a failed or timed-out request (then score 0 with "
                                              "the reason)")
    retry_backoff_s: float = Field(0.5, ge=0, description="wait before a retry, doubled each time")
    max_in_flight: int = Field(64, ge=1, description="most judge requests outstanding at once")

    @field_validator("template")
    @classmethod
    def _template_has_response(cls, v: str) -> str:
        if "{response}" not in v:
            raise ValueError("the rubric template must contain {response}")
        return v

    @model_validator(mode="after")
    def _one_backend(self) -> "JudgeConfig":
        if (self.path is None) == (self.base_url is None):
            raise ValueError("give exactly one of path (rlvr serves the judge) or base_url (an OpenAI-compatible endpoint)")
        if self.base_url is not None and not re.match(r"^https?://", self.base_url):
            raise ValueError(f"base_url must start with http:// or https:// (got {self.base_url!r})")
        if self.parser in ("scale", "json") and self.scale_max == self.scale_min:
            raise ValueError("scale_max must differ from scale_min")
        return self

    @property
    def own_engine(self) -> bool:
        return self.path is not None


class NormalizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["none", "running", "affine"] = Field("none", description="none; running: (x - mean) / std over all "
                                                                           "scores so far; affine: scale * x + shift")
    scale: float = Field(1.0, description="affine: multiplier")
    shift: float = Field(0.0, description="affine: offset")
    eps: float = Field(1e-6, ge=0, description="running: added to the std")
    clip: tuple[float, float] | None = Field(None, description="clip the normalised score to [lo, hi]")

    @field_validator("clip")
    @classmethod
    def _clip_ordered(cls, v):
        if v is not None and v[0] > v[1]:
            raise ValueError(f"clip must be [lo, hi] with lo <= hi (got {list(v)})")
        return v


class RewardModelConfig(BaseModel):
    """A sequence-classification reward model (transformers) in a Ray actor."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(..., description="checkpoint directory or Hub id (org/name) of an AutoModelForSequenceClassification model")
    revision: str | None = Field(None, description="Hub branch, tag or commit when path is a Hub id (default main)")
    num_cpus: float = Field(1, gt=0, description="CPUs reserved for the reward-model actor in Ray")
    num_gpus: float = Field(0, ge=0, description="GPUs reserved for the reward-model actor in Ray")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="reward model weights' dtype")
    batch_size: int = Field(32, ge=1, description="sequences per forward pass")
    max_length: int = Field(512, ge=8, description="inputs are cut (from the left) to this many tokens")
    template: str = Field("{prompt}{response}", description="the text scored; {prompt}, {response} and "
                                                            "{ground_truth} are replaced")
    chat: bool = Field(False, description="apply the reward model tokenizer's chat template to [user: prompt, "
                                          "assistant: response] instead of the template")
    label: int | None = Field(None, ge=0, description="logit used as the score (None: the only logit, or with two "
                                                       "labels logit[1] - logit[0])")
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig, description="score normalisation")
    timeout_s: float = Field(120.0, gt=0, description="wall-clock limit of one batch (then its samples score 0)")

    @field_validator("template")
    @classmethod
    def _template_has_response(cls, v: str) -> str:
        if "{response}" not in v:
            raise ValueError("the template must contain {response}")
        return v


def check_model_names(judges: dict, reward_models: dict) -> None:
    """Names are plain identifiers and the two sections do not share one (ValueError otherwise)."""
    for section, d in (("judges", judges), ("reward_models", reward_models)):
        for name in d:
            if not _NAME.match(name):
                raise ValueError(f"{section}.{name}: a name may hold letters, digits, '_', '-' and '.' only")
    both = sorted(set(judges) & set(reward_models))
    if both:
        raise ValueError(f"judges.{both[0]}: the name is also a reward_models entry; give each verifier its own name")
