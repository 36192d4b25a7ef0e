"""VerifierPool: scores batches of samples in worker processes, with a hard bound per check.

Why processes: checks are CPU-bound pure Python (sympy, regexes), so threads would not run in
parallel, and a check stuck inside C code (a pathological regex, a huge integer power) cannot
be interrupted by a signal. Each worker applies a soft SIGALRM deadline per check; if a check
does not yield to it, the parent kills the worker past ``timeout_s + kill_grace_s``, scores the
sample 0 with the reason, re-queues the rest of its chunk and starts a replacement.
"""
from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
import time
import warnings
import weakref
from multiprocessing.connection import Connection, wait
from pathlib import Path

from rlvr.verifiers.base import PluginError, VerifyRequest, VerifyResult
from rlvr.verifiers.config import VerifierConfig
from rlvr.verifiers.registry import _REGISTRY, load_plugins, main_module_verifiers, plugin_modules
from rlvr.verifiers.runner import CallStat, run_request

_PKG_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding the `rlvr` package
_START_TIMEOUT_S = 120.0  # a cold worker imports sympy/langdetect; on a loaded 2-core box this can be slow


class _Worker:
    def __init__(self, config: VerifierConfig, plugins: list[str], optional_plugins: list[str]):
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([_PKG_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from rlvr.verifiers._worker import main; main()", str(p2c_r), str(c2p_w)],
            pass_fds=(p2c_r, c2p_w), stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno() if _has_fileno() else None,
            env=env, close_fds=True)
        os.close(p2c_r)
        os.close(c2p_w)
        self.send_conn = Connection(p2c_w, readable=False)
        self.recv_conn = Connection(c2p_r, writable=False)
        self.ready = False
        self.started = time.monotonic()
        self.pending: collections.deque[int] = collections.deque()  # indices sent, not yet answered
        self.last_progress = 0.0
        self.send_conn.send(("init", config.model_dump(), plugins, optional_plugins, [p for p in sys.path if p]))

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for c in (self.send_conn, self.recv_conn):
            try:
                c.close()
            except OSError:
                pass

    def exit_reason(self) -> str:
        try:
            # The pipe's EOF can arrive just before the process is reapable.
            code = self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            return "worker stopped answering"
        return f"worker died (signal {-code})" if code < 0 else f"worker died (exit code {code})"


def _has_fileno() -> bool:
    try:
        sys.stderr.fileno()
        return True
    except (AttributeError, OSError, ValueError):
        return False


class VerifierPool:
    """Score ``VerifyRequest`` lists with the verifiers they name; see the module docstring."""

    def __init__(self, config: VerifierConfig | None = None):
        self.config = config or VerifierConfig()
        # Plugins load here first, so a broken plugin fails in the caller with one clear line.
        load_plugins(self.config.plugins)
        # Modules that registered verifiers in this process without being listed in the config are
        # re-imported in workers too, but best-effort (a test module may not be importable there).
        self._plugins = list(self.config.plugins)
        self._optional_plugins = sorted(set(plugin_modules()) - set(self._plugins))
        self._main_only = set(main_module_verifiers()) if self.config.workers else set()
        if self._main_only:
            warnings.warn(f"verifiers {sorted(self._main_only)} are defined in __main__, which worker processes do "
                          "not import; move them to a module listed in verifiers.plugins (or use workers: 0)",
                          stacklevel=2)
        self._stats: dict[str, float] = collections.defaultdict(float)
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        for _ in range(self.config.workers):
            self._workers.append(self._spawn())
        # Workers must not outlive the driver even if close() is never called.
        self._finalizer = weakref.finalize(self, _kill_all, self._workers)

    # -- public API -------------------------------------------------------------------------
    def score(self, requests: list[VerifyRequest], progress: bool = False) -> list[VerifyResult]:
        if self._closed:
            raise RuntimeError("VerifierPool is closed")
        with self._lock:
            results: list[VerifyResult | None] = [None] * len(requests)
            todo: list[int] = []
            for i, req in enumerate(requests):
                unknown = [n for n in req.names() if n not in _REGISTRY]
                main_only = [n for n in req.names() if n in self._main_only]
                if unknown or main_only or not req.names():
                    if unknown:
                        err = f"unknown verifier '{unknown[0]}'"
                    elif main_only:
                        err = f"verifier '{main_only[0]}' is defined in __main__ and cannot run in worker processes"
                    else:
                        err = "no verifier named"
                    results[i] = VerifyResult(0.0, {}, err)
                    for n in unknown + main_only:
                        self._stats[f"verifier/{n}/calls"] += 1
                        self._stats[f"verifier/{n}/errors"] += 1
                else:
                    todo.append(i)
            bar = _Progress(len(requests), progress)
            bar.advance(len(requests) - len(todo))
            try:
                if self.config.workers == 0:
                    for i in todo:
                        r = requests[i]
                        res, stats = run_request(r.response, r.ground_truth, r.verifier, r.prompt, self.config,
                                                    extra=r.extra)
                        self._record(stats)
                        results[i] = res
                        bar.advance(1)
                else:
                    try:
                        self._score_in_workers(requests, todo, results, bar)
                    except BaseException:
                        # Interrupted mid-batch: workers still holding samples would answer into
                        # the next batch; replace them so the pool stays usable.
                        for w in list(self._workers):
                            if w.pending:
                                w.pending.clear()
                                self._replace(w)
                        raise
            finally:
                bar.close()
            self._stats["pool/samples"] += len(requests)
            return results  # type: ignore[return-value]

    def stats(self) -> dict[str, float]:
        """Cumulative counters: verifier/<name>/{calls,errors,timeouts,seconds}, pool/{samples,restarts}."""
        return dict(self._stats)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            try:
                w.send_conn.send(("stop",))
            except OSError:
                pass
        deadline = time.monotonic() + 2.0
        for w in self._workers:
            try:
                w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        self._finalizer()

    def __enter__(self) -> "VerifierPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        return _Worker(self.config, self._plugins, self._optional_plugins)

    def _replace(self, w: _Worker) -> None:
        w.kill()
        self._workers[self._workers.index(w)] = self._spawn()
        self._stats["pool/restarts"] += 1

    def _record(self, stats: list[CallStat]) -> None:
        for name, secs, kind in stats:
            self._stats[f"verifier/{name}/calls"] += 1
            self._stats[f"verifier/{name}/seconds"] += secs
            if kind == "timeout":
                self._stats[f"verifier/{name}/timeouts"] += 1
            elif kind == "error":
                self._stats[f"verifier/{name}/errors"] += 1

    def _item_deadline(self, req: VerifyRequest) -> float:
        # Each verifier on the row has its own soft deadline in the worker; allow for all of them.
        return len(req.names()) * self.config.timeout_s + self.config.kill_grace_s

    def _score_in_workers(self, requests, todo, results, bar) -> None:
        n_workers = len(self._workers)
        size = max(1, min(self.config.chunk_size, -(-len(todo) // (2 * n_workers))))
        queue: collections.deque[list[int]] = collections.deque(todo[i:i + size] for i in range(0, len(todo), size))
        remaining = len(todo)
        while remaining:
            now = time.monotonic()
            # Hand chunks to idle, ready workers.
            for w in self._workers:
                if w.ready and not w.pending and queue:
                    chunk = queue.popleft()
                    payload = [(i, requests[i].response, requests[i].ground_truth, requests[i].verifier,
                                requests[i].prompt, requests[i].extra) for i in chunk]
                    try:
                        w.send_conn.send(("chunk", payload))
                    except OSError:  # the worker died (EPIPE): retry the chunk on its replacement
                        queue.appendleft(chunk)
                        self._replace(w)
                        continue
                    except Exception as e:  # noqa: BLE001 - a ground truth that cannot be pickled
                        if len(chunk) > 1:  # find the culprit: retry the samples one by one
                            queue.extendleft([i] for i in reversed(chunk))
                            continue
                        results[chunk[0]] = VerifyResult(0.0, {}, f"request cannot be sent to a worker: {e}")
                        for name in requests[chunk[0]].names():
                            self._stats[f"verifier/{name}/calls"] += 1
                            self._stats[f"verifier/{name}/errors"] += 1
                        remaining -= 1
                        bar.advance(1)
                        continue
                    w.pending.extend(chunk)
                    w.last_progress = now
            # Wait for answers, or until the next deadline.
            deadlines = []
            for w in self._workers:
                if w.pending:
                    deadlines.append(w.last_progress + self._item_deadline(requests[w.pending[0]]))
                elif not w.ready:
                    deadlines.append(w.started + _START_TIMEOUT_S)
            timeout = max(0.0, min(deadlines) - now) if deadlines else 0.5
            ready = wait([w.recv_conn for w in self._workers], timeout=timeout)
            by_conn = {w.recv_conn: w for w in self._workers}
            for conn in ready:
                w = by_conn[conn]
                try:
                    while True:
                        msg = conn.recv()
                        if msg[0] == "result":
                            _, idx, score, details, error, stats = msg
                            if w.pending and w.pending[0] == idx:
                                w.pending.popleft()
                                results[idx] = VerifyResult(score, details, error)
                                self._record(stats)
                                remaining -= 1
                                bar.advance(1)
                            w.last_progress = time.monotonic()
                        elif msg[0] == "ready":
                            w.ready = True
                        elif msg[0] == "init_error":
                            raise PluginError(f"verifier worker failed to start: {msg[1]}")
                        if not conn.poll():
                            break
                except (EOFError, OSError):
                    remaining -= self._fail_worker(w, requests, results, queue, bar, w.exit_reason())
            # Kill workers stuck past their deadline.
            now = time.monotonic()
            for w in list(self._workers):
                if w.pending and now > w.last_progress + self._item_deadline(requests[w.pending[0]]):
                    limit = self._item_deadline(requests[w.pending[0]])
                    for name in requests[w.pending[0]].names():
                        self._stats[f"verifier/{name}/calls"] += 1
                        self._stats[f"verifier/{name}/timeouts"] += 1
                    remaining -= self._fail_worker(w, requests, results, queue, bar,
                                                   f"timeout: check did not finish in {limit:g}s; worker killed",
                                                   count_stats=False)
                elif not w.ready and now > w.started + _START_TIMEOUT_S:
                    raise PluginError(f"verifier worker did not start within {_START_TIMEOUT_S:g}s")

    def _fail_worker(self, w: _Worker, requests, results, queue, bar, reason: str, count_stats: bool = True) -> int:
        """Score the sample in progress 0 with ``reason``, re-queue the rest, replace the worker."""
        done = 0
        if w.pending:
            idx = w.pending.popleft()
            results[idx] = VerifyResult(0.0, {}, reason)
            if count_stats:
                for name in requests[idx].names():
                    self._stats[f"verifier/{name}/calls"] += 1
                    self._stats[f"verifier/{name}/errors"] += 1
            bar.advance(1)
            done = 1
            if w.pending:
                queue.appendleft(list(w.pending))
            w.pending.clear()
        elif not w.ready:
            # Died before "ready": give the parent's view of why, and do not loop forever.
            why = w.exit_reason()
            w.kill()
            raise PluginError(f"verifier worker failed to start ({why}); see its stderr above")
        self._replace(w)
        return done


def _kill_all(workers: list[_Worker]) -> None:
    for w in workers:
        if w.proc.poll() is None:
            w.kill()


class _Progress:
    """A rich progress bar when asked for, otherwise nothing."""

    def __init__(self, total: int, enabled: bool):
        self._p = None
        if enabled and total:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            # On stderr: stdout may be carrying results (rlvr verify ... -o -).
            self._p = Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                               console=Console(stderr=True), transient=False)
            self._p.start()
            self._task = self._p.add_task("verify", total=total)

    def advance(self, n: int) -> None:
        if self._p is not None and n:
            self._p.advance(self._task, n)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
