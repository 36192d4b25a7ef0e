"""A verifier worker process: reads chunks of samples from a pipe, answers one result per sample.

Started by ``VerifierPool`` as ``python -c 'from rlvr.verifiers._worker import main; main()' RFD WFD``.
It is a plain subprocess rather than a multiprocessing child so that it never re-runs the
caller's ``__main__`` (a training script, a Ray worker) and starts the same way everywhere.

Protocol (pickled tuples over ``multiprocessing.connection.Connection``):
  parent -> worker: ("init", config_dict, plugin_modules, optional_modules, sys_path) | ("chunk", [(idx, response,
                    ground_truth, verifier, prompt, extra), ...]) | ("stop",)
  worker -> parent: ("ready", pid) | ("init_error", message) | ("result", idx, score, details, error,
                    stats), sent as soon as each sample is done: the parent reads the first
                    unanswered index of a chunk as the one in progress when it must kill.
"""
from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection


def _watch_parent(parent_pid: int) -> None:
    # If the parent dies while this process is busy in a long check, the pipe's EOF is never
    # read; this thread notices the re-parenting and exits (a C call holding the GIL delays it).
    # Signals stay with the main thread, where the per-check SIGALRM timer is meant to land.
    signal.pthread_sigmask(signal.SIG_BLOCK, set(signal.Signals) - {signal.SIGKILL, signal.SIGSTOP})
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(3)


_WARM_UP = [  # first calls pay for lazy regex compilation and caches: ~1 s, better spent before work arrives
    ("math", "so after all that we get x = 12", "12"),
    ("math", r"\boxed{\sqrt{2}\sin x}", r"\sin x \cdot \sqrt{2}"),
    ("ifeval", "This is a perfectly normal English sentence. And A SECOND one.",
     {"instruction_id_list": ["language:response_language", "length_constraints:number_sentences",
                              "change_case:capital_word_frequency"],
      "kwargs": [{"language": "en"}, {"num_sentences": 1, "relation": "at least"},
                 {"capital_frequency": 1, "capital_relation": "at least"}]}),
]


def _warm_up(rconn: Connection, config) -> None:
    from rlvr.verifiers.runner import run_request
    for name, response, truth in _WARM_UP:
        if rconn.poll():
            return  # real work is waiting: it goes first
        run_request(response, truth, name, None, config)


# Checks that mostly wait on a sandboxed subprocess: several run at once in threads (their
# time limit is the sandbox's own, so they do not need the main-thread SIGALRM timer).
_CONCURRENT = {"code"}
_executor = None


def _run_chunk(items, config, run_request):
    """Yield (idx, result, stats) in the chunk's order; sandboxed checks overlap in threads.

    Results go out in order, so the parent can still read the first unanswered index as the
    one in progress when it must kill a stuck worker.
    """
    global _executor
    futures = {}
    if config.code_concurrency > 1:
        for k, (idx, response, truth, verifier, prompt, extra) in enumerate(items):
            names = [verifier] if isinstance(verifier, str) else list(verifier)
            if names and all(n in _CONCURRENT for n in names):
                if _executor is None:
                    from concurrent.futures import ThreadPoolExecutor
                    _executor = ThreadPoolExecutor(config.code_concurrency, thread_name_prefix="sandbox")
                futures[k] = _executor.submit(run_request, response, truth, verifier, prompt, config, extra=extra)
    for k, (idx, response, truth, verifier, prompt, extra) in enumerate(items):
        if k in futures:
            res, stats = futures[k].result()
        else:
            res, stats = run_request(response, truth, verifier, prompt, config, extra=extra)
        yield idx, res, stats


def main() -> None:
    rfd, wfd = int(sys.argv[1]), int(sys.argv[2])
    rconn, wconn = Connection(rfd, writable=False), Connection(wfd, readable=False)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    try:
        msg = rconn.recv()
        _, config_dict, plugins, optional_plugins, sys_path = msg
        for p in reversed(sys_path):
            if p not in sys.path:
                sys.path.insert(0, p)
        from rlvr.verifiers.config import VerifierConfig
        from rlvr.verifiers.registry import get_entry, load_plugins
        from rlvr.verifiers.runner import run_request
        config = VerifierConfig(**config_dict)
        load_plugins(plugins)
        for mod in optional_plugins:
            try:
                load_plugins([mod], entry_points=False)
            except Exception:  # noqa: BLE001 - auto-discovered, not required: a row using it reports "unknown"
                pass
        for name in ("math", "gsm8k", "ifeval"):
            try:
                # Import now, while the driver is still starting, not inside the first timed check.
                get_entry(name)
            except Exception:  # noqa: BLE001 - a missing optional dependency shows up when the verifier is used
                pass
    except BaseException as e:  # noqa: BLE001
        try:
            wconn.send(("init_error", f"{type(e).__name__}: {e}"))
        finally:
            os._exit(2)
    wconn.send(("ready", os.getpid()))
    _warm_up(rconn, config)

    while True:
        try:
            msg = rconn.recv()
        except (EOFError, OSError):
            break
        if msg[0] == "stop":
            break
        for idx, res, stats in _run_chunk(msg[1], config, run_request):
            out = ("result", idx, res.score, res.details, res.error, stats)
            try:
                wconn.send(out)
            except (pickle.PicklingError, TypeError, AttributeError) as e:
                # Details that cannot cross the pipe are replaced, the score still counts.
                wconn.send(("result", idx, res.score, {"unpicklable_details": repr(res.details)[:2000]},
                            res.error or f"details not picklable: {e}", stats))
    os._exit(0)


if __name__ == "__main__":
    main()
