"""Scorer: the verifier pool plus model-scored verifiers (LLM judges, reward models).

Rows naming only rule-based verifiers go to the ``VerifierPool`` unchanged. A row naming a judge
or a reward model is split: its rule-based verifiers go to the pool (one request each), its model
verifiers to their clients, which run concurrently on one background event loop (requests to
every judge and reward model in flight together, while the pool's workers check the rest); the
parts are then combined per ``verifiers.combine``, as multi-verifier rows always are.

``Scorer`` has the pool's interface (``score``, ``stats``, ``close``), so the trainer, ``rlvr
verify`` and ``rlvr eval`` use it in the pool's place.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any

from rlvr.verifiers.base import PluginError, VerifyRequest, VerifyResult
from rlvr.verifiers.config import VerifierConfig
from rlvr.verifiers.judge import JudgeClient
from rlvr.verifiers.reward_model import RewardModelClient
from rlvr.verifiers.runner import combine


def model_name_map(judges: dict, reward_models: dict) -> dict[str, tuple[str, str]]:
    """Verifier name on a row -> (kind, entry name): each entry's name, plus `judge` / `reward_model`
    when exactly one of that kind is declared."""
    out = {n: ("judge", n) for n in judges}
    out.update({n: ("reward_model", n) for n in reward_models})
    if len(judges) == 1 and "judge" not in out:
        out["judge"] = ("judge", next(iter(judges)))
    if len(reward_models) == 1 and "reward_model" not in out:
        out["reward_model"] = ("reward_model", next(iter(reward_models)))
    return out


def check_model_verifiers(judges: dict, reward_models: dict, registered: set[str]) -> None:
    """A judge or reward model may not take a registered verifier's name (PluginError, one line)."""
    for section, d in (("judges", judges), ("reward_models", reward_models)):
        for name in d:
            if name in registered:
                raise PluginError(f"{section}.{name}: '{name}' is already a registered verifier; give the "
                                  f"{section[:-1].replace('_', ' ')} another name")


class ModelVerifiers:
    """Judge and reward-model clients on a background event loop; `score` blocks the caller only."""

    def __init__(self, judges: dict[str, JudgeClient], reward_models: dict[str, RewardModelClient],
                 actors: list | None = None, local_engines: list | None = None):
        self.judges, self.reward_models = judges, reward_models
        self.names = model_name_map(judges, reward_models)
        self.actors = actors or []  # Ray handles to stop at close
        self.local_engines = local_engines or []  # in-process JudgeActors (rlvr verify / eval)
        self._ready_refs: list = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="rlvr-model-verifiers", daemon=True)
        self._thread.start()
        self._closed = False

    def run(self, coro, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def wait_ready(self, timeout: float = 900.0) -> None:
        """Block until every judge engine and reward model has loaded."""
        if self._ready_refs:
            import ray

            ray.get(self._ready_refs, timeout=timeout)
            self._ready_refs = []
        if self.local_engines:
            async def _ready():
                return await asyncio.gather(*(e.ready() for e in self.local_engines))

            self.run(_ready(), timeout)

    async def _score_all(self, work: dict[str, list]) -> dict[str, list[VerifyResult]]:
        names = list(work)

        async def one(name):
            kind, entry = self.names[name]
            client = self.judges[entry] if kind == "judge" else self.reward_models[entry]
            try:
                return await client.score(work[name])
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - one client's failure costs its own parts, counted, not the batch
                client.counts["errors"] = client.counts.get("errors", 0) + len(work[name])
                return [VerifyResult(0.0, {kind: entry}, f"model verifier '{name}' failed: {type(e).__name__}: {e}"[:300])
                        for _ in work[name]]

        outs = await asyncio.gather(*(one(n) for n in names))
        return dict(zip(names, outs))

    def score_async(self, work: dict[str, list]):
        """{row verifier name: [(prompt, response, truth), ...]} -> a future of {name: results}."""
        return self.submit(self._score_all(work))

    def stats(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in [*self.judges.values(), *self.reward_models.values()]:
            out.update(c.stats())
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        async def _close():
            for c in [*self.judges.values(), *self.reward_models.values()]:
                try:
                    await c.close()
                except Exception:  # noqa: BLE001 - closing either way
                    pass
            for e in self.local_engines:
                try:
                    await e.shutdown()
                except Exception:  # noqa: BLE001
                    pass

        try:
            self.run(_close(), timeout=60)
        except Exception:  # noqa: BLE001
            pass
        if self.actors:
            import ray

            for a in self.actors:
                try:
                    ray.kill(a, no_restart=True)
                except Exception:  # noqa: BLE001 - the cluster may be going down
                    pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


class Scorer:
    """A VerifierPool with judges and reward models beside it; see the module docstring."""

    def __init__(self, pool, models: ModelVerifiers | None, config: VerifierConfig | None = None):
        self.pool, self.models = pool, models
        self.config = config or getattr(pool, "config", None) or VerifierConfig()
        self._executor = None

    def score_async(self, requests: list[VerifyRequest]):
        """`score` in a background thread: a future. Several batches (finished groups) are judged at once;
        the pool's part of each runs one batch at a time (the pool serialises), judge requests overlap."""
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="rlvr-scorer")
        return self._executor.submit(self.score, requests)

    def score(self, requests: list[VerifyRequest], progress: bool = False) -> list[VerifyResult]:
        names = self.models.names if self.models else {}
        plain = [i for i, r in enumerate(requests) if not any(n in names for n in r.names())]
        if len(plain) == len(requests):
            return self.pool.score(requests, progress=progress)
        results: list[VerifyResult | None] = [None] * len(requests)
        pool_reqs: list[VerifyRequest] = [requests[i] for i in plain]
        pool_slots: list[tuple[int, str | None]] = [(i, None) for i in plain]  # (request, part name or whole row)
        work: dict[str, list] = {}
        work_slots: dict[str, list[int]] = {}
        parts: dict[int, list[str]] = {}
        plain_set = set(plain)
        for i, r in enumerate(requests):
            if i in plain_set:
                continue
            row_names = r.names()
            parts[i] = row_names
            per_name = isinstance(r.ground_truth, dict) and bool(r.ground_truth) and set(r.ground_truth) <= set(row_names)
            for n in row_names:
                truth = r.ground_truth.get(n) if per_name and len(row_names) > 1 else r.ground_truth
                if n in names:
                    work.setdefault(n, []).append((r.question or r.prompt, r.response if isinstance(r.response, str) else str(r.response or ""), truth))
                    work_slots.setdefault(n, []).append(i)
                else:
                    pool_reqs.append(VerifyRequest(r.response, truth, n, r.prompt, extra=r.extra))
                    pool_slots.append((i, n))
        fut = self.models.score_async(work)  # judges and reward models work while the pool checks the rest
        pool_out = self.pool.score(pool_reqs, progress=progress) if pool_reqs else []
        try:
            model_out = fut.result()
        except BaseException as e:  # noqa: BLE001 - never lose the batch: every model part scores 0 with the reason
            model_out = {n: [VerifyResult(0.0, {}, f"model verifier '{n}' failed: {type(e).__name__}: {e}")] * len(items)
                         for n, items in work.items()}
        part_results: dict[int, dict[str, VerifyResult]] = {i: {} for i in parts}
        for (i, n), res in zip(pool_slots, pool_out):
            if n is None:
                results[i] = res
            else:
                part_results[i][n] = res
        for n, slots in work_slots.items():
            for i, res in zip(slots, model_out[n]):
                part_results[i][n] = res
        for i, row_names in parts.items():
            got = part_results[i]
            if len(row_names) == 1:
                results[i] = got[row_names[0]]
                continue
            score = combine([(n, got[n].score) for n in row_names], self.config)
            details = {n: {"score": got[n].score, "details": got[n].details, "error": got[n].error} for n in row_names}
            errors = [f"{n}: {got[n].error}" for n in row_names if got[n].error]
            results[i] = VerifyResult(score, details, "; ".join(errors) or None)
        return results  # type: ignore[return-value]

    def stats(self) -> dict[str, float]:
        out = dict(self.pool.stats())
        if self.models:
            out.update(self.models.stats())
        return out

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        try:
            if self.models:
                self.models.close()
        finally:
            self.pool.close()

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
