"""The weight-sync transport: bucket plans and buffer reuse (pure), and a real gloo broadcast between processes."""

import io
import multiprocessing as mp

import pytest
import torch

from rlvr.weights.bench import bench_weight_sync, qwen2_like_specs
from rlvr.weights.sync import TensorSpec, WeightSyncGroup, _HostBuffers, free_port, plan_buckets, spec_of


def test_buckets_split_by_size_and_dtype():
    specs = [TensorSpec("a", "float32", (4,)), TensorSpec("b", "float32", (4,)), TensorSpec("c", "float32", (8,)),
             TensorSpec("d", "bfloat16", (2,)), TensorSpec("e", "float32", (100,))]
    plan = plan_buckets(specs, bucket_bytes=32)
    assert [[s.name for s in b] for b in plan] == [["a", "b"], ["c"], ["d"], ["e"]]  # e alone: larger than a bucket


def test_host_buffers_are_reused_only_when_nothing_holds_them():
    pool = _HostBuffers(keep=2)
    a = pool.take(10, torch.float32)
    a_ptr = a.data_ptr()
    held = a[2:4]  # a receiver's view, as vLLM keeps it until its layer is complete
    del a
    b = pool.take(10, torch.float32)
    assert b.data_ptr() != a_ptr  # still held: a second buffer
    del held, b
    assert pool.take(8, torch.bfloat16).data_ptr() == a_ptr  # free again (and large enough): reused


def test_gpu_transports_say_what_to_change_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for backend in ("nccl", "cuda_ipc"):
        with pytest.raises(RuntimeError, match="needs a CUDA GPU.*cluster.weight_sync_backend=gloo"):
            WeightSyncGroup("127.0.0.1", free_port(), 0, 2, backend)


def _receiver(port, specs, bucket_sizes, q):
    g = WeightSyncGroup("127.0.0.1", port, 1, 2, "gloo", timeout_s=60)
    # Keep every received view to the end, as vLLM's layer-wise reload may: a buffer reused too early would show.
    got = [list(g.receive(specs, bucket_bytes)) for bucket_bytes in bucket_sizes]
    buf = io.BytesIO()  # bytes, not tensors: torch's queue would pass file descriptors the exiting child closes
    torch.save([{name: t.clone() for name, t in sync} for sync in got], buf)
    q.put(buf.getvalue())
    g.close()


def test_gloo_broadcast_delivers_every_tensor_exactly():
    torch.manual_seed(0)
    tensors = {"w1": torch.randn(3, 5), "w2": torch.randn(7), "big": torch.randn(600, 500),  # 1.2 MB: sent from its own memory
               "w3": torch.randn(2, 2, 2), "h": torch.randn(4).to(torch.bfloat16), "w4": torch.randn(5)}
    specs = [spec_of(n, t) for n, t in tensors.items()]
    port = free_port()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    bucket_sizes = [64, 8 << 20, 64]  # one tensor per bucket; all in one
    p = ctx.Process(target=_receiver, args=(port, specs, bucket_sizes, q))
    p.start()
    sender = WeightSyncGroup("127.0.0.1", port, 0, 2, "gloo", timeout_s=60)
    sent = []
    for i, bucket_bytes in enumerate(bucket_sizes):  # repeated syncs of changing weights reuse buffers on both sides
        sent.append(sender.send(((n, t + i) for n, t in tensors.items()), bucket_bytes=bucket_bytes))
    got = torch.load(io.BytesIO(q.get(timeout=60)))
    p.join(timeout=30)
    sender.close()
    assert sent == [sum(t.numel() * t.element_size() for t in tensors.values())] * 3
    for i, sync in enumerate(got):
        assert set(sync) == set(tensors)
        for name, t in tensors.items():
            assert sync[name].dtype == t.dtype and torch.equal(sync[name], t + i), (i, name)


def test_bench_shapes_add_up_like_qwen2():
    specs = qwen2_like_specs(1 << 30)
    total = sum(s.nbytes for s in specs)
    assert 0.9 * (1 << 30) < total <= 1 << 30
    assert specs[0].name == "model.embed_tokens.weight" and specs[0].shape[1] == 896
    assert {s.shape for s in specs if s.name.endswith("mlp.down_proj.weight")} == {(896, 4864)}
    small = qwen2_like_specs(4 << 20, "float32")  # narrower layers, still at least two of them
    assert sum(s.nbytes for s in small) <= 4 << 20 and any(s.name.startswith("model.layers.1.") for s in small)


def test_bench_measures_a_bit_exact_transfer():
    r = bench_weight_sync(4 << 20, bucket_mb=1, repeats=1, verify=True, torch_only=True, timeout_s=120)
    assert r["exact"] is True and r["gbps"] > 0 and r["bytes"] == sum(s.nbytes for s in qwen2_like_specs(4 << 20))


def test_smollm2_sync_shapes_full_and_lora():
    """`rlvr bench sync --lora` compares what a sync of SmolLM2-135M carries: every weight, or the adapters."""
    import math

    from rlvr.weights.bench import smollm2_specs

    full = smollm2_specs("bfloat16")
    assert sum(math.prod(s.shape) for s in full) == 134_515_008  # SmolLM2-135M's parameter count (tied head)
    lora = smollm2_specs("bfloat16", lora_rank=16)
    assert len(lora) == 30 * 7 * 2 and all(".lora_A." in s.name or ".lora_B." in s.name for s in lora)
    # rank 16 on every projection: r x (in + out) per projection
    per_layer = 16 * sum(i + o for i, o in ((576, 576), (576, 192), (576, 192), (576, 576), (576, 1536), (576, 1536), (1536, 576)))
    assert sum(math.prod(s.shape) for s in lora) == 30 * per_layer
