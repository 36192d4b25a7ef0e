"""`rlvr eval` for real: vLLM (cpu) samples the toy policy, the math verifier scores, the JSON adds up.
Bad input must fail with one line and exit code 2 before any engine starts."""
import json
import subprocess
import sys
from collections import defaultdict

import pytest

from rlvr.cli import main
from rlvr.evaluation import pass_at_k

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def result(toy_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "results.json"
    proc = subprocess.run([sys.executable, "-m", "rlvr.cli", "eval", "--model", str(toy_dir / "model"),
                           "--data", str(toy_dir / "eval.jsonl"), "--limit", "32", "--n", "4", "--max-tokens", "6",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_summary_adds_up_from_the_samples(result):
    proc, res = result
    s, samples = res["summary"], res["samples"]
    assert (res["n"], s["prompts"], s["samples"], len(samples)) == (4, 32, 128, 128)
    assert res["greedy"] is False and res["temperature"] == 1.0
    assert 0.0 <= s["accuracy"] <= 1.0
    assert s["accuracy"] == pytest.approx(sum(r["score"] >= 1.0 for r in samples) / len(samples))
    by_prompt = defaultdict(list)
    for r in samples:
        by_prompt[r["prompt_index"]].append(r["score"] >= 1.0)
    assert sorted(by_prompt) == list(range(32)) and all(len(v) == 4 for v in by_prompt.values())
    assert s["pass@4"] == pytest.approx(sum(any(v) for v in by_prompt.values()) / 32)
    assert s["pass@2"] == pytest.approx(sum(pass_at_k(4, sum(v), 2) for v in by_prompt.values()) / 32)
    assert s["pass@1"] == pytest.approx(s["accuracy"])
    assert s["pass@4"] >= s["pass@2"] >= s["pass@1"]
    assert s["pass@4"] > 0  # the toy policy adds correctly some of the time; all-zero means a broken pipeline
    math = s["verifier"]["math"]
    assert math["prompts"] == 32 and math["accuracy"] == pytest.approx(s["accuracy"])
    assert list(s["source"]) == [res["data"][0]]
    # samples carry what is needed to audit them
    r0 = samples[0]
    assert r0["prompt"].startswith("<|user|>What is ") and r0["prompt"].endswith("<|assistant|>")
    assert r0["verifier"] == ["math"] and r0["ground_truth"].isdigit() and r0["index"] == 0
    assert "pass@4" in proc.stdout and "verifier math" in proc.stdout


@pytest.fixture
def no_engine(monkeypatch):
    """Any attempt to start vLLM fails the test: input errors must come first."""
    def boom(*a, **k):
        raise AssertionError("vLLM was started despite bad input")
    monkeypatch.setattr("rlvr.engines.rollout.RolloutActor", boom)


def _bad_inputs(toy_dir, tmp_path):
    model, data = str(toy_dir / "model"), str(toy_dir / "eval.jsonl")
    no_config = tmp_path / "empty_model"
    no_config.mkdir()
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "What is 1 + 1?", "ground_truth": "2", "verifier": "math"}\n{"prompt": \n')
    no_verifier = tmp_path / "no_verifier.jsonl"
    no_verifier.write_text('{"prompt": "What is 1 + 1?", "ground_truth": "2"}\n')
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text('{"prompt": "What is 1 + 1?", "ground_truth": "2", "verifier": "nosuch"}\n')
    too_long = tmp_path / "too_long.jsonl"  # the toy's byte-level tokenizer: > 64 tokens, its context
    too_long.write_text(json.dumps({"prompt": "What is " + " + ".join(["1"] * 40) + "?", "ground_truth": "40",
                                    "verifier": "math"}) + "\n")
    return [
        (["--model", str(tmp_path / "nope"), "--data", data], "--model: not a directory"),
        (["--model", model, "--data", str(too_long)], "too_long.jsonl line 1: the prompt has 168 tokens"),
        (["--model", model, "--data", data, "--max-model-len", "8"], "the model's context is 8"),
        (["--model", str(no_config), "--data", data], "has no config.json"),
        (["--model", model, "--data", str(tmp_path / "missing.jsonl")], "missing.jsonl"),
        (["--model", model, "--data", str(broken)], "broken.jsonl line 2: not valid JSON"),
        (["--model", model, "--data", str(no_verifier)], "no_verifier.jsonl line 1: no verifier (name one with --verifier)"),
        (["--model", model, "--data", str(unknown)], "unknown verifier 'nosuch'"),
        (["--model", model, "--data", data, "--verifier", "nosuch"], "unknown verifier 'nosuch'"),
        (["--model", model, "--data", data, "--plugin", "no_such_plugin_module"], "no_such_plugin_module"),
        (["--model", model, "--data", data, "--n", "0"], "--n must be >= 1"),
        (["--model", model, "--data", data, "--n", "4", "--temperature", "0"], "--temperature 0 is greedy"),
        (["--model", model, "--data", data, "--out", str(tmp_path)], "--out:"),
    ]


def test_bad_input_fails_before_the_engine(toy_dir, tmp_path, capsys, no_engine):
    for argv, expected in _bad_inputs(toy_dir, tmp_path):
        assert main(["eval", *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("rlvr: error: ") and expected in err[0], (argv, err)


def test_bad_input_exit_code_from_the_command_line(toy_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rlvr.cli", "eval", "--model", str(toy_dir / "model"),
                           "--data", str(tmp_path / "missing.jsonl")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"rlvr: error: data path not found: {tmp_path / 'missing.jsonl'}"]


def test_eval_runs_environments(toy_dir, tmp_path):
    """`rlvr eval --env` runs each row as a multi-turn trajectory (a plugin environment asking twice more)."""
    from pathlib import Path

    plugin = Path(__file__).resolve().parents[1] / "fixtures" / "environments" / "rlvr_test_envs.py"
    out = tmp_path / "env.json"
    proc = subprocess.run([sys.executable, "-m", "rlvr.cli", "eval", "--model", str(toy_dir / "model"),
                           "--data", str(toy_dir / "eval.jsonl"), "--limit", "4", "--max-tokens", "5",
                           "--env", "countdown", "--env-plugin", str(plugin), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert len(res["samples"]) == 4 and res["environments"]["turns"] == 3.0
    for r in res["samples"]:
        assert r["turns"] == 3 and r["end"] == "done"
        assert [m["role"] for m in r["messages"]] == ["user", "assistant", "user", "assistant", "user", "assistant"]
        assert r["completion"] == r["messages"][-1]["content"]  # the verifier scored the final answer
    assert "environments: " in proc.stderr


def test_eval_unknown_environment_is_one_line(toy_dir, no_engine, capsys):
    code = main(["eval", "--model", str(toy_dir / "model"), "--data", str(toy_dir / "eval.jsonl"), "--env", "nosuch"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nosuch" in err, err
