"""Replay a run's last evaluation with plain `transformers` on its final checkpoint.

The check that the weights vLLM served are the weights the learner saved: greedy decoding of
final/ must reproduce every completion of the last evaluation in eval_samples.jsonl.
"""

from __future__ import annotations

import json
from pathlib import Path


def greedy_transformers(model_dir: str | Path, prompts: list[str], max_new_tokens: int, progress: bool = False) -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        if progress:  # a real model takes seconds per prompt on a CPU
            from tqdm import tqdm

            prompts = tqdm(prompts, desc="transformers greedy", unit="prompt")
        for p in prompts:  # one at a time: no padding, so no padding-induced numeric differences
            ids = tok(p, return_tensors="pt", add_special_tokens=False)["input_ids"]
            gen = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            out.append(tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True))
    return out


def last_eval_samples(run_dir: str | Path) -> list[dict]:
    rows = [json.loads(line) for line in open(Path(run_dir) / "eval_samples.jsonl")]
    last = max(r["step"] for r in rows)
    return [r for r in rows if r["step"] == last]


def replay_final(run_dir: str | Path, max_new_tokens: int | None = None, limit: int | None = None,
                 progress: bool = False) -> tuple[int, int, list[tuple[str, str, str]]]:
    """(matches, total, mismatches as (prompt, vllm, transformers)) for the last evaluation (its first `limit` samples)."""
    import yaml

    run_dir = Path(run_dir)
    if max_new_tokens is None:
        max_new_tokens = yaml.safe_load((run_dir / "config.yaml").read_text())["rollout"]["max_tokens"]
    samples = last_eval_samples(run_dir)[:limit]
    texts = greedy_transformers(run_dir / "final", [s["prompt"] for s in samples], max_new_tokens, progress=progress)
    bad = [(s["prompt"], s["completion"], t) for s, t in zip(samples, texts) if s["completion"] != t]
    return len(samples) - len(bad), len(samples), bad
