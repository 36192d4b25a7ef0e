"""The request-level engine on the real stack (Ray + vLLM's AsyncLLM + DeepSpeed):

- in-flight weight updates: a request started under version v and finished under v+1 records both,
  and its tokens after the update are the new weights' greedy continuation, not the old ones';
- streaming: a finished group is scored while a slower group of the same batch still generates;
- partial rollouts (async_steps 1 + in-flight updates): a step takes the first groups to finish, the
  slow ones continue across the weight update and are trained later.
"""

import time

import pytest
import ray
import torch

from rlvr.data import encode_prompts, render_prompt

from test_faults_async import _trainer

pytestmark = pytest.mark.integration


def _greedy(model, ids: list[int], steps: int) -> list[int]:
    """Greedy continuation with transformers, EOS included like any token (the engine ran with ignore_eos)."""
    out = []
    with torch.no_grad():
        res = model(torch.tensor([ids]), use_cache=True)
        for _ in range(steps):
            out.append(int(res.logits[0, -1].argmax()))
            res = model(torch.tensor([out[-1:]]), past_key_values=res.past_key_values, use_cache=True)
    return out


@pytest.fixture(scope="module")
def inflight(toy_dir, tmp_path_factory):
    # 64 sequences at once in the engine: of 128 requests, half wait in vLLM's queue (finding 9 below).
    trainer = _trainer(toy_dir, tmp_path_factory.mktemp("runs"), "inflight", "train.steps=4", "train.inflight_updates=true",
                       "rollout.max_num_seqs=64")
    out = {}

    def _swap_eos(learner) -> None:  # nested, so Ray pickles it by value into the learner actor
        """Swaps the embedding rows of EOS and token 50 (tied to the output layer): the model then writes 50
        where it wrote EOS, with the same confidence. Applied twice, it restores the model."""
        with torch.no_grad():
            emb = learner.engine.module.model.embed_tokens.weight
            emb[[1, 50]] = emb[[50, 1]]

    try:
        trainer.start()
        # An update that changes every continuation past the answer (the toy writes EOS there) without
        # creating near-ties: two learning steps, used before, once left all 32 continuations unchanged;
        # flipping the final norm's sign made the greedy token the argmin, where logits are crowded.
        ray.get(trainer.learners[0].__ray_call__.remote(_swap_eos))
        rows = trainer.prep.train_rows[:128]
        ids = encode_prompts(trainer.prep.tokenizer, [render_prompt(trainer.prep.tokenizer, r) for r in rows])
        tokens_out = lambda: ray.get(trainer.rollouts[0].__ray_call__.remote(lambda actor: actor.tokens_out))
        start = tokens_out()
        batch = trainer.scheduler.submit(ids, n=1, temperature=0.0, top_p=1.0, max_tokens=40, greedy=True, ignore_eos=True)
        deadline = time.time() + 300
        # The update lands once about two tokens per request are out (the requests decode together): every
        # request has started, none is near its 40. A fixed sleep was too short on a loaded machine.
        while tokens_out() - start < 2 * len(ids) and time.time() < deadline:
            time.sleep(0.01)
        out["sync"] = trainer.sync_weights()
        list(trainer.scheduler.stream(batch))
        out["results"] = [batch.results[k] for k in range(len(ids))]
        out["new_state"] = ray.get(trainer.learners[0].full_state.remote())
        ray.get(trainer.learners[0].__ray_call__.remote(_swap_eos))
        trainer.sync_weights()  # the trained toy again, for the streaming and partial-rollout runs

        # A sync without in-flight updates while batches run ahead (async_steps 1): vLLM's pause drains only
        # the running requests; the queued ones run after it, under the new weights, and must say so.
        trainer.recipe.train.inflight_updates, trainer.recipe.train.async_steps = False, 1
        ray.get(trainer.learners[0].__ray_call__.remote(_swap_eos))
        out["queued_versions"] = (trainer.version, trainer.version + 1)
        start = tokens_out()
        batch = trainer.scheduler.submit(ids, **{**trainer._gen_kwargs(greedy=True), "max_tokens": 40, "ignore_eos": True})
        while tokens_out() - start < len(ids) and time.time() < deadline + 300:
            time.sleep(0.01)
        trainer.sync_weights()
        list(trainer.scheduler.stream(batch))
        out["queued"] = [batch.results[k] for k in range(len(ids))]
        ray.get(trainer.learners[0].__ray_call__.remote(_swap_eos))
        trainer.sync_weights()
        trainer.recipe.train.inflight_updates, trainer.recipe.train.async_steps = True, 0

        # Streaming: one slow group (40 tokens, EOS ignored) among fast ones (4 tokens).
        prompts = [render_prompt(trainer.prep.tokenizer, r) for r in rows[:16]]
        per_group = [{"max_tokens": 40, "ignore_eos": True}] + [{"max_tokens": 4}] * 15
        results, scores, _ = trainer._stream_scored(rows[:16], prompts, trainer.submit(prompts, per_group=per_group))
        out["stream"] = results, scores

        # Partial rollouts: async_steps 1 with in-flight updates, a long tail (every tenth group 40 tokens):
        # each step takes the first 16 groups to finish; the long ones cross the weight update.
        from rlvr.loop.bench import _long_tail

        _long_tail(trainer, 2, 40)
        trainer.recipe.train.async_steps = 1
        trainer.recipe.train.steps = trainer.step + 6
        out["partial"] = [trainer.train_step() for _ in range(4)]
    finally:
        trainer.shutdown()
    out["model_dir"] = toy_dir / "model"
    return out


def test_inflight_update_records_both_versions_and_continues_under_new_weights(inflight):
    from transformers import AutoModelForCausalLM

    assert inflight["sync"]["requests_in_flight"] > 0  # the update landed while requests were generating
    switched = [(res.prompt_token_ids, c) for res in inflight["results"] for c in res.completions
                if [v for v, _ in c.version_spans] == [0, 1]]
    assert len(switched) >= 5, [c.version_spans for res in inflight["results"] for c in res.completions][:20]
    for _, c in switched:
        assert c.policy_version == 0 and c.last_version == 1 and len(c.token_ids) == 40
    old = AutoModelForCausalLM.from_pretrained(inflight["model_dir"]).eval()
    new = AutoModelForCausalLM.from_pretrained(inflight["model_dir"]).eval()
    missing, unexpected = new.load_state_dict(inflight["new_state"], strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    new.tie_weights()
    switched = switched[:32]  # transformers' decoding is the slow part of this test
    match_new = match_old = 0
    for prompt_ids, c in switched:
        first = c.version_spans[0][1]
        prefix, after = prompt_ids + c.token_ids[:first], c.token_ids[first:]
        match_new += _greedy(new, prefix, len(after)) == after
        match_old += _greedy(old, prefix, len(after)) == after
    # Tokens after the update are the new policy's (float ties aside), not the old policy's.
    assert match_new >= 0.9 * len(switched), (match_new, match_old, len(switched))
    assert match_old <= 0.5 * len(switched), (match_new, match_old, len(switched))


def test_requests_queued_across_a_sync_carry_the_version_that_sampled_them(inflight):
    """Finding 9: with mode wait (no in-flight updates), requests waiting in vLLM's queue at the sync were
    tagged with the old version though the new weights sampled them. Now each token carries its version."""
    from transformers import AutoModelForCausalLM

    old_v, new_v = inflight["queued_versions"]
    spans = [(res.prompt_token_ids, res.completions[0]) for res in inflight["queued"]]
    by_version = {v: [(p, c) for p, c in spans if c.version_spans == [(v, 40)]] for v in (old_v, new_v)}
    assert len(by_version[old_v]) + len(by_version[new_v]) == len(spans), [c.version_spans for _, c in spans]
    assert len(by_version[old_v]) >= 16 and len(by_version[new_v]) >= 16, {v: len(x) for v, x in by_version.items()}
    old = AutoModelForCausalLM.from_pretrained(inflight["model_dir"]).eval()
    new = AutoModelForCausalLM.from_pretrained(inflight["model_dir"]).eval()
    new.load_state_dict(inflight["new_state"], strict=False)  # the EOS-swapped weights, as version new_v holds
    new.tie_weights()
    for version, model in ((new_v, new), (old_v, old)):
        sample = by_version[version][:12]
        match = sum(_greedy(model, p, 40) == c.token_ids for p, c in sample)
        assert match >= 0.9 * len(sample), (version, match, len(sample))


def test_finished_group_is_scored_before_the_slow_group_finishes(inflight):
    results, scores = inflight["stream"]
    slow = results[0]
    assert all(len(c.token_ids) == 40 for c in slow.completions)
    assert all(len(c.token_ids) <= 4 for res in results[1:] for c in res.completions)
    first_scored = min(res.t_scored for res in results[1:])
    assert first_scored < slow.t_end, (first_scored, slow.t_end)
    assert len(scores) == 16 and all(len(s) == 8 for s in scores)


def test_partial_rollouts_take_the_first_finished_groups_and_carry_the_slow_ones(inflight):
    ms = inflight["partial"]
    # Two batches (32 groups, 4 of them 40 tokens long, the rest 2) are in flight at step 1, which takes the
    # first 16 to finish: short ones only. The long ones keep generating and are trained by later steps.
    assert ms[0]["response_length/mean"] == 2.0, ms[0]["response_length/mean"]
    assert max(m["response_length/mean"] for m in ms[1:]) > 2.0
    # Nothing older than async_steps is trained on, and the pipeline does run one version ahead.
    assert all(m["staleness/max"] <= 1 for m in ms) and max(m["staleness/max"] for m in ms) == 1
    assert all(m["dynamic_sampling/groups_dropped"] == 0 for m in ms)
