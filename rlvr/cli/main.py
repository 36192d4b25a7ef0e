"""`rlvr`: the command line. Each file of this package adds its commands' parsers (`add_parsers`) and
runs them; bad input ends a command with one line naming the field or file (exit 2), before any cluster starts.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from rlvr.cli import bench, build, doctor, environments, eval, jobs, train, verify

    p = argparse.ArgumentParser(prog="rlvr", description="RL with verifiable rewards on Ray + vLLM + DeepSpeed")
    sub = p.add_subparsers(dest="command", required=True)
    for room in (train, doctor, build, verify, environments, eval, bench, jobs):
        room.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
