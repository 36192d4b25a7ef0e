"""Exact resume: a run killed mid-way continues from its checkpoint to the same final step, on the same data.

The run is a real `rlvr train` process (Ray + vLLM + DeepSpeed) killed with SIGKILL after step 3;
its checkpoint is at step 2. `rlvr train --resume RUN_DIR` must redo step 3 and finish step 4
with the batches an uninterrupted run draws (PromptStream order), and say "nothing to do" once
finished. Empty and corrupt checkpoint directories are one-line errors before any cluster starts.
"""

import json
import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from rlvr.config import load_recipe
from rlvr.loop.trainer import prepare
from rlvr.data import PromptStream, render_prompt

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RLVR = [sys.executable, "-m", "rlvr.cli"]


def _overrides(toy_dir, out):
    return [f"model.path={toy_dir}/model", f"data.train.0.path={toy_dir}/train.jsonl", f"data.eval.0.path={toy_dir}/eval.jsonl",
            "data.eval_size=16", "train.steps=4", "train.save_every=2", "train.prompts_per_step=16", "train.eval_every=0",
            f"output_dir={out}", "name=killed", "logging.wandb=false", "logging.progress=false", "train.max_minutes=null"]


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def _metrics(run_dir):
    return [json.loads(line) for line in open(run_dir / "metrics.jsonl")]


@pytest.fixture(scope="module")
def killed_and_resumed(toy_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    overrides = _overrides(toy_dir, out)
    run_dir = out / "killed"
    proc = subprocess.Popen(RLVR + ["train", str(ROOT / "recipes" / "toy_addition_cpu.yaml")] + _sets(overrides),
                            cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    try:
        while time.time() < deadline and proc.poll() is None:
            if (run_dir / "metrics.jsonl").is_file() and any(r["step"] == 3 for r in _metrics(run_dir)):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
        proc.wait()
    before = _metrics(run_dir)
    resumed = subprocess.run(RLVR + ["train", "--resume", str(run_dir)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    again = subprocess.run(RLVR + ["train", "--resume", str(run_dir)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    return {"run_dir": run_dir, "before": before, "resumed": resumed, "again": again, "overrides": overrides}


def test_killed_run_resumes_to_the_same_final_step(killed_and_resumed):
    k = killed_and_resumed
    assert [r["step"] for r in k["before"]] == [1, 2, 3]
    assert k["resumed"].returncode == 0, k["resumed"].stderr[-2000:]
    rows = _metrics(k["run_dir"])
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # the killed run's step 3 was dropped and redone
    assert [r["policy_version"] for r in rows] == [1, 2, 3, 4]
    assert rows[:2] == k["before"][:2]  # what was saved is untouched
    summary = json.loads((k["run_dir"] / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["finished"]
    assert (k["run_dir"] / "final" / "config.json").is_file()


def test_resumed_run_draws_the_uninterrupted_data_order(killed_and_resumed, toy_dir):
    k = killed_and_resumed
    recipe = load_recipe(ROOT / "recipes" / "toy_addition_cpu.yaml", k["overrides"])
    prep = prepare(recipe)
    stream = PromptStream(prep.train_rows, recipe.train.prompts_per_step, seed=recipe.data.seed)
    expected = [zlib.crc32("\n".join(render_prompt(prep.tokenizer, row) for row in stream.next_batch()).encode())
                for _ in range(4)]
    assert [r["data/prompts_crc32"] for r in _metrics(k["run_dir"])] == expected


def test_resuming_a_finished_run_exits_0_without_training(killed_and_resumed):
    again = killed_and_resumed["again"]
    assert again.returncode == 0
    assert "nothing to do" in again.stdout
    assert "starting Ray" not in again.stdout + again.stderr


def test_fresh_run_refuses_to_clobber_a_run_dir(killed_and_resumed):
    res = subprocess.run(RLVR + ["train", str(ROOT / "recipes" / "toy_addition_cpu.yaml")] + _sets(killed_and_resumed["overrides"]),
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "--resume" in res.stderr and "--overwrite" in res.stderr


def _resume_error(run_dir):
    res = subprocess.run(RLVR + ["train", "--resume", str(run_dir)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and "starting Ray" not in res.stdout
    return res.stderr


def test_corrupt_and_empty_checkpoints_are_clear_errors(killed_and_resumed, tmp_path):
    import shutil

    src = killed_and_resumed["run_dir"]
    run_dir = tmp_path / "copy"
    shutil.copytree(src, run_dir)
    (run_dir / "summary.json").unlink()
    ckpt = sorted((run_dir / "checkpoints").iterdir())[-1]
    victim = next(p for p in sorted(ckpt.rglob("*.pt")))
    victim.write_bytes(victim.read_bytes()[:100])  # a truncated write
    err = _resume_error(run_dir)
    assert "corrupt checkpoint" in err and victim.name in err
    for p in (run_dir / "checkpoints").iterdir():
        shutil.rmtree(p)
    assert "is empty" in _resume_error(run_dir)
