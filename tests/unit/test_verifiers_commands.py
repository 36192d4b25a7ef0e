"""rlvr verifiers / rlvr verify as functions: table, JSONL in and out, bad rows by line number."""
import json

from rlvr.verifiers import VerifierConfig
from rlvr.cli.verify import cmd_verifiers, cmd_verify


def test_cmd_verifiers_prints_the_table(capsys):
    assert cmd_verifiers([]) == 0
    out = capsys.readouterr().out
    for name in ("math", "gsm8k", "ifeval", "code", "format", "max_length"):
        assert name in out
    assert "rlvr.verifiers.math_answer" in out


def test_cmd_verifiers_reports_a_bad_plugin(capsys):
    assert cmd_verifiers(["no_such_plugin_module_abc"]) == 1
    assert "no_such_plugin_module_abc" in capsys.readouterr().err


def test_cmd_verify_scores_good_rows_and_reports_bad_ones(tmp_path, capsys):
    rows = [
        json.dumps({"id": "a", "prompt": "2+2?", "response": r"\boxed{4}", "verifier": "math", "ground_truth": "4"}),
        "{not json",
        json.dumps({"id": "c", "response": "x", "verifier": "math"}),                      # no ground truth
        json.dumps({"id": "d", "response": "#### 7", "verifier": "nope", "ground_truth": 7}),
        "",
        json.dumps({"id": "f", "response": "#### 7", "verifier": ["gsm8k", "math"], "ground_truth": 7}),
    ]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(rows) + "\n")
    code = cmd_verify(str(src), str(dst), VerifierConfig(workers=1))
    err = capsys.readouterr().err
    assert code == 1
    assert f"{src}:2: not valid JSON" in err
    assert f"{src}:3: missing field(s) ground_truth" in err
    assert f"{src}:4: unknown verifier 'nope'" in err
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [o["id"] for o in out] == ["a", 2, "c", "d", "f"]  # input order; a row without id gets its line
    assert out[0]["score"] == 1.0 and "error" not in out[0]
    assert out[1]["score"] == 0.0 and out[1]["line"] == 2
    assert out[4]["score"] == 1.0 and set(out[4]["details"]) == {"gsm8k", "math"}


def test_cmd_verify_all_good_returns_zero(tmp_path, capsys):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(json.dumps({"id": 1, "response": "#### 3", "verifier": "gsm8k", "ground_truth": 3}) + "\n")
    assert cmd_verify(str(src), str(dst), VerifierConfig(workers=0)) == 0
    assert json.loads(dst.read_text())["score"] == 1.0


def test_cmd_verify_missing_input_file(tmp_path, capsys):
    assert cmd_verify(str(tmp_path / "nope.jsonl"), str(tmp_path / "o.jsonl"), VerifierConfig(workers=0)) == 2
    assert "cannot read" in capsys.readouterr().err
