"""Weight-sync throughput: learner -> one receiver over the real WeightSyncGroup, two processes.

The tensors have the shapes of a Qwen2-style decoder (embedding, per-layer attention with
biases and grouped KV heads, gated MLP, norms) with as many layers as fill ``total_bytes``.
The sender sends them, the receiver copies what arrives into preallocated tensors (as vLLM
loads weights into its parameters); GB/s is bytes over the sender's wall time from a shared
start until the receiver has finished, median of ``repeats`` after one warm-up.

Imports only torch at module level: bench/gpu_transports.py uses it on machines without Ray or vLLM.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import statistics
import time

import torch

from rlvr.weights.sync import TensorSpec, WeightSyncGroup, free_port


def qwen2_like_specs(total_bytes: int, dtype: str = "bfloat16") -> list[TensorSpec]:
    """Qwen2-0.5B shapes (hidden 896, 14 heads / 2 KV heads, MLP 4864), as many layers as fill total_bytes.

    Small totals shrink the widths by halves so that at least two layers fit (tests use a few MiB).
    """
    item = getattr(torch, dtype).itemsize
    hidden, inter, kv, vocab = 896, 4864, 128, 151936

    def layer(i: int, h: int, m: int, k: int) -> list[TensorSpec]:
        p = f"model.layers.{i}."
        shapes = [("self_attn.q_proj.weight", (h, h)), ("self_attn.q_proj.bias", (h,)),
                  ("self_attn.k_proj.weight", (k, h)), ("self_attn.k_proj.bias", (k,)),
                  ("self_attn.v_proj.weight", (k, h)), ("self_attn.v_proj.bias", (k,)),
                  ("self_attn.o_proj.weight", (h, h)), ("mlp.gate_proj.weight", (m, h)),
                  ("mlp.up_proj.weight", (m, h)), ("mlp.down_proj.weight", (h, m)),
                  ("input_layernorm.weight", (h,)), ("post_attention_layernorm.weight", (h,))]
        return [TensorSpec(p + n, dtype, s) for n, s in shapes]

    def nbytes(specs: list[TensorSpec]) -> int:
        return sum(s.nbytes for s in specs)

    while hidden > 8 and 2 * nbytes(layer(0, hidden, inter, kv)) > total_bytes:
        hidden, inter, kv = hidden // 2, inter // 2, max(2, kv // 2)
    # The embedding takes at most a quarter, as in the 0.5B model (136M of 494M parameters).
    vocab = max(16, min(vocab, total_bytes // 4 // (hidden * item)))
    specs = [TensorSpec("model.embed_tokens.weight", dtype, (vocab, hidden))]
    per_layer = nbytes(layer(0, hidden, inter, kv))
    for i in range(max(1, (total_bytes - nbytes(specs)) // per_layer)):
        specs += layer(i, hidden, inter, kv)
    specs.append(TensorSpec("model.norm.weight", dtype, (hidden,)))
    return specs


# SmolLM2-135M (Llama-style: no biases, tied embedding): hidden, MLP, layers, KV width, vocabulary.
SMOLLM2 = dict(hidden=576, inter=1536, layers=30, kv=192, vocab=49152)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def smollm2_specs(dtype: str = "bfloat16", lora_rank: int | None = None) -> list[TensorSpec]:
    """What one sync of a SmolLM2-135M policy carries: every weight, or with `lora_rank` only the adapters
    (A: rank x in, B: out x rank) on every attention and MLP projection, as learner.lora's defaults."""
    h, m, kv = SMOLLM2["hidden"], SMOLLM2["inter"], SMOLLM2["kv"]
    proj = {"q_proj": (h, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, h),
            "gate_proj": (m, h), "up_proj": (m, h), "down_proj": (h, m)}  # (out, in)
    specs = [] if lora_rank else [TensorSpec("model.embed_tokens.weight", dtype, (SMOLLM2["vocab"], h))]
    for i in range(SMOLLM2["layers"]):
        for name, (out, inp) in proj.items():
            where = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            p = f"model.layers.{i}.{where}.{name}"
            if lora_rank:
                specs += [TensorSpec(f"base_model.model.{p}.lora_A.weight", dtype, (lora_rank, inp)),
                          TensorSpec(f"base_model.model.{p}.lora_B.weight", dtype, (out, lora_rank))]
            else:
                specs.append(TensorSpec(p + ".weight", dtype, (out, inp)))
        if not lora_rank:
            specs += [TensorSpec(f"model.layers.{i}.input_layernorm.weight", dtype, (h,)),
                      TensorSpec(f"model.layers.{i}.post_attention_layernorm.weight", dtype, (h,))]
    if not lora_rank:
        specs.append(TensorSpec("model.norm.weight", dtype, (h,)))
    return specs


def _fill(spec: TensorSpec, index: int, device) -> torch.Tensor:
    """Deterministic bit patterns (NaNs and all) both sides can regenerate: exactness is checked bitwise."""
    ints = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[spec.torch_dtype.itemsize]
    x = torch.arange(spec.numel, dtype=torch.int32, device=device).mul_(40503).add_(index * 7919)
    return x.to(ints).view(spec.torch_dtype).view(spec.shape)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _device_for(backend: str, rank: int) -> str:
    if backend == "gloo":
        return "cpu"
    return f"cuda:{rank if backend == 'nccl' else 0}"  # cuda_ipc: both on one GPU, as colocated


def _worker(rank: int, port: int, specs: list[TensorSpec], backend: str, bucket_bytes: int, repeats: int,
            verify: bool, torch_only: bool, threads: int, q) -> None:
    try:
        torch.set_num_threads(threads)
        device = _device_for(backend, rank)
        if device != "cpu":
            torch.cuda.set_device(device)
        pg = None
        if torch_only:  # no vLLM here: a plain default group stands in for the stateless one
            import torch.distributed as dist

            dist.init_process_group("nccl" if backend == "nccl" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                                    rank=rank, world_size=2)
            pg = dist.distributed_c10d._get_default_group()
        g = WeightSyncGroup("127.0.0.1", port, rank, 2, backend, device=device, timeout_s=300, pg=pg)
        if rank == 0:
            tensors = [(s.name, _fill(s, i, device)) for i, s in enumerate(specs)]
        else:
            params = {s.name: torch.empty(s.shape, dtype=s.torch_dtype, device=device) for s in specs}
        seconds = []
        for _ in range(repeats + 1):  # the first is a warm-up (page faults, allocator, connections)
            g.barrier()
            t0 = time.perf_counter()
            if rank == 0:
                g.send(tensors, bucket_bytes)
            else:
                for name, t in g.receive(specs, bucket_bytes):
                    params[name].copy_(t)
            g.barrier()
            seconds.append(time.perf_counter() - t0)
        exact = None
        if verify and rank == 1:
            exact = all(torch.equal(_bits(params[s.name]), _bits(_fill(s, i, device))) for i, s in enumerate(specs))
        q.put((rank, seconds[1:], exact, None))
        g.close()
    except BaseException as e:  # the parent reports it instead of waiting for a timeout
        q.put((rank, None, None, f"{type(e).__name__}: {e}"))


def bench_weight_sync(total_bytes: int = 1 << 30, bucket_mb: int = 256, backend: str = "gloo", *,
                      dtype: str = "bfloat16", repeats: int = 3, verify: bool = False, torch_only: bool = False,
                      threads: int | None = None, timeout_s: float = 600, specs: list[TensorSpec] | None = None) -> dict:
    """Learner -> receiver weight-sync throughput in GB/s (1e9 bytes/s) between two fresh processes.

    ``verify`` also checks on the receiver that every tensor arrived bit-exact (slower: it
    regenerates them). ``torch_only`` builds the group with torch.distributed instead of vLLM.
    ``threads``: torch threads per process (default a quarter of the cores, at least 1), as a
    learner rank and an engine get their reserved CPUs; all cores on both sides starve gloo's
    network threads (measured: 1.0 GB/s with 16 threads each on 16 cores, 3.0 GB/s with 4).
    """
    threads = threads or max(1, (os.cpu_count() or 1) // 4)
    specs = specs or qwen2_like_specs(total_bytes, dtype)
    nbytes = sum(s.nbytes for s in specs)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, specs, backend, bucket_mb << 20, repeats, verify, torch_only, threads, q),
                         daemon=True) for r in (0, 1)]
    for p in procs:
        p.start()
    results = {}
    try:
        deadline = time.time() + timeout_s
        while len(results) < 2:
            try:
                rank, seconds, exact, err = q.get(timeout=1.0)
            except queue.Empty:
                dead = [r for r, p in enumerate(procs) if r not in results and p.exitcode not in (None, 0)]
                if dead or time.time() > deadline:  # a crash before reporting (or a hang): do not wait it out
                    raise RuntimeError(f"weight-sync bench: rank {dead[0]} exited with {procs[dead[0]].exitcode}"
                                       if dead else f"weight-sync bench: no result within {timeout_s:g}s") from None
                continue
            if err:
                raise RuntimeError(f"weight-sync bench, rank {rank}: {err}")
            results[rank] = (seconds, exact)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    seconds = statistics.median(results[0][0])
    return {"backend": backend, "dtype": dtype, "bytes": nbytes, "tensors": len(specs), "bucket_mb": bucket_mb,
            "repeats": repeats, "seconds": seconds, "gbps": nbytes / seconds / 1e9,
            "runs_gbps": [nbytes / s / 1e9 for s in results[0][0]], "exact": results[1][1],
            "threads": threads, "cpus": os.cpu_count()}


def format_result(r: dict) -> str:
    exact = {True: ", bit-exact", False: ", NOT bit-exact", None: ""}[r["exact"]]
    runs = ", ".join(f"{x:.2f}" for x in r["runs_gbps"])
    return (f"weight sync over {r['backend']}: {r['bytes'] / 1e9:.2f} GB of {r['dtype']} in {r['tensors']} tensors, "
            f"{r['bucket_mb']} MiB buckets: {r['gbps']:.2f} GB/s (median of {r['repeats']}: {runs}; "
            f"{r['seconds']:.2f} s){exact}")


def bench_sync_lora(rank: int = 16, bucket_mb: int = 256, backend: str = "gloo", dtype: str = "bfloat16") -> dict:
    """One sync of a SmolLM2-135M policy, full weights vs LoRA adapters of `rank`: bytes, seconds, ratios."""
    full = bench_weight_sync(bucket_mb=bucket_mb, backend=backend, dtype=dtype, specs=smollm2_specs(dtype))
    lora = bench_weight_sync(bucket_mb=bucket_mb, backend=backend, dtype=dtype, specs=smollm2_specs(dtype, rank))
    return {"rank": rank, "full": full, "lora": lora, "bytes_ratio": full["bytes"] / lora["bytes"],
            "seconds_ratio": full["seconds"] / lora["seconds"]}


def format_lora(r: dict) -> str:
    f, l = r["full"], r["lora"]
    return (f"SmolLM2-135M weight sync over {f['backend']} ({f['dtype']}):\n"
            f"  full weights  {f['bytes'] / 1e6:8.1f} MB in {f['tensors']:3d} tensors: {f['seconds'] * 1e3:8.1f} ms\n"
            f"  LoRA rank {r['rank']:<3d} {l['bytes'] / 1e6:8.1f} MB in {l['tensors']:3d} tensors: {l['seconds'] * 1e3:8.1f} ms\n"
            f"  full / LoRA: {r['bytes_ratio']:.1f}x the bytes, {r['seconds_ratio']:.1f}x the time")
