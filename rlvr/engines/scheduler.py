"""The rollout scheduler: one request per prompt group, routed to the least-loaded engine, streamed back.

The controller hands it batches of prompts (token ids); it sends each group to the engine with
the fewest sequences in flight, keeps at most `max_seqs_per_engine` sequences in any engine (the
rest wait here and go to whichever engine frees up first), and yields every group the moment it
is finished, so the controller can score it while the other groups still generate. The groups one
dispatch sends an engine travel in one streaming call: the engine starts them together (one engine
step admits them all, rather than as 64 separate calls trickle in) and returns each as it finishes.

No wait on an engine lacks a deadline. While groups are outstanding, every engine holding some is
health-checked each `health_interval_s`; one that raises (its EngineCore died), whose Ray actor
died, or that does not answer within `engine_timeout_s` is handed to `on_engine_dead` (the
controller restarts it and pushes the current weights) and its unfinished groups run again.
A failed call is decided by its error: EngineDead or a dead actor is an engine failure; anything
else is checked with a health check first, and an engine that answers is kept (the call's groups
run again). A prompt the engine refuses never fails a call: its group comes back with `refused`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from rlvr.errors import EngineCallEnded, EngineDead


def engine_failure(error: BaseException) -> bool:
    """Whether a failed call means its engine is gone: its Ray actor died or is unreachable, or the call
    raised EngineDead (vLLM's EngineCore died under a live actor). Anything else is decided by a health check."""
    import ray

    if isinstance(error, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)):
        return True
    cause = error.as_instanceof_cause() if isinstance(error, ray.exceptions.RayTaskError) else error
    return isinstance(cause, EngineDead)


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
    attempts: int = 0


@dataclass
class _Call:
    """One streaming call to an engine: the groups one dispatch sent it, yielded back as each finishes."""

    engine: int
    reqs: list[_Request]
    gen: object = None  # Ray ObjectRefGenerator of (position, GroupResult)
    open: set = field(default_factory=set)  # positions not yet returned


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
        self.running: dict[int, _Call] = {}  # id(generator) -> its call, while it has groups out
        self.last_health = time.time()
        self.reruns = 0  # groups generated again after their engine died (cumulative)
        self.refused = 0  # groups whose prompt an engine refused (cumulative; skipped, the engine kept)

    def _seqs(self, req: _Request) -> int:
        return 1 if req.batch.kwargs.get("greedy") else req.batch.kwargs["n"]

    def submit(self, prompt_ids: list[list[int]], per_group: list[dict] | None = None, **kwargs) -> Batch:
        """Queue one group per prompt; returns at once. kwargs: generate()'s sampling settings."""
        batch = Batch([list(p) for p in prompt_ids], kwargs, per_group)
        self.queue.extend(_Request(batch, k) for k in range(len(prompt_ids)))
        self.dispatch()
        return batch

    def dispatch(self) -> None:
        """Send queued groups to the least-loaded engines while any engine has room (an empty engine always
        has): one call per engine for all the groups it takes now."""
        waves: dict[int, list[_Request]] = {}
        while self.queue:
            req = self.queue[0]
            i = min(range(len(self.engines)), key=lambda j: self.load[j])
            if self.load[i] and self.load[i] + self._seqs(req) > self.max_seqs:
                break
            self.queue.popleft()
            req.engine = i
            self.load[i] += self._seqs(req)
            waves.setdefault(i, []).append(req)
        for i, reqs in waves.items():
            call = _Call(i, reqs, open=set(range(len(reqs))))
            call.gen = self.engines[i].generate_groups.options(num_returns="streaming").remote(
                [self._item(req) for req in reqs])
            self.running[id(call.gen)] = call

    @staticmethod
    def _item(req: _Request) -> dict:
        """The engine's arguments for one group (rows naming an environment carry `row` instead of ids)."""
        item = {**req.batch.kwargs, **(req.batch.per_group[req.index] if req.batch.per_group else {}), "prompt_index": req.index}
        if "env" not in item:
            item["prompt_ids"] = req.batch.prompt_ids[req.index]
        return item

    def _next(self, call: _Call):
        """The next finished group of a ready call as (request, result); None when the call has ended.
        Raises Ray's actor/task errors when its engine failed, EngineCallEnded when the call ended early."""
        import ray

        try:
            j, res = ray.get(next(call.gen))
        except StopIteration:
            if call.open:  # ended without some of its groups: its engine is checked (the call stays in `running`)
                raise EngineCallEnded(f"engine {call.engine}'s call ended before {len(call.open)} of its groups") from None
            del self.running[id(call.gen)]
            return None
        call.open.discard(j)
        req = call.reqs[j]
        self.load[call.engine] -= self._seqs(req)
        if not call.open:
            del self.running[id(call.gen)]
        return req, res

    def _events(self, calls_of, done):
        """Wait on the calls `calls_of()` picks, yielding (call, (request, result)) or (call, error) as each
        group finishes or a call fails, and dispatching queued groups as engines free up, until `done()`.
        An idle wait health-checks the engines with work. A failed call stays in `running` for the caller."""
        import ray

        while not done():
            calls = calls_of()
            ready, _ = ray.wait([c.gen for c in calls], num_returns=1, timeout=self.health_interval_s) if calls else ([], [])
            for gen in ready:
                call = self.running.get(id(gen))
                if call is None:  # its engine failed while an earlier ready call was handled
                    continue
                try:
                    got = self._next(call)
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.RayTaskError,
                        EngineCallEnded) as e:
                    yield call, e
                    continue
                if got is not None:
                    yield call, got
            self.dispatch()
            if not ready or time.time() - self.last_health > self.health_interval_s:
                self.check_health()

    def stream(self, batch: Batch):
        """Yield (group index, GroupResult) for `batch` as its groups finish; faults are recovered on the way."""
        for _, k, res in self.stream_many([batch]):
            yield k, res

    def stream_many(self, batches: list[Batch]):
        """Yield (batch, group index, GroupResult) for any of `batches` as groups finish. The caller may stop
        early: whatever finishes meanwhile is kept in its batch and yielded by a later call. A group the
        engine refused (its prompt: `GroupResult.refused`) is yielded like any other; the caller skips it."""
        wanted = {id(b): b for b in batches}
        for b in batches:  # finished while another batch was streamed
            for k in sorted(set(b.results) - b.delivered):
                b.delivered.add(k)
                yield b, k, b.results[k]

        def calls_of():
            calls = [c for c in self.running.values() if any(id(c.reqs[j].batch) in wanted for j in c.open)]
            return calls or list(self.running.values())  # theirs may all be queued behind other batches' groups

        for call, got in self._events(calls_of, lambda: all(b.done for b in batches)):
            if isinstance(got, Exception):
                self._call_failed(call, got)  # its unfinished groups run again
            else:
                req, res = got
                self.served[req.engine] += 1
                if getattr(res, "refused", ""):
                    self.refused += 1
                req.batch.results[req.index] = res
                if id(req.batch) in wanted:
                    req.batch.delivered.add(req.index)
                    self.dispatch()
                    yield req.batch, req.index, res

    def _call_failed(self, call: _Call, error: Exception) -> None:
        """Decide by the error: an engine that is dead or unresponsive (its actor died, its EngineCore did, or
        it fails a health check) is recovered; an engine that answers its health check keeps running, and the
        call's unfinished groups run again (bounded, like every rerun)."""
        if engine_failure(error):
            self._engine_failed(call.engine, error)
            return
        if self.check_health([call.engine]):  # failed it: recovered there, the call's groups with the rest
            return
        lost = [call.reqs[j] for j in sorted(call.open)]
        self.running.pop(id(call.gen), None)
        self.load[call.engine] -= sum(self._seqs(q) for q in lost)
        self._requeue(lost, error)

    def check_health(self, engines: list[int] | None = None) -> list[int]:
        """Health-check engines (default: those with work); recover every one that fails. Returns their indices."""
        import ray

        self.last_health = time.time()
        todo = engines if engines is not None else sorted({c.engine for c in self.running.values()})
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

    def _take_calls(self, i: int) -> list[_Request]:
        """Forget engine i's calls; their unfinished groups, in order."""
        lost = []
        for key, call in list(self.running.items()):
            if call.engine == i:
                del self.running[key]
                lost += [call.reqs[j] for j in sorted(call.open)]
        return lost

    def _engine_failed(self, i: int, error: Exception) -> None:
        """Recover engine i (the controller restarts and re-syncs it), then rerun its unfinished groups."""
        lost = self._take_calls(i)
        self.load[i] = 0
        self.on_engine_dead(i, error)
        self._requeue(lost, error)

    def _requeue(self, lost: list[_Request], error: Exception) -> None:
        for q in lost:
            q.batch.reruns += 1
            self.reruns += 1
            q.attempts += 1
            if q.attempts > 3:
                raise RuntimeError(f"a prompt group failed on {q.attempts} engines in a row; last error: {error}")
        self.queue.extendleft(reversed(lost))
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
        for call in [c for c in self.running.values() if c.engine == i]:
            try:
                ray.cancel(call.gen)
            except Exception:  # already finished, or the engine is gone
                pass
        self.queue.extendleft(reversed(self._take_calls(i)))
        self.load.pop()
        self.served.pop()

    def drain(self) -> None:
        """Wait out every outstanding group (results kept in their batches; a failed engine is recovered by
        the health check, and its groups, being thrown away, are not run again)."""
        for call, got in self._events(lambda: list(self.running.values()), lambda: not (self.running or self.queue)):
            if isinstance(got, Exception):
                self.running.pop(id(call.gen), None)
                self.load[call.engine] -= sum(self._seqs(call.reqs[j]) for j in call.open)
                for j in call.open:
                    call.reqs[j].batch.delivered.add(call.reqs[j].index)
            else:
                req, res = got
                req.batch.results[req.index] = res


def actor_state(handle) -> str:
    """Ray's view of an actor: ALIVE, RESTARTING, DEAD, ... ("" when it cannot say)."""
    try:
        import ray

        return str(ray._private.state.actors(handle._actor_id.hex()).get("State", ""))
    except Exception:
        return ""


def restart_engine(handle, old_instance: str, error: Exception | None = None, *, deadline_s: float = 600.0,
                   kill=None) -> str:
    """Restart an engine actor and return its new process id (`ready()`'s answer) once it differs from
    `old_instance`: a kill is asynchronous, so the old process may still answer for a while. An actor
    that is already dead or restarting (its actor error says so, or Ray's state does) is not killed
    again: a second kill could land on the new process after it answered."""
    import ray

    kill = kill or (lambda h: ray.kill(h, no_restart=False))
    if not isinstance(error, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)) \
            and actor_state(handle) in ("ALIVE", ""):
        kill(handle)  # a live actor with a dead EngineCore, or one that stopped answering
    deadline = time.time() + deadline_s
    while time.time() < deadline:  # Ray restarts the actor (max_restarts); ready() loads the model again
        try:
            instance = ray.get(handle.ready.remote(), timeout=60)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
            time.sleep(1)
            continue
        if instance != old_instance:
            return instance
        time.sleep(0.1)  # the old process answered: the kill has not landed yet
    raise RuntimeError(f"engine actor did not come back within {deadline_s:g}s of a restart")
