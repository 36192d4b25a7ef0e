"""`rlvr bench learner`: the learner's training throughput, alone.

Builds one LearnerActor in this process (no Ray, no vLLM; DeepSpeed with world size 1) for a
randomly initialised model of a named shape (or a checkpoint), feeds it a synthetic RL batch
(random prompt and response token ids, 0/1 rewards, rollout log-probs) through the same
`build_batch` the controller uses, and times `train_step` after warm-up. It prints learner
tokens/s (prompt + response tokens through the model) and samples/s, the padding fraction of the
token slots the model computed (about 0 with --packing), the micro-batches' token imbalance and
the rank imbalance the batch would have over --ranks data-parallel ranks (max/mean tokens per
rank: contiguous group shards unpacked, token-balanced ones packed; the bench itself runs one
rank), peak memory; on CUDA also MFU:

    MFU = model FLOPs per step * steps / seconds / peak dense bf16 FLOP/s of the GPU

Model FLOPs, per sequence of T real tokens of which R are response tokens (padding is wasted
work, so it lowers MFU):

    forward  = 2*(N - V*d)*T + 2*V*d*R + 4*n_layers*n_heads*head_dim*T^2
    training = 3 * forward                                   (backward = 2 forwards)

  * N: the parameters that multiply activations: all of them except the input embedding table
    (a lookup), the output projection counted once even when tied to it (norms and biases are
    included; they are negligible).
  * V*d, the LM head, is counted on the R response positions only: the learner never computes
    prompt-token logits (nothing reads them; rlvr/learners/logprobs.py), so they are not needed
    FLOPs.
  * the T^2 term is attention's QK^T and AV, over the full T x T scores (no causal halving),
    as in PaLM's MFU (Chowdhery et al. 2022, appendix B).
  * one train step is `training` per PPO epoch, plus one `forward` each for the old log-probs
    (when ppo_epochs > 1 or num_minibatches > 1) and the reference (kl_coef > 0); with
    advantage gae the critic likewise (one `training` per epoch plus one `forward` for the old
    values), its N being the backbone's matmuls plus the value head.
  * gradient-checkpointing recompute is not counted: it is hardware, not model, FLOPs.

Nothing here imports ray or vllm (the GPU machine that runs this may have neither).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from dataclasses import dataclass

# Peak dense (no sparsity) bf16 tensor-core FLOP/s by device name, from the vendor data sheets;
# the first substring found in torch.cuda.get_device_name() wins, so the specific names come first.
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    ("GH200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
]

# Qwen2.5-0.5B's published config (494,032,768 parameters, tied embeddings).
QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False)
# Qwen2.5-1.5B's published config (1,543,714,304 parameters, tied embeddings).
QWEN25_15B = dict(QWEN25_05B, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                  num_key_value_heads=2)
# SmolLM2-135M's (134,515,008 parameters, tied; Llama architecture): the CPU recipe's policy.
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, head_dim=64, max_position_embeddings=8192, rope_theta=100000.0,
                    rms_norm_eps=1e-5, tie_word_embeddings=True)
SHAPES = ("toy", "qwen2.5-0.5b", "qwen2.5-1.5b", "smollm2-135m")
# (prompts, prompt tokens, response tokens, micro-batch) when not given: the toy's context is
# 64 tokens and its default run must stay short on a CPU; smollm2-135m is the CPU recipe's step
# (8 prompts x 4, micro-batch 8, up to 128 response tokens); None is for --model.
SHAPE_DEFAULTS = {"toy": (16, 16, 16, 128), "qwen2.5-0.5b": (32, 256, 768, 8), "qwen2.5-1.5b": (32, 256, 768, 8),
                  "smollm2-135m": (8, 96, 128, 8), None: (32, 256, 768, 8)}


def peak_flops(device_name: str) -> float | None:
    """Peak dense bf16 FLOP/s of a GPU by its name, or None when the table does not know it."""
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


@dataclass(frozen=True)
class ModelShape:
    n_params: int  # unique parameters (a tied embedding counted once)
    vocab_size: int
    hidden_size: int
    n_layers: int
    n_heads: int
    head_dim: int
    tied: bool

    @classmethod
    def from_config(cls, config, n_params: int) -> "ModelShape":
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(n_params, config.vocab_size, config.hidden_size, config.num_hidden_layers,
                   config.num_attention_heads, head_dim, bool(getattr(config, "tie_word_embeddings", False)))

    @property
    def policy_matmul_params(self) -> int:
        """N of the policy: everything but the input embedding lookup (the LM head stays)."""
        embedding = self.vocab_size * self.hidden_size
        return self.n_params if self.tied else self.n_params - embedding

    @property
    def critic_matmul_params(self) -> int:
        """N of the critic: the policy's matmuls without the LM head, plus the value head (d + 1)."""
        return self.policy_matmul_params - self.vocab_size * self.hidden_size + self.hidden_size + 1


def forward_flops(seq_lens, n_matmul_params: int, n_layers: int, n_heads: int, head_dim: int,
                  head_params: int = 0, head_rows=None) -> float:
    """Model FLOPs of one forward pass over sequences of these lengths (see the module docstring);
    `head_params` of the N (the LM head) run on head_rows[i] positions of sequence i only."""
    head_rows = head_rows if head_rows is not None else seq_lens
    return float(sum(2 * (n_matmul_params - head_params) * T + 2 * head_params * R + 4 * n_layers * n_heads * head_dim * T * T
                     for T, R in zip(seq_lens, head_rows, strict=True)))


def train_step_flops(seq_lens, response_lens, shape: ModelShape, algo) -> float:
    """Model FLOPs of one LearnerActor.train_step on these sequences under AlgorithmConfig `algo`."""
    dims = (shape.n_layers, shape.n_heads, shape.head_dim)
    policy = forward_flops(seq_lens, shape.policy_matmul_params, *dims, shape.vocab_size * shape.hidden_size, response_lens)
    passes = 3 * algo.ppo_epochs + (1 if algo.ppo_epochs > 1 or algo.num_minibatches > 1 else 0) + (1 if algo.needs_reference else 0)
    total = passes * policy
    if algo.needs_critic:
        total += (3 * algo.ppo_epochs + 1) * forward_flops(seq_lens, shape.critic_matmul_params, *dims)
    return total


def synthetic_batch(n_prompts: int, group_size: int, prompt_len: int, response_len: int, vocab_size: int, seed: int = 0,
                    min_response_len: int | None = None) -> dict:
    """A learner batch of random token ids with the controller's layout (rlvr.learners.batch.build_batch)."""
    import torch

    from rlvr.learners.batch import build_batch

    g = torch.Generator().manual_seed(seed)
    prompts, responses = [], []
    for _ in range(n_prompts):
        p = torch.randint(1, vocab_size, (prompt_len,), generator=g).tolist()
        prompts += [p] * group_size
        for _ in range(group_size):  # lengths uniform in [min_response_len, response_len] when given
            n = response_len if min_response_len is None else int(torch.randint(min_response_len, response_len + 1, (), generator=g))
            responses.append(torch.randint(1, vocab_size, (n,), generator=g).tolist())
    rewards = torch.randint(0, 2, (len(responses),), generator=g).float().tolist()
    logprobs = [[-1.0] * len(r) for r in responses]
    return build_batch(prompts, responses, logprobs, rewards, group_size=group_size, pad_id=0, temperature=1.0)


def _random_model(shape_name: str, out_dir: str, dtype, device: str) -> None:
    """Write a randomly initialised checkpoint of a named shape (LearnerActor loads from disk)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if shape_name == "toy":
        from rlvr.toy_model import build_model, build_tokenizer

        model = build_model(build_tokenizer())
    elif shape_name == "smollm2-135m":
        from transformers import LlamaConfig, LlamaForCausalLM

        with torch.device(device):
            model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M))
    else:
        with torch.device(device):  # a 0.5B random init is far quicker on the GPU
            model = Qwen2ForCausalLM(Qwen2Config(**(QWEN25_05B if shape_name == "qwen2.5-0.5b" else QWEN25_15B)))
    model.to(dtype).save_pretrained(out_dir)


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("bench learner")
    g.add_argument("--shape", choices=SHAPES, default="toy", help="random-initialised model shape (default toy)")
    g.add_argument("--model", metavar="PATH", help="a Hugging Face checkpoint instead of --shape")
    g.add_argument("--steps", type=int, default=5, help="timed train steps (default 5)")
    g.add_argument("--warmup", type=int, default=1, help="untimed train steps first (default 1)")
    g.add_argument("--prompts", type=int, help="prompts per step (default: toy 16, else 32)")
    g.add_argument("--group-size", type=int, default=8, help="responses per prompt (default 8)")
    g.add_argument("--prompt-len", type=int, help="prompt tokens (default: toy 16, else 256)")
    g.add_argument("--response-len", type=int, help="response tokens (default: toy 16, else 768)")
    g.add_argument("--min-response-len", type=int, help="response lengths uniform from this to --response-len (default: all equal)")
    g.add_argument("--micro-batch", type=int, help="sequences per forward/backward (default: toy 128, else 8)")
    g.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in backward")
    g.add_argument("--compile", action="store_true", help="torch.compile the decoder layers and the log-prob kernel")
    g.add_argument("--logits-chunk", type=int, default=2048, help="response tokens per LM-head chunk (default 2048)")
    g.add_argument("--zero-stage", type=int, choices=[0, 1, 2, 3], default=2, help="DeepSpeed ZeRO stage (default 2)")
    g.add_argument("--packing", action="store_true", help="padding-free packed micro-batches of --max-tokens tokens (learner.packing)")
    g.add_argument("--max-tokens", type=int, help="token budget of a packed micro-batch (default: --micro-batch x the longest sequence)")
    g.add_argument("--fused-kernels", choices=["auto", "on", "off"], default="auto", help="Liger kernels (learner.fused_kernels; default auto)")
    g.add_argument("--attn", choices=["sdpa", "eager", "flash_attention_2", "flex_attention"], help="learner.attn_implementation (default: transformers' choice)")
    g.add_argument("--ranks", type=int, default=2, help="data-parallel ranks the rank imbalance is computed for (default 2)")
    g.add_argument("--advantage", default="grpo", help="algorithm.advantage; gae also trains a critic (default grpo)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: cuda when available")
    g.add_argument("--dtype", choices=["bfloat16", "float32"], help="default: bfloat16 on cuda, float32 on cpu")
    g.add_argument("--peak-tflops", type=float, help="the GPU's peak dense bf16 TFLOP/s for MFU (default: by device name)")


def run(args) -> dict:
    """Run the benchmark described by parsed `args`; print the figures and return them."""
    import torch

    from rlvr.weights.sync import free_port
    from rlvr.learners.actor import LearnerActor

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("rlvr: error: --device cuda but torch sees no GPU")
    dtype_name = args.dtype or ("bfloat16" if device == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)
    prompts, prompt_len, response_len, micro = SHAPE_DEFAULTS[None if args.model else args.shape]
    prompts, prompt_len, response_len = args.prompts or prompts, args.prompt_len or prompt_len, args.response_len or response_len
    micro = args.micro_batch or micro
    if args.min_response_len is not None and not 1 <= args.min_response_len <= response_len:
        raise SystemExit(f"rlvr: error: --min-response-len must be between 1 and the response length ({response_len})")
    batch_size = prompts * args.group_size
    micro_batches = math.ceil(batch_size / micro)
    # The same memory as a padded micro-batch of the longest sequences, unless told otherwise.
    max_tokens = args.max_tokens or min(micro, batch_size) * (prompt_len + response_len)
    learner_cfg = {"zero_stage": args.zero_stage, "lr": 1e-6, "micro_batch_size": min(micro, batch_size),
                   "gradient_checkpointing": args.gradient_checkpointing, "num_gpus": 1 if device == "cuda" else 0,
                   "compile": args.compile, "logits_chunk_size": args.logits_chunk,
                   "threads": os.cpu_count() or 1, "packing": args.packing, "max_tokens_per_micro_batch": max_tokens,
                   "fused_kernels": args.fused_kernels, "attn_implementation": args.attn}
    total_steps = args.warmup + args.steps
    with tempfile.TemporaryDirectory(prefix="rlvr-bench-") as tmp:
        model_path = args.model
        if model_path is None:
            model_path = tmp
            _random_model(args.shape, tmp, dtype, device)
        learner = LearnerActor(model_path, rank=0, world_size=1, learner=learner_cfg, algorithm={"advantage": args.advantage},
                               total_steps=total_steps, micro_batches=micro_batches, dtype=dtype_name)
        learner.setup("127.0.0.1", free_port())
    module = learner.engine.module
    config = module.config
    n_params = sum(getattr(p, "ds_numel", p.numel()) for p in module.parameters())
    shape = ModelShape.from_config(config, n_params)
    batch = synthetic_batch(prompts, args.group_size, prompt_len, response_len, shape.vocab_size,
                            min_response_len=args.min_response_len)
    seq_lens = batch["attention_mask"].sum(-1).tolist()
    response_lens = batch["response_mask"].sum(-1).long().tolist()
    tokens = sum(seq_lens)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        learner.train_step(batch)
    stats = {}
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        stats = learner.train_step(batch)
    sync()
    seconds = time.perf_counter() - t0
    plan = learner._plan(batch)
    mb_tokens = [int(batch["attention_mask"][rows].sum()) for minibatch in plan for rows in minibatch if len(rows)]
    from rlvr.learners.batch import shard_by_groups
    from rlvr.learners.partition import imbalance

    ranks = max(1, min(args.ranks, prompts))
    rank_tokens = [float(s["attention_mask"].sum()) for s in shard_by_groups(batch, ranks, balance_tokens=args.packing)]

    flops = train_step_flops(seq_lens, response_lens, shape, learner.algo) * args.steps
    res = {"device": device, "dtype": dtype_name, "params": n_params, "tokens_per_step": tokens,
           "seconds_per_step": seconds / args.steps, "tokens_per_s": tokens * args.steps / seconds,
           "samples_per_s": batch_size * args.steps / seconds, "model_flops_per_s": flops / seconds,
           "padding_frac": stats.get("learner/padding_frac", float("nan")), "micro_batches": len(mb_tokens),
           "micro_batch_imbalance": imbalance(mb_tokens), "rank_imbalance": imbalance(rank_tokens)}
    name = args.model or args.shape
    print(f"learner bench: {name} ({n_params / 1e6:.2f}M params, {shape.n_layers} layers, attention "
          f"{getattr(config, '_attn_implementation', '?')}), {device} {dtype_name}, ZeRO-{args.zero_stage}, "
          f"advantage {args.advantage}{', gradient checkpointing' if args.gradient_checkpointing else ''}"
          f"{', compiled' if args.compile else ''}{', fused kernels' if learner.fused else ''}, "
          f"LM head in chunks of {args.logits_chunk} tokens")
    responses = f"{response_len}" if args.min_response_len is None else f"{args.min_response_len}..{response_len}"
    print(f"  batch: {prompts} prompts x {args.group_size} = {batch_size} sequences of {prompt_len} + {responses} "
          f"tokens, " + (f"packed micro-batches of <= {max_tokens} tokens ({len(mb_tokens)} per step)" if args.packing
                         else f"micro-batch {micro} ({micro_batches} per step)"))
    print(f"  padding {res['padding_frac']:.1%} of computed token slots, micro-batch imbalance "
          f"{res['micro_batch_imbalance']:.2f}, rank imbalance {res['rank_imbalance']:.2f} over {ranks} ranks (max/mean tokens)")
    print(f"  step time {res['seconds_per_step']:.3f} s (mean of {args.steps} after {args.warmup} warm-up)")
    print(f"  learner tokens/s {res['tokens_per_s']:,.0f}   samples/s {res['samples_per_s']:,.1f}")
    print(f"  model FLOPs {flops / args.steps:.3e} per step, {res['model_flops_per_s'] / 1e12:.3f} TFLOP/s achieved")
    if device == "cpu":
        import resource

        res["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        print(f"  peak resident memory {res['peak_rss_gib']:.2f} GiB (the whole process)")
    if device == "cuda":
        gpu = torch.cuda.get_device_name()
        peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(gpu)
        res["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        print(f"  peak GPU memory {res['peak_memory_gib']:.1f} GiB")
        if peak:
            res["mfu"] = res["model_flops_per_s"] / peak
            print(f"  MFU {res['mfu']:.1%} of {peak / 1e12:.0f} TFLOP/s peak dense bf16 ({gpu})")
        else:
            print(f"  MFU: peak FLOP/s of {gpu!r} unknown; pass --peak-tflops")
    return res


def main(args) -> int:
    import torch

    run(args)
    if torch.distributed.is_initialized():  # NCCL warns about leaked resources otherwise
        torch.distributed.destroy_process_group()
    return 0
