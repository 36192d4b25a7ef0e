"""The rollout scheduler's routing, on a local Ray with stand-in engine actors (the real engines'
routing is exercised by tests/integration/test_elastic.py): no engine holds more than
`max_seqs_per_engine` sequences, the rest wait in the scheduler, and each waiting group goes to
whichever engine frees up first; every group is delivered once."""

import asyncio

import pytest
import ray

from rlvr.engines.scheduler import RolloutScheduler


def _fake_engine(index: int, delay: float):
    """A stand-in engine actor answering each group after `delay` seconds with (engine index, group index)."""

    class FakeEngine:  # defined in a function, so Ray ships it by value (this module is not importable in a worker)
        calls = 0

        async def generate_groups(self, items):
            self.calls += 1
            async def one(j, item):
                await asyncio.sleep(delay)
                return j, (index, item["prompt_index"])

            for done in asyncio.as_completed([one(j, item) for j, item in enumerate(items)]):
                yield await done

        async def health(self) -> dict:
            return {"calls": self.calls}

    return ray.remote(FakeEngine).remote()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_groups_wait_for_room_and_go_to_the_engine_that_frees_first(local_ray):
    # Engine 0 takes 4 s per group, engine 1 a few ms: after the first two groups (one each, 8 sequences
    # fill an engine), the four waiting groups all run on engine 1 while engine 0 still works.
    engines = [_fake_engine(0, 4.0), _fake_engine(1, 0.01)]
    ray.get([e.health.remote() for e in engines])  # both worker processes up: a slow start is not a slow engine
    sched = RolloutScheduler(engines, max_seqs_per_engine=8, health_interval_s=30)
    batch = sched.submit([[1, 2, 3]] * 6, n=8, temperature=1.0)
    assert sched.load == [8, 8] and len(sched.queue) == 4
    order = []
    for k, res in sched.stream(batch):
        order.append(k)
        if len(order) == 5:  # every group but engine 0's
            assert sched.served == [0, 5] and sched.load == [8, 0] and not sched.queue
    assert sorted(order) == list(range(6)) and order[-1] == 0
    assert {k: batch.results[k] for k in range(6)} == {0: (0, 0), **{k: (1, k) for k in range(1, 6)}}


def test_an_idle_engine_takes_a_group_larger_than_the_limit(local_ray):
    """A group of more sequences than `max_seqs_per_engine` must still run (alone), never wait for ever."""
    engines = [_fake_engine(0, 0.01)]
    sched = RolloutScheduler(engines, max_seqs_per_engine=4, health_interval_s=30)
    batch = sched.submit([[1]] * 3, n=8, temperature=1.0)
    assert sched.load == [8] and len(sched.queue) == 2
    assert sorted(k for k, _ in sched.stream(batch)) == [0, 1, 2] and sched.served == [3]


def test_one_dispatch_is_one_call_per_engine(local_ray):
    """The groups one dispatch sends an engine arrive in a single call (the engine starts them in the same
    step), split across engines by load, and still come back one by one."""
    engines = [_fake_engine(0, 0.01), _fake_engine(1, 0.01)]
    sched = RolloutScheduler(engines, max_seqs_per_engine=1024, health_interval_s=30)
    batch = sched.submit([[1]] * 6, n=8, temperature=1.0)
    assert len(sched.running) == 2 and sched.load == [24, 24]
    assert sorted(k for k, _ in sched.stream(batch)) == list(range(6)) and sched.served == [3, 3]
    assert [ray.get(e.health.remote())["calls"] for e in engines] == [1, 1]
