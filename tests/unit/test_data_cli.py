"""`rlvr data gsm8k` and `rlvr data constraints`: what they write, what they print, how bad input fails."""
import json

import pytest

from rlvr.cli import main
from rlvr.data import DataSourceConfig, load_sources


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("rlvr: error: ")
    return err[0]


def test_gsm8k_converts_the_real_test_split(shared_data, tmp_path, capsys):
    out = tmp_path / "sub" / "gsm8k.jsonl"
    assert main(["data", "gsm8k", "--input", str(shared_data / "gsm8k" / "test.jsonl"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "wrote 1319 GSM8K rows" in printed and str(out) in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1319 and rows[0]["ground_truth"] == "18"
    loaded = load_sources([DataSourceConfig(path=str(out))])  # the trainer's loader accepts it as is
    assert len(loaded) == 1319 and loaded[0]["verifier"] == ["gsm8k"]


def test_gsm8k_limit(shared_data, tmp_path, capsys):
    out = tmp_path / "g.jsonl"
    assert main(["data", "gsm8k", "--input", str(shared_data / "gsm8k" / "train.jsonl"), "--output", str(out),
                 "--limit", "25"]) == 0
    assert "wrote 25 GSM8K rows" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 25


def test_gsm8k_bad_input_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    assert main(["data", "gsm8k", "--input", str(tmp_path / "missing.jsonl"), "--output", str(out)]) == 2
    assert "missing.jsonl" in one_error_line(capsys)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q", "answer": "#### 4"}\n{"question": "Q", "answer": "no final number"}\n')
    assert main(["data", "gsm8k", "--input", str(bad), "--output", str(out)]) == 2
    assert "bad.jsonl line 2" in one_error_line(capsys)
    assert not out.exists()  # nothing half-written
    assert main(["data", "gsm8k", "--input", str(bad), "--output", str(tmp_path)]) == 2
    assert "--output" in one_error_line(capsys)


def test_constraints_write_deterministic_prompts(tmp_path, capsys):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    assert main(["data", "constraints", "--n", "40", "--seed", "7", "--output", str(a)]) == 0
    printed = capsys.readouterr().out
    rows = [json.loads(line) for line in a.read_text().splitlines()]
    assert len(rows) == 40
    ids = [i for r in rows for i in r["ground_truth"]["instruction_id_list"]]
    assert f"wrote 40 instruction-following prompts (verifier ifeval; {len(ids)} constraints of {len(set(ids))} types" in printed
    assert all(1 <= len(r["ground_truth"]["instruction_id_list"]) <= 2 for r in rows)
    assert main(["data", "constraints", "--n", "40", "--seed", "7", "--output", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    assert main(["data", "constraints", "--n", "40", "--seed", "8", "--max-constraints", "1", "--output", str(c)]) == 0
    other = [json.loads(line) for line in c.read_text().splitlines()]
    assert all(len(r["ground_truth"]["instruction_id_list"]) == 1 for r in other) and other != rows
    loaded = load_sources([DataSourceConfig(path=str(a))])
    assert len(loaded) == 40 and loaded[0]["verifier"] == ["ifeval"]


def test_constraints_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["data", "constraints", "--n", "5", "--max-constraints", "0", "--output", str(tmp_path / "x.jsonl")]) == 2
    assert "--max-constraints" in one_error_line(capsys)
    assert main(["data", "constraints", "--n", "-1", "--output", str(tmp_path / "x.jsonl")]) == 2
    assert "--n" in one_error_line(capsys)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["data", "constraints", "--n", "5", "--output", str(blocker / "x.jsonl")]) == 2
    assert f"--output: {blocker} is a file, not a folder" in one_error_line(capsys)
    assert not (tmp_path / "x.jsonl").exists()


def test_data_needs_a_subcommand():
    with pytest.raises(SystemExit) as e:
        main(["data"])
    assert e.value.code == 2
