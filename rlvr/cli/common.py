"""What every command shares: the one-line error."""

import sys


def fail(msg: str, code: int = 2) -> int:
    print(f"rlvr: error: {msg}", file=sys.stderr)
    return code
