"""Checkpoint bookkeeping: what a resumable checkpoint is, and which one a resume continues from.

A checkpoint is `<run>/checkpoints/step_NNNNNN/`: DeepSpeed's state of every learner rank (model,
optimizer, scheduler, RNG; the critic too under PPO) plus `rlvr_state.json`, written last, holding
the controller's state (step, policy version, data-stream position) and the size and SHA-256 of
every file. A directory without `rlvr_state.json` was cut off while saving and is skipped; one
whose files do not match their manifest is corrupt and is an error, never silently skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

STATE_FILE = "rlvr_state.json"
PREFIX = "step_"


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be resumed from; the message says which and what to do."""


def step_dir(checkpoints: Path, step: int) -> Path:
    return checkpoints / f"{PREFIX}{step:06d}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file() and p.name != STATE_FILE)


def write_manifest(d: Path, state: dict) -> None:
    """Seal a checkpoint: the controller's state and every file's size and hash, written atomically."""
    files = {str(p.relative_to(d)): [p.stat().st_size, _sha256(p)] for p in _files(d)}
    tmp = d / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps({**state, "files": files}, indent=1))
    os.replace(tmp, d / STATE_FILE)


def verify(d: Path) -> dict:
    """The sealed state of checkpoint `d`, after checking every file against the manifest."""
    try:
        state = json.loads((d / STATE_FILE).read_text())
        files = state["files"]
        int(state["step"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{d}: unreadable {STATE_FILE} ({e.__class__.__name__}); "
                              f"delete {d} to resume from an earlier checkpoint") from None
    if not files:
        raise CheckpointError(f"{d}: the checkpoint holds no files; delete {d} to resume from an earlier checkpoint")
    for rel, (size, digest) in files.items():
        p = d / rel
        problem = ("is missing" if not p.is_file() else f"has {p.stat().st_size} bytes, expected {size}"
                   if p.stat().st_size != size else "does not match its SHA-256" if _sha256(p) != digest else None)
        if problem:
            raise CheckpointError(f"{d}: corrupt checkpoint: {rel} {problem}; "
                                  f"delete {d} to resume from an earlier checkpoint")
    return state


def latest(checkpoints: Path) -> tuple[Path, dict]:
    """The newest sealed checkpoint under `checkpoints`, verified; CheckpointError when there is none."""
    if not checkpoints.is_dir():
        raise CheckpointError(f"--resume: {checkpoints} does not exist: the run saved no checkpoint (train.save_every: 0?); "
                              "start it over with --overwrite")
    dirs = sorted(p for p in checkpoints.iterdir() if p.is_dir() and p.name.startswith(PREFIX))
    sealed = [p for p in dirs if (p / STATE_FILE).exists()]
    if not sealed:
        what = "is empty" if not dirs else f"holds only unfinished checkpoints ({', '.join(p.name for p in dirs)})"
        raise CheckpointError(f"--resume: {checkpoints} {what}: nothing to resume from; start the run again without --resume")
    return sealed[-1], verify(sealed[-1])


def prune(checkpoints: Path, keep: int) -> None:
    """Delete all but the newest `keep` sealed checkpoints (and unfinished ones older than them)."""
    dirs = sorted(p for p in checkpoints.iterdir() if p.is_dir() and p.name.startswith(PREFIX))
    sealed = [p for p in dirs if (p / STATE_FILE).exists()]
    if keep <= 0 or len(sealed) <= keep:
        return
    oldest_kept = sealed[-keep]
    for p in dirs:
        if p < oldest_kept:
            shutil.rmtree(p, ignore_errors=True)


def truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop rows logged after `last_step` (a killed run's steps that the resume will redo)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= last_step]
    path.write_text("".join(line + "\n" for line in keep))


LOCK_FILE = "running.lock"


def completed_steps(run_dir: Path) -> int:
    """The last step a run logged in metrics.jsonl (0: it never completed one, e.g. killed during start-up)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return 0
    last = 0
    for line in path.read_text().splitlines():
        try:
            last = max(last, int(json.loads(line).get("step", 0)))
        except (ValueError, TypeError, AttributeError):
            continue  # a line cut off by a kill
    return last


def has_checkpoint(run_dir: Path) -> bool:
    d = Path(run_dir) / "checkpoints"
    return d.is_dir() and any((p / STATE_FILE).exists() for p in d.iterdir() if p.is_dir())


def hold_run_lock(run_dir: Path):
    """Mark the run as being trained by this process for as long as the returned file stays open.

    An advisory flock: the kernel drops it when the process dies, however it dies, so a killed run
    never looks alive. CheckpointError if another process holds it."""
    import fcntl

    f = open(Path(run_dir) / LOCK_FILE, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise CheckpointError(f"{run_dir} is being trained right now by another `rlvr train` (it holds "
                              f"{LOCK_FILE}); stop it first or pick another name (--set name=...)") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def is_running(run_dir: Path) -> bool:
    """True while some process holds the run's lock (see hold_run_lock)."""
    import fcntl

    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False
