"""Weight-sync transports: the learner sends the policy to the rollout workers.

One interface, `WeightSyncGroup.send` on the learner (group rank 0) and `.receive` on each
vLLM worker (ranks 1..), over a torch.distributed group made outside both sides' default
groups. Both sides derive the same bucket plan from the same tensor specs, so only bucket
payloads (or, for CUDA IPC, memory handles) cross. `cluster.weight_sync_backend` picks:

* ``gloo``: buckets in host memory over TCP. CPU runs, or any layout without NCCL.
* ``nccl``: the same broadcast with buckets on the GPU. Learner and engines on different GPUs,
  on one node or several.
* ``cuda_ipc``: an engine on its learner rank's own GPU (``cluster.colocate``). NCCL cannot put
  two ranks on one GPU; instead the sender shares each bucket's CUDA memory handle
  (torch.multiprocessing's ``reduce_tensor``) over a gloo side channel, and the receiver maps the
  learner's memory and copies straight out of it: nothing goes through the host.
"""

from __future__ import annotations

import pickle
import socket
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch

DEFAULT_BUCKET_BYTES = 256 << 20
BACKENDS = ("gloo", "nccl", "cuda_ipc")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # e.g. "float32": strings travel through Ray and vLLM's RPC untouched
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def nbytes(self) -> int:
        return self.numel * self.torch_dtype.itemsize


def spec_of(name: str, t: torch.Tensor) -> TensorSpec:
    return TensorSpec(name, str(t.dtype).removeprefix("torch."), tuple(t.shape))


def _split(items: Iterable, key, bucket_bytes: int) -> Iterator[list]:
    """The one bucketing rule, for specs (receiver) and live tensors (sender): key(item) = (dtype, nbytes)."""
    pending, size = [], 0
    for item in items:
        dtype, nbytes = key(item)
        if pending and (key(pending[0])[0] != dtype or size + nbytes > bucket_bytes):
            yield pending
            pending, size = [], 0
        pending.append(item)
        size += nbytes
    if pending:
        yield pending


def plan_buckets(specs: list[TensorSpec], bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> list[list[TensorSpec]]:
    """Split specs, in order, into same-dtype buckets of at most bucket_bytes (a larger tensor gets its own)."""
    return list(_split(specs, lambda s: (s.dtype, s.nbytes), bucket_bytes))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"


def _device_uuid(index: int) -> str:
    return str(torch.cuda.get_device_properties(index).uuid)


class _HostBuffers:
    """Bucket buffers in host memory, reused once nothing else holds them.

    A fresh 256 MiB allocation is slower than the copy into it (its page faults: 0.9 vs 5 GB/s
    measured on the 2-core dev VM). A buffer is free again when its storage has no users but
    the pool: vLLM may keep a received tensor until its layer is complete, and the storage's use
    count sees that where a rotation of fixed buffers would overwrite it.
    """

    def __init__(self, keep: int = 12):  # a layer's tensors, held by vLLM, and the next one in flight
        self.keep = keep
        self.bufs: list[tuple[torch.Tensor, int]] = []  # (uint8 buffer, its storage's use count when idle)

    @staticmethod
    def _users(buf: torch.Tensor) -> int:
        return torch._C._storage_Use_Count(buf.untyped_storage()._cdata)

    def take(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        nbytes = numel * dtype.itemsize
        tracked = hasattr(torch._C, "_storage_Use_Count")  # private API: without it, allocate every time
        idle = [i for i, (buf, n) in enumerate(self.bufs) if tracked and self._users(buf) == n]
        for i in idle:
            if self.bufs[i][0].numel() >= nbytes:
                return self.bufs[i][0][:nbytes].view(dtype)
        buf = torch.empty(nbytes, dtype=torch.uint8)
        if tracked and len(self.bufs) < self.keep:
            self.bufs.append((buf, self._users(buf)))
        elif idle:  # every idle buffer is too small: the smallest makes room for this one
            self.bufs[min(idle, key=lambda i: self.bufs[i][0].numel())] = (buf, self._users(buf))
        return buf[:nbytes].view(dtype)


class WeightSyncGroup:
    """One member of the learner -> rollout weight-sync group.

    ``device`` matters for nccl and cuda_ipc (default: this process's current GPU); gloo
    buckets always live in host memory. ``pg`` reuses an existing process group instead of
    the stateless rendezvous at host:port (the torch-only GPU self-check does).
    """

    def __init__(self, host: str, port: int, rank: int, world_size: int, backend: str = "gloo",
                 device: str | torch.device | None = None, timeout_s: float = 600.0, *, pg=None):
        if backend not in BACKENDS:
            raise ValueError(f"weight-sync backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        if backend != "gloo" and not torch.cuda.is_available():
            raise RuntimeError(f"weight-sync backend {backend} needs a CUDA GPU in this process: "
                               "set cluster.weight_sync_backend=gloo, or give the learner and engines GPUs")
        self.rank, self.world_size, self.backend = rank, world_size, backend
        if backend == "gloo":
            self.device = torch.device("cpu")  # gloo would stage a CUDA bucket through the host anyway
        else:
            dev = torch.device(device if device is not None and str(device) != "cpu" else "cuda")
            self.device = dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())
        if pg is None:
            from vllm.distributed.utils import stateless_init_torch_distributed_process_group

            # CUDA IPC moves only handles and acks: a CPU (gloo) group carries them.
            pg = stateless_init_torch_distributed_process_group(
                host, port, rank, world_size, "nccl" if backend == "nccl" else "gloo",
                timeout=timedelta(seconds=timeout_s))
        self.pg = pg
        self._pool = _HostBuffers() if self.device.type == "cpu" else None  # GPU: torch's caching allocator

    # ------------------------------------------------------------------ collectives

    def _broadcast(self, t: torch.Tensor) -> None:
        self.pg.broadcast(t, 0).wait()  # root is group rank 0: the learner

    def barrier(self) -> None:
        """Every member has reached this point (and, on a GPU, finished its queued copies)."""
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        self.pg.allreduce([torch.zeros(1, device=self.device if self.backend == "nccl" else "cpu")]).wait()
        if self.backend == "nccl":
            torch.cuda.current_stream(self.device).synchronize()  # NCCL's wait() only orders streams

    def _broadcast_bytes(self, payload: bytes | None) -> bytes:
        n = torch.tensor([len(payload) if payload is not None else 0], dtype=torch.int64)
        self._broadcast(n)
        buf = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if payload is not None else torch.empty(int(n), dtype=torch.uint8)
        self._broadcast(buf)
        return payload if payload is not None else buf.numpy().tobytes()

    # ------------------------------------------------------------------ sending

    def send(self, named: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> int:
        """Rank 0: send tensors in order; returns bytes sent. Specs must match the receivers'."""
        assert self.rank == 0, "only the learner (rank 0) sends"
        sent, in_flight = 0, deque()
        tensors_in_order = (t.detach() for _, t in named)
        for tensors in _split(tensors_in_order, lambda t: (t.dtype, t.numel() * t.element_size()), bucket_bytes):
            flat = self._flat(tensors)
            sent += flat.numel() * flat.element_size()
            if self.backend == "cuda_ipc":
                self._share(flat)
                continue
            in_flight.append((self.pg.broadcast(flat, 0), flat))
            if len(in_flight) > 1:  # the next bucket is packed while this one is on the wire
                in_flight.popleft()[0].wait()
        for work, _ in in_flight:
            work.wait()
        if self.backend == "cuda_ipc":
            torch.cuda.ipc_collect()  # free the shared blocks the receivers have let go of
        return sent

    def _flat(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """The bucket as one contiguous tensor on self.device; a lone contiguous tensor goes as it is."""
        t0 = tensors[0]
        if len(tensors) == 1 and t0.is_contiguous() and t0.device == self.device:
            return t0.reshape(-1)
        numel = sum(t.numel() for t in tensors)
        flat = self._pool.take(numel, t0.dtype) if self._pool else torch.empty(numel, dtype=t0.dtype, device=self.device)
        if all(t.device == self.device for t in tensors):
            torch.cat([t.reshape(-1) for t in tensors], out=flat)
        else:  # a GPU learner over gloo, a CPU-offloaded one over NCCL: one copy each, into the bucket
            offset = 0
            for t in tensors:
                flat[offset: offset + t.numel()].copy_(t.reshape(-1))
                offset += t.numel()
        return flat

    def _share(self, flat: torch.Tensor) -> None:
        from torch.multiprocessing.reductions import reduce_tensor

        # reduce_tensor records an event after the bucket's last write; the receiver waits on it.
        _, args = reduce_tensor(flat)
        self._broadcast_bytes(pickle.dumps((_device_uuid(self.device.index), args)))
        # Flow control: one bucket at a time. Memory safety does not rest on this: torch keeps a
        # shared block out of the allocator until every receiver has dropped its mapping.
        self.barrier()

    # ------------------------------------------------------------------ receiving

    def receive(self, specs: list[TensorSpec], bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> Iterator[tuple[str, torch.Tensor]]:
        """Ranks 1..: yield (name, tensor) as each bucket arrives (feeds vLLM's streaming reload).

        The tensors are views into the bucket; vLLM may hold them until a layer is complete.
        """
        buckets = plan_buckets(specs, bucket_bytes)
        nxt = self._post_receive(buckets[0]) if buckets and self.backend != "cuda_ipc" else None
        for i, bucket in enumerate(buckets):
            if self.backend == "cuda_ipc":
                flat = self._open_shared(sum(s.numel for s in bucket), bucket[0].torch_dtype)
            else:
                work, flat = nxt
                work.wait()
                # The next bucket lands while this one is copied out.
                nxt = self._post_receive(buckets[i + 1]) if i + 1 < len(buckets) else None
            offset = 0
            for s in bucket:
                yield s.name, flat[offset: offset + s.numel].view(s.shape)
                offset += s.numel
            if self.backend == "cuda_ipc":
                del flat  # drop the mapping so the learner's allocator can take the block back
                self.barrier()

    def _post_receive(self, bucket: list[TensorSpec]):
        numel, dtype = sum(s.numel for s in bucket), bucket[0].torch_dtype
        flat = self._pool.take(numel, dtype) if self._pool else torch.empty(numel, dtype=dtype, device=self.device)
        return self.pg.broadcast(flat, 0), flat

    def _open_shared(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        from torch.multiprocessing.reductions import rebuild_cuda_tensor

        uuid, args = pickle.loads(self._broadcast_bytes(None))
        # Device indices differ between processes (CUDA_VISIBLE_DEVICES): find the learner's GPU by UUID.
        local = [i for i in range(torch.cuda.device_count()) if _device_uuid(i) == uuid]
        if not local:
            raise RuntimeError(f"cuda_ipc: the learner's GPU {uuid} is not visible to this engine; CUDA IPC needs "
                               "each engine on its learner rank's GPU (cluster.colocate=true), else use nccl")
        args = list(args)
        args[6] = local[0]  # storage_device
        flat = rebuild_cuda_tensor(*args)
        if flat.numel() != numel or flat.dtype != dtype:
            raise RuntimeError(f"cuda_ipc: got a bucket of {flat.numel()} {flat.dtype}, expected {numel} {dtype}: "
                               "sender and receiver disagree on the tensor specs")
        return flat

    def close(self) -> None:
        try:
            self.pg.shutdown()
        except Exception:  # already torn down by the peer's exit: nothing left to free
            pass
