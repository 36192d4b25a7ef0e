"""The rollout scheduler: one request per prompt group, routed to the least-loaded engine, streamed back.

The controller hands it batches of prompts (token ids); it sends each group to the engine with
the fewest sequences in flight, keeps at most `max_seqs_per_engine` sequences in any engine (the
rest wait here and go to whichever engine frees up first), and yields every group the moment it
is finished, so the controller can score it while the other groups still generate.

No wait on an engine lacks a deadline. While groups are outstanding, every engine holding some is
health-checked each `health_interval_s`; one that raises (its EngineCore died), whose Ray actor
died, or that does not answer within `engine_timeout_s` is handed to `on_engine_dead` (the
controller restarts it and pushes the current weights) and its unfinished groups run again.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Batch:
    """Groups submitted together; results arrive in completion order."""

    prompt_ids: list[list[int]]
    kwargs: dict
    per_group: list[dict] | None = None  # settings that differ by group (e.g. max_tokens), over kwargs
    t_submit: float = field(default_factory=time.time)
    results: dict = field(default_factory=dict)  # group index -> GroupResult
    delivered: set = field(default_factory=set)
    reruns: int = 0  # groups generated again after their engine died

    @property
    def done(self) -> bool:
        return len(self.delivered) == len(self.prompt_ids)


@dataclass
class _Request:
    batch: Batch
    index: int
    engine: int = -1
    ref: object = None
    attempts: int = 0


class RolloutScheduler:
    def __init__(self, engines: list, *, max_seqs_per_engine: int = 256, health_interval_s: float = 5.0,
                 engine_timeout_s: float = 60.0, on_engine_dead=None):
        self.engines = engines  # Ray handles; the controller may replace one after a restart
        self.max_seqs = max_seqs_per_engine
        self.health_interval_s, self.engine_timeout_s = health_interval_s, engine_timeout_s
        self.on_engine_dead = on_engine_dead or (lambda i, e: (_ for _ in ()).throw(e))
        self.load = [0] * len(engines)  # sequences in flight per engine
        self.served = [0] * len(engines)  # groups finished per engine (for metrics and tests)
        self.queue: deque[_Request] = deque()
        self.running: dict = {}  # ObjectRef -> _Request
        self.last_health = time.time()
        self.reruns = 0  # groups generated again after their engine died (cumulative)

    def _seqs(self, req: _Request) -> int:
        return 1 if req.batch.kwargs.get("greedy") else req.batch.kwargs["n"]

    def submit(self, prompt_ids: list[list[int]], per_group: list[dict] | None = None, **kwargs) -> Batch:
        """Queue one group per prompt; returns at once. kwargs: generate()'s sampling settings."""
        batch = Batch([list(p) for p in prompt_ids], kwargs, per_group)
        self.queue.extend(_Request(batch, k) for k in range(len(prompt_ids)))
        self.dispatch()
        return batch

    def dispatch(self) -> None:
        """Send queued groups to the least-loaded engines while any engine has room (an empty engine always has)."""
        while self.queue:
            req = self.queue[0]
            i = min(range(len(self.engines)), key=lambda j: self.load[j])
            if self.load[i] and self.load[i] + self._seqs(req) > self.max_seqs:
                return
            self.queue.popleft()
            self._send(req, i)

    def _send(self, req: _Request, i: int) -> None:
        req.engine = i
        kwargs = {**req.batch.kwargs, **(req.batch.per_group[req.index] if req.batch.per_group else {})}
        if "env" in kwargs:  # a multi-turn row: the engine's actor runs its trajectories
            req.ref = self.engines[i].run_env.remote(kwargs.pop("row"), prompt_index=req.index, **kwargs)
        else:
            req.ref = self.engines[i].generate.remote(req.batch.prompt_ids[req.index], prompt_index=req.index, **kwargs)
        self.running[req.ref] = req
        self.load[i] += self._seqs(req)

    def stream(self, batch: Batch):
        """Yield (group index, GroupResult) for `batch` as its groups finish; faults are recovered on the way."""
        for _, k, res in self.stream_many([batch]):
            yield k, res

    def stream_many(self, batches: list[Batch]):
        """Yield (batch, group index, GroupResult) for any of `batches` as groups finish. The caller may stop
        early: whatever finishes meanwhile is kept in its batch and yielded by a later call."""
        import ray

        wanted = {id(b): b for b in batches}
        for b in batches:  # finished while another batch was streamed
            for k in sorted(set(b.results) - b.delivered):
                b.delivered.add(k)
                yield b, k, b.results[k]
        while not all(b.done for b in batches):
            refs = [r for r, q in self.running.items() if id(q.batch) in wanted]
            if not refs:  # all their groups are queued behind other batches' ones
                refs = list(self.running)
            ready, _ = ray.wait(refs, num_returns=1, timeout=self.health_interval_s) if refs else ([], [])
            for ref in ready:
                req = self.running.pop(ref)
                self.load[req.engine] -= self._seqs(req)
                try:
                    res = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.RayTaskError) as e:
                    self.running[ref] = req  # it belongs to the dead engine: rerun with the rest of its groups
                    self.load[req.engine] += self._seqs(req)
                    self._engine_failed(req.engine, e)
                    continue
                self.served[req.engine] += 1
                req.batch.results[req.index] = res
                if id(req.batch) in wanted:
                    req.batch.delivered.add(req.index)
                    self.dispatch()
                    yield req.batch, req.index, res
            self.dispatch()
            if not ready or time.time() - self.last_health > self.health_interval_s:
                self.check_health()

    def check_health(self, engines: list[int] | None = None) -> list[int]:
        """Health-check engines (default: those with work); recover every one that fails. Returns their indices."""
        import ray

        self.last_health = time.time()
        todo = engines if engines is not None else sorted({q.engine for q in self.running.values()})
        refs = {i: self.engines[i].health.remote() for i in todo}
        failed = []
        for i, ref in refs.items():
            try:
                ray.get(ref, timeout=self.engine_timeout_s)
            except ray.exceptions.GetTimeoutError:
                failed.append((i, TimeoutError(f"vLLM engine {i} did not answer a health check in {self.engine_timeout_s:g}s")))
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.RayTaskError) as e:
                failed.append((i, e))
        for i, e in failed:
            self._engine_failed(i, e)
        return [i for i, _ in failed]

    def _engine_failed(self, i: int, error: Exception) -> None:
        """Recover engine i (the controller restarts and re-syncs it), then rerun its unfinished groups."""
        lost = [(ref, q) for ref, q in self.running.items() if q.engine == i]
        for ref, _ in lost:
            del self.running[ref]
        self.load[i] = 0
        self.on_engine_dead(i, error)
        for _, q in lost:
            q.batch.reruns += 1
            self.reruns += 1
            q.attempts += 1
            if q.attempts > 3:
                raise RuntimeError(f"a prompt group failed on {q.attempts} engines in a row; last error: {error}")
        self.queue.extendleft(q for _, q in reversed(lost))
        self.dispatch()

    def add_engine(self) -> None:
        """The controller appended a ready, weight-synced engine to `engines`: start routing to it."""
        self.load.append(0)
        self.served.append(0)
        self.dispatch()

    def retire_last_engine(self) -> None:
        """Stop routing to the last engine and hand its unfinished groups back to the queue (they run
        again elsewhere; a result it still returns is dropped, so each group is delivered once)."""
        import ray

        i = len(self.load) - 1
        lost = [(ref, q) for ref, q in self.running.items() if q.engine == i]
        for ref, _ in lost:
            ray.cancel(ref)
            del self.running[ref]
        self.queue.extendleft(q for _, q in reversed(lost))
        self.load.pop()
        self.served.pop()

    def drain(self) -> None:
        """Wait out every outstanding group (results kept in their batches)."""
        import ray

        while self.running or self.queue:
            ready, _ = ray.wait(list(self.running), num_returns=1, timeout=self.health_interval_s) if self.running else ([], [])
            for ref in ready:
                req = self.running.pop(ref)
                self.load[req.engine] -= self._seqs(req)
                try:
                    req.batch.results[req.index] = ray.get(ref)
                except Exception:  # the batch is being thrown away; its engine is checked below
                    req.batch.delivered.add(req.index)
            self.dispatch()
            if not ready:
                self.check_health()
