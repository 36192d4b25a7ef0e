"""bench/trl_vs_rlvr.py stays runnable: its argument parsing and step arithmetic (the comparison itself is
a benchmark, run by hand: it installs TRL and takes ~25 minutes)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "trl_vs_rlvr.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("trl_vs_rlvr", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rows_split_on_top_level_commas_only(bench):
    assert bench.split_overrides("learner.lora={rank: 16, alpha: 32, sync: merged},train.async_steps=1") == \
        ["learner.lora={rank: 16, alpha: 32, sync: merged}", "train.async_steps=1"]
    assert bench.split_overrides("") == []
    assert bench.parse_pairs("gradient_checkpointing=true,lora=16") == {"gradient_checkpointing": True, "lora": 16}


def test_step_time_is_the_median_gap_after_the_first_step(bench):
    # stamps: the first step's end, then each later step's end; the first step (start-up) is never counted
    assert bench.median_step([100.0, 110.0, 130.0, 141.0]) == 11.0
    with pytest.raises(ValueError):
        bench.median_step([100.0])


def test_help_runs_without_trl_or_a_cluster():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--rlvr" in out.stdout and "--trl" in out.stdout
