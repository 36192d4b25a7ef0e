"""Where a run's numbers go: metrics.jsonl / eval.jsonl / eval_samples.jsonl, W&B, the terminal."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN; readers get null
    return v


class JsonlWriter:
    def __init__(self, path: Path, resume: bool = False):
        self.f = open(path, "a" if resume else "w", buffering=1)  # line-buffered: a crash loses no step

    def write(self, obj: dict) -> None:
        self.f.write(json.dumps({k: _clean(v) for k, v in obj.items()}) + "\n")

    def close(self) -> None:
        self.f.close()


class MetricsSink:
    """Local JSONL files always; W&B when enabled (offline without an API key)."""

    def __init__(self, run_dir: Path, config: dict, *, name: str, use_wandb: bool, project: str, resume: bool = False):
        self.run_dir = run_dir
        self.metrics = JsonlWriter(run_dir / "metrics.jsonl", resume)
        self.evals = JsonlWriter(run_dir / "eval.jsonl", resume)
        self.samples = JsonlWriter(run_dir / "eval_samples.jsonl", resume)
        self.wandb = None
        if use_wandb:
            import wandb

            if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
                os.environ["WANDB_MODE"] = "offline"
            os.environ.setdefault("WANDB_SILENT", "true")
            self.wandb = wandb.init(project=project, name=name, config=config, dir=str(run_dir),
                                    resume="allow" if resume else None)

    def log_step(self, metrics: dict) -> None:
        self.metrics.write(metrics)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=metrics["step"])

    def log_event(self, event: dict) -> None:
        """Something that happened between steps (an engine restart), written at once: a row of metrics.jsonl
        with an `event` key and the step it followed (readers of step rows skip it by that key)."""
        self.metrics.write(event)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in event.items() if isinstance(v, (int, float)) and k != "step"})

    def log_eval(self, step: int, accuracy: float, samples: list[dict], extra: dict | None = None) -> None:
        row = {"step": step, "accuracy": accuracy, **(extra or {})}
        self.evals.write(row)
        for s in samples:
            self.samples.write({"step": step, **s})
        if self.wandb is not None:
            self.wandb.log({f"eval/{k}": v for k, v in row.items() if k != "step"}, step=step)

    def log_samples_table(self, step: int, rows: list[dict]) -> None:
        if self.wandb is not None and rows:
            import wandb

            cols = list(rows[0])
            self.wandb.log({"samples": wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in rows])}, step=step)

    def close(self) -> None:
        for w in (self.metrics, self.evals, self.samples):
            w.close()
        if self.wandb is not None:
            self.wandb.finish()


class Progress:
    """A live line per step (rich), or plain lines when output is not a terminal."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.enabled, self.t0 = total, enabled, time.time()
        self._progress = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

            self._progress = RichProgress(TextColumn("[bold]rlvr"), BarColumn(), MofNCompleteColumn(),
                                          TimeElapsedColumn(), TextColumn("{task.description}"), transient=False)
            self._task = self._progress.add_task("starting", total=total)
            self._progress.start()

    def update(self, step: int, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=step, description=text)
            if not self._progress.console.is_terminal:
                self._progress.console.print(f"step {step}/{self.total}  {text}", highlight=False)

    def print(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, highlight=False)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
