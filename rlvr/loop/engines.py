"""The engine pool (a part of Trainer): start, recover, grow and shrink the vLLM rollout engines."""

from __future__ import annotations

import json
import os
import time

from rlvr.loop.prepare import model_dir


def engine_cpu_threads(recipe) -> int:
    """Cores per CPU engine: its own `rollout.cpu_threads`, else all of the node's cores shared among the
    engines when generation and training take turns (synchronous), else the engine's Ray reservation."""
    ro = recipe.rollout
    if ro.cpu_threads is not None:
        return ro.cpu_threads
    if recipe.train.async_steps:
        return max(1, int(ro.num_cpus))
    cpus = recipe.cluster.num_cpus or os.cpu_count() or 1
    return max(1, cpus // max(1, -(-ro.engines // recipe.hardware.nodes)))


class EnginePool:
    """The rollout engines as a pool: start options, failure recovery (restart, re-sync), elastic
    growth and retirement (`rlvr scale`)."""

    def recover_engine(self, i: int, error: Exception) -> None:
        """Restart engine i (it died, or its EngineCore did, or it stopped answering), rebuild the weight-sync
        group, and push the current weights to it."""
        t0 = time.time()
        self._restarting(i, error, "(a failed call or health check)")
        self._restart_engine(i, error)
        self._reform_weight_sync(skip=i)
        failed, _ = self._broadcast()
        if failed:
            raise RuntimeError(f"vLLM engine(s) {sorted(failed)} failed again while engine {i} was being re-synced")
        self._restarted(i, error, t0, "(a failed call or health check)")


    def _restart_engine(self, i: int, error: Exception | None = None) -> None:
        from rlvr.engines.scheduler import restart_engine

        self.instances[i] = restart_engine(self.rollouts[i], self.instances[i], error,
                                           deadline_s=max(600.0, 10 * self.recipe.rollout.engine_timeout_s))


    def _new_engine(self, i: int, options: dict):
        import ray

        from rlvr.engines.rollout import RolloutActor

        r = self.recipe
        return ray.remote(RolloutActor).options(**options).remote(
            model_dir(r), seed=r.seed, max_model_len=r.rollout.max_model_len, dtype=r.dtype,
            kv_cache_gib=r.rollout.kv_cache_gib, tensor_parallel_size=r.rollout.tensor_parallel_size,
            gpu_memory_utilization=r.rollout.gpu_memory_utilization, enforce_eager=r.rollout.enforce_eager, engine_index=i,
            lora_rank=r.learner.lora.rank if r.learner.lora and r.learner.lora.sync == "adapter" else None, max_num_seqs=r.rollout.max_num_seqs,
            cpu_threads=engine_cpu_threads(r))


    def add_engine(self) -> bool:
        """Start one more engine where the cluster has room, give it the current weights, then route to it.
        False when no node has room for one now."""
        import ray

        i = len(self.rollouts)
        options = self.placement.extra_rollout_options(i)
        if options is None:
            return False
        t0 = time.time()
        engine = self._new_engine(i, options)
        self.instances.append(ray.get(engine.ready.remote()))
        self.rollouts.append(engine)
        self._reform_weight_sync()
        failed, _ = self._broadcast()
        if failed:
            raise RuntimeError(f"vLLM engine(s) {sorted(failed)} failed while engine {i} joined")
        self.scheduler.add_engine()
        self.progress.print(f"engine {i} joined the pool in {time.time() - t0:.0f}s ({len(self.rollouts)} engines)")
        return True


    def remove_engine(self) -> None:
        """The last engine leaves: its unfinished groups go back to the queue, the group is re-formed without it."""
        import ray

        i = len(self.rollouts) - 1
        self.scheduler.retire_last_engine()
        engine = self.rollouts.pop()
        self.instances.pop()
        try:
            ray.get(engine.shutdown.remote(), timeout=self.recipe.rollout.engine_timeout_s)
        except Exception:  # it is leaving either way
            pass
        ray.kill(engine, no_restart=True)
        self.placement.release_extra(i)
        self._reform_weight_sync()
        self.scheduler.dispatch()
        self.progress.print(f"engine {i} left the pool ({len(self.rollouts)} engines)")


    def rescale(self) -> None:
        """Apply `rlvr scale` (runs/<name>/scale.json) and grow onto new room up to rollout.max_engines."""
        want = None
        req = self.run_dir / "scale.json"
        if req.is_file():
            try:
                want = int(json.loads(req.read_text())["engines"])
            except (ValueError, KeyError, TypeError):
                self.progress.print(f"[yellow]ignoring {req}: expected {{\"engines\": N}}[/yellow]")
            req.unlink(missing_ok=True)
        if want is not None and want >= 1:
            while len(self.rollouts) > want:
                self.remove_engine()
            while len(self.rollouts) < want and self.add_engine():
                pass
            self.engines_wanted = want
        grow_to = self.recipe.rollout.max_engines
        if grow_to and self.engines_wanted is None:
            while len(self.rollouts) < grow_to and self.add_engine():
                pass


    @staticmethod
    def _seen(error: Exception) -> str:
        """An engine error in one line: the cause a Ray task error carries, not its traceback."""
        cause = getattr(error, "cause", None) or error
        text = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {text[0][:200] if text else ''}"


    def _restarting(self, i: int, error: Exception, when: str) -> None:
        self.progress.print(f"[yellow]vLLM engine {i} failed {when}: {self._seen(error)}; restarting it[/yellow]")


    def _restarted(self, i: int, error: Exception, t0: float, when: str) -> None:
        """Say that engine i is back: a console line and an event row in metrics.jsonl, written at once."""
        seconds = time.time() - t0
        self.faults["rollout_restarts"] += 1
        self.faults["recovery_seconds"] += seconds
        seen = self._seen(error)
        self.progress.print(f"[yellow]vLLM engine {i} is back, restarted in {seconds:.1f}s[/yellow]")
        self.sink.log_event({"step": self.step, "event": "engine_restart", "event/engine": i, "event/when": when,
                             "event/error": seen, "event/recovery_seconds": seconds,
                             "engines/restarts": self.faults["rollout_restarts"]})
