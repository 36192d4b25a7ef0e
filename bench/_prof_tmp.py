import os, sys
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from rlvr.cluster.bench import bench_weight_sync, format_result
for kw in [dict(bucket_mb=256), dict(bucket_mb=64), dict(bucket_mb=256, threads=1), dict(bucket_mb=256, threads=2), dict(bucket_mb=256, dtype="float32")]:
    r = bench_weight_sync(1 << 30, torch_only=True, **kw); print(kw, format_result(r), flush=True)
