"""A step's metrics (loop/step_metrics.py) are pure: computed here from hand-made groups, no cluster."""
import pytest

from rlvr.engines.completion import Completion
from rlvr.loop.groups import Group
from rlvr.loop.step_metrics import collapse_run, groups_all_equal, step_metrics
from rlvr.verifiers.base import VerifyResult


def _group(scores, version, lengths=(3, 5), finish=("stop", "length"), prompt="p"):
    comps = [Completion(0, list(range(n)), [0.0] * n, "x", f, version, version_spans=[(version, n)])
             for n, f in zip(lengths, finish)]
    g = Group({"verifier": ["math"]}, prompt, [1, 2], comps, [VerifyResult(s, {}, None) for s in scores],
              t_finished=10.0, t_scored=4.0)
    g.rewards = list(scores)
    return g


def test_step_metrics_from_groups():
    fresh, stale, equal = _group([1.0, 0.0], version=4), _group([0.0, 1.0], version=2), _group([1.0, 1.0], version=4)
    times = {"generation": 2.0, "generation_wait": 4.0, "verify": 0.5, "training": 1.0, "weight_sync": 0.1, "step": 4.0}
    m = step_metrics(step=5, version=5, trained_version=4, groups=[fresh, stale, equal], chosen=[fresh, equal],
                     stale=[False, True, False], extra_rounds=1, learner_outs=[{"loss": 1.0}, {"loss": 3.0}],
                     sync={"requests_in_flight": 0, "bytes": 7}, times=times, reruns=2, refused=1,
                     trainable_parameters=9)
    assert m["reward/mean"] == pytest.approx(0.75) and m["reward/math"] == pytest.approx(0.75)
    assert m["loss"] == 2.0
    assert m["reward/groups_all_equal"] == pytest.approx(1 / 3)
    assert m["dynamic_sampling/groups_dropped"] == 1 and m["dynamic_sampling/informative_fraction"] == 0.5
    assert m["staleness/dropped_samples"] == 2 and m["staleness/max"] == 0
    assert m["response_length/mean"] == 4.0 and m["response_length/truncated"] == 0.5
    assert m["rollout/groups_rerun"] == 2 and m["rollout/refused_prompts"] == 1 and m["sync/bytes"] == 7
    assert m["throughput/rollout_tokens_per_s"] == 24 / 2.0 and m["throughput/rollout_tokens_per_s_wall"] == 24 / 4.0
    assert m["rollout/first_scored_before_last_finished_s"] == 6.0 and m["time/step"] == 4.0


def test_collapse_guard_counts_steps_where_every_group_agrees():
    agree = groups_all_equal([_group([1.0, 1.0], 0), _group([0.0, 0.0], 0)])
    assert agree == 1.0
    assert collapse_run(2, agree, n=8) == 3
    assert collapse_run(2, 0.5, n=8) == 0
    assert collapse_run(2, agree, n=1) == 0  # one sample per prompt: every "group" agrees with itself
