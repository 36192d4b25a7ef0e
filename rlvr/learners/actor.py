"""Learner actor: one DeepSpeed data-parallel rank of the policy (and, for PPO with GAE, the critic).

N of these Ray actors form one DeepSpeed group (ZeRO 0-3; gloo on CPU, NCCL on GPU). Each
takes its shard of the rollout batch (whole GRPO groups), computes advantages and the
policy loss with the pure functions in advantages.py / losses.py, and steps. Rank 0 also
sends the new weights to the rollout engines (weights/sync.py).

With `algorithm.advantage: gae` each rank also holds a value model (critic.py) in a second
DeepSpeed engine with its own AdamW and LR, stepped on the same micro-batches as the policy.
Nothing on this module's import path imports ray or vllm: `rlvr bench learner` runs it alone.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path

import torch

from rlvr.learners.advantages import compute_advantages, extend_to_branches
from rlvr.learners.batch import micro_batch_rows
from rlvr.learners.logprobs import ResponseLogprobs
from rlvr.learners.losses import explained_variance, kl_penalty, policy_loss, tis_weights, value_loss
from rlvr.learners.packing import micro_batch_counts, pack, packed_micro_batches, padding_fraction, unpack_shifted


def lr_lambda(warmup: int, schedule: str, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        frac = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return 1.0 - frac
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * frac))
        return 1.0
    return f


def rng_state() -> dict:
    """Every RNG a learner step may draw from (python, numpy, torch CPU, and CUDA when in use)."""
    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class LearnerActor:
    def __init__(self, model_path: str, *, rank: int, world_size: int, learner: dict, algorithm: dict,
                 total_steps: int, micro_batches: int, seed: int = 0, dtype: str = "float32"):
        from rlvr.learners.config import AlgorithmConfig, LearnerConfig

        self.cfg = LearnerConfig.model_validate(learner)
        self.algo = AlgorithmConfig.model_validate(algorithm)
        self.rank, self.world_size = rank, world_size
        self.model_path, self.total_steps, self.micro_batches = model_path, total_steps, micro_batches
        self.seed, self.dtype_name = seed, dtype
        self.device = "cuda" if torch.cuda.is_available() and self.cfg.num_gpus > 0 else "cpu"

    def address(self) -> tuple[str, int]:
        """Rank 0's reachable IP and a free port: the rendezvous of the DeepSpeed group and of the weight sync."""
        from rlvr.weights.sync import free_port, node_ip

        return node_ip(), free_port()

    def setup(self, master_addr: str, master_port: int) -> None:
        """Join the DeepSpeed group (every rank at once) and build engine(s), optimizer(s) and reference."""
        rank, world_size, model_path, seed, dtype = self.rank, self.world_size, self.model_path, self.seed, self.dtype_name
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0",
                          MASTER_ADDR=master_addr, MASTER_PORT=str(master_port))
        if self.device == "cpu":
            os.environ["DS_ACCELERATOR"] = "cpu"
        torch.set_num_threads(self.cfg.threads or max(1, int(self.cfg.num_cpus)))
        import deepspeed
        from transformers import AutoModelForCausalLM

        self.ds = deepspeed
        deepspeed.init_distributed(dist_backend="gloo" if self.device == "cpu" else "nccl")
        torch.manual_seed(seed)
        self.dtype = getattr(torch, dtype)
        cfg = self.cfg
        attn = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=self.dtype, **attn)
        from rlvr.learners.fused import apply_fused_kernels, use_fused_kernels

        # Liger's kernels patch the model instance (RMSNorm, RoPE, SwiGLU); the LM head stays our chunked path.
        self.fused = use_fused_kernels(cfg.fused_kernels, self.device)
        if self.fused:
            apply_fused_kernels(model)
        if cfg.lora is not None:  # adapters only: the base weights are frozen and the optimizer never holds them
            from rlvr.learners.lora import apply_lora

            model = apply_lora(model, cfg.lora)
        self.engine, self.scheduler = self._engine(model, cfg.lr, cfg.warmup_steps)
        self.critic = self.critic_scheduler = None
        if self.algo.needs_critic:
            from rlvr.learners.critic import load_value_model

            warmup = cfg.warmup_steps if cfg.critic_warmup_steps is None else cfg.critic_warmup_steps
            value_model = load_value_model(model_path, self.dtype, **attn)
            if self.fused:
                apply_fused_kernels(value_model.backbone)
            self.critic, self.critic_scheduler = self._engine(value_model, cfg.critic_lr or cfg.lr, warmup)
        self.ref = None
        if self.algo.needs_reference:  # frozen copy for the KL term; never loaded when kl_coef is 0
            self.ref = AutoModelForCausalLM.from_pretrained(model_path, dtype=self.dtype, **attn).to(self.device).eval()
            self.ref.requires_grad_(False)
            if self.fused:
                apply_fused_kernels(self.ref)
        self.kl_coef = self.algo.kl_coef
        self.logprobs = ResponseLogprobs(cfg.logits_chunk_size, compile=cfg.compile)
        self.sync = None
        self.steps_done = 0

    def _engine(self, model, lr: float, warmup_steps: int):
        """A DeepSpeed engine (AdamW + LR schedule) for `model`; the policy and the critic each get one."""
        cfg = self.cfg
        # from_pretrained returns eval mode, in which HF skips gradient checkpointing; train mode
        # with dropout off (RL ratios compare passes, which must not differ by dropout noise).
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if cfg.compile:  # layer by layer: the LM head and the loss stay outside (ResponseLogprobs compiles its own kernel)
            for layer in model.get_decoder().layers:
                layer.compile()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, betas=cfg.betas,
                                weight_decay=cfg.weight_decay)
        optimizer_steps = self.total_steps * self.algo.ppo_epochs * self.algo.num_minibatches
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup_steps, cfg.lr_schedule, optimizer_steps))
        # Micro-batches per optimizer step are fixed by the recipe (prompts x n / ranks / minibatches / mbs),
        # which is what DeepSpeed's gradient_accumulation_steps needs to know up front.
        ds_config = {
            "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
            "gradient_accumulation_steps": self.micro_batches,
            "gradient_clipping": cfg.grad_clip,
            "zero_optimization": {"stage": cfg.zero_stage},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 10**9,
        }
        if self.dtype_name == "bfloat16":
            ds_config["bf16"] = {"enabled": True}
        engine, _, _, sched = self.ds.initialize(model=model, optimizer=opt, lr_scheduler=sched, config=ds_config)
        return engine, sched

    # ------------------------------------------------------------------ training

    def _micro_batch(self, batch: dict, rows, **per_position) -> dict:
        """`rows` (indices or a slice) on the device, cut after their longest sequence (right padding is
        wasted FLOPs): ids/attn [b, n] and each [B, L-1] tensor of `per_position` (None stays None) as [b, n-1].

        An empty `rows` (a packed plan's filler, so that every rank runs as many micro-batches) gives
        row 0 with `dummy` set: it runs through the model (ZeRO's collectives pair up) with no weight."""
        dummy = isinstance(rows, torch.Tensor) and rows.numel() == 0
        if dummy:
            rows = torch.zeros(1, dtype=torch.long)
        attn = batch["attention_mask"][rows]
        n = max(int(attn.sum(-1).max()), 2)
        mb = {"ids": batch["input_ids"][rows, :n].to(self.device), "attn": attn[:, :n].to(self.device), "dummy": dummy}
        mb.update({k: None if t is None else t[rows, :n - 1].to(self.device) for k, t in per_position.items()})
        return mb

    @torch.no_grad()
    def _no_grad_pass(self, fn, batch, micro_batches) -> torch.Tensor:
        """fn(ids, attn, mask) -> [b, n-1] per micro-batch, put back in place in a [B, L-1] CPU tensor."""
        out = torch.zeros(batch["response_mask"].shape)
        for rows in micro_batches:
            mb = self._micro_batch(batch, rows, mask=batch["response_mask"])
            part = fn(mb["ids"], mb["attn"], mb["mask"]).float().cpu()
            if not mb["dummy"]:
                out[rows, :part.shape[1]] = part
        return out

    def _logprobs(self, model, batch, micro_batches) -> torch.Tensor:
        packed = self.cfg.packing
        return self._no_grad_pass(lambda ids, attn, mask: self.logprobs(model, ids, attn, mask, batch["temperature"],
                                                                        packed=packed)[0],
                                  batch, micro_batches)

    def _values(self, critic, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """The critic's values [b, n-1]; with packing it runs the sequences as one packed row."""
        if not self.cfg.packing:
            return critic(input_ids=ids, attention_mask=attn)
        ids_p, pos_p = pack(ids, attn)
        return unpack_shifted(critic(input_ids=ids_p, attention_mask=None, position_ids=pos_p), attn)

    def _plan(self, batch: dict) -> list[list[torch.Tensor]]:
        """Row indices of each micro-batch, minibatch by minibatch. Packed: token-budget micro-batches,
        as many on every rank (the most any rank needs: under ZeRO-2/3 each forward/backward pairs
        up collectives across ranks), each balanced by tokens. Unpacked: `micro_batches` row-count
        micro-batches of similar lengths."""
        lengths = batch["attention_mask"].sum(-1)
        if not self.cfg.packing:
            return micro_batch_rows(lengths, self.algo.num_minibatches, self.micro_batches)
        lens = lengths.tolist()
        counts = micro_batch_counts(lens, self.algo.num_minibatches, self.cfg.max_tokens_per_micro_batch)
        if self.world_size > 1:
            t = torch.tensor(counts, device=self.device)
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
            counts = t.tolist()
        return packed_micro_batches(lens, self.algo.num_minibatches, self.cfg.max_tokens_per_micro_batch, counts)

    def _backward(self, engine, loss: torch.Tensor, units: float, units_total: float, last: bool) -> None:
        """Backward of one micro-batch's loss, scaled so the optimizer step sees the global aggregate.

        Packed plans vary in micro-batches per step, so the accumulation boundary is set here and the
        scale is exact without DeepSpeed's 1/gradient_accumulation_steps (DeepSpeed still averages ranks)."""
        if not self.cfg.packing:
            engine.backward(loss * self._loss_scale(units, units_total))
        else:
            engine.set_gradient_accumulation_boundary(last)
            engine.backward(loss * (units / max(units_total, 1e-8) * self.world_size), scale_wrt_gas=False)
        engine.step()

    def _sum_over_ranks(self, t: torch.Tensor) -> torch.Tensor:
        """t summed over the data-parallel ranks (batch-wide advantage whitening)."""
        out = t.to(self.device)  # NCCL reduces CUDA tensors only
        torch.distributed.all_reduce(out)
        return out.to(t.device)

    def _loss_scale(self, units: float, units_total: float) -> float:
        """A loss aggregated over one micro-batch, times this, summed over micro-batches and ranks
        (DeepSpeed divides by accumulation steps and averages ranks), is the global aggregate."""
        return units / max(units_total, 1e-8) * self.micro_batches * self.world_size

    def train_step(self, batch: dict) -> dict:
        """One RL step on this rank's shard: advantages, then PPO epochs over minibatches.

        batch: input_ids/attention_mask [B, L] (prompt+response, right-padded), response_mask and
        rollout_logprobs [B, L-1] (aligned with the predicted token), rewards [B], group_size,
        temperature, and global counts (`total_tokens`, `total_sequences`) for exact loss scaling
        across micro-batches and ranks.
        """
        t0 = time.perf_counter()
        algo = self.algo
        mask = batch["response_mask"].float()
        minibatches = self._plan(batch)
        mbs = [rows for minibatch in minibatches for rows in minibatch]
        need_old = algo.ppo_epochs > 1 or algo.num_minibatches > 1
        old_lp = self._logprobs(self.engine.module, batch, mbs) if need_old else None
        ref_lp = self._logprobs(self.ref, batch, mbs) if self.ref is not None else None
        # The critic's values before this step's updates: GAE's baseline and the value clip's centre.
        old_values = (self._no_grad_pass(lambda ids, attn, _: self._values(self.critic.module, ids, attn), batch, mbs)
                      if self.critic is not None else None)
        token_rewards = None
        if ref_lp is not None and algo.kl_in_reward:
            token_rewards = -self.kl_coef * kl_penalty(batch["rollout_logprobs"], ref_lp, algo.kl_estimator) * mask
        # Rows past the group-shaped ones are agents' branches: they share their source row's advantage.
        main = batch["rewards"].shape[0] - len(batch.get("extra_of", ()))
        adv, returns = compute_advantages(algo.advantage, batch["rewards"][:main].float(), mask[:main], batch["group_size"],
                                          values=None if old_values is None else old_values[:main],
                                          token_rewards=None if token_rewards is None else token_rewards[:main],
                                          gamma=algo.gamma, lam=algo.lam,
                                          all_reduce=self._sum_over_ranks if self.world_size > 1 else None)
        if main < mask.shape[0]:
            adv, returns = extend_to_branches(adv, returns, mask, batch["extra_of"])
        units_total = batch["total_tokens"] if algo.loss_agg == "token-mean" else batch["total_sequences"]
        # Dr. GRPO's default denominator is the padded length: the batch's, not each trimmed micro-batch's.
        agg_constant = algo.loss_agg_constant or float(mask.shape[1])
        sums: dict[str, float] = {}
        n_metric = 0
        for _ in range(algo.ppo_epochs):
            for minibatch in minibatches:
                for i, rows in enumerate(minibatch):
                    mb = self._micro_batch(batch, rows, mask=mask, adv=adv, old_lp=old_lp, ref_lp=ref_lp,
                                           rollout=batch["rollout_logprobs"], old_values=old_values, returns=returns)
                    mb["last"] = i == len(minibatch) - 1
                    metrics = self._micro_step(mb, batch["temperature"], units_total / algo.num_minibatches, agg_constant)
                    if self.critic is not None:
                        metrics.update(self._critic_micro_step(mb, batch["total_tokens"] / algo.num_minibatches))
                    if mb["dummy"]:
                        continue
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + v
                    n_metric += 1
        out = {k: v / max(1, n_metric) for k, v in sums.items()}
        grad_norm = self.engine.get_global_grad_norm()
        out["policy/grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
        out["policy/lr"] = self.scheduler.get_last_lr()[0]
        if self.critic is not None:
            grad_norm = self.critic.get_global_grad_norm()
            out["critic/grad_norm"] = float(grad_norm) if grad_norm is not None else float("nan")
            out["critic/lr"] = self.critic_scheduler.get_last_lr()[0]
            out["value/explained_variance"] = float(explained_variance(old_values, returns, mask))
            out["value/return_mean"] = float((returns * mask).sum() / mask.sum().clamp(min=1))
        mb_lengths = [batch["attention_mask"][rows].sum(-1).tolist() for rows in mbs if len(rows)]
        out["learner/tokens"] = float(sum(map(sum, mb_lengths)))  # this rank's; the controller compares ranks
        out["learner/micro_batches"] = float(len(mbs))
        out["learner/filler_micro_batches"] = float(sum(len(rows) == 0 for rows in mbs))
        out["learner/padding_frac"] = padding_fraction(mb_lengths, self.cfg.packing)
        out["time/learner_compute"] = time.perf_counter() - t0
        self.steps_done += 1
        return out

    def _micro_step(self, mb: dict, temperature: float, units_total: float, agg_constant: float) -> dict:
        algo = self.algo
        mask_d, adv_d, rollout = mb["mask"], mb["adv"], mb["rollout"]
        lp, ent = self.logprobs(self.engine, mb["ids"], mb["attn"], mask_d, temperature, with_entropy=True,
                                entropy_grad=algo.entropy_coef != 0, packed=self.cfg.packing)
        old = mb["old_lp"] if mb["old_lp"] is not None else lp.detach()
        # Truncated IS against the engine's sampling log-probs: stale samples (async) and vLLM-vs-learner drift.
        is_weights = tis_weights(algo.tis_cap, old, rollout, mask_d)
        loss, metrics = policy_loss(algo.policy_loss, lp, old, adv_d, mask_d, clip_low=algo.clip_low,
                                    clip_high=algo.clip_high, clip_c=algo.clip_c, agg=algo.loss_agg,
                                    agg_constant=agg_constant, is_weights=is_weights)
        n_tok = mask_d.sum().clamp(min=1)
        entropy = (ent * mask_d).sum() / n_tok
        if algo.entropy_coef:
            loss = loss - algo.entropy_coef * entropy
        kl_val = torch.zeros(())
        if mb["ref_lp"] is not None:
            kl_tok = kl_penalty(lp, mb["ref_lp"], algo.kl_estimator)
            kl_val = (kl_tok * mask_d).sum() / n_tok
            if not algo.kl_in_reward:
                loss = loss + self.kl_coef * kl_val
        units = mask_d.sum().item() if algo.loss_agg == "token-mean" else float(mask_d.shape[0])
        self._backward(self.engine, loss, 0.0 if mb["dummy"] else units, units_total, mb.get("last", True))
        drift = ((lp.detach() - rollout).abs() * mask_d).sum() / n_tok
        out = {"loss/policy": loss.item(), "entropy": entropy.item(), "kl": kl_val.item(), "drift/abs_logprob_diff": drift.item()}
        if is_weights is not None:
            out["policy/tis_weight_mean"] = (is_weights.sum() / n_tok).item()
        out.update({k: float(v) for k, v in metrics.items()})
        return out

    def _critic_micro_step(self, mb: dict, tokens_total: float) -> dict:
        """Value loss on one micro-batch; a token-mean whatever loss_agg is (each token's return is one
        regression target), scaled to the global token mean like the policy loss."""
        algo = self.algo
        mask_d = mb["mask"]
        values = self._values(self.critic, mb["ids"], mb["attn"])
        loss, metrics = value_loss(values, mb["old_values"], mb["returns"], mask_d, clip=algo.value_clip)
        loss = algo.vf_coef * loss
        self._backward(self.critic, loss, 0.0 if mb["dummy"] else mask_d.sum().item(), tokens_total, mb.get("last", True))
        out = {"loss/value": loss.item()}
        out.update({k: float(v) for k, v in metrics.items()})
        return out

    # ------------------------------------------------------------------ weights out

    def _full_params(self, bucket_bytes: int, engine=None, params=None) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, full tensor) in order. Under ZeRO-3 every rank must iterate: gathers are collective."""
        params = params if params is not None else list((engine or self.engine).module.named_parameters())
        if self.cfg.zero_stage != 3:
            yield from params
            return
        bucket, size = [], 0
        for name, p in params + [(None, None)]:
            if p is not None:
                bucket.append((name, p))
                size += p.ds_numel * p.element_size()
            if bucket and (p is None or size >= bucket_bytes):
                with self.ds.zero.GatheredParameters([q for _, q in bucket]):
                    yield from bucket
                bucket, size = [], 0

    def _synced(self) -> list[tuple[str, torch.Tensor]]:
        """(name sent, parameter) of what a weight sync carries: every weight, or with LoRA only the adapters
        (the engines load the frozen base from the same checkpoint), under peft's names."""
        params = list(self.engine.module.named_parameters())
        if self.cfg.lora is None:
            return params
        from rlvr.weights.adapter import adapter_name, is_adapter, merged_state

        if self.cfg.lora.sync == "merged":  # the engines serve a plain model: send W + B A * alpha / r
            from rlvr.learners.lora import adapter_config_dict

            with torch.no_grad():
                return list(merged_state(dict(params), adapter_config_dict(self.engine.module)).items())
        return [(adapter_name(n), p) for n, p in params if is_adapter(n)]

    def _merged_shapes(self) -> list[tuple[str, torch.Tensor]]:
        """A merged sync's names in order, each with the base tensor whose shape and dtype it sends (no merging)."""
        from rlvr.weights.adapter import base_name, is_adapter

        return [(base_name(n), p) for n, p in self.engine.module.named_parameters() if not is_adapter(n)]

    def weight_specs(self) -> list[tuple]:
        specs = []
        params = self._synced() if self.cfg.lora is None or self.cfg.lora.sync == "adapter" else self._merged_shapes()
        for name, p in params:
            shape = tuple(p.ds_shape) if hasattr(p, "ds_shape") else tuple(p.shape)
            specs.append((name, str(p.dtype).removeprefix("torch."), shape))
        return specs

    def adapter_config(self) -> dict | None:
        """adapter_config.json's content (None without LoRA, or when syncs send merged weights): the engines
        write it beside the received tensors."""
        if self.cfg.lora is None or self.cfg.lora.sync == "merged":
            return None
        from rlvr.learners.lora import adapter_config_dict

        return adapter_config_dict(self.engine.module)

    def trainable_parameters(self) -> int:
        return sum(int(getattr(p, "ds_numel", p.numel())) for p in self.engine.module.parameters() if p.requires_grad)

    def init_weight_sync(self, host: str, port: int, world_size: int, backend: str = "gloo") -> None:
        """Rank 0 roots the broadcast to every engine; under cuda_ipc every rank feeds its colocated engine."""
        if self.rank == 0 or backend == "cuda_ipc":
            from rlvr.weights.sync import WeightSyncGroup

            self.sync = WeightSyncGroup(host, port, 0, world_size, backend, device=self.device)

    def close_weight_sync(self) -> None:
        """Leave the broadcast group (a rollout engine died: the controller forms a new one)."""
        if self.sync is not None:
            self.sync.close()
            self.sync = None

    def send_weights(self, bucket_bytes: int) -> dict:
        t0 = time.perf_counter()
        sent = 0
        stream = self._full_params(bucket_bytes, params=self._synced())
        if self.sync is not None:
            sent = self.sync.send(stream, bucket_bytes)
        else:
            for _ in stream:  # take part in the ZeRO-3 gathers
                pass
        return {"bytes": sent, "seconds": time.perf_counter() - t0}

    # ------------------------------------------------------------------ saving

    def save_pretrained(self, path: str) -> None:
        """Plain Hugging Face checkpoint (with tokenizer) of the current policy, from rank 0."""
        state = self.full_state()
        if self.rank == 0:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if self.cfg.lora is None:
                self.engine.module.save_pretrained(path, state_dict=state, safe_serialization=True)
            else:  # the adapters folded in (a plain checkpoint), and the adapter itself in path/adapter (peft)
                from rlvr.weights.adapter import adapter_name, is_adapter, merged_state, write_adapter

                from rlvr.learners.lora import adapter_config_dict

                config = adapter_config_dict(self.engine.module)
                plain = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype)
                plain.load_state_dict(merged_state(state, config), strict=False)
                plain.save_pretrained(path, safe_serialization=True)
                write_adapter(Path(path) / "adapter", {adapter_name(n): t for n, t in state.items() if is_adapter(n)}, config)
            AutoTokenizer.from_pretrained(self.model_path).save_pretrained(path)

    def save_checkpoint(self, path: str, client_state: dict) -> None:
        """Everything a resumed run needs to continue exactly (all ranks call it, with the same path):
        path/policy and path/critic (DeepSpeed: weights, optimizer, LR schedule, step counters) and
        path/learner_rank<r>.pt (this rank's RNG states and step count)."""
        # save_latest=False: the tag is fixed, and DeepSpeed's 'latest' pointer file would be pointless.
        # Under one key: DeepSpeed hands back its own bookkeeping beside the client state on load.
        self.engine.save_checkpoint(path, tag="policy", client_state={"rlvr": client_state}, save_latest=False)
        if self.critic is not None:
            self.critic.save_checkpoint(path, tag="critic", save_latest=False)
        torch.save({"rng": rng_state(), "steps_done": self.steps_done, "kl_coef": self.kl_coef},
                   Path(path) / f"learner_rank{self.rank}.pt")

    def load_checkpoint(self, path: str) -> dict:
        """Restore what save_checkpoint wrote; returns its client_state."""
        _, client_state = self.engine.load_checkpoint(path, tag="policy")
        if self.critic is not None:
            if not (Path(path) / "critic").is_dir():
                raise FileNotFoundError(f"{path} has no critic checkpoint (was it saved by a run without advantage gae?)")
            self.critic.load_checkpoint(path, tag="critic")
        extra = torch.load(Path(path) / f"learner_rank{self.rank}.pt", weights_only=False)  # our own file: numpy RNG state
        self.steps_done, self.kl_coef = extra["steps_done"], extra["kl_coef"]
        set_rng_state(extra["rng"])
        return (client_state or {}).get("rlvr", {})

    def full_state(self) -> dict[str, torch.Tensor]:
        """Every parameter, gathered (all ranks must call under ZeRO-3); for tests and tools."""
        return {name: t.detach().cpu().clone() for name, t in self._full_params(1 << 28)}

    def critic_state(self) -> dict[str, torch.Tensor]:
        """Every critic parameter, gathered like full_state (empty without a critic)."""
        if self.critic is None:
            return {}
        return {name: t.detach().cpu().clone() for name, t in self._full_params(1 << 28, self.critic)}

    def fingerprint(self) -> float:
        with torch.no_grad():
            ctx = self.ds.zero.GatheredParameters(list(self.engine.module.parameters())) if self.cfg.zero_stage == 3 else nullcontext()
            with ctx:
                return float(sum(p.double().abs().sum() for p in self.engine.module.parameters()))
