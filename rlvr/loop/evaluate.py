"""Held-out evaluation (a part of Trainer)."""

from __future__ import annotations

import time

from rlvr.data import render_prompt


class Evaluation:
    """Greedy held-out evaluation: the same numbers `rlvr eval` reports, logged with samples."""

    def evaluate(self) -> float:
        rows = self.prep.eval_rows
        if not rows:
            return float("nan")
        t0 = time.time()
        prompts = [render_prompt(self.prep.tokenizer, row) for row in rows]
        comps, _, scores, _, _ = self._generate_and_score(rows, prompts, greedy=True)  # refused rows: no completions
        samples = [{"prompt": prompts[c.prompt_index], "completion": c.text, "score": s.score, "policy_version": c.policy_version,
                    **({"messages": c.trajectory["messages"], "turns": c.trajectory["turns"], "end": c.trajectory["reason"]}
                       if c.trajectory else {})}
                   for c, s in zip(comps, scores)]
        from rlvr.evaluation import flat_metrics, sample_records, summarize

        # The numbers `rlvr eval` reports: accuracy, pass@1, per verifier and per source.
        summary = summarize(sample_records(rows, comps, scores))
        metrics = {k: v for k, v in flat_metrics(summary).items() if k != "accuracy"}
        from rlvr.environments.trajectory import env_metrics

        self.last_eval_env = env_metrics([c.trajectory for c in comps if c.trajectory], prefix="env/")
        metrics.update(self.last_eval_env)
        metrics["refused_prompts"] = len(rows) - len({c.prompt_index for c in comps})  # left out of the accuracy
        self.sink.log_eval(self.step, summary["accuracy"], samples,
                           {**metrics, "policy_version": self.version, "time/eval": time.time() - t0})
        self.timings["eval"] += time.time() - t0
        return summary["accuracy"]
