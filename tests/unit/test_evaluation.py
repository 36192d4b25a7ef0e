"""rlvr.evaluation: unbiased pass@k, the summary's breakdowns, records from completions, the table."""
from math import comb
from types import SimpleNamespace

import pytest

from rlvr.evaluation import flat_metrics, ks_for, pass_at_k, sample_records, summarize, summary_table
from rlvr.verifiers import VerifyResult


def test_pass_at_k_hand_computed():
    # n=5, c=2: pass@1 = 2/5; pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10; pass@3 = 1 - C(3,3)/C(5,3) = 1 - 1/10
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)
    assert pass_at_k(5, 2, 4) == 1.0 and pass_at_k(5, 2, 5) == 1.0  # fewer than k wrong samples
    assert pass_at_k(5, 0, 5) == 0.0 and pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0


def test_pass_at_k_matches_binomials_and_stays_finite_for_large_n():
    for n, c, k in [(200, 7, 16), (64, 1, 32), (10, 3, 7)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), rel=1e-12)
    # C(5000, 2500) overflows a float; the product form does not
    assert pass_at_k(5000, 1, 2500) == pytest.approx(0.5)
    assert pass_at_k(5000, 1, 1) == pytest.approx(1 / 5000)


@pytest.mark.parametrize("n, c, k", [(0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError, match="pass_at_k needs"):
        pass_at_k(n, c, k)


def test_ks_for():
    assert ks_for(1) == [1]
    assert ks_for(4) == [1, 2, 4]
    assert ks_for(5) == [1, 2, 4, 5]
    assert ks_for(6) == [1, 2, 4, 6]
    assert ks_for(16) == [1, 2, 4, 8, 16]


def _records():
    # 4 prompts x 4 samples; c = number of scores >= 1 (0.5 is partial credit, not correct)
    table = [(0, "a", ["math"], [1, 0, 0, 0]),              # c=1
             (1, "a", ["math"], [1, 1, 0, 0]),              # c=2
             (2, "b", ["ifeval"], [0.5, 0, 0, 1]),          # c=1
             (3, "b", ["ifeval", "math"], [0, 0, 0, 0])]    # c=0
    return [{"prompt_index": p, "source": src, "verifier": v, "score": s}
            for p, src, v, scores in table for s in scores]


def test_summarize_hand_computed():
    s = summarize(_records())
    assert (s["n"], s["prompts"], s["samples"]) == (4, 4, 16)
    assert s["accuracy"] == pytest.approx(4 / 16)
    assert s["mean_score"] == pytest.approx(4.5 / 16)
    # per prompt pass@2 (n=4): c=1 -> 1 - 3/6, c=2 -> 1 - 1/6, c=0 -> 0
    assert s["pass@1"] == pytest.approx(0.25)
    assert s["pass@2"] == pytest.approx((0.5 + 5 / 6 + 0.5 + 0) / 4)
    assert s["pass@4"] == pytest.approx(0.75)
    assert sorted(k for k in s if k.startswith("pass@")) == ["pass@1", "pass@2", "pass@4"]
    # a row naming two verifiers counts under both
    math, ifeval = s["verifier"]["math"], s["verifier"]["ifeval"]
    assert (math["prompts"], math["samples"], ifeval["prompts"]) == (3, 12, 2)
    assert math["accuracy"] == pytest.approx(3 / 12)
    assert math["pass@2"] == pytest.approx((0.5 + 5 / 6 + 0) / 3)
    assert math["pass@4"] == pytest.approx(2 / 3)
    assert ifeval["accuracy"] == pytest.approx(1 / 8) and ifeval["mean_score"] == pytest.approx(1.5 / 8)
    assert ifeval["pass@4"] == pytest.approx(0.5)
    a, b = s["source"]["a"], s["source"]["b"]
    assert a["accuracy"] == pytest.approx(3 / 8) and a["pass@2"] == pytest.approx((0.5 + 5 / 6) / 2) and a["pass@4"] == 1.0
    assert b["accuracy"] == pytest.approx(1 / 8) and b["pass@1"] == pytest.approx(1 / 8)


def test_summarize_greedy_pass_at_1_is_accuracy():
    recs = [{"prompt_index": i, "source": "x", "verifier": ["math"], "score": float(i % 3 == 0)} for i in range(9)]
    s = summarize(recs)
    assert s["n"] == 1 and s["accuracy"] == s["pass@1"] == pytest.approx(3 / 9)
    assert [k for k in s if k.startswith("pass@")] == ["pass@1"]


def test_summarize_rejects_uneven_or_empty_groups():
    recs = _records()[:-1]  # prompt 3 now has 3 samples
    with pytest.raises(ValueError, match=r"same number of samples, got sizes \[3, 4\]"):
        summarize(recs)
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


def test_flat_metrics_keys():
    flat = flat_metrics(summarize(_records()))
    assert flat["accuracy"] == pytest.approx(0.25) and flat["pass@4"] == pytest.approx(0.75)
    assert flat["verifier/math/accuracy"] == pytest.approx(0.25)
    assert flat["source/b/pass@1"] == pytest.approx(1 / 8)
    assert not any(k.split("/")[-1] in ("n", "prompts", "samples") for k in flat)  # counts stay in the summary


def test_sample_records_from_completions():
    rows = [{"source": "s1", "index": 7, "verifier": ["math"], "ground_truth": "3", "messages": []},
            {"source": "s2", "index": 2, "verifier": ["gsm8k"], "ground_truth": "5", "messages": []}]
    comp = lambda i, text: SimpleNamespace(prompt_index=i, text=text, finish_reason="stop", policy_version=0)
    comps = [comp(0, "3"), comp(0, "4"), comp(1, "5"), comp(1, "x")]
    results = [VerifyResult(1.0), VerifyResult(0.0), VerifyResult(1.0), VerifyResult(0.0, {}, "boom")]
    recs = sample_records(rows, comps, results, prompts=["P0", "P1"])
    assert [(r["prompt_index"], r["sample"], r["source"], r["index"], r["score"]) for r in recs] == [
        (0, 0, "s1", 7, 1.0), (0, 1, "s1", 7, 0.0), (1, 0, "s2", 2, 1.0), (1, 1, "s2", 2, 0.0)]
    assert recs[2]["prompt"] == "P1" and recs[2]["completion"] == "5" and recs[2]["ground_truth"] == "5"
    assert recs[3]["error"] == "boom" and "error" not in recs[0]
    assert summarize(recs)["source"]["s2"]["pass@2"] == 1.0
    with pytest.raises(ValueError, match="4 completions but 3 verifier results"):
        sample_records(rows, comps, results[:3])


def test_summary_table_renders_every_group():
    from rich.console import Console

    console = Console(record=True, width=160)
    console.print(summary_table(summarize(_records()), title="toy"))
    text = console.export_text()
    lines = [line for line in text.splitlines() if "│" in line or "|" in line]
    assert any("all" in line and "25.0%" in line and "75.0%" in line for line in lines)
    for label in ("verifier math", "verifier ifeval", "source a", "source b"):
        assert any(label in line for line in lines), label
    assert "pass@2" in text and "pass@4" in text


def test_trainer_evaluate_logs_the_breakdown(tmp_path):
    """Trainer.evaluate (periodic evaluation) reports through summarize: eval.jsonl gets pass@1 and
    per-verifier / per-source accuracy next to the keys older readers use."""
    import json

    from rlvr.loop.trainer import Trainer
    from rlvr.metrics import MetricsSink

    rows = [{"messages": [{"role": "user", "content": f"q{i}"}], "ground_truth": str(i), "verifier": ["math"],
             "source": "easy" if i < 2 else "hard", "index": i} for i in range(4)]
    comps = [SimpleNamespace(prompt_index=i, text=t, finish_reason="stop", policy_version=3, trajectory=None)
             for i, t in enumerate(["0", "1", "2", "x"])]
    scores = [VerifyResult(1.0), VerifyResult(1.0), VerifyResult(1.0), VerifyResult(0.0)]
    sink = MetricsSink(tmp_path, {}, name="t", use_wandb=False, project="p")
    trainer = SimpleNamespace(prep=SimpleNamespace(eval_rows=rows, tokenizer=SimpleNamespace(chat_template=None)),
                              step=5, version=3, sink=sink, timings={"eval": 0.0},
                              _generate_and_score=lambda rows, prompts, greedy: (comps, None, scores, 0.0, 0.0))
    assert Trainer.evaluate(trainer) == pytest.approx(0.75)
    sink.close()
    (row,) = [json.loads(line) for line in open(tmp_path / "eval.jsonl")]
    assert row["step"] == 5 and row["policy_version"] == 3 and row["accuracy"] == pytest.approx(0.75)
    assert row["pass@1"] == pytest.approx(0.75) and row["verifier/math/accuracy"] == pytest.approx(0.75)
    assert row["source/easy/accuracy"] == 1.0 and row["source/hard/accuracy"] == pytest.approx(0.5)
    samples = [json.loads(line) for line in open(tmp_path / "eval_samples.jsonl")]
    assert [s["completion"] for s in samples] == ["0", "1", "2", "x"] and samples[0]["prompt"] == "q0"


def test_eval_sampling_mode():
    from rlvr.cli.eval import EvalInputError, sampling

    assert sampling(1, None) == (True, 1.0)     # one answer: greedy
    assert sampling(1, 0.0) == (True, 0.0)
    assert sampling(1, 0.7) == (False, 0.7)     # a temperature asks for sampling
    assert sampling(8, None) == (False, 1.0)    # several answers: sampled, at 1.0 unless told
    assert sampling(8, 0.6) == (False, 0.6)
    with pytest.raises(EvalInputError, match="--temperature 0 is greedy"):
        sampling(8, 0.0)
    with pytest.raises(EvalInputError, match="--temperature must be >= 0"):
        sampling(1, -1.0)


def test_eval_prompt_length_check():
    from rlvr.cli.eval import EvalInputError, check_prompt_lengths

    rows = [{"source": "a.jsonl", "index": 0}, {"source": "d/data.parquet", "index": 4}]
    check_prompt_lengths(rows, [[1] * 9, [1] * 9], context=10)   # one token of room left: fine
    check_prompt_lengths(rows, [[1] * 99, [1] * 99], context=None)  # unknown context: vLLM decides
    with pytest.raises(EvalInputError, match=r"--data: a.jsonl line 1: the prompt has 10 tokens .* context is 10"):
        check_prompt_lengths(rows, [[1] * 10, [1] * 3], context=10)
    with pytest.raises(EvalInputError, match=r"d/data.parquet row 4: the prompt has 12 tokens"):
        check_prompt_lengths(rows, [[1] * 3, [1] * 12], context=10)
