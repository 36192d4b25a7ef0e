"""A step's metrics as pure functions of what the step saw (docs/metrics.md lists every key)."""
from __future__ import annotations

import json
import zlib
from collections import defaultdict


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def transcript(c) -> str:
    """A completion as the samples table shows it: the text, or a whole trajectory with its roles."""
    if not c.trajectory:
        return c.text
    return "\n".join(f"[{m['role']}] {m['content']}" for m in c.trajectory["messages"])


def groups_all_equal(groups) -> float:
    """Fraction of groups whose verifier scores all agree (no advantage, no learning signal)."""
    return mean(len({s.score for s in g.scores}) == 1 for g in groups)


def collapse_run(previous: int, all_equal: float, n: int) -> int:
    """Consecutive steps in which every group agreed. With n=1 every "group" agrees with itself: nothing to detect."""
    return previous + 1 if all_equal == 1.0 and n > 1 else 0


def step_metrics(*, step: int, version: int, trained_version: int, groups: list, chosen: list, stale: list[bool],
                 extra_rounds: int, learner_outs: list[dict], sync: dict, times: dict, reruns: int, refused: int,
                 trainable_parameters: int) -> dict:
    """Rewards, learner averages, dynamic sampling, lengths, staleness, in-flight updates, streaming and throughput.
    `groups`: every group the step generated (dropped ones too); `chosen`: those trained on; `times`: seconds of
    generation, generation_wait, verify, training, weight_sync and step."""
    rewards = [x for g in chosen for x in g.rewards]
    comps = [c for g in chosen for c in g.comps]
    m = {"step": step, "policy_version": version,
         "reward/mean": mean(rewards), "reward/verifier_mean": mean(s.score for g in chosen for s in g.scores)}
    by_verifier = defaultdict(list)
    for g in chosen:
        for name in g.row["verifier"]:
            by_verifier[name].extend(s.score for s in g.scores)
    m.update({f"reward/{name}": mean(xs) for name, xs in by_verifier.items()})
    m.update({k: mean(o[k] for o in learner_outs) for k in learner_outs[0]})
    if "learner/tokens" in learner_outs[0]:  # ranks wait for the slowest: the most tokens over the mean
        from rlvr.learners.partition import imbalance

        m["learner/rank_imbalance"] = imbalance([o["learner/tokens"] for o in learner_outs])
    m["reward/groups_all_equal"] = groups_all_equal(groups)
    # The data order at a glance: resumed and uninterrupted runs must agree step by step.
    m["data/prompts_crc32"] = zlib.crc32("\n".join(g.prompt for g in chosen).encode())
    m["dynamic_sampling/extra_rounds"] = extra_rounds
    m["dynamic_sampling/informative_fraction"] = mean(len(set(g.rewards)) > 1 for g in chosen)  # whether or not filtering is on
    m["dynamic_sampling/groups_dropped"] = len(groups) - len(chosen)
    tokens = sum(len(c.token_ids) for c in comps)
    m["response_length/mean"] = tokens / max(1, len(comps))
    m["response_length/truncated"] = mean(c.finish_reason == "length" for c in comps)
    lags = [version - 1 - g.version for g in chosen]  # versions behind the policy that was trained
    m.update({"staleness/mean": mean(lags), "staleness/max": max(lags),
              "staleness/dropped_samples": sum(len(g.comps) for g, old in zip(groups, stale) if old),
              # tokens sampled by a policy older than the one trained (in-flight updates mix versions in a sequence)
              "staleness/token_fraction": sum(c.tokens_older_than(trained_version) for c in comps) / max(1, tokens),
              "inflight/sequences_updated": sum(c.last_version != c.policy_version for c in comps),
              "inflight/requests_at_sync": sync["requests_in_flight"],
              "sync/bytes": sync.get("bytes", 0), "learner/trainable_parameters": trainable_parameters,
              "rollout/groups_rerun": reruns, "rollout/refused_prompts": refused})
    # Streaming: how long before the batch's last group finished its first group was already scored.
    m["rollout/first_scored_before_last_finished_s"] = max(g.t_finished for g in groups) - min(g.t_scored for g in groups)
    generated = sum(len(c.token_ids) for g in groups for c in g.comps)  # dropped groups were generated too
    m.update({f"time/{k}": v for k, v in times.items()})
    m["throughput/rollout_tokens_per_s"] = generated / max(times["generation"], 1e-9)
    # as the driver sees it (Ray round trip, log-prob extraction): meaningful when async_steps is 0
    m["throughput/rollout_tokens_per_s_wall"] = generated / max(times["generation_wait"], 1e-9)
    return m


def samples_table(chosen: list, limit: int = 16) -> list[dict]:
    """The first samples of the step, as W&B's table shows them."""
    return [{"prompt": g.prompt, "completion": transcript(c), "reward": s.score,
             "details": json.dumps(s.details, default=str)[:500]}
            for g in chosen for c, s in zip(g.comps, g.scores)][:limit]
