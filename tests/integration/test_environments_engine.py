"""Multi-turn trajectories on the real stack (Ray + vLLM's AsyncLLM + DeepSpeed), toy policy:

- token exactness over three turns: the learner's ids are the engine's prompt ids, its sampled ids
  and the observation ids, the loss mask is 0 exactly on the observations, and the vLLM/learner
  log-prob drift on the assistant tokens stays below 1e-4;
- an environment that raises costs its trajectories' reward (0, reason env_error), not the run;
- a single-turn row run through the `single_turn` environment gets the same completions and
  rewards as the same row without an environment;
- agents through the OpenAI-compatible endpoint (tests/fixtures/environments/rlvr_test_agents.py, the
  real `openai` client over real HTTP): a checking agent (it asks, checks the answer with its own
  calculator, and asks again with the history re-sent) trains for two steps on exactly the ids the
  endpoint sent to the engine and got back, the re-sent history not repeated and the appended turn
  masked, drift below 1e-4; a branching agent's two trajectories are both trained, sharing the run's
  advantage; an agent that raises costs its reward, not the run; a wrong key is refused by the
  actor's endpoint, which listens on the node's address; 256 concurrent trajectories against one
  engine all complete, and no key is left open;
- vLLM's EngineCore killed between the turns of a multi-turn step: the groups run again on the restarted
  engine, and no trajectory of the death (env_error, or its first turns) is trained.

One cluster serves every scenario (a cluster start is the costliest part of a test).
"""

import json
import time
from pathlib import Path

import openai
import pytest
import torch

from rlvr.loop.bench import agent_load

from rlvr.config import load_recipe
from rlvr.loop.trainer import Trainer, prepare
from rlvr.data import render_prompt

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "tests" / "fixtures" / "environments" / "rlvr_test_envs.py"
AGENTS = ROOT / "tests" / "fixtures" / "environments" / "rlvr_test_agents.py"


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
        "data.eval_size=16", "train.prompts_per_step=8", "train.steps=9", "train.eval_every=0", f"output_dir={tmp}",
        "name=env", "logging.wandb=false", "logging.progress=false", f"environments.plugins=[{PLUGIN},{AGENTS}]",
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
        _agents(trainer, out)
        _engine_dies_between_turns(trainer, out)
    finally:
        trainer.shutdown()
    return out


def _engine_dies_between_turns(trainer, out):
    """vLLM's EngineCore SIGKILLed while every trajectory of a multi-turn step waits in its environment's
    step (a 1 s pause after its first turn): the whole step's groups must run again on the restarted engine."""
    import os
    import signal
    import threading

    import ray

    trainer.stream.rows = [{**r, "env": "slow_countdown"} for r in trainer.prep.train_rows[:8]]
    engine = trainer.rollouts[0]
    tokens = lambda: ray.get(engine.__ray_call__.remote(lambda actor: actor.tokens_out))
    out["died_restarts0"], start, killed = trainer.faults["rollout_restarts"], tokens(), []

    def kill_between_turns():
        last, still, deadline = start, time.time(), time.time() + 300
        while time.time() < deadline:
            time.sleep(0.05)
            now = tokens()
            if now != last:
                last, still = now, time.time()
            elif now > start and time.time() - still > 0.3:  # first turns out, every trajectory in its step
                break
        for pid in ray.get(engine.engine_core_pids.remote()):
            os.kill(pid, signal.SIGKILL)
        killed.append(last - start)

    thread = threading.Thread(target=kill_between_turns)
    thread.start()
    out["died"] = trainer.train_step()
    thread.join()
    out["died_trained"], out["died_killed_after"] = trainer.last_trained, killed


def _agents(trainer, out):
    import ray

    rows = trainer.prep.train_rows[:64]
    out["agent_trained"], out["agent_metrics"] = [], []
    for _ in range(2):
        trainer.stream.rows = [{**r, "env": "checking_agent"} for r in rows]
        out["agent_metrics"].append(trainer.train_step())
        out["agent_trained"].append(trainer.last_trained)
    for agent in ("branching_agent", "raising_agent"):
        trainer.stream.rows = [{**r, "env": agent} for r in rows[:8]]
        out[agent] = (trainer.train_step(), trainer.last_trained)
    url = ray.get(trainer.rollouts[0].agent_endpoint_url.remote())
    out["url"], out["node_ip"] = url, ray.util.get_node_ip_address()
    try:
        openai.OpenAI(base_url=url, api_key="guessed-key", max_retries=0).chat.completions.create(
            model="p", messages=[{"role": "user", "content": "hi"}])
    except openai.AuthenticationError as e:
        out["wrong_key"] = e.status_code
    t0 = time.time()
    out["load"] = agent_load(trainer, rows[:32], agent="checking_agent")  # 32 rows x n=8 = 256 trajectories
    out["load_wall"] = time.time() - t0


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


def test_learner_trains_on_the_endpoints_exact_ids(run):
    for groups, batch in run["agent_trained"]:
        comps = [c for g in groups for c in g.comps]
        assert len(comps) == batch["input_ids"].shape[0] == 64
        for i, c in enumerate(comps):
            (p1, c1), (p2, c2) = c.trajectory["calls"]
            assert c.prompt_ids == p1
            # Call 2 re-sent the history: its prompt extends call 1's ids; only the appended turn is new.
            assert p2[:len(p1) + len(c1)] == p1 + c1
            appended = p2[len(p1) + len(c1):]
            assert c.token_ids == c1 + appended + c2 and appended
            assert c.loss_mask == [1] * len(c1) + [0] * len(appended) + [1] * len(c2)
            n = int(batch["attention_mask"][i].sum())
            assert batch["input_ids"][i, :n].tolist() == p1 + c.token_ids
            assert batch["response_mask"][i, len(p1) - 1:n - 1].tolist() == [float(x) for x in c.loss_mask]
    for m in run["agent_metrics"]:
        assert m["drift/abs_logprob_diff"] < 1e-4, m["drift/abs_logprob_diff"]
        assert m["agent/calls"] == 2.0 and m["agent/branches"] == 0.0 and m["env/errors"] == 0.0
        assert m["agent/settings_overridden"] == 1.0  # the agent's temperature was not used


def test_branches_are_trained_sharing_the_runs_advantage(run):
    m, (groups, batch) = run["branching_agent"]
    assert m["agent/branches"] == 1.0 and m["drift/abs_logprob_diff"] < 1e-4
    comps = [c for g in groups for c in g.comps]
    assert batch["input_ids"].shape[0] == 2 * len(comps) == 128
    assert batch["extra_of"].tolist() == list(range(64))
    for i, c in enumerate(comps):
        (p1, c1), (p2, c2) = c.trajectory["calls"]
        n = int(batch["attention_mask"][64 + i].sum())
        assert c.branches[0].prompt_ids == p1 and batch["input_ids"][64 + i, :n].tolist() == p1 + c1
        assert c.prompt_ids == p2 and c.token_ids == c2
        assert batch["rewards"][64 + i] == batch["rewards"][i]


def test_raising_agent_costs_its_reward_not_the_run(run):
    m, (groups, _) = run["raising_agent"]
    assert m["step"] == 7 and m["env/errors"] == 1.0
    for g in groups:
        assert g.rewards == [0.0] * len(g.comps)
        assert all(c.trajectory["reason"] == "env_error" and "bug in the agent" in c.trajectory["error"] for c in g.comps)


def test_endpoint_refuses_wrong_keys_and_listens_on_the_node_address(run):
    assert run["wrong_key"] == 401
    assert run["url"].startswith(f"http://{run['node_ip']}:")


def test_256_concurrent_trajectories_complete_with_no_key_left_open(run):
    load = run["load"]
    print(f"\nagent load: {load['trajectories']} trajectories in {load['seconds']:.1f}s "
          f"({load['trajectories_per_s']:.1f}/s); endpoint adds p50 {load['endpoint_ms_p50']:.1f} ms, "
          f"p99 {load['endpoint_ms_p99']:.1f} ms per call")
    assert load["trajectories"] == 256 and load["calls"] == 512 and load["errors"] == 0
    assert load["open_sessions"] == 0 and run["load_wall"] < 300
    assert sorted(c.prompt_index for c in load["comps"]) == sorted(k for k in range(32) for _ in range(8))


def test_engine_death_between_turns_reruns_the_group_and_trains_no_partial_trajectory(run):
    """Before: the engine call's EngineDead became env_error; the first turns trained with reward 0."""
    m = run["died"]
    assert run["died_killed_after"] and run["died_killed_after"][0] > 0  # killed after the first turns were sampled
    assert m["fault/rollout_restarts"] == run["died_restarts0"] + 1 and m["rollout/groups_rerun"] > 0
    assert m["env/errors"] == 0 and m["engines/restarts"] == m["fault/rollout_restarts"]
    groups, _ = run["died_trained"]
    assert len(groups) == 8
    for g in groups:
        assert all(c.trajectory["reason"] != "env_error" and c.trajectory["turns"] >= 2 for c in g.comps), \
            [(c.trajectory["reason"], c.trajectory["error"]) for c in g.comps]
