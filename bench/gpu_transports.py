"""Self-check of the GPU weight-sync transports: CUDA IPC on one GPU, NCCL across two.

Torch only (no Ray, no vLLM), so it runs on any CUDA machine with torch installed:

    python bench/gpu_transports.py [--gb 1] [--bucket-mb 256] [--dtype bfloat16]

Two spawned processes run rlvr's real WeightSyncGroup (rlvr/weights/sync.py) over a
plain torch.distributed group: the learner sends Qwen2-shaped tensors, the receiver copies
them into preallocated ones, checks every bit, and the learner times it (median of 3).

* cuda_ipc: both processes on GPU 0, as a colocated learner rank and engine;
* nccl: GPU 0 -> GPU 1 (skipped with one GPU: NCCL cannot put two ranks on one device);
* gloo: the same tensors through host memory, for comparison.

Exit status: 0 all bit-exact, 1 a mismatch or failure, 2 no CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # rlvr from this checkout, installed or not

import torch  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gb", type=float, default=1.0, help="tensors adding up to this many GB (default 1)")
    p.add_argument("--bucket-mb", type=int, default=256, help="bucket size in MiB (default 256)")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-gloo", action="store_true", help="skip the host-memory comparison")
    p.add_argument("--json", action="store_true", help="also print each result as one JSON line")
    args = p.parse_args()

    if not torch.cuda.is_available():
        print(f"no CUDA GPU visible to torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}): "
              "nothing to check here; run this on a GPU machine", file=sys.stderr)
        return 2
    from rlvr.weights.bench import bench_weight_sync, format_result

    gpus = torch.cuda.device_count()
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {gpus} x {torch.cuda.get_device_name(0)}")
    backends = ["cuda_ipc"] + (["nccl"] if gpus >= 2 else []) + ([] if args.no_gloo else ["gloo"])
    if gpus < 2:
        print("nccl: skipped (needs 2 GPUs; NCCL cannot connect two ranks on one device)")
    ok = True
    for backend in backends:
        try:
            r = bench_weight_sync(int(args.gb * 1e9), args.bucket_mb, backend, dtype=args.dtype, repeats=args.repeats,
                                  verify=True, torch_only=True)
        except Exception as e:
            print(f"{backend}: FAILED: {e}")
            ok = False
            continue
        print(format_result(r))
        if args.json:
            print(json.dumps(r))
        ok &= bool(r["exact"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
