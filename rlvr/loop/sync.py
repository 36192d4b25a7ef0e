"""Weight-sync set-up and broadcast (a part of Trainer): learner -> every rollout engine."""

from __future__ import annotations

import time


class WeightSync:
    """Weight sync: forming the broadcast group (learner rank 0 + every engine worker), re-forming it
    when a member is lost, and broadcasting a new policy version."""

    def _reform_weight_sync(self, skip: int | None = None) -> None:
        """The old group lost a member: every member leaves it (bounded waits) and a fresh one is formed."""
        import ray

        refs = [a.close_weight_sync.remote() for j, a in enumerate(self.rollouts) if j != skip]
        refs += [l.close_weight_sync.remote() for l in self.learners]
        ray.wait(refs, num_returns=len(refs), timeout=self.recipe.rollout.engine_timeout_s)
        self.init_weight_sync()


    def init_weight_sync(self) -> None:
        """Form the broadcast group: learner rank 0 + one rank per engine worker (tensor-parallel workers each join)."""
        import ray

        from rlvr.weights.sync import free_port

        r = self.recipe
        tp = r.rollout.tensor_parallel_size
        if r.cluster.weight_sync_backend == "cuda_ipc":  # an engine maps only its own GPU: one group per colocated pair
            addrs = ray.get([l.address.remote() for l in self.learners])
            ray.get([a.init_weight_sync.remote(h, p, 1, 1 + tp, "cuda_ipc") for a, (h, p) in zip(self.rollouts, addrs)] +
                    [l.init_weight_sync.remote(h, p, 1 + tp, "cuda_ipc") for l, (h, p) in zip(self.learners, addrs)])
            return
        host, port = ray.get(self.learners[0].address.remote())
        if host == "127.0.0.1":
            port = free_port()
        world = 1 + len(self.rollouts) * tp
        handles = [a.init_weight_sync.remote(host, port, 1 + i * tp, world, r.cluster.weight_sync_backend)
                   for i, a in enumerate(self.rollouts)]
        handles += [l.init_weight_sync.remote(host, port, world, r.cluster.weight_sync_backend) for l in self.learners]
        ray.get(handles)


    def sync_weights(self, bump: bool = True) -> dict:
        """Broadcast the learner's weights to every engine; `bump` makes them a new policy version.

        Engines are paused for the load: with `train.inflight_updates` their unfinished sequences stay
        and continue under the new weights; otherwise they finish first. An engine that died while the
        learner trained, or dies or stops answering during the broadcast, is restarted and the broadcast
        is redone over a re-formed group.
        """
        if bump:
            self.version += 1
        self.scheduler.check_health(list(range(len(self.rollouts))))  # died during training: restarted and re-synced here
        for _ in range(3):
            failed, out = self._broadcast()
            if not failed:
                return out
            t0 = time.time()
            for i, err in failed.items():
                self._restarting(i, err, "during a weight sync")
                self._restart_engine(i, err)
            self._reform_weight_sync()
            for i, err in failed.items():
                self._restarted(i, err, t0, "during a weight sync")
        raise RuntimeError("weight sync failed three times in a row")


    def _broadcast(self) -> tuple[dict, dict]:
        """One broadcast: ({engine: error} for engines that failed, {bytes, requests_in_flight})."""
        import ray

        ro, bucket = self.recipe.rollout, self.recipe.train.sync_bucket_mb << 20
        errors = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.RayTaskError)
        recv = {a.receive_weights.remote(self.specs, bucket, self.version, self.recipe.train.inflight_updates,
                                         adapter=self.adapter): i
                for i, a in enumerate(self.rollouts)}
        send = [l.send_weights.remote(bucket) for l in self.learners]
        failed: dict = {}
        done: dict = {}
        pending = list(recv)
        while pending:  # no deadline on a healthy engine finishing its requests (mode wait); a silent one is dead
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=ro.health_interval_s)
            for ref in ready:
                try:
                    done[recv[ref]] = ray.get(ref)
                except errors as e:
                    failed[recv[ref]] = e
            if failed:
                break
            for ref in pending:
                try:
                    ray.get(self.rollouts[recv[ref]].health.remote(), timeout=ro.engine_timeout_s)
                except (ray.exceptions.GetTimeoutError, *errors) as e:
                    failed[recv[ref]] = e
            if failed:
                break
        try:
            sent = ray.get(send, timeout=ro.engine_timeout_s if failed else None)
        except (ray.exceptions.GetTimeoutError, *errors) as e:
            if not failed:
                raise
            sent = None
        if failed:  # the others may be stuck in the broadcast: give them a bounded time to fail or finish
            for l in self.learners:
                l.close_weight_sync.remote()
            ready, stuck = ray.wait(pending, num_returns=len(pending), timeout=ro.engine_timeout_s) if pending else ([], [])
            for ref in stuck:
                failed[recv[ref]] = TimeoutError("stuck in a weight sync whose group lost a member")
            return failed, {}
        return {}, {"bytes": sent[0]["bytes"], "requests_in_flight": sum(d["requests_in_flight"] for d in done.values())}
