"""Multi-turn trajectories on the real stack (Ray + vLLM's AsyncLLM + DeepSpeed), toy policy:

- token exactness over three turns: the learner's ids are the engine's prompt ids, its sampled ids
  and the observation ids, the loss mask is 0 exactly on the observations, and the vLLM/learner
  log-prob drift on the assistant tokens stays below 1e-4;
- an environment that raises costs its trajectories' reward (0, reason env_error), not the run;
- a single-turn row run through the `single_turn` environment gets the same completions and
  rewards as the same row without an environment.
"""

import json
from pathlib import Path

import pytest
import torch

from rlvr.config import load_recipe
from rlvr.controller import Trainer, prepare
from rlvr.data import render_prompt

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "tests" / "fixtures" / "environments" / "rlvr_test_envs.py"


def _rows(toy_dir, path, env, n):
    with open(toy_dir / "train.jsonl") as f:
        rows = [json.loads(line) for _, line in zip(range(n), f)]
    path.write_text("".join(json.dumps({**r, "env": env}) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def run(toy_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("env-run")
    _rows(toy_dir, tmp / "countdown.jsonl", "countdown", 64)
    _rows(toy_dir, tmp / "broken.jsonl", "broken_step", 64)
    recipe = load_recipe(ROOT / "recipes" / "toy_addition_cpu.yaml", [
        f"model.path={toy_dir}/model", f"data.train.0.path={tmp}/countdown.jsonl", f"data.eval.0.path={toy_dir}/eval.jsonl",
        "data.eval_size=16", "train.prompts_per_step=8", "train.steps=3", "train.eval_every=0", f"output_dir={tmp}",
        "name=env", "logging.wandb=false", "logging.progress=false", f"environments.plugins=[{PLUGIN}]",
        "environments.reward=verifier+sum", "rollout.max_tokens=5"])
    trainer = Trainer(prepare(recipe))
    out = {"metrics": [], "trained": []}
    try:
        trainer.start()
        for _ in range(2):
            out["metrics"].append(trainer.train_step())
            out["trained"].append(trainer.last_trained)
        # The same engines, now on rows whose environment raises.
        broken = [{**r, "env": "broken_step"} for r in trainer.prep.train_rows[:8]]
        trainer.stream.rows = broken
        out["broken"] = trainer.train_step()
        out["broken_trained"] = trainer.last_trained
        # Single turn with and without an environment: greedy, same rows.
        rows = trainer.prep.eval_rows
        prompts = [render_prompt(trainer.prep.tokenizer, r) for r in rows]
        out["plain"] = trainer._generate_and_score(rows, prompts, greedy=True)
        out["single"] = trainer._generate_and_score([{**r, "env": "single_turn"} for r in rows], prompts, greedy=True)
        out["tokenizer"] = trainer.prep.tokenizer
    finally:
        trainer.shutdown()
    return out


def test_three_turns_token_exact(run):
    tok = run["tokenizer"]
    obs_text = {"<|user|>Again?<|assistant|>", "<|eos|><|user|>Again?<|assistant|>"}  # after an EOS, or a length cut
    for groups, batch in run["trained"]:
        rows = [(g.prompt_ids, c) for g in groups for c in g.comps]
        assert len(rows) == batch["input_ids"].shape[0] == 8 * 8
        for i, (prompt_ids, c) in enumerate(rows):
            t = c.trajectory
            assert t["turns"] == 3 and t["reason"] == "done", t
            assert [m["role"] for m in t["messages"]] == ["user", "assistant", "user", "assistant", "user", "assistant"]
            n = int(batch["attention_mask"][i].sum())
            assert batch["input_ids"][i, :n].tolist() == prompt_ids + c.token_ids
            # The mask is 0 exactly on the two observations, which decode to the template's user turn.
            mask = batch["response_mask"][i, len(prompt_ids) - 1:n - 1].tolist()
            assert mask == [float(x) for x in c.loss_mask]
            segments, cur, prev = [], [], 1
            for tid, m in zip(c.token_ids, c.loss_mask):
                if m != prev and cur:
                    segments.append((prev, cur))
                    cur = []
                cur.append(tid)
                prev = m
            segments.append((prev, cur))
            kinds = [k for k, _ in segments]
            assert kinds == [1, 0, 1, 0, 1], kinds
            for k, ids in segments:
                if k == 0:
                    assert tok.decode(ids) in obs_text
            # The assistant turns' text is what the trajectory recorded for them.
            said = [tok.decode(ids, skip_special_tokens=True) for k, ids in segments if k == 1]
            assert said == [m["content"] for m in t["messages"] if m["role"] == "assistant"]
            # Observation tokens carry no rollout log-prob; assistant tokens carry the engine's.
            lps = batch["rollout_logprobs"][i, len(prompt_ids) - 1:n - 1]
            assert torch.equal(lps, torch.tensor(c.logprobs, dtype=torch.float))
            assert all(lp == 0.0 for lp, m in zip(c.logprobs, c.loss_mask) if m == 0)
    for m in run["metrics"]:
        assert m["drift/abs_logprob_diff"] < 1e-4, m["drift/abs_logprob_diff"]
        assert m["env/turns"] == 3.0 and m["env/errors"] == 0.0
    # reward = verifier + the environment's step rewards (0.25 + 0.25 + 0.5)
    for groups, _ in run["trained"]:
        for g in groups:
            assert g.rewards == pytest.approx([s.score + 1.0 for s in g.scores])


def test_broken_environment_costs_the_reward_not_the_run(run):
    m = run["broken"]
    assert m["step"] == 3 and m["env/errors"] == 1.0  # every trajectory hit the bug, and the step completed
    groups, _ = run["broken_trained"]
    for g in groups:
        assert g.rewards == [0.0] * len(g.comps)
        assert all(c.trajectory["reason"] == "env_error" and "bug in the environment" in c.trajectory["error"]
                   for c in g.comps)


def test_single_turn_environment_changes_nothing(run):
    plain_comps, plain_ids, plain_scores, _, _ = run["plain"]
    env_comps, env_ids, env_scores, _, _ = run["single"]
    assert env_ids == plain_ids
    assert [c.token_ids for c in env_comps] == [c.token_ids for c in plain_comps]
    assert [s.score for s in env_scores] == [s.score for s in plain_scores]
    assert all(c.trajectory["turns"] == 1 for c in env_comps)
