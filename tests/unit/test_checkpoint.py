"""Checkpoint bookkeeping (rlvr/checkpoint.py): sealing, verification, choosing, pruning."""

import json

import pytest

from rlvr import checkpoint
from rlvr.checkpoint import CheckpointError


def _make(root, step, sealed=True, payload=b"weights"):
    d = checkpoint.step_dir(root, step)
    (d / "policy").mkdir(parents=True)
    (d / "policy" / "model.pt").write_bytes(payload * step)
    if sealed:
        checkpoint.write_manifest(d, {"step": step, "policy_version": step, "stream": {"epoch": 0, "position": step}})
    return d


def test_latest_sealed_checkpoint_is_chosen_and_unfinished_ones_skipped(tmp_path):
    _make(tmp_path, 2)
    _make(tmp_path, 4)
    _make(tmp_path, 6, sealed=False)  # killed while saving
    d, state = checkpoint.latest(tmp_path)
    assert d.name == "step_000004" and state["step"] == 4 and state["stream"]["position"] == 4


def test_truncated_file_is_a_corrupt_checkpoint_naming_the_file(tmp_path):
    d = _make(tmp_path, 2)
    (d / "policy" / "model.pt").write_bytes(b"w")
    with pytest.raises(CheckpointError, match=r"corrupt checkpoint: policy/model.pt has 1 bytes, expected 14"):
        checkpoint.latest(tmp_path)


def test_same_size_different_bytes_is_caught_by_the_hash(tmp_path):
    d = _make(tmp_path, 1)
    (d / "policy" / "model.pt").write_bytes(b"WEIGHTS")
    with pytest.raises(CheckpointError, match="does not match its SHA-256"):
        checkpoint.latest(tmp_path)


def test_missing_file_and_bad_manifest(tmp_path):
    d = _make(tmp_path, 1)
    (d / "policy" / "model.pt").unlink()
    with pytest.raises(CheckpointError, match="model.pt is missing"):
        checkpoint.latest(tmp_path)
    (d / checkpoint.STATE_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable rlvr_state.json"):
        checkpoint.latest(tmp_path)


def test_empty_or_absent_checkpoint_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoint.latest(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="is empty"):
        checkpoint.latest(tmp_path)
    _make(tmp_path, 3, sealed=False)
    with pytest.raises(CheckpointError, match="only unfinished checkpoints"):
        checkpoint.latest(tmp_path)


def test_prune_keeps_the_newest(tmp_path):
    for s in (1, 2, 3):
        _make(tmp_path, s)
    _make(tmp_path, 4, sealed=False)
    checkpoint.prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000002", "step_000003", "step_000004"]


def test_truncate_jsonl_drops_steps_after_the_checkpoint(tmp_path):
    f = tmp_path / "metrics.jsonl"
    f.write_text("".join(json.dumps({"step": s, "x": s * 10}) + "\n" for s in (1, 2, 3)))
    checkpoint.truncate_jsonl(f, 2)
    assert [json.loads(line)["step"] for line in f.read_text().splitlines()] == [1, 2]
