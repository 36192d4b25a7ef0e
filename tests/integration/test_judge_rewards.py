"""Judges and reward models as verifiers, end to end: two GRPO steps of the toy policy (Ray + vLLM + DeepSpeed)
whose rows are scored by a rule verifier (math), an LLM judge on its own vLLM engine (SmolLM2-135M-Instruct,
yes/no rubric, a Ray actor in the placement plan), a judge behind an OpenAI-compatible endpoint (a fake server
on loopback, with a key from the environment), a judge that is down, and the toy reward model (a Ray actor), all
on the same rows.
Then probes of the live judge engine: its replies equal transformers' greedy replies on the same rubric, and
requests past their timeout cost only themselves."""

import json
import os
from pathlib import Path

import pytest
import ray

from fake_openai import FakeOpenAI, free_port
from rlvr.config import load_recipe
from rlvr.loop.trainer import Trainer, prepare
from rlvr.toy_rm import label_of

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2_DIR = ROOT / ".cache" / "rlvr" / "smollm2-135m"
KEY = "sk-judge-e2e-5e1f0c7a9b3d"
NAMES = ["math", "style", "remote", "parity", "down"]


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    from rlvr.models import MARKER, build_smollm2

    if not (SMOLLM2_DIR / MARKER).is_file():
        build_smollm2(SMOLLM2_DIR)
    return SMOLLM2_DIR


@pytest.fixture(scope="module")
def run(toy_dir, toy_rm_dir, smollm2_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("judged")
    rows = [json.loads(line) for line in open(toy_dir / "train.jsonl")][:64]
    (tmp / "train.jsonl").write_text("".join(json.dumps({"messages": r["messages"], "ground_truth": r["ground_truth"],
                                                         "verifier": NAMES}) + "\n" for r in rows))
    os.environ["RLVR_TEST_JUDGE_KEY"] = KEY
    srv = FakeOpenAI("ok", ok_word="1")  # the endpoint says yes iff the response holds a "1": known in advance
    recipe = load_recipe(ROOT / "recipes" / "toy_addition_cpu.yaml", [
        f"model.path={toy_dir}/model", f"data.train.0.path={tmp}/train.jsonl", f"data.eval.0.path={toy_dir}/eval.jsonl",
        "data.eval_size=8", "train.steps=2", "train.prompts_per_step=8", "rollout.n=4", f"output_dir={tmp}/runs",
        "name=judged", "logging.progress=false", "logging.wandb=true", "cluster.num_cpus=4",
        f"judges={{style: {{path: {smollm2_dir}, max_tokens: 4, max_model_len: 1024, num_cpus: 1}}, "
        f"remote: {{base_url: '{srv.base_url}', model: fake-judge, api_key_env: RLVR_TEST_JUDGE_KEY, timeout_s: 10}}, "
        f"down: {{base_url: 'http://127.0.0.1:{free_port()}/v1', retries: 1, retry_backoff_s: 0.01}}}}",  # nothing listens
        f"reward_models={{parity: {{path: {toy_rm_dir}, normalize: {{kind: affine, scale: 0.05, shift: 0.5, clip: [0, 1]}}}}}}"])
    trainer = Trainer(prepare(recipe))
    state = {"metrics": [], "trained": []}
    try:
        trainer.start()
        for _ in range(2):
            state["metrics"].append(trainer.train_step())
            state["trained"].append(trainer.last_trained[0])
        state["probe"] = _probe_judge_engine(trainer, smollm2_dir)
        state["version"] = trainer.version
    finally:
        trainer.shutdown()
        srv.close()
        os.environ.pop("RLVR_TEST_JUDGE_KEY", None)
    state.update(run_dir=recipe.run_dir, server=srv, recipe=recipe)
    return state


def _probe_judge_engine(trainer, smollm2_dir) -> dict:
    """While the cluster is up: replies of the judge's Ray actor vs transformers; a timeout then a normal request."""
    from rlvr.verifiers.judge import EngineBackend, JudgeClient, render_rubric

    models = trainer.pool.models
    client = models.judges["style"]
    engines = client.backend.engines
    items = [("What is 2 + 2?", "4", "4"), ("What is the capital of France?", "Berlin", "Paris"),
             ("Name a colour.", "Blue", None)]
    replies = [r.details["reply"] for r in models.run(client.score(items))]
    from transformers import AutoTokenizer

    from rlvr.replay import greedy_transformers

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    texts = [tok.apply_chat_template(render_rubric(client.cfg, *it), tokenize=False, add_generation_prompt=True) for it in items]
    hf = greedy_transformers(smollm2_dir, texts, max_new_tokens=client.cfg.max_tokens)
    impatient = JudgeClient("impatient", client.cfg.model_copy(update={"timeout_s": 0.05, "retries": 0}), EngineBackend(engines))
    timed_out = models.run(impatient.score(items * 4))
    after = models.run(client.score(items[:1]))
    return {"replies": replies, "hf": hf, "timed_out": timed_out, "impatient": impatient.stats(), "after": after}


def test_two_steps_train_on_judge_and_reward_model_scores(run):
    assert run["version"] == 2
    m1, m2 = run["metrics"]
    samples = 8 * 4
    for m, steps in ((m1, 1), (m2, 2)):
        # every trained sample went through each model verifier once (evaluation rows name only math)
        assert m["judge/style/requests"] == m["judge/remote/requests"] == m["reward_model/parity/samples"] == steps * samples
        assert m["judge/style/errors"] == m["judge/style/timeouts"] == m["judge/remote/errors"] == 0
        assert m["judge/down/errors"] == m["judge/down/requests"] == steps * samples  # a judge that is down costs its part
        assert m["judge/style/requests_per_s"] > 0 and m["judge/style/latency_p50_s"] <= m["judge/style/latency_p99_s"]
        assert m["judge/style/tokens"] > steps * samples * 50  # the rubric's prompt tokens are counted
        assert m["verifier/math/calls"] >= steps * samples
    assert "loss/policy" in m2 and m2["reward/style"] == m2["reward/mean"]  # every row names all five


def test_scores_are_the_verifiers_own(run):
    """Each part of every trained sample's score is what that verifier gives, known in advance where it can be."""
    n = 0
    for groups in run["trained"]:
        for g in groups:
            for c, s in zip(g.comps, g.scores):
                d = s.details
                assert set(d) == set(NAMES)
                raw = d["parity"]["details"]["raw"]
                assert (raw > 0) == bool(label_of(c.text)), (c.text, raw)  # the toy RM: even last digit
                assert d["parity"]["score"] == pytest.approx(min(1.0, max(0.0, 0.05 * raw + 0.5)))
                assert d["remote"]["score"] == (1.0 if "1" in c.text else 0.0)  # the fake endpoint's rule
                assert d["style"]["error"] is None and d["style"]["score"] in (0.0, 1.0) and d["style"]["details"]["reply"]
                assert d["down"]["score"] == 0.0 and "request failed" in d["down"]["error"] and "after 2 attempts" in d["down"]["error"]
                assert s.error and s.error.startswith("down: ")  # the row's error names the failed part only
                expected = sum(d[k]["score"] for k in NAMES) / len(NAMES)
                assert s.score == pytest.approx(expected)
                n += 1
    assert n == 2 * 8 * 4


def test_endpoint_got_the_key_and_the_run_dir_never_holds_it(run):
    srv = run["server"]
    assert srv.auth and set(srv.auth) == {f"Bearer {KEY}"}
    assert {b["model"] for b in srv.requests} == {"fake-judge"}
    hits = [p for p in Path(run["run_dir"]).rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]
    assert not hits, hits
    assert (Path(run["run_dir"]) / "metrics.jsonl").is_file() and list((Path(run["run_dir"]) / "wandb").glob("offline-run-*"))
    cfg = (Path(run["run_dir"]) / "config.yaml").read_text()
    assert "RLVR_TEST_JUDGE_KEY" in cfg and KEY not in cfg  # the variable's name is recorded, not its value


def test_judge_engine_replies_equal_transformers_greedy(run):
    p = run["probe"]
    assert p["replies"] == p["hf"]
    assert all(r.strip() for r in p["replies"])


def test_requests_past_their_timeout_cost_only_themselves(run):
    p = run["probe"]
    assert all(r.score == 0.0 and r.error.startswith("timeout: judge 'impatient'") for r in p["timed_out"])
    assert p["impatient"]["judge/impatient/timeouts"] == 12
    assert p["after"][0].error is None and p["after"][0].details["reply"] == p["replies"][0]  # the engine still answers
