"""Deterministic, resumable stream of prompt batches."""
from __future__ import annotations

import random
from typing import Any

from .config import DataError


class PromptStream:
    """Endless batches of rows. Epoch e visits every row once in the order given by
    Random(seed + e); a batch that runs past the end of an epoch continues into the next,
    so every batch has exactly batch_size rows."""

    def __init__(self, rows: list[dict[str, Any]], batch_size: int, seed: int = 0):
        if not rows:
            raise DataError("prompt stream: no rows to draw from (all sources empty or filtered out)")
        if batch_size < 1:
            raise DataError(f"prompt stream: batch_size must be >= 1, got {batch_size}")
        self.rows = list(rows)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self._order = self._order_for(0)

    def _order_for(self, epoch: int) -> list[int]:
        order = list(range(len(self.rows)))
        random.Random(self.seed + epoch).shuffle(order)
        return order

    def next_batch(self) -> list[dict[str, Any]]:
        return self.take(self.batch_size)

    def take(self, count: int) -> list[dict[str, Any]]:
        """The next `count` rows (dynamic sampling draws extra prompts this way)."""
        batch = []
        while len(batch) < count:
            if self.position == len(self.rows):
                self.epoch += 1
                self.position = 0
                self._order = self._order_for(self.epoch)
            take = min(count - len(batch), len(self.rows) - self.position)
            batch.extend(self.rows[i] for i in self._order[self.position:self.position + take])
            self.position += take
        return batch

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, position, seed = int(state["epoch"]), int(state["position"]), int(state["seed"])
        if not 0 <= position <= len(self.rows):
            # The row list changed since the checkpoint; resuming would silently skip or repeat.
            raise DataError(f"prompt stream: saved position {position} is outside 0..{len(self.rows)} rows")
        self.seed, self.epoch, self.position = seed, epoch, position
        self._order = self._order_for(epoch)
