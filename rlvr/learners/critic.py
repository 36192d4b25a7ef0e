"""The PPO critic (value model) for `algorithm.advantage: gae`.

The policy's transformer backbone (`AutoModel` from the same checkpoint, i.e. without the LM head)
with a linear head mapping each position's last hidden state to one scalar, as in OpenRLHF and
open-instruct. The learner gives it its own DeepSpeed engine and optimizer (actor.py).
"""

from __future__ import annotations

import torch
from torch import nn


class ValueModel(nn.Module):
    """values[B, L-1]: V_t is the value of the prefix input_ids[:, :t+1], i.e. of the state in which
    input_ids[:, t+1] is chosen -- the same layout as the learner's log-probs and response_mask.

    The head starts at zero (weight and bias), so V = 0 before the first update: the first GAE
    advantages are then plain (whitened) returns, not returns minus the noise of a random
    projection of the hidden states, and the head is learned from there. (A zero head also gives
    the backbone no gradient on the very first optimizer step; from the second on it does.)
    """

    def __init__(self, backbone: nn.Module, hidden_size: int):
        super().__init__()
        self.backbone = backbone
        self.value_head = nn.Linear(hidden_size, 1, dtype=next(backbone.parameters()).dtype)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        """`position_ids` restarting per sequence with `attention_mask` None: a packed row (packing.py)."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               use_cache=False).last_hidden_state
        return self.value_head(hidden[:, :-1]).squeeze(-1).float()

    def get_decoder(self) -> nn.Module:
        return self.backbone.get_decoder()

    def gradient_checkpointing_enable(self, **kw) -> None:
        self.backbone.gradient_checkpointing_enable(**kw)


def load_value_model(path: str, dtype: torch.dtype, **kwargs) -> ValueModel:
    """Backbone weights from the policy checkpoint at `path` (its LM head is left out)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    # AutoModel on a *ForCausalLM checkpoint reports lm_head.weight as unused: expected here.
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        backbone = AutoModel.from_pretrained(path, dtype=dtype, **kwargs)
    finally:
        hf_logging.set_verbosity(level)
    return ValueModel(backbone, backbone.config.hidden_size)
