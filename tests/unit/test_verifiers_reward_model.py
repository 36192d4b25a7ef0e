"""Reward models: normalisation as pure functions, the toy RM's known scores, the actor against
transformers run directly, and a broken or slow reward model costing only its samples."""

import random
import statistics
import time

import pytest
import torch

from rlvr.toy_rm import label_of
from rlvr.verifiers import VerifierConfig, VerifierPool, VerifyRequest
from rlvr.verifiers.model_config import NormalizeConfig, RewardModelConfig
from rlvr.verifiers.reward_model import (RewardModelActor, RewardModelClient, RunningMoments, logits_to_scores,
                                         normalize_scores)
from rlvr.verifiers.scorer import ModelVerifiers, Scorer


def test_running_moments_equal_the_whole_sample():
    rng = random.Random(0)
    batches = [[rng.gauss(3, 2) for _ in range(rng.randint(1, 20))] for _ in range(7)]
    m = RunningMoments()
    for b in batches:
        m.update(b)
    flat = [x for b in batches for x in b]
    assert m.count == len(flat)
    assert m.mean == pytest.approx(statistics.fmean(flat), abs=1e-9)
    assert m.std == pytest.approx(statistics.pstdev(flat), abs=1e-9)


def test_normalize_kinds():
    assert normalize_scores([1.0, -2.0], NormalizeConfig()) == [1.0, -2.0]
    assert normalize_scores([1.0, -2.0], NormalizeConfig(kind="affine", scale=0.5, shift=1)) == [1.5, 0.0]
    assert normalize_scores([1.0, -2.0, 9.0], NormalizeConfig(kind="affine", scale=0.1, clip=(0, 0.5))) == [0.1, 0.0, 0.5]
    m = RunningMoments()
    out = normalize_scores([1.0, 3.0], NormalizeConfig(kind="running", eps=0.0), m)
    assert out == [-1.0, 1.0]  # mean 2, std 1
    out = normalize_scores([2.0], NormalizeConfig(kind="running", eps=0.0), m)  # folded in: mean 2, std sqrt(2/3)
    assert out == [0.0] and m.count == 3
    with pytest.raises(ValueError):
        normalize_scores([1.0], NormalizeConfig(kind="running"))


def test_logits_to_scores():
    one = torch.tensor([[0.5], [-1.0]])
    two = torch.tensor([[1.0, 3.0], [2.0, 0.5]])
    assert logits_to_scores(one, None) == [0.5, -1.0]
    assert logits_to_scores(two, None) == [2.0, -1.5]  # log-odds of the second label
    assert logits_to_scores(two, 0) == [1.0, 2.0]
    with pytest.raises(ValueError, match="set label"):
        logits_to_scores(torch.zeros(2, 3), None)
    with pytest.raises(ValueError, match="label 2"):
        logits_to_scores(two, 2)


def _probe(n=40, seed=123):
    """Responses the toy RM never saw in training (its own rng), with their known label."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = str(rng.randint(0, 99999)) if rng.random() < 0.8 else rng.choice(["abc", "no idea", "x7y"])
        out.append((f"What is {rng.randint(10, 99)} + {rng.randint(10, 99)}?", r))
    return out


@pytest.fixture(scope="module")
def actor(toy_rm_dir):
    return RewardModelActor(RewardModelConfig(path=str(toy_rm_dir), batch_size=8).model_dump())


def test_toy_rm_scores_are_known_in_advance_and_match_transformers(actor, toy_rm_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    items = [(p, r, None) for p, r in _probe()]
    got = actor.score(items)  # batched, padded (batch_size 8)
    tok = AutoTokenizer.from_pretrained(toy_rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(toy_rm_dir).eval()
    with torch.no_grad():  # one at a time, no padding: the reference
        ref = [model(**tok(p + r, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item() for p, r, _ in items]
    assert got == pytest.approx(ref, abs=1e-4)
    assert all((s > 2.0) if label_of(r) else (s < -2.0) for s, (_, r, _) in zip(got, items)), list(zip(got, items))
    assert len({label_of(r) for _, r, _ in items}) == 2  # both classes probed


def _scorer(actor_obj, **cfg) -> Scorer:
    c = RewardModelConfig(path="unused", **cfg)
    return Scorer(VerifierPool(VerifierConfig(workers=0)), ModelVerifiers({}, {"parity": RewardModelClient("parity", c, actor_obj)}))


def test_reward_model_through_the_scorer_with_running_normalisation(actor):
    sc = _scorer(actor, normalize={"kind": "running"})
    try:
        reqs = [VerifyRequest(r, None, "parity", None, p) for p, r in _probe(16)]
        res = sc.score(reqs)
        stats = sc.stats()
        mixed = sc.score([VerifyRequest("42", "42", ["string_match", "reward_model"], None, "What is 20 + 22?")])
    finally:
        sc.close()
    raw = [r.details["raw"] for r in res]
    assert statistics.fmean(r.score for r in res) == pytest.approx(0.0, abs=1e-6)  # one batch: standardised
    assert [r.score > 0 for r in res] == [x > statistics.fmean(raw) for x in raw]
    assert stats["reward_model/parity/samples"] == 16 and stats["reward_model/parity/samples_per_s"] > 0
    assert mixed[0].details["string_match"]["score"] == 1.0 and mixed[0].details["reward_model"]["details"]["raw"] > 2


class _Broken:
    def score(self, items):
        raise RuntimeError("CUDA out of memory (pretend)")


class _Slow:
    def score(self, items):
        time.sleep(2.0)
        return [1.0] * len(items)


def test_broken_or_slow_reward_model_costs_the_samples_not_the_run():
    sc = _scorer(_Broken())
    try:
        res = sc.score([VerifyRequest("4", None, "parity"), VerifyRequest("5", None, "parity")])
        assert [r.score for r in res] == [0.0, 0.0] and all("out of memory" in r.error for r in res)
        assert sc.stats()["reward_model/parity/errors"] == 1
    finally:
        sc.close()
    sc = _scorer(_Slow(), timeout_s=0.2)
    try:
        t0 = time.time()
        res = sc.score([VerifyRequest("4", None, "parity")])
        assert time.time() - t0 < 1.5
        assert res[0].score == 0.0 and res[0].error.startswith("timeout: reward model 'parity'")
        assert sc.stats()["reward_model/parity/timeouts"] == 1
    finally:
        sc.close()
