"""render_prompt, length filtering and the tokenised-prompt cache, with a tiny char-level tokenizer."""

from rlvr.data import encode_prompts, filter_by_length, render_prompt

TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


def char_tokenizer(chat_template=TEMPLATE, cls=None):
    """One token per character: lengths in tests are plain character counts."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    cls = cls or PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "\n": 1, **{chr(c): c - 30 for c in range(32, 127)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    hf = cls(tokenizer_object=tok, unk_token="[UNK]")
    hf.chat_template = chat_template
    return hf


def row(text, system=None):
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
    return {"messages": msgs, "ground_truth": "1", "verifier": ["x"], "source": "s", "index": 0}


def test_render_uses_chat_template_with_generation_prompt():
    tok = char_tokenizer()
    assert render_prompt(tok, row("hi", system="sys")) == "<system>sys\n<user>hi\n<assistant>"


def test_render_without_template_concatenates():
    tok = char_tokenizer(chat_template=None)
    assert render_prompt(tok, row("hi", system="sys")) == "sys\n\nhi"


def test_encode_is_one_token_per_char_and_adds_nothing():
    tok = char_tokenizer()
    [ids] = encode_prompts(tok, ["ab\nc"])
    assert len(ids) == 4 and ids[2] == 1


def test_filter_by_length_counts():
    tok = char_tokenizer()
    rows = [row("x" * n) for n in (1, 5, 10, 20)]  # rendered length = n + 19
    kept, dropped = filter_by_length(rows, tok, 29)
    assert [len(r["messages"][0]["content"]) for r in kept] == [1, 5, 10] and dropped == 1
    assert filter_by_length(rows, tok, None) == (rows, 0)
    kept, dropped = filter_by_length(rows, tok, 3, token_ids=[[0]] * 2 + [[0] * 4] * 2)
    assert len(kept) == 2 and dropped == 2


def test_prompt_cache_hit_and_template_miss(tmp_path):
    from rlvr.data import tokenize_prompts

    from transformers import PreTrainedTokenizerFast

    class Counting(PreTrainedTokenizerFast):
        calls = 0

        def __call__(self, *a, **kw):
            Counting.calls += 1
            return super().__call__(*a, **kw)

    tok = char_tokenizer(cls=Counting)
    rows = [row("hello"), row("a longer prompt", system="s")]
    first = tokenize_prompts(rows, tok, tmp_path)
    assert Counting.calls == 1
    assert first == encode_prompts(tok, [render_prompt(tok, r) for r in rows])
    assert len(list(tmp_path.glob("prompts-*.npz"))) == 1

    Counting.calls = 0
    assert tokenize_prompts(rows, tok, tmp_path) == first  # hit: no tokenising at all
    assert Counting.calls == 0
    tok.chat_template = TEMPLATE.replace("<assistant>", "<bot>")
    changed = tokenize_prompts(rows, tok, tmp_path)  # miss: the template is part of the key
    assert Counting.calls == 1 and changed != first
    assert len(list(tmp_path.glob("prompts-*.npz"))) == 2
    tokenize_prompts(rows[:1], tok, tmp_path)  # miss: different rows
    assert len(list(tmp_path.glob("prompts-*.npz"))) == 3


def test_prompt_cache_tokenizer_change_misses_and_none_disables(tmp_path):
    from rlvr.data import tokenize_prompts
    from rlvr.data.cache import cache_key

    a, b = char_tokenizer(), char_tokenizer()
    b.add_tokens(["<extra>"])
    rows = [row("x")]
    assert cache_key(rows, a) == cache_key(rows, char_tokenizer())
    assert cache_key(rows, a) != cache_key(rows, b)
    assert tokenize_prompts(rows, a, None) == encode_prompts(a, [render_prompt(a, rows[0])])
    assert not list(tmp_path.iterdir())
