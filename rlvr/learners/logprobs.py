"""The policy's per-token log-probs (and entropy) of the response tokens, without full logits.

The LM head's float32 logits are the largest tensor of a learner step: [B, L, V] over Qwen2.5's
152k vocabulary is 10 GB for 16 sequences of 1k tokens, several times over once log-softmax,
entropy and their gradients exist. Here the model runs once up to its last hidden states; they are
gathered at the response positions only (nothing reads prompt-token logits), and LM head +
log-softmax + entropy run `chunk_size` rows at a time. In training each chunk is recomputed in the
backward pass (torch.utils.checkpoint) rather than kept, so at most one chunk's [rows, V] logits
exist at once: the memory goes to larger micro-batches instead.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from rlvr.learners.losses import logprobs_and_entropy
from rlvr.learners.packing import pack, unpack_shifted


def last_hidden_states(model, ids: torch.Tensor, attn: torch.Tensor | None,
                       position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """[b, L, d] final (normed) hidden states of a Hugging Face causal LM or its DeepSpeed engine.

    The whole model is called (so DeepSpeed's forward bookkeeping, ZeRO-3 gathers included, runs
    as usual) with `logits_to_keep=1`, which makes its own LM head cost one position per sequence;
    the decoder's output is taken by a forward hook. Packed rows (packing.py) come with `attn`
    None and `position_ids` restarting per sequence; use_cache=False matters there too, as
    transformers only reads restarting position ids as packed sequences without a KV cache.
    """
    module = getattr(model, "module", model)
    captured = []
    handle = module.get_decoder().register_forward_hook(lambda _m, _args, out: captured.append(out[0]))
    try:
        model(input_ids=ids, attention_mask=attn, position_ids=position_ids, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    return captured[0]


class ResponseLogprobs:
    """log p(token) and entropy at the response positions of a batch; zeros elsewhere.

    `compile=True` runs the log-softmax/entropy kernel through torch.compile, which fuses its
    passes over the [rows, V] logits (on a GPU they are memory-bound and cost as much as the LM
    head's matmul).
    """

    def __init__(self, chunk_size: int = 2048, compile: bool = False):
        self.chunk_size = chunk_size
        self.kernel = torch.compile(logprobs_and_entropy, dynamic=True) if compile else logprobs_and_entropy

    def __call__(self, model, ids: torch.Tensor, attn: torch.Tensor, mask: torch.Tensor, temperature: float,
                 *, with_entropy: bool = False, entropy_grad: bool = False, packed: bool = False):
        """-> (logprobs [b, L-1], entropy [b, L-1] or None), float32, aligned with `mask` [b, L-1]
        (position t scores ids[:, t+1]). `packed`: the model runs the b right-padded sequences back
        to back in one row without padding (packing.py); the results come back in the same layout."""
        if packed:
            ids_p, pos_p, mask_p = pack(ids, attn, mask)
            lp, ent = self._run(model, ids_p, None, mask_p, temperature, with_entropy, entropy_grad, pos_p)
            return unpack_shifted(lp, attn), (unpack_shifted(ent, attn) if ent is not None else None)
        return self._run(model, ids, attn, mask, temperature, with_entropy, entropy_grad, None)

    def _run(self, model, ids, attn, mask, temperature, with_entropy, entropy_grad, position_ids):
        hidden = last_hidden_states(model, ids, attn, position_ids)
        lm_head = getattr(model, "module", model).get_output_embeddings()
        sel = mask.bool()
        rows, labels = hidden[:, :-1][sel], ids[:, 1:][sel]
        empty = rows.shape[0] == 0
        if empty:  # a micro-batch of filtered samples: one row keeps the graph (and every gradient) alive
            rows, labels = hidden[:, :-1].reshape(-1, hidden.shape[-1])[:1], ids[:, 1:].reshape(-1)[:1]

        def chunk(h, y):
            return self.kernel(lm_head(h), y, temperature, with_entropy=with_entropy, entropy_grad=entropy_grad)

        lps, ents = [], []
        for a in range(0, rows.shape[0], self.chunk_size):
            h, y = rows[a:a + self.chunk_size], labels[a:a + self.chunk_size]
            lp, ent = checkpoint(chunk, h, y, use_reentrant=False) if torch.is_grad_enabled() else chunk(h, y)
            lps.append(lp)
            ents.append(ent)
        return self._scatter(lps, sel, empty), (self._scatter(ents, sel, empty) if with_entropy else None)

    @staticmethod
    def _scatter(parts: list[torch.Tensor], sel: torch.Tensor, empty: bool) -> torch.Tensor:
        flat = torch.cat(parts)
        full = flat.new_zeros(sel.shape)
        if empty:
            return full + 0.0 * flat.sum()
        return full.masked_scatter(sel, flat)
