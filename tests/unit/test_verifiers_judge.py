"""LLM judges without a model: rubric rendering, score parsers, recipe errors, and the endpoint client
against a fake OpenAI-compatible server that is up, down, slow, flaky or answers garbage."""

import json
import os
import time

import pytest

from fake_openai import FakeOpenAI, free_port
from rlvr.config import RecipeError, load_recipe
from rlvr.verifiers import VerifierConfig, VerifierPool, VerifyRequest
from rlvr.verifiers.judge import (JudgeClient, ParseError, fill, parse_json, parse_scale, parse_score, parse_yes_no,
                                  percentile, render_rubric)
from rlvr.verifiers.model_config import JudgeConfig
from rlvr.verifiers.scorer import ModelVerifiers, Scorer, model_name_map


# ------------------------------------------------------------------ parsers (pure)

@pytest.mark.parametrize("text,score", [("Yes", 1.0), ("yes.", 1.0), ("No", 0.0), ("no, because 2+2=5", 0.0),
                                        ("The answer is YES", 1.0), ("  No. Yes would be wrong", 0.0)])
def test_yes_no(text, score):
    assert parse_yes_no(text) == score


@pytest.mark.parametrize("text", ["", "maybe", "yesterday nothing", "nope"])
def test_yes_no_failure(text):
    with pytest.raises(ParseError, match="no yes/no"):
        parse_yes_no(text)


@pytest.mark.parametrize("text,score", [("8", 0.8), ("Score: 7/10", 0.7), ("10 out of 10", 1.0), ("0", 0.0),
                                        ("I'd say 2.5", 0.25)])
def test_scale(text, score):
    assert parse_scale(text, 0, 10) == pytest.approx(score)


def test_scale_failures():
    with pytest.raises(ParseError, match="outside the scale"):
        parse_scale("11", 0, 10)
    with pytest.raises(ParseError, match="no number"):
        parse_scale("great answer", 0, 10)
    assert parse_scale("3", 1, 5) == 0.5  # a 1-5 Likert scale


def test_json_field():
    assert parse_json('{"score": 7, "why": "ok"}', "score", 0, 10) == pytest.approx(0.7)
    assert parse_json('Sure! ```json\n{"verdict": true}\n``` done', "verdict", 0, 10) == 1.0
    assert parse_json('reasoning... {"verdict": "no"}', "verdict", 0, 10) == 0.0
    assert parse_json('{"score": "4"}', "score", 0, 4) == 1.0
    for text, msg in [("no json here", "no JSON object"), ('{"other": 1}', "no field 'score'"),
                      ('{"score": "great"}', "not a score"), ("[1, 2]", "not an object"), ('{"score": 12}', "outside")]:
        with pytest.raises(ParseError, match=msg):
            parse_json(text, "score", 0, 10)


def test_parse_score_dispatches_on_the_declared_parser():
    assert parse_score(JudgeConfig(path="m"), "yes") == 1.0
    assert parse_score(JudgeConfig(path="m", parser="scale", scale_min=1, scale_max=5), "5") == 1.0
    assert parse_score(JudgeConfig(path="m", parser="json", json_field="ok", scale_max=1), '{"ok": 0.25}') == 0.25


def test_rubric_rendering_keeps_other_braces_and_cuts_long_responses():
    cfg = JudgeConfig(path="m", system=None, parser="json", max_response_chars=10,
                      template='Q: {prompt}\nTruth: {ground_truth}\nA: {response}\nReply {"score": N} about {response}.')
    msgs = render_rubric(cfg, "What is 2+2?", "x" * 50, {"answer": 4})
    assert msgs == [{"role": "user", "content": 'Q: What is 2+2?\nTruth: {"answer": 4}\nA: ' + "x" * 10 + ' [...]\n'
                     'Reply {"score": N} about ' + "x" * 10 + " [...]."}]
    # a response that itself holds a placeholder is not expanded again
    assert fill("{response}|{prompt}", "P", "{prompt}", None) == "{prompt}|P"
    assert render_rubric(JudgeConfig(path="m"), "q", "r", "t")[0]["role"] == "system"


def test_percentile_nearest_rank():
    xs = [float(i) for i in range(1, 101)]
    assert percentile(xs, 50) == 50.0 and percentile(xs, 99) == 99.0 and percentile([3.0], 99) == 3.0


def test_model_name_aliases():
    m = model_name_map({"style": 1}, {"rm": 2})
    assert m == {"style": ("judge", "style"), "rm": ("reward_model", "rm"), "judge": ("judge", "style"),
                 "reward_model": ("reward_model", "rm")}
    assert "judge" not in model_name_map({"a": 1, "b": 2}, {})  # ambiguous: each must be named


# ------------------------------------------------------------------ recipe errors (one line, naming the field)

def _recipe(tmp_path, section: str) -> str:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"prompt": "What is 1 + 1?", "ground_truth": "2", "verifier": "math"}) + "\n")
    p = tmp_path / "r.yaml"
    p.write_text(f"model: {{path: {model}}}\ndata: {{train: [{{path: {data}}}]}}\n{section}")
    return str(p)


@pytest.mark.parametrize("section,where,msg", [
    ("judges: {style: {}}", "judges.style", "exactly one of path"),
    ("judges: {style: {path: m, base_url: 'http://x'}}", "judges.style", "exactly one of path"),
    ("judges: {style: {base_url: 'ftp://x'}}", "judges.style", "http://"),
    ("judges: {style: {base_url: 'http://x', template: 'no placeholder'}}", "judges.style.template", "{response}"),
    ("judges: {style: {base_url: 'http://x', parser: regex}}", "judges.style.parser", "yes_no"),
    ("judges: {style: {base_url: 'http://x', timeout_s: 0}}", "judges.style.timeout_s", "greater than 0"),
    ("judges: {style: {base_url: 'http://x', max_in_flight: 0}}", "judges.style.max_in_flight", "greater than or equal"),
    ("judges: {style: {base_url: 'http://x', colour: red}}", "judges.style.colour", "unknown field"),
    ("judges: {style: {path: /nonexistent/judge}}", "judges.style.path", "no Hugging Face checkpoint"),
    ("reward_models: {rm: {}}", "reward_models.rm.path", "Field required"),
    ("reward_models: {rm: {path: /nonexistent/rm}}", "reward_models.rm.path", "no Hugging Face checkpoint"),
    ("reward_models: {rm: {path: m, normalize: {kind: zscore}}}", "reward_models.rm.normalize.kind", "none"),
    ("reward_models: {rm: {path: m, normalize: {clip: [1, 0]}}}", "reward_models.rm.normalize.clip", "lo <= hi"),
    ("judges: {x: {base_url: 'http://h'}}\nreward_models: {x: {path: m}}", "recipe", "judges.x"),
    ("judges: {'a b': {base_url: 'http://h'}}", "recipe", "letters, digits"),
])
def test_bad_sections_fail_in_one_line(tmp_path, section, where, msg):
    with pytest.raises(RecipeError) as e:
        load_recipe(_recipe(tmp_path, section))
    text = str(e.value)
    assert len(text.splitlines()) == 1 and (f": {where}" in text or text.startswith(where)) and msg in text, text


def test_prepare_rejects_names_taken_and_unknown(tmp_path):
    from rlvr.loop.trainer import prepare

    with pytest.raises(RecipeError, match="judges.math: 'math' is already a registered verifier"):
        prepare(load_recipe(_recipe(tmp_path, "judges: {math: {base_url: 'http://h'}}"), check_files=False))
    # a row naming a judge the recipe does not declare is an unknown verifier
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "q", "ground_truth": "2", "verifier": ["math", "style"]}) + "\n")
    with pytest.raises(RecipeError, match="unknown verifier 'style'"):
        prepare(load_recipe(_recipe(tmp_path, ""), [f"data.train.0.path={rows}"], check_files=False))


def test_defaults_load_and_describe(tmp_path):
    r = load_recipe(_recipe(tmp_path, "judges: {style: {base_url: 'http://h:1/v1'}}"))
    j = r.judges["style"]
    assert (j.parser, j.timeout_s, j.retries, j.max_in_flight, j.temperature) == ("yes_no", 30.0, 2, 64, 0.0)
    from rlvr.config import field_reference

    names = {row[0] for row in field_reference()}
    assert {"judges.<name>.base_url", "reward_models.<name>.normalize.kind"} <= names


# ------------------------------------------------------------------ the endpoint client, through a Scorer

KEY = "sk-rlvr-test-7f3a9c0e1d2b"


def _scorer(url: str, **judge) -> Scorer:
    cfg = JudgeConfig(base_url=url, api_key_env="RLVR_TEST_JUDGE_KEY", **judge)
    return Scorer(VerifierPool(VerifierConfig(workers=0)), ModelVerifiers({"style": JudgeClient.for_endpoint("style", cfg)}, {}))


def _reqs(n: int = 6) -> list[VerifyRequest]:
    out = []
    for i in range(n):
        resp = "The answer is 4" if i % 2 == 0 else "The answer is 5"
        out.append(VerifyRequest(resp, "4", "style", "<|user|>What is 2 + 2?<|assistant|>", "What is 2 + 2?"))
    return out


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("RLVR_TEST_JUDGE_KEY", KEY)


def test_endpoint_judge_scores_and_counts(key_env):
    with FakeOpenAI("ok") as srv:
        sc = _scorer(srv.base_url, model="judge-7b", max_in_flight=3)
        try:
            res = sc.score(_reqs(6))
            stats = sc.stats()
        finally:
            sc.close()
    assert [r.score for r in res] == [1.0, 0.0] * 3 and not any(r.error for r in res)
    assert res[0].details["reply"] == "Yes."
    body = srv.requests[0]
    assert body["model"] == "judge-7b" and body["temperature"] == 0.0 and body["max_tokens"] == 16
    assert "Question:\nWhat is 2 + 2?\n" in body["messages"][-1]["content"]  # the row's question, not the chat markup
    assert srv.auth == [f"Bearer {KEY}"] * 6  # the key from the environment variable reached the endpoint
    assert stats["judge/style/requests"] == 6 and stats["judge/style/tokens"] == 6 * 12
    assert stats["judge/style/requests_per_s"] > 0 and 0 < stats["judge/style/latency_p50_s"] <= stats["judge/style/latency_p99_s"]
    assert stats["judge/style/parse_failures"] == stats["judge/style/timeouts"] == stats["judge/style/errors"] == 0


def test_judge_that_is_down_costs_the_samples_not_the_run(key_env):
    sc = _scorer(f"http://127.0.0.1:{free_port()}/v1", retries=1, retry_backoff_s=0.01, timeout_s=5)
    try:
        res = sc.score(_reqs(4))
        stats = sc.stats()
    finally:
        sc.close()
    assert [r.score for r in res] == [0.0] * 4
    assert all("request failed" in r.error and "after 2 attempts" in r.error for r in res), res[0].error
    assert stats["judge/style/errors"] == 4 and stats["judge/style/retries"] == 4


def test_slow_judge_times_out_per_request(key_env):
    with FakeOpenAI("slow", delay_s=3.0) as srv:
        sc = _scorer(srv.base_url, timeout_s=0.3, retries=1, retry_backoff_s=0.0)
        t0 = time.time()
        try:
            res = sc.score(_reqs(4))
            stats = sc.stats()
        finally:
            sc.close()
    assert time.time() - t0 < 2.5  # bounded by timeout x attempts, not by the server's 3 s
    assert [r.score for r in res] == [0.0] * 4 and all(r.error.startswith("timeout: judge 'style'") for r in res)
    assert stats["judge/style/timeouts"] == 4 and stats["judge/style/errors"] == 0


def test_garbage_and_babble(key_env):
    with FakeOpenAI("garbage") as srv:
        sc = _scorer(srv.base_url, retries=0)
        try:
            res = sc.score(_reqs(2))
            srv.mode = "babble"  # valid JSON, but the judge's words hold no score: a parse failure
            res2 = sc.score(_reqs(2))
            stats = sc.stats()
        finally:
            sc.close()
    assert [r.score for r in res + res2] == [0.0] * 4
    assert all("request failed" in r.error for r in res)
    assert all(r.error.startswith("parse failure: no yes/no") and "banana" in r.error for r in res2)
    assert stats["judge/style/errors"] == 2 and stats["judge/style/parse_failures"] == 2


def test_flaky_judge_is_retried(key_env):
    with FakeOpenAI("flaky", fail_first=2) as srv:
        sc = _scorer(srv.base_url, retries=2, retry_backoff_s=0.01, max_in_flight=1)
        try:
            res = sc.score(_reqs(2))
            stats = sc.stats()
        finally:
            sc.close()
    assert [r.score for r in res] == [1.0, 0.0] and not any(r.error for r in res)
    assert stats["judge/style/retries"] == 2 and stats["judge/style/errors"] == 0


def test_key_echoed_by_the_endpoint_is_masked(key_env):
    with FakeOpenAI("error") as srv:
        sc = _scorer(srv.base_url, retries=0)
        try:
            res = sc.score(_reqs(1))
        finally:
            sc.close()
    assert "boom" in res[0].error and KEY not in res[0].error and "***" in res[0].error
    assert KEY not in repr(sc.models.judges["style"].backend)


def test_judge_combines_with_rule_verifiers_on_one_row(key_env):
    with FakeOpenAI("ok") as srv:
        cfg = JudgeConfig(base_url=srv.base_url, api_key_env="RLVR_TEST_JUDGE_KEY")
        pool = VerifierPool(VerifierConfig(workers=1, combine="product"))
        sc = Scorer(pool, ModelVerifiers({"style": JudgeClient.for_endpoint("style", cfg)}, {}))
        try:
            res = sc.score([VerifyRequest("4", "4", ["string_match", "style"], "p", "What is 2+2?"),
                            VerifyRequest("5", "4", ["string_match", "style"], "p", "What is 2+2?"),
                            VerifyRequest("4", {"string_match": "5", "judge": "4"}, ["string_match", "judge"], "p", "q"),
                            VerifyRequest("4", "4", "string_match", "p"),  # a plain row still goes to the pool alone
                            VerifyRequest("4", "4", "judge")])
            stats = sc.stats()
        finally:
            sc.close()
    assert [r.score for r in res] == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert res[0].details["style"]["score"] == 1.0 and res[0].details["string_match"]["score"] == 1.0
    assert res[2].details["string_match"]["score"] == 0.0 and res[2].details["judge"]["score"] == 1.0  # per-name truth
    assert stats["verifier/string_match/calls"] == 4 and stats["judge/style/requests"] == 4


def test_finished_groups_are_judged_concurrently(key_env):
    """score_async (the trainer's path for judged groups): batches submitted one after another overlap."""
    with FakeOpenAI("slow", delay_s=0.6) as srv:
        sc = _scorer(srv.base_url, timeout_s=10)
        try:
            sc.score(_reqs(1))  # warm: the HTTP client's first use
            t0 = time.time()
            futs = [sc.score_async(_reqs(2)) for _ in range(4)]
            res = [f.result() for f in futs]
            dt = time.time() - t0
        finally:
            sc.close()
    assert [[r.score for r in batch] for batch in res] == [[1.0, 0.0]] * 4
    assert dt < 4 * 0.6, dt  # one after another would take 2.4 s or more


def test_verify_cli_with_an_endpoint_judge_and_a_reward_model(key_env, tmp_path, toy_rm_dir, capsys):
    from rlvr.cli import main

    rows = [{"id": "a", "prompt": "What is 2 + 2?", "response": "4", "ground_truth": "4", "verifier": ["string_match", "style"]},
            {"id": "b", "prompt": "What is 2 + 3?", "response": "7", "ground_truth": "5", "verifier": "parity"},
            {"id": "c", "prompt": "What is 2 + 2?", "response": "8", "ground_truth": "4", "verifier": "reward_model"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with FakeOpenAI("ok", ok_word="4") as srv:
        (tmp_path / "judges.yaml").write_text(
            f"judges:\n  style: {{base_url: '{srv.base_url}', api_key_env: RLVR_TEST_JUDGE_KEY}}\n"
            f"reward_models:\n  parity: {{path: {toy_rm_dir}}}\n")
        code = main(["verify", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out.jsonl"),
                     "--workers", "0", "--judges", str(tmp_path / "judges.yaml")])
    err = capsys.readouterr().err
    assert code == 0, err
    out = [json.loads(line) for line in open(tmp_path / "out.jsonl")]
    assert out[0]["score"] == 1.0 and out[0]["details"]["style"]["details"]["reply"] == "Yes."
    assert out[1]["score"] < -2 and out[2]["score"] > 2  # raw toy RM scores: odd vs even last digit
    assert "judge/style/requests 1" in err and KEY not in err and KEY not in (tmp_path / "out.jsonl").read_text()
    # a row naming a judge the file does not declare is a bad row, reported with its line
    code = main(["verify", "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "out2.jsonl"), "--workers", "0"])
    assert code == 1 and "in.jsonl:1: unknown verifier 'style'" in capsys.readouterr().err


def test_own_engine_judges_and_reward_models_are_in_the_placement_plan(tmp_path):
    from rlvr.cluster.placement import PreflightError, groups, plan, preflight

    r = load_recipe(_recipe(tmp_path, "judges: {style: {path: j, engines: 2, num_cpus: 1.5}, "
                                      "remote: {base_url: 'http://h/v1'}}\nreward_models: {rm: {path: m, num_cpus: 0.5}}"),
                    check_files=False)
    gs = {g.name: g for g in groups(r)}
    assert set(gs) == {"learner", "rollout", "judge-style", "rm-rm"}  # an endpoint judge reserves nothing
    assert gs["judge-style"].count == 2 and gs["judge-style"].bundle == {"CPU": 1.5}
    assert plan(r)["CPU"] == 1 + 1 + 2 * 1.5 + 0.5
    preflight(r, {"CPU": 5.5})
    with pytest.raises(PreflightError, match=r"needs 5.5 CPUs but the cluster has 4.*judges.style.num_cpus"):
        preflight(r, {"CPU": 4})


class _FakeEngine:
    """Stands in for a local JudgeActor: answers "yes"/"no" after `delay_s`; records cancellations."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s, self.calls, self.cancelled = delay_s, 0, 0

    async def judge(self, messages, sampling):
        import asyncio

        self.calls += 1
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        text = "yes" if "Response:\n4" in messages[-1]["content"] else "no"
        return {"text": text, "prompt_tokens": 7, "completion_tokens": 1}


def test_own_engine_backend_spreads_requests_and_cancels_on_timeout():
    from rlvr.verifiers.judge import EngineBackend

    engines = [_FakeEngine(0.05), _FakeEngine(0.05)]
    client = JudgeClient("own", JudgeConfig(path="m", max_in_flight=8), EngineBackend(engines))
    sc = Scorer(VerifierPool(VerifierConfig(workers=0)), ModelVerifiers({"own": client}, {}))
    try:
        res = sc.score([VerifyRequest("4" if i % 2 == 0 else "5", "4", "own", None, "q") for i in range(8)])
        stats = sc.stats()
        assert [r.score for r in res] == [1.0, 0.0] * 4
        assert engines[0].calls == engines[1].calls == 4  # least-outstanding routing
        assert stats["judge/own/tokens"] == 8 * 8 and stats["judge/own/prompt_tokens"] == 56
        slow = [_FakeEngine(5.0)]
        impatient = JudgeClient("slow", JudgeConfig(path="m", timeout_s=0.1, retries=1, retry_backoff_s=0), EngineBackend(slow))
        out = sc.models.run(impatient.score([(None, "4", "4")] * 3))
        assert all(r.error.startswith("timeout: judge 'slow'") and "after 2 attempts" in r.error for r in out)
        assert slow[0].calls == slow[0].cancelled == 6  # every timed-out request was cancelled in the engine
    finally:
        sc.close()


def test_bench_verifiers_with_judges(key_env, tmp_path, toy_rm_dir, capsys):
    from rlvr.cli import main

    with FakeOpenAI("ok", ok_word="The sum") as srv:
        (tmp_path / "judges.yaml").write_text(
            f"judges:\n  style: {{base_url: '{srv.base_url}', api_key_env: RLVR_TEST_JUDGE_KEY}}\n"
            f"reward_models:\n  parity: {{path: {toy_rm_dir}}}\n")
        code = main(["bench", "verifiers", "--judges", str(tmp_path / "judges.yaml"), "--requests", "8"])
    out = capsys.readouterr().out
    assert code == 0
    assert "requests/s" in out and "style" in out and "parity" in out
    assert len(srv.requests) == 4 + 8  # warm-up, then the timed requests
    assert main(["bench", "verifiers", "--judges", str(tmp_path / "missing.yaml")]) == 1
    assert "recipe file not found" in capsys.readouterr().err


# ------------------------------------------------------------------ one bad reply costs one sample (issue 21, finding 6)

class _ScriptedEngine:
    """Stands in for a judge engine: the reply is looked up by the response under judgement."""

    def __init__(self, replies: dict[str, str]):
        self.replies = replies

    async def judge(self, messages, sampling):
        response = messages[-1]["content"].split("Response:\n", 1)[1].split("\n", 1)[0]
        return {"text": self.replies[response], "prompt_tokens": 1, "completion_tokens": 1}


class _ScriptedRewardModel:
    """Stands in for a RewardModelActor: a fixed raw score per response."""

    def __init__(self, raw: dict[str, float]):
        self.raw = raw

    def score(self, items):
        return [self.raw[r] for _, r, _ in items]


class _BrokenClient:
    """A model-verifier client whose whole call raises (a bug in a plugin-like client)."""

    def __init__(self):
        self.counts = {"errors": 0}

    async def score(self, items):
        raise RuntimeError("client bug")

    def stats(self):
        return {"judge/broken/errors": float(self.counts["errors"])}

    async def close(self):
        pass


def test_one_bad_judge_reply_costs_only_its_sample():
    """A reply holding a 400-digit score (OverflowError in float()), NaN or an infinite score is a parse
    failure of that sample, counted; the other samples, and the reward model's parts of the same rows,
    keep their scores. A client that raises as a whole costs its own parts only, counted in its errors."""
    from rlvr.verifiers.judge import EngineBackend
    from rlvr.verifiers.model_config import RewardModelConfig
    from rlvr.verifiers.reward_model import RewardModelClient

    replies = {"good": '{"score": 8}', "huge": '{"score": ' + "9" * 400 + "}", "nan": '{"score": NaN}',
               "inf": '{"score": 1e999}', "strhuge": '{"score": "' + "9" * 400 + '"}'}
    judge = JudgeClient("j", JudgeConfig(path="m", parser="json", scale_min=0, scale_max=10, retries=0),
                        EngineBackend([_ScriptedEngine(replies)]))
    rm = RewardModelClient("rm", RewardModelConfig(path="m"),
                           _ScriptedRewardModel({"good": 0.5, "huge": float("inf"), "nan": float("nan"), "inf": 2.0,
                                                 "strhuge": 1.0}))
    sc = Scorer(VerifierPool(VerifierConfig(workers=0, combine="mean")),
                ModelVerifiers({"j": judge, "broken": _BrokenClient()}, {"rm": rm}))
    try:
        reqs = [VerifyRequest(r, "x", ["j", "rm"], None, "q") for r in replies]
        res = sc.score(reqs)
        alone = sc.score([VerifyRequest("good", "x", "j", None, "q"), VerifyRequest("good", "x", "broken", None, "q")])
        stats = sc.stats()
    finally:
        sc.close()
    by = dict(zip(replies, res))
    assert by["good"].details["j"]["score"] == pytest.approx(0.8) and by["good"].details["rm"]["score"] == 0.5
    assert by["good"].error is None
    for bad in ("huge", "nan", "inf", "strhuge"):
        assert by[bad].details["j"]["score"] == 0.0 and "parse failure" in by[bad].details["j"]["error"], by[bad]
    assert by["inf"].details["rm"]["score"] == 2.0 and by["strhuge"].details["rm"]["score"] == 1.0
    assert by["huge"].details["rm"]["score"] == by["nan"].details["rm"]["score"] == 0.0
    assert stats["judge/j/parse_failures"] == 4 and stats["judge/j/errors"] == 0
    assert stats["reward_model/rm/errors"] == 2
    assert alone[0].score == pytest.approx(0.8) and alone[1].score == 0.0 and "client bug" in alone[1].error
    assert stats["judge/broken/errors"] == 1


def test_judges_file_paths_are_relative_to_the_file(tmp_path, monkeypatch):
    """`--judges some/dir/judges.yaml` finds `rm/` beside the file, whatever the current directory."""
    from rlvr.config import load_model_sections

    (tmp_path / "conf" / "rm").mkdir(parents=True)
    (tmp_path / "conf" / "rm" / "config.json").write_text("{}")
    (tmp_path / "conf" / "judges.yaml").write_text("reward_models:\n  parity: {path: rm}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sec = load_model_sections(str(tmp_path / "conf" / "judges.yaml"))
    assert sec.reward_models["parity"].path == str(tmp_path / "conf" / "rm")
    (tmp_path / "conf" / "judges.yaml").write_text("reward_models:\n  parity: {path: ./missing/rm}\n")
    with pytest.raises(ValueError, match=f"no Hugging Face checkpoint at {tmp_path / 'conf' / 'missing' / 'rm'}"):
        load_model_sections(str(tmp_path / "conf" / "judges.yaml"))
