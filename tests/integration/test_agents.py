"""Agents trained as they are, on the real stack (Ray + vLLM's AsyncLLM + DeepSpeed), toy policy.

The agents (tests/fixtures/environments/rlvr_test_agents.py) use the real `openai` client over real
HTTP to the rollout actor's endpoint:
- a checking agent (it asks, checks the answer with its own calculator, and asks again with the
  history re-sent) trains for two steps: the learner's ids for each trajectory are the ids the
  endpoint sent to the engine and got back, the re-sent history is not repeated, the appended turn
  is masked, and the vLLM/learner log-prob drift stays below 1e-4;
- a branching agent's two trajectories are both trained, sharing the run's advantage;
- an agent that raises costs its trajectories' reward (0, with the reason), not the run;
- a request with a wrong key is refused by the actor's endpoint, which listens on the node's address;
- 256 concurrent trajectories against one engine all complete, and no key is left open.
"""

import json
import time
from pathlib import Path

import openai
import pytest

from rlvr.bench_loop import agent_load
from rlvr.config import load_recipe
from rlvr.controller import Trainer, prepare

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "tests" / "fixtures" / "environments" / "rlvr_test_agents.py"


@pytest.fixture(scope="module")
def run(toy_dir, tmp_path_factory):
    import ray

    tmp = tmp_path_factory.mktemp("agent-run")
    with open(toy_dir / "train.jsonl") as f:
        rows = [json.loads(line) for _, line in zip(range(64), f)]
    (tmp / "agent.jsonl").write_text("".join(json.dumps({**r, "env": "checking_agent"}) + "\n" for r in rows))
    recipe = load_recipe(ROOT / "recipes" / "toy_addition_cpu.yaml", [
        f"model.path={toy_dir}/model", f"data.train.0.path={tmp}/agent.jsonl", f"data.eval.0.path={toy_dir}/eval.jsonl",
        "train.prompts_per_step=8", "train.steps=6", "train.eval_every=0", f"output_dir={tmp}", "name=agents",
        "logging.wandb=false", "logging.progress=false", f"environments.plugins=[{PLUGIN}]", "rollout.max_tokens=5"])
    trainer = Trainer(prepare(recipe))
    out = {"metrics": [], "trained": []}
    try:
        trainer.start()
        for _ in range(2):
            out["metrics"].append(trainer.train_step())
            out["trained"].append(trainer.last_trained)
        for agent in ("branching_agent", "raising_agent"):
            trainer.stream.rows = [{**r, "env": agent} for r in trainer.prep.train_rows[:8]]
            out[agent] = (trainer.train_step(), trainer.last_trained)
        url = ray.get(trainer.rollouts[0].agent_endpoint_url.remote())
        out["url"], out["node_ip"] = url, ray.util.get_node_ip_address()
        try:
            openai.OpenAI(base_url=url, api_key="guessed-key", max_retries=0).chat.completions.create(
                model="p", messages=[{"role": "user", "content": "hi"}])
        except openai.AuthenticationError as e:
            out["wrong_key"] = e.status_code
        t0 = time.time()
        out["load"] = agent_load(trainer, trainer.prep.train_rows[:32], agent="checking_agent")  # 32 x n=8 = 256
        out["load_wall"] = time.time() - t0
        out["tokenizer"] = trainer.prep.tokenizer
    finally:
        trainer.shutdown()
    return out


def test_learner_trains_on_the_endpoints_exact_ids(run):
    for groups, batch in run["trained"]:
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
    for m in run["metrics"]:
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
    assert m["step"] == 4 and m["env/errors"] == 1.0
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
