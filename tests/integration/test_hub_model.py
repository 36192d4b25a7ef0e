"""A Hub model id, offline from a cache built here: `rlvr train` trains it and pins its commit in config.yaml,
`rlvr eval --model ORG/NAME` evaluates it (real Ray, vLLM and DeepSpeed; HF_HUB_OFFLINE=1)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hub_cache import COMMIT, hub_cache

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RLVR = [sys.executable, "-m", "rlvr.cli"]
REPO = "toyorg/toy-addition"


@pytest.fixture(scope="module")
def hub_env(toy_dir, tmp_path_factory):
    root = hub_cache(tmp_path_factory.mktemp("hub"), REPO, toy_dir / "model")
    return {**os.environ, "HF_HUB_CACHE": str(root), "HF_HUB_OFFLINE": "1"}


def test_train_and_eval_a_hub_id_offline(toy_dir, hub_env, tmp_path):
    sets = [f"model.path={REPO}", f"data.train.0.path={toy_dir}/train.jsonl", f"data.eval.0.path={toy_dir}/eval.jsonl",
            "data.eval_size=8", "train.steps=2", "train.prompts_per_step=8", "train.eval_every=0", "train.save_every=0",
            f"output_dir={tmp_path}", "name=hub", "logging.wandb=false", "logging.progress=false", "train.max_minutes=null"]
    proc = subprocess.run(RLVR + ["train", str(ROOT / "recipes" / "toy_addition_cpu.yaml")] + [a for s in sets for a in ("--set", s)],
                          cwd=ROOT, env=hub_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "hub"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"] == {**cfg["model"], "path": REPO, "revision": COMMIT}
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (run / "final" / "config.json").is_file()

    out = tmp_path / "eval.json"
    proc = subprocess.run(RLVR + ["eval", "--model", REPO, "--data", str(toy_dir / "eval.jsonl"), "--limit", "8",
                                  "--max-tokens", "6", "--out", str(out)], cwd=ROOT, env=hub_env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert (res["model"], res["revision"], res["summary"]["prompts"]) == (REPO, COMMIT, 8)
    assert res["summary"]["accuracy"] > 0  # the toy adds correctly some of the time: the cached files were served
