"""Bad input ends `rlvr train` at once: exit 2, one line naming the field or file, no cluster."""

import json
import subprocess
import sys
from pathlib import Path

import ray
import yaml

from rlvr.cli import main


def _write_recipe(tmp_path: Path, **changes) -> Path:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")  # enough for path checks; errors must come before loading it
    data = tmp_path / "train.jsonl"
    if not data.exists():
        data.write_text(json.dumps({"prompt": "What is 1 + 1?", "ground_truth": "2", "verifier": "math"}) + "\n")
    recipe = {"name": "t", "output_dir": str(tmp_path / "runs"), "model": {"path": str(model)},
              "data": {"train": [{"path": str(data)}]}}
    for dotted, value in changes.items():
        d = recipe
        keys = dotted.split("__")
        for k in keys[:-1]:
            d = d.setdefault(k, {})
        d[keys[-1]] = value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _run(capsys, *argv) -> str:
    code = main(["train", *map(str, argv)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("rlvr: error: "), err
    assert not ray.is_initialized()
    assert "Traceback" not in err
    return err


def test_missing_recipe_file(capsys, tmp_path):
    assert "recipe file not found" in _run(capsys, tmp_path / "nope.yaml")


def test_unparsable_recipe(capsys, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  path: [unclosed\n")
    err = _run(capsys, p)
    assert "bad.yaml" in err and "not valid YAML" in err and "line" in err


def test_wrong_key(capsys, tmp_path):
    err = _run(capsys, _write_recipe(tmp_path, learner__lrr=0.1))
    assert "learner.lrr: unknown field" in err


def test_wrong_type(capsys, tmp_path):
    err = _run(capsys, _write_recipe(tmp_path, learner__lr="fast"))
    assert "learner.lr" in err and "'fast'" in err


def test_wrong_override(capsys, tmp_path):
    err = _run(capsys, _write_recipe(tmp_path), "--set", "learner.zero_stage=7")
    assert "learner.zero_stage" in err


def test_compile_with_zero3(capsys, tmp_path):
    err = _run(capsys, _write_recipe(tmp_path, learner__compile=True, learner__zero_stage=3))
    assert "learner" in err and "compile needs zero_stage 0-2" in err


def test_missing_model_path(capsys, tmp_path):
    err = _run(capsys, _write_recipe(tmp_path, model__path=str(tmp_path / "missing")))
    assert "model.path" in err and "missing" in err


def test_missing_data_path(capsys, tmp_path):
    err = _run(capsys, _write_recipe(tmp_path, data__train=[{"path": str(tmp_path / "gone.jsonl")}]))
    assert "data.train.0.path" in err and "gone.jsonl" in err


def test_unparsable_data_line_names_file_and_line(capsys, tmp_path):
    (tmp_path / "train.jsonl").write_text('{"prompt": "a", "ground_truth": "1", "verifier": "math"}\n{"prompt": "b", \n')
    err = _run(capsys, _write_recipe(tmp_path))
    assert "train.jsonl line 2" in err and "JSON" in err


def test_unknown_verifier(capsys, tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"prompt": "a", "ground_truth": "1", "verifier": "no_such_check"}) + "\n")
    err = _run(capsys, _write_recipe(tmp_path))
    assert "unknown verifier 'no_such_check' in data.train.0 (" in err and "rows' verifier/dataset column" in err
    assert "(known: " in err and "gsm8k" in err and "math" in err  # the names that would work


def test_source_verifier_is_checked_even_when_rows_name_their_own(capsys, tmp_path):
    """A source's `verifier:` that names nothing known stops the run, though every row carries `dataset`."""
    (tmp_path / "train.jsonl").write_text(json.dumps({"prompt": "a", "ground_truth": "1", "dataset": "math"}) + "\n"
                                          + json.dumps({"prompt": "b", "ground_truth": "2"}) + "\n")
    err = _run(capsys, _write_recipe(tmp_path, data__train=[{"path": str(tmp_path / "train.jsonl"), "verifier": "maths"}]))
    assert "unknown verifier 'maths' in data.train.0.verifier (known: " in err
    # all rows name their own, another one: the source's verifier would never be used
    (tmp_path / "train.jsonl").write_text(json.dumps({"prompt": "a", "ground_truth": "1", "dataset": "math"}) + "\n")
    err = _run(capsys, _write_recipe(tmp_path, data__train=[{"path": str(tmp_path / "train.jsonl"), "verifier": "gsm8k"}]))
    assert "verifier: 'gsm8k' is used by no row: every row names its own (math" in err and "overrides it" in err


def test_bad_column_mapping(capsys, tmp_path):
    (tmp_path / "t.csv").write_text("question,answer\nWhat is 1+1?,#### 2\n")
    err = _run(capsys, _write_recipe(tmp_path, data__train=[{"path": str(tmp_path / "t.csv"), "prompt_key": "q",
                                                              "answer_key": "answer", "verifier": "gsm8k"}]))
    assert "t.csv: prompt_key: no column 'q' in " in err and "row 0" in err


def test_unknown_environment(capsys, tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"prompt": "a", "ground_truth": "1", "verifier": "math", "env": "no_such_env"}) + "\n")
    err = _run(capsys, _write_recipe(tmp_path))
    assert "no_such_env" in err


def test_bad_environment_option(capsys, tmp_path):
    err = _run(capsys, _write_recipe(tmp_path, environments={"options": {"tools": {"tools": ["no_such_tool"]}}}))
    assert "no_such_tool" in err


def test_missing_environment_plugin(capsys, tmp_path):
    err = _run(capsys, _write_recipe(tmp_path, environments={"plugins": ["no_such_env_module"]}))
    assert "no_such_env_module" in err


def test_unknown_algorithm_name(capsys, tmp_path):
    err = _run(capsys, _write_recipe(tmp_path, algorithm__advantage="grpoo"))
    assert "algorithm.advantage" in err


def test_process_exit_code_and_single_line(tmp_path):
    """The installed entry point, as a user runs it: exit status 2, one stderr line, nothing saved lost."""
    recipe = _write_recipe(tmp_path, learner__lrr=0.1)
    out = subprocess.run([sys.executable, "-m", "rlvr.cli", "train", str(recipe)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"rlvr: error: {recipe}: learner.lrr: unknown field (check its spelling; `rlvr config` lists fields)"]
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written
