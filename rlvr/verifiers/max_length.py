"""The ``max_length`` verifier: 1 while the response stays within a length budget.

Ground truth: an int (a budget in words), or ``{"max_words": N}`` / ``{"max_chars": N}``, with an
optional ``"min_words"``/``"min_chars"`` floor and an optional ``"decay"``: past the budget the
score falls linearly to 0 over that many more words/chars instead of dropping at once.
"""
from __future__ import annotations

from typing import Any


def verify_max_length(response: str, ground_truth: Any, *, prompt: str | None = None):
    spec = {"max_words": ground_truth} if isinstance(ground_truth, int) and not isinstance(ground_truth, bool) \
        else dict(ground_truth or {})
    if "max_chars" in spec:
        unit, length, limit = "chars", len(response), int(spec["max_chars"])
    elif "max_words" in spec:
        unit, length, limit = "words", len(response.split()), int(spec["max_words"])
    else:
        raise ValueError(f"max_length ground truth needs an int (words) or max_words / max_chars, got {sorted(spec)}")
    floor = int(spec.get(f"min_{unit}", 0))
    details = {"length": length, "unit": unit, "limit": limit}
    if length < floor:
        details["reason"] = f"shorter than {floor} {unit}"
        return 0.0, details
    if length <= limit:
        return 1.0, details
    decay = float(spec.get("decay", 0))
    if decay > 0:
        return max(0.0, 1.0 - (length - limit) / decay), details
    return 0.0, details
