"""Reward models: a sequence-classification model (transformers) in a Ray actor, batched, plus
score normalisation as pure functions.

The actor returns raw scores; the driver-side client normalises them (running mean/std over all
scores so far, or a fixed affine map) as the recipe declares. Raw reward-model scores are real
numbers, not [0, 1] rewards: they are passed on as they are (after normalisation and clipping).
"""
from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from rlvr.verifiers.base import VerifyResult
from rlvr.verifiers.judge import _describe, fill, percentile
from rlvr.verifiers.model_config import NormalizeConfig, RewardModelConfig


# ----------------------------------------------------------------------------- pure functions

class RunningMoments:
    """Mean and variance of every score seen (Chan et al.'s parallel update, batch by batch)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def update(self, xs: list[float]) -> None:
        n = len(xs)
        if not n:
            return
        bmean = sum(xs) / n
        bm2 = sum((x - bmean) ** 2 for x in xs)
        delta = bmean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        self.m2 += bm2 + delta ** 2 * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count > 1 else 1.0


def normalize_scores(xs: list[float], cfg: NormalizeConfig, moments: RunningMoments | None = None) -> list[float]:
    """Normalise a batch of raw scores; `running` first folds the batch into `moments`."""
    if cfg.kind == "affine":
        out = [cfg.scale * x + cfg.shift for x in xs]
    elif cfg.kind == "running":
        if moments is None:
            raise ValueError("running normalisation needs a RunningMoments")
        moments.update(xs)
        out = [(x - moments.mean) / (moments.std + cfg.eps) for x in xs]
    else:
        out = list(xs)
    if cfg.clip is not None:
        lo, hi = cfg.clip
        out = [min(hi, max(lo, x)) for x in out]
    return out


def logits_to_scores(logits, label: int | None) -> list[float]:
    """One score per row of a [batch, num_labels] tensor: the chosen logit, the only one, or with two
    labels the log-odds logit[1] - logit[0]."""
    n = logits.shape[-1]
    if label is not None:
        if label >= n:
            raise ValueError(f"label {label} but the reward model has {n} logits")
        return logits[:, label].float().tolist()
    if n == 1:
        return logits[:, 0].float().tolist()
    if n == 2:
        return (logits[:, 1] - logits[:, 0]).float().tolist()
    raise ValueError(f"the reward model has {n} logits: set label to the one that scores")


def rm_text(cfg: RewardModelConfig, tokenizer, prompt: str | None, response: str, truth: Any) -> str:
    if cfg.chat and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt or ""},
                                              {"role": "assistant", "content": response}], tokenize=False)
    return fill(cfg.template, prompt, response, truth)


# ----------------------------------------------------------------------------- the actor

class RewardModelActor:
    """Owns a transformers sequence-classification model; `score` runs batches of texts."""

    def __init__(self, cfg: dict, threads: int | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.cfg = RewardModelConfig(**cfg)
        if threads:
            torch.set_num_threads(threads)
        from rlvr.hub import local_path

        path = local_path(self.cfg.path, self.cfg.revision)  # a Hub id: the snapshot of the commit the driver pinned
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "left"  # keep the response's end, which the model pools
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=getattr(torch, self.cfg.dtype))
        self.model.config.pad_token_id = self.tokenizer.pad_token_id  # sequence pooling finds the last non-pad token
        self.device = "cuda" if self.cfg.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()

    def ready(self) -> bool:
        return True

    def texts(self, items: list[tuple[str | None, str, Any]]) -> list[str]:
        return [rm_text(self.cfg, self.tokenizer, p, r, t) for p, r, t in items]

    def score(self, items: list[tuple[str | None, str, Any]]) -> list[float]:
        """Raw scores, one per (prompt, response, ground truth) item."""
        import torch

        texts = self.texts(items)
        out: list[float] = []
        with torch.no_grad():
            for i in range(0, len(texts), self.cfg.batch_size):
                enc = self.tokenizer(texts[i:i + self.cfg.batch_size], return_tensors="pt", padding=True, truncation=True,
                                     max_length=self.cfg.max_length, add_special_tokens=False)
                enc = {k: v.to(self.device) for k, v in enc.items()}
                out += logits_to_scores(self.model(**enc).logits.cpu(), self.cfg.label)
        return out


# ----------------------------------------------------------------------------- the client

def _finite(x) -> bool:
    try:
        return math.isfinite(x)
    except (TypeError, OverflowError):  # a huge int or something not a number: no score
        return False


class RewardModelClient:
    """Driver side: sends items to the actor (a Ray handle or a local object), normalises the scores."""

    def __init__(self, name: str, cfg: RewardModelConfig, actor):
        self.name, self.cfg, self.actor = name, cfg, actor
        self.moments = RunningMoments()
        self.counts = {"samples": 0, "batches": 0, "errors": 0, "timeouts": 0}
        self._latencies: list[float] = []
        self._busy = 0.0  # seconds spent on batches since the last stats()
        self._window_samples = 0
        self._lock: asyncio.Lock | None = None

    async def _raw(self, items) -> list[float]:
        if hasattr(getattr(self.actor, "score", None), "remote"):
            import ray

            ref = self.actor.score.remote(items)
            try:
                return await asyncio.wait_for(asyncio.wrap_future(ref.future()), self.cfg.timeout_s)
            except asyncio.TimeoutError:
                ray.cancel(ref, force=True)
                raise
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(None, self.actor.score, items), self.cfg.timeout_s)

    async def score(self, items: list[tuple[str | None, str, Any]]) -> list[VerifyResult]:
        if not items:
            return []
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one batch at a time: running moments fold in batch order
            t0 = time.perf_counter()
            try:
                raw = await self._raw(items)
                if len(raw) != len(items):
                    raise RuntimeError(f"{len(raw)} scores for {len(items)} samples")
                err = None
            except asyncio.TimeoutError:
                raw, err = None, f"timeout: reward model '{self.name}' did not answer in {self.cfg.timeout_s:g}s"
                self.counts["timeouts"] += 1
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a broken reward model costs these samples, never the run
                raw, err = None, f"reward model '{self.name}' failed: {_describe(e, None)}"
                self.counts["errors"] += 1
            dt = time.perf_counter() - t0
            self._latencies.append(dt)
            self._busy += dt
            self.counts["batches"] += 1
            self.counts["samples"] += len(items)
            self._window_samples += len(items)
            if raw is None:
                return [VerifyResult(0.0, {"reward_model": self.name}, err) for _ in items]
            bad = [i for i, x in enumerate(raw) if not _finite(x)]
            finite = [x for x in raw if _finite(x)]
            normed = iter(normalize_scores(finite, self.cfg.normalize, self.moments))
            out = []
            for i, x in enumerate(raw):
                y = None if i in bad else next(normed)
                if y is None or not math.isfinite(y):  # non-finite raw, or pushed there by the normalisation
                    self.counts["errors"] += 1
                    out.append(VerifyResult(0.0, {"reward_model": self.name, "raw": x}, "reward model returned a non-finite score"))
                else:
                    out.append(VerifyResult(y, {"reward_model": self.name, "raw": x}, None))
            return out

    def stats(self) -> dict[str, float]:
        p = f"reward_model/{self.name}/"
        out = {p + k: float(v) for k, v in self.counts.items()}
        if self._latencies:
            out[p + "samples_per_s"] = self._window_samples / max(self._busy, 1e-9)
            out[p + "batch_latency_p50_s"] = percentile(self._latencies, 50)
            out[p + "batch_latency_p99_s"] = percentile(self._latencies, 99)
        if self.cfg.normalize.kind == "running":
            out[p + "running_mean"], out[p + "running_std"] = self.moments.mean, self.moments.std
        self._latencies, self._busy, self._window_samples = [], 0.0, 0
        return out

    async def close(self) -> None:
        pass
