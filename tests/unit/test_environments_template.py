"""render_delta: turn k+1's prompt ids are turn k's exact ids + the delta (toy and Hermes-style templates)."""
import copy

import pytest

from rlvr.environments.parsers import format_call
from rlvr.environments.template import TemplateMismatchError, render_delta
from rlvr.environments.tools import tool_schema
from rlvr.environments.calculator import calculator

# Qwen2.5-like: tools listed in a system block, tool results inside a user turn, "\n" after <|im_end|>.
# (transformers renders with trim_blocks: a newline right after a {% tag %} is written as {{ '\n' }}.)
HERMES_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n# Tools\n<tools>{% for t in tools %}\n{{ t | tojson }}{% endfor %}{{ '\\n' }}"
    "</tools><|im_end|>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'tool' %}<|im_start|>user\n<tool_response{% if tools %} of {{ tools | length }} tools{% endif %}>"
    "\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def toy_tokenizer():
    from rlvr.toy_model import build_tokenizer
    return build_tokenizer()


@pytest.fixture(scope="module")
def hermes_tokenizer():
    from rlvr.toy_model import build_tokenizer
    tok = build_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.eos_token = "<|im_end|>"
    tok.chat_template = HERMES_TEMPLATE
    return tok


def encode(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def generated_turn(tok, messages, answer, tools=None, with_stop=True):
    """Turn k as the rollout holds it: prompt ids + the generated ids (ending with the stop token)."""
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, tools=tools)
    return encode(tok, prompt) + encode(tok, answer) + ([tok.eos_token_id] if with_stop else [])


def test_toy_template_delta_extends_the_exact_ids(toy_tokenizer):
    tok = toy_tokenizer
    messages = [{"role": "user", "content": "What is 37 + 58?"}]
    ids = generated_turn(tok, messages, "let me check")
    messages = messages + [{"role": "assistant", "content": "let me check"}]
    new = [{"role": "tool", "name": "calculator", "content": "95"}]
    delta = render_delta(tok, messages, new)
    assert tok.decode(delta) == "<|tool|>95<|eos|><|assistant|>"
    full = tok.apply_chat_template(messages + new, tokenize=False, add_generation_prompt=True)
    assert ids + delta == encode(tok, full)


def test_hermes_template_adds_the_ungenerated_newline_and_tools(hermes_tokenizer):
    tok = hermes_tokenizer
    tools = [tool_schema(calculator)]
    user = [{"role": "user", "content": "What is 6 * 7?"}]
    answer = "I'll use the calculator.\n" + format_call("calculator", {"expression": "6 * 7"})
    turn1 = generated_turn(tok, user, answer, tools=tools)
    messages = user + [{"role": "assistant", "content": answer}]
    new = [{"role": "tool", "name": "calculator", "content": "42"}]
    delta = render_delta(tok, messages, new, tools=tools)
    # the "\n" after <|im_end|> was never generated: it starts the delta
    assert tok.decode(delta) == ("\n<|im_start|>user\n<tool_response of 1 tools>\n42\n</tool_response><|im_end|>\n"
                                 "<|im_start|>assistant\n")
    full = tok.apply_chat_template(messages + new, tokenize=False, add_generation_prompt=True, tools=tools)
    assert turn1 + delta == encode(tok, full)
    # and again for a third turn, on top of the second one's exact ids
    turn2 = turn1 + delta + encode(tok, "It is 42.") + [tok.eos_token_id]
    messages2 = messages + new + [{"role": "assistant", "content": "It is 42."}]
    more = [{"role": "user", "content": "Thanks!"}]
    full2 = tok.apply_chat_template(messages2 + more, tokenize=False, add_generation_prompt=True, tools=tools)
    assert turn2 + render_delta(tok, messages2, more, tools=tools) == encode(tok, full2)


def test_hermes_template_when_the_ids_end_with_the_content(hermes_tokenizer):
    tok = hermes_tokenizer
    user = [{"role": "user", "content": "hi"}]
    ids = generated_turn(tok, user, "hello", with_stop=False)  # e.g. stopped on a stop string not kept
    messages = user + [{"role": "assistant", "content": "hello"}]
    new = [{"role": "user", "content": "again"}]
    delta = render_delta(tok, messages, new, stop_text="")
    assert tok.decode(delta).startswith("<|im_end|>\n<|im_start|>user\nagain")
    full = tok.apply_chat_template(messages + new, tokenize=False, add_generation_prompt=True)
    assert ids + delta == encode(tok, full)
    with pytest.raises(TemplateMismatchError, match="does not start with the stop token '</s>'"):
        render_delta(tok, messages, new, stop_text="</s>")


def test_template_that_rewrites_earlier_turns_is_refused(hermes_tokenizer):
    tok = copy.deepcopy(hermes_tokenizer)
    # like Qwen3: the reasoning of an assistant turn is dropped once it is not the last message
    tok.chat_template = HERMES_TEMPLATE.replace(
        "{{ m.content }}<|im_end|>\n{% endif %}",
        "{% if m.role == 'assistant' and not loop.last %}{{ m.content.split('</think>')[-1] }}"
        "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endif %}")
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>hmm</think>call"}]
    with pytest.raises(TemplateMismatchError, match="renders earlier turns differently.*'<think>hmm</think>call"):
        render_delta(tok, messages, [{"role": "tool", "name": "f", "content": "r"}])


def test_without_a_chat_template_the_contents_follow_blank_lines(toy_tokenizer):
    tok = copy.deepcopy(toy_tokenizer)
    tok.chat_template = None
    messages = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}]
    delta = render_delta(tok, messages, [{"role": "tool", "content": "ok"}, {"role": "user", "content": "next"}])
    assert delta == encode(tok, "\n\nok\n\nnext")
    assert render_delta(tok, messages, []) == []


def test_messages_must_end_with_the_assistant(toy_tokenizer):
    with pytest.raises(ValueError, match="must end with the assistant's message"):
        render_delta(toy_tokenizer, [{"role": "user", "content": "q"}], [{"role": "user", "content": "r"}])


def test_generation_prompt_unlike_the_rendered_turn_is_fine(hermes_tokenizer):
    # Qwen3 with enable_thinking=False: the generation prompt holds an empty think block that the
    # rendered assistant turn does not. The ids keep what the model saw; the delta still fits.
    tok = copy.deepcopy(hermes_tokenizer)
    tok.chat_template = HERMES_TEMPLATE.replace("<|im_start|>assistant\n{% endif %}",
                                                "<|im_start|>assistant\n<think>\n\n</think>\n\n{% endif %}")
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    delta = render_delta(tok, messages, [{"role": "user", "content": "r"}])
    assert tok.decode(delta) == "\n<|im_start|>user\nr<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
