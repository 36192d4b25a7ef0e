"""Environment groups into the learner's batch (issue 21, finding 7): each trajectory trains under the
prompt its own reset produced, and a failed reset is counted and keeps its group out of training.

The rollout actor's real `run_env` runs here with stand-ins for the engine (a scripted `_sample`):
no vLLM, no Ray."""
import asyncio
from types import SimpleNamespace

import pytest

from rlvr import toy_tools as tt
from rlvr.engines import multiturn
from rlvr.engines.rollout import RolloutActor
from rlvr.loop.groups import Group
from rlvr.loop.step import learner_prompt_ids, reset_failures
from rlvr.environments.base import Environment, Observation
from rlvr.environments.registry import register_environment
from rlvr.environments.trajectory import env_metrics, render_opening
from rlvr.learners.batch import build_batch, pick_groups

N = 4
_resets = {"calls": 0}


@register_environment("test_seeded_reset", "reset differs per trajectory (an instance number); can fail")
class SeededReset(Environment):
    def __init__(self, fail_calls=(), **_):
        self.fail_calls = set(fail_calls)

    async def reset(self, row):
        k = _resets["calls"]
        _resets["calls"] += 1
        if k in self.fail_calls:
            raise RuntimeError(f"instance {k} could not be set up")
        return [{"role": "user", "content": f"instance {k * 7919 % 1000}: {row['messages'][0]['content']}"}]

    async def step(self, assistant_message):
        return Observation(messages=[], done=True)


@pytest.fixture(scope="module")
def actor():
    a = RolloutActor("unused-model-path")
    a.llm = SimpleNamespace(model_config=SimpleNamespace(max_model_len=512), errored=False)
    a.tokenizer = tt.build_tokenizer()

    async def sample(ids, params):  # the engine: two tokens, then EOS
        out = [ord("4"), ord("2"), a.tokenizer.eos_token_id]
        return [out], [[-0.5] * 3], ["stop"], [[(0, 3)]]

    a._sample = sample
    return a


def _group(actor, monkeypatch, fail_calls=()):
    monkeypatch.setattr(multiturn, "sampling_params", lambda **kw: kw)
    _resets["calls"] = 0
    row = {"messages": [{"role": "user", "content": "What is 6 * 7?"}], "env": "test_seeded_reset"}
    res = asyncio.run(actor.run_env(row, env="test_seeded_reset", env_options={"fail_calls": list(fail_calls)},
                                    plugins=[], limits={"max_turns": 2}, n=N, temperature=1.0, max_tokens=8))
    return Group(row, "p", res.prompt_token_ids, res.completions, [None] * N, rewards=[1.0, 0.0, 0.0, 1.0])


def test_each_trajectory_trains_under_its_own_reset(actor, monkeypatch):
    g = _group(actor, monkeypatch)
    own = [render_opening(actor.tokenizer, c.trajectory["messages"][:1], []) for c in g.comps]
    assert len({tuple(p) for p in own}) == N  # the resets really differ
    ids = learner_prompt_ids([g])
    assert ids == own
    batch = build_batch(ids, [c.token_ids for c in g.comps], [c.logprobs for c in g.comps], g.rewards,
                        group_size=N, pad_id=0, temperature=1.0, loss_masks=[c.loss_mask for c in g.comps])
    for i, p in enumerate(own):  # the learner sees each sample's own prompt, then its own response
        assert batch["input_ids"][i, :len(p)].tolist() == p
        assert batch["input_ids"][i, len(p):len(p) + 3].tolist() == g.comps[i].token_ids
    assert reset_failures(g) == 0


@pytest.mark.parametrize("member", [0, 2])
def test_a_failed_reset_is_counted_and_its_group_is_not_trained(actor, monkeypatch, member):
    """Member 0 (which used to give the group no prompt at all: dropped silently) or member k (which used to
    stay in the group as a token-less reward-0 member inside its siblings' baseline)."""
    bad = _group(actor, monkeypatch, fail_calls=[member])
    good = _group(actor, monkeypatch)
    assert bad.comps[member].trajectory["reset_failed"] and bad.comps[member].prompt_ids == []
    assert bad.prompt_ids and all(c.prompt_ids for k, c in enumerate(bad.comps) if k != member)
    assert reset_failures(bad) == 1 and reset_failures(good) == 0
    # the controller's selection: a group with a failed reset is unusable (like a stale one), never trained
    unusable = [reset_failures(g) > 0 for g in (bad, good)]
    assert pick_groups([True, True], unusable, target=2) == [1]
    m = env_metrics([c.trajectory for g in (bad, good) for c in g.comps])
    assert m["env/reset_errors"] == 1.0 and m["env/errors"] == pytest.approx(1 / (2 * N))


@pytest.mark.parametrize("track", [False, True])
def test_turns_stream_token_deltas_only_when_a_weight_update_can_land_mid_turn(actor, monkeypatch, track):
    """As single-turn `generate`: without in-flight updates or async steps (track_versions False) a turn's
    tokens come back in one engine output; with them, every token is streamed to be tagged with its version."""
    seen = []
    monkeypatch.setattr(multiturn, "sampling_params", lambda **kw: seen.append(kw) or kw)
    _resets["calls"] = 0
    row = {"messages": [{"role": "user", "content": "What is 6 * 7?"}], "env": "test_seeded_reset"}
    asyncio.run(actor.run_env(row, env="test_seeded_reset", env_options={}, plugins=[], limits={"max_turns": 2}, n=2,
                              temperature=1.0, max_tokens=8, track_versions=track))
    assert seen and all(kw["stream"] is track for kw in seen)
