"""Token ids of what an environment step appends to a conversation, without re-tokenising it.

Turn k's prompt ids plus the ids the policy generated are what the policy was trained to
continue; tokenising the whole re-rendered conversation again can split text differently at
the joins and silently change earlier tokens (and their log-probs). So turn k+1's prompt is
turn k's exact ids followed by ``render_delta(...)``: the chat template's rendering of the new
messages and the next generation prompt, tokenised on its own.

That only works if the template renders earlier turns the same way once more messages follow;
``render_delta`` checks it and raises ``TemplateMismatchError`` otherwise (e.g. Qwen3's
template drops the reasoning of earlier assistant turns: render those with the thinking
kept, or disable thinking).
"""
from __future__ import annotations

from typing import Any

from rlvr.environments.base import content_text

_SENTINEL = "RLVR-DELTA-SENTINEL-5e1f"
_EOS = object()


class TemplateMismatchError(ValueError):
    """The chat template cannot be extended turn by turn (one-line message saying where)."""


def render_delta(tokenizer: Any, messages: list[dict], new_messages: list[dict], tools: list[dict] | None = None, *,
                 stop_text: Any = _EOS, chat_template_kwargs: dict | None = None) -> list[int]:
    """The ids to append after turn k's prompt ids + generated ids to get turn k+1's prompt.

    ``messages``: the conversation so far, ending with the assistant's message (its content the
    generated text without the stop token); ``new_messages``: the environment's answer.
    ``stop_text``: the text of the token the generated ids end with, if that token is kept
    in them (vLLM keeps the EOS id in ``token_ids``); default ``tokenizer.eos_token``; pass
    ``""`` when the ids end with the content itself (length cut, or a stop string not kept).
    The template's text after that stop token (Qwen's newline after ``<|im_end|>``) was never
    generated, so it starts the delta.

    Without a chat template (toy tokenizers; ``rlvr.data.template.render_prompt`` then joins
    contents with blank lines) the delta is each new message's content after a blank line.
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError("render_delta: messages must end with the assistant's message")
    if not getattr(tokenizer, "chat_template", None):
        return _encode(tokenizer, "".join("\n\n" + content_text(m) for m in new_messages))
    kw = dict(chat_template_kwargs or {})
    if tools:
        kw["tools"] = tools
    prefix = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False, **kw)
    full = tokenizer.apply_chat_template(list(messages) + list(new_messages), tokenize=False,
                                         add_generation_prompt=True, **kw)
    if not full.startswith(prefix):
        i = next((j for j, (a, b) in enumerate(zip(prefix, full)) if a != b), min(len(prefix), len(full)))
        raise TemplateMismatchError(
            f"the chat template renders earlier turns differently once new messages follow (character {i}: "
            f"{prefix[i:i + 40]!r} becomes {full[i:i + 40]!r}), so the conversation cannot be extended token by token")
    trailer = _assistant_trailer(tokenizer, messages, kw)
    if not prefix.endswith(trailer):
        raise TemplateMismatchError(f"cannot find where the assistant's turn ends: the rendered conversation does "
                                    f"not end with the template's end of turn {trailer!r}")
    stop = tokenizer.eos_token if stop_text is _EOS else stop_text
    if stop and not trailer.startswith(stop):
        raise TemplateMismatchError(f"the template ends an assistant turn with {trailer!r}, which does not start with "
                                    f"the stop token {stop!r}; pass stop_text= the text of the token generation "
                                    "stopped on ('' if the generated ids end with the content)")
    ungenerated = trailer[len(stop or ""):]
    return _encode(tokenizer, full[len(prefix) - len(ungenerated):])


def _assistant_trailer(tokenizer: Any, messages: list[dict], kw: dict) -> str:
    """What the template writes after an assistant message's content (e.g. ``<|im_end|>\\n``)."""
    probe = list(messages[:-1]) + [{"role": "assistant", "content": _SENTINEL}]
    text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=False, **kw)
    if _SENTINEL not in text:
        raise TemplateMismatchError("the chat template does not render the assistant's content as given")
    return text.rsplit(_SENTINEL, 1)[1]


def _encode(tokenizer: Any, text: str) -> list[int]:
    if not text:
        return []
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
