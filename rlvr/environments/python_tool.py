"""The ``python`` tool: run a snippet in the project's bwrap sandbox and return what it printed.

The sandbox is the code verifier's (``rlvr.verifiers.sandbox.run``): no network, a clean
environment, a read-only system and no view of the host's files (``/work``, ``/home``...),
memory/process limits, a wall-clock limit. stdout and stderr are merged in the order they
were written (stderr is pointed at stdout inside the sandbox) and cut to ``max_output_chars``;
the run is killed once it prints far more than that, so a 100 MB print costs little.

The program's own failures are answers, not tool errors: a traceback, a timeout or the
output limit come back as text for the model to read. Only a broken sandbox raises.

``python`` is stateless: each call starts a fresh interpreter. ``PythonSession`` keeps
variables across the calls of one trajectory by replaying every earlier cell that ran
without error (their output discarded) before the new one. Replaying costs time on each call
and re-runs side effects (randomness, clocks), but it is simple and always correct about
what the namespace holds, with nothing left running between calls.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from typing import Callable, Iterator

from rlvr.environments.tools import truncate
from rlvr.verifiers import sandbox

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_MB = 1024
DEFAULT_MAX_OUTPUT_CHARS = 4000
_REPLAY_FAILED = 3   # exit code of the driver when an earlier cell no longer runs
# Sandboxes one process runs at once (python tool and code_feedback together): the sandbox
# refuses more than 16 per process when run as root, and a rollout may have many trajectories
# calling tools at the same time. A python call waits for a slot at most its own timeout_s (then
# answers that the sandbox was busy: the cell did not run); its timeout_s then counts execution only.
SANDBOX_CONCURRENCY = 8
_slots = threading.BoundedSemaphore(SANDBOX_CONCURRENCY)


class SandboxBusy(Exception):
    """No sandbox slot came free within the wait allowed."""


@contextlib.contextmanager
def sandbox_slot(wait_s: float | None = None) -> Iterator[None]:
    """Hold one of the process's ``SANDBOX_CONCURRENCY`` sandbox slots (blocking; at most ``wait_s``
    seconds when given, then ``SandboxBusy``)."""
    if not _slots.acquire(timeout=-1 if wait_s is None else max(0.0, wait_s)):
        raise SandboxBusy(f"no sandbox slot came free in {wait_s:g}s ({SANDBOX_CONCURRENCY} programs running)")
    try:
        yield
    finally:
        _slots.release()

# Runs inside the sandbox (system Python, stdlib only). Earlier cells run with their output
# going to /dev/null; the new cell's traceback is printed without the driver's own frames.
_DRIVER = r'''
import json, linecache, os, sys, traceback
os.dup2(1, 2)
sys.stdout.reconfigure(line_buffering=True)
sys.stderr = sys.stdout
ns = {"__name__": "__main__", "__builtins__": __builtins__}
def run(src, n):
    name = "<cell %d>" % n
    linecache.cache[name] = (len(src), None, src.splitlines(True), name)
    exec(compile(src, name, "exec"), ns)
cells = json.load(open("/box/cells.json"))
if cells:
    devnull = open(os.devnull, "w")
    sys.stdout = sys.stderr = devnull
    try:
        for n, src in enumerate(cells[:-1], start=1):
            run(src, n)
    except BaseException as e:
        sys.stdout = sys.stderr = sys.__stdout__
        print("error: replaying earlier cell %d failed (%s: %s); its state is lost" % (n, type(e).__name__, e))
        sys.exit(REPLAY_FAILED)
    sys.stdout = sys.stderr = sys.__stdout__
    sys.stdout.reconfigure(line_buffering=True)
    try:
        run(cells[-1], len(cells))
    except SystemExit as e:
        sys.stdout.flush()
        raise
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next
        traceback.print_exception(type(e), e, tb)
        sys.stdout.flush()
        sys.exit(1)
'''.replace("REPLAY_FAILED", str(_REPLAY_FAILED))


def run_python(code: str, *, previous: list[str] = (), timeout_s: float = DEFAULT_TIMEOUT_S,
               memory_mb: int = DEFAULT_MEMORY_MB, max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS) -> tuple[str, bool]:
    """(output text, whether the cell ran without error) for ``code`` run after ``previous`` cells."""
    if not isinstance(code, str):
        raise ValueError("code must be a string of Python source")
    cells = list(previous) + [code]
    # Kill the run well past what can be shown (x4: the head and the tail are both kept).
    try:
        with sandbox_slot(wait_s=timeout_s):  # queueing is bounded apart: timeout_s counts the run itself
            res = sandbox.run(["{python}", "-I", "/box/driver.py"],
                              files={"driver.py": _DRIVER, "cells.json": json.dumps(cells)},
                              timeout_s=timeout_s, memory_mb=memory_mb, max_output=max(64 << 10, 4 * max_output_chars))
    except SandboxBusy as e:
        return f"error: the program was not run, the sandbox is busy: {e}; try again", False
    text = (res.stdout + res.stderr).decode("utf-8", "replace")
    notes = []
    if res.timed_out:
        notes.append(f"TimeoutError: the program ran longer than {timeout_s:g}s and was stopped")
    elif res.output_capped:
        notes.append("the program printed too much and was stopped")
    elif res.returncode not in (0, 1, _REPLAY_FAILED):
        notes.append(f"the program exited with code {res.returncode}")
    if notes and text and not text.endswith("\n"):
        text += "\n"
    text = truncate(text, max_output_chars) + ("\n" if notes and len(text) > max_output_chars else "") + "\n".join(notes)
    return text, res.returncode == 0


def make_python_tool(*, stateful: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S,
                     memory_mb: int = DEFAULT_MEMORY_MB, max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS
                     ) -> Callable[[str], str]:
    """A ``python`` tool with these limits: the tool registry's ``python`` factory and its options.

    ``stateful``: a ``PythonSession``'s tool (make one per trajectory), else the stateless one.
    """
    if stateful:
        return PythonSession(timeout_s=timeout_s, memory_mb=memory_mb, max_output_chars=max_output_chars).python

    def python(code: str) -> str:
        """Run Python code in a fresh sandboxed interpreter and return what it printed.

        Args:
            code: a complete Python program; print the values you want to see. No network, no files but /tmp.
        """
        return run_python(code, timeout_s=timeout_s, memory_mb=memory_mb, max_output_chars=max_output_chars)[0]
    return python


python = make_python_tool()


class PythonSession:
    """A ``python`` tool that remembers variables within one trajectory (one instance each).

    ``session.python`` is the tool (a coroutine function). A cell that raises, times out, prints
    too much, or whose call was abandoned (the environment's ``tool_timeout_s`` ran out and the
    model was told it failed) is not kept, so a later call never replays it: the cell is added only
    by the call that reports its success, after the sandbox finished, and an abandoned call's
    coroutine is cancelled before that point (its thread finishes in the background, unheard).
    """

    def __init__(self, *, timeout_s: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB,
                 max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS, max_cells: int = 50):
        self.timeout_s, self.memory_mb, self.max_output_chars = timeout_s, memory_mb, max_output_chars
        self.max_cells = max_cells
        self.cells: list[str] = []

    async def python(self, code: str) -> str:
        """Run Python code; variables, functions and imports from earlier successful calls remain.

        Args:
            code: Python statements; print the values you want to see. No network, no files but /tmp.
        """
        if len(self.cells) >= self.max_cells:
            raise RuntimeError(f"the session holds {self.max_cells} cells already; no more can be added")
        text, ok = await asyncio.to_thread(run_python, code, previous=list(self.cells), timeout_s=self.timeout_s,
                                           memory_mb=self.memory_mb, max_output_chars=self.max_output_chars)
        if ok:  # reached only by a call still awaited: a cancelled (abandoned) call never gets here
            self.cells.append(code)
        return text
