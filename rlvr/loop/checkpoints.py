"""Checkpoints and resume (a part of Trainer): save, restore, and where a run resumes from."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rlvr.config import Recipe


class Checkpoints:
    """Checkpoints: DeepSpeed state of every rank plus the controller's sealed state; the final policy."""

    def save_final(self) -> None:
        import ray

        t0 = time.time()
        path = str((self.run_dir / "final").resolve())
        ray.get([l.save_pretrained.remote(path) for l in self.learners])
        self.timings["save"] += time.time() - t0


    def save_checkpoint(self) -> Path:
        """DeepSpeed state of every rank, then the controller's state sealed in rlvr_state.json (see checkpoint.py)."""
        import ray

        from rlvr import checkpoint

        t0 = time.time()
        root = (self.run_dir / "checkpoints").resolve()
        d = checkpoint.step_dir(root, self.step)
        ray.get([l.save_checkpoint.remote(str(d), {"step": self.step}) for l in self.learners])
        checkpoint.write_manifest(d, {"step": self.step, "policy_version": self.version, "stream": self.trained_stream_state,
                                      "gen_calls": self.gen_calls, "accuracy_before": self.accuracy_before,
                                      "timings": dict(self.timings)})
        checkpoint.prune(root, self.recipe.train.keep_checkpoints)
        self.timings["checkpoint"] += time.time() - t0
        return d


    def restore(self, d: Path, state: dict) -> None:
        """Load a sealed checkpoint into the learners, the stream and the counters, and push its weights to the engines."""
        import ray

        ray.get([l.load_checkpoint.remote(str(d)) for l in self.learners])
        self.step, self.version, self.gen_calls = int(state["step"]), int(state["policy_version"]), int(state["gen_calls"])
        self.stream.load_state_dict(state["stream"])
        self.trained_stream_state = state["stream"]
        self.resumed_from = state
        self.sync_weights(bump=False)


def resume_point(recipe: Recipe) -> tuple[Path, dict] | None:
    """The checkpoint to resume `recipe`'s run from, or None when the run already finished (CheckpointError otherwise)."""
    from rlvr.checkpoint import latest

    summary = recipe.run_dir / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("finished"):
        return None
    return latest(recipe.run_dir / "checkpoints")
