"""The toy trained from a csv source with its own column names, a prompt_template and a reward function in a
.py file next to the recipe: the rows equal the toy's converted JSONL rows, `rlvr train` runs on the real stack
and calls the reward file in its verifier workers, and `rlvr eval` uses the same file."""
import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr.config import load_recipe
from rlvr.loop.trainer import prepare

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REWARD = '''from pathlib import Path


def add_reward(completion, ground_truth, **row):
    """1 if the last number in the completion is the sum; logs each call beside this file."""
    with open(Path(__file__).with_name("calls.txt"), "a") as f:
        f.write(f"{row.get('carry')}\\n")
    nums = __import__("re").findall(r"-?\\d+", completion)
    return float(bool(nums) and nums[-1] == str(ground_truth))
'''


def _table(jsonl: Path) -> list[dict]:
    out = []
    for line in jsonl.read_text().splitlines():
        row = json.loads(line)
        x, y = re.fullmatch(r"What is (\d+) \+ (\d+)\?", row["messages"][0]["content"]).groups()
        out.append({"x": int(x), "y": int(y), "total": int(row["ground_truth"]), "carry": int(x[-1]) + int(y[-1]) >= 10})
    return out


@pytest.fixture(scope="module")
def project(toy_dir, tmp_path_factory):
    proj = tmp_path_factory.mktemp("proj")
    with open(proj / "train.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["x", "y", "total", "carry"])
        w.writeheader()
        w.writerows(_table(toy_dir / "train.jsonl"))
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(_table(toy_dir / "eval.jsonl")), proj / "eval.parquet")
    (proj / "add_reward.py").write_text(REWARD)
    source = ("{path: %s, prompt_template: 'What is {x} + {y}?', answer_key: total, verifier: add_reward, "
              "extra_keys: [carry]}")
    (proj / "recipe.yaml").write_text(
        f"base: {ROOT / 'recipes' / 'toy_addition_cpu.yaml'}\n"
        f"name: from-csv\noutput_dir: {proj / 'runs'}\nmodel: {{path: {toy_dir / 'model'}}}\n"
        f"data:\n  train: [{source % (proj / 'train.csv')}]\n  eval: [{source % (proj / 'eval.parquet')}]\n"
        "  eval_size: 16\n"
        "verifiers: {plugins: [add_reward.py:add_reward]}\n"  # relative to this file, not the current directory
        "train: {steps: 2, prompts_per_step: 16, eval_every: 0}\nlogging: {wandb: false, progress: false}\n")
    return proj


def test_rows_equal_the_converted_jsonl_rows(project, toy_dir):
    prep = prepare(load_recipe(project / "recipe.yaml"))
    want = [json.loads(line) for line in (toy_dir / "train.jsonl").read_text().splitlines()]
    assert [(r["messages"], r["ground_truth"]) for r in prep.train_rows] == [(w["messages"], w["ground_truth"]) for w in want]
    assert {tuple(r["verifier"]) for r in prep.train_rows} == {("add_reward",)}
    assert isinstance(prep.train_rows[0]["extra"]["carry"], bool)


@pytest.fixture(scope="module")
def trained(project):
    proc = subprocess.run([sys.executable, "-m", "rlvr.cli", "train", f"{project.name}/recipe.yaml"], cwd=project.parent,
                          capture_output=True, text=True, timeout=600)  # started elsewhere: paths resolve by the recipe
    return proc


def test_train_uses_the_reward_file_in_its_workers(project, trained):
    assert trained.returncode == 0, trained.stderr[-3000:]
    metrics = [json.loads(line) for line in (project / "runs" / "from-csv" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all("reward/add_reward" in m for m in metrics)
    calls = (project / "calls.txt").read_text().split()
    assert len(calls) >= 2 * 16 * 8 and set(calls) == {"True", "False"}  # every sample, with its extra column


def test_eval_uses_the_reward_file(project, trained, toy_dir):
    assert trained.returncode == 0
    rows = project / "eval_rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"What is {r['x']} + {r['y']}?", "ground_truth": str(r["total"]),
                                        "verifier": "add_reward"}) + "\n" for r in _table(toy_dir / "eval.jsonl")[:8]))
    out = project / "eval.json"
    proc = subprocess.run([sys.executable, "-m", "rlvr.cli", "eval", "--model", str(project / "runs" / "from-csv" / "final"),
                           "--data", str(rows), "--plugin", "add_reward.py:add_reward", "--n", "2", "--max-tokens", "6",
                           "--out", str(out)], cwd=project, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["summary"]["verifier"]["add_reward"]["prompts"] == 8
