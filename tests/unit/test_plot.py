"""Offline plots: real PNGs from a fixture run, skipped charts, clear error without metrics."""
import json
import shutil
from pathlib import Path

import pytest

from rlvr.plot import plot_run

RUN = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "run"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_png(path):
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1024, path
    height, width = matplotlib.image.imread(path).shape[:2]
    assert (width, height) == (700, 400)


def test_writes_every_chart_from_fixture(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    paths = plot_run(run)
    assert [p.name for p in paths] == ["reward.png", "accuracy.png", "kl.png", "entropy.png",
                                       "response_length.png", "throughput.png", "loss.png"]
    assert all(p.parent == run / "plots" for p in paths)
    for p in paths:
        check_png(p)


def test_skips_charts_without_data(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "reward/mean": s / 10, "kl": float("nan")}) + "\n" for s in range(5)))
    paths = plot_run(tmp_path)  # no eval.jsonl, kl only NaN
    assert [p.name for p in paths] == ["reward.png"]
    check_png(paths[0])


def test_missing_metrics_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no metrics file: {tmp_path / 'metrics.jsonl'}"):
        plot_run(tmp_path)


def test_charts_turns_and_tool_use(tmp_path):
    rows = [{"step": s, "env/turns": 1 + s / 4, "env/tool_call_rate": s / 5, "env/tool_calls/calculator": s / 3,
             "env/tool_errors/calculator": 0.1, "env/tool_errors/parse": 0.2} for s in range(5)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths = plot_run(tmp_path)
    assert [p.name for p in paths] == ["env_turns.png", "env_tool_call_rate.png", "env_tool_calls.png", "env_tool_errors.png"]
    for p in paths:
        check_png(p)
