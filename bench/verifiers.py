"""Verifier throughput through the pool: ``python bench/verifiers.py [--quick] [--workers N]``.

Same as ``rlvr bench`` (verifier part); see rlvr/verifiers/bench.py for the workloads.
"""
import argparse
import sys

from rlvr.verifiers import VerifierConfig
from rlvr.cli.verify import bench_verifiers

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a quarter of the work")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=32)
    args = ap.parse_args()
    sys.exit(bench_verifiers(VerifierConfig(workers=args.workers, chunk_size=args.chunk_size), quick=args.quick))
