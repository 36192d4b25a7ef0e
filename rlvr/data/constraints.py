"""Synthetic instruction-following prompts with IFEval constraints (as in Tülu 3's IF data).

Each prompt is a short neutral task plus 1..max_constraints compatible constraints, each
phrased as in Google's IFEval reference; the ground truth is IFEval's own format,
{"instruction_id_list": [...], "kwargs": [...]}, with the reference's instruction ids and
kwarg names, so any IFEval-compatible checker can score the responses.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable

TASKS = [
    "Write a short note about the water cycle.",
    "Describe how a bicycle works.",
    "Explain why the sky looks blue during the day.",
    "Write a short story about a lighthouse keeper.",
    "Give advice to someone starting to learn the piano.",
    "Describe a quiet morning in a small town.",
    "Explain how bread rises.",
    "Write a product description for a reusable water bottle.",
    "Summarize the benefits of regular walking.",
    "Write a letter inviting a neighbour to a community garden day.",
    "Explain how a library organizes its books.",
    "Describe the life cycle of a butterfly.",
    "Write a short poem about autumn leaves.",
    "Explain the difference between weather and climate.",
    "Write a review of an imaginary board game.",
    "Describe how to plant a tree.",
    "Explain what a budget is and why it helps.",
    "Write a short speech welcoming new students to a school.",
    "Describe the night sky to someone who has never seen it.",
    "Explain how recycling paper works.",
    "Write a travel guide entry for an imaginary island.",
    "Give tips for keeping a tidy desk.",
    "Explain how bees make honey.",
    "Write a short biography of a fictional inventor.",
    "Describe a busy train station at rush hour.",
    "Explain why people keep journals.",
    "Write instructions for making a cup of tea.",
    "Describe the sounds of a forest after rain.",
    "Explain how a compass helps people find their way.",
    "Write a thank-you note to a teacher.",
    "Describe how a sailboat moves against the wind.",
    "Explain why leaves change colour in autumn.",
    "Write a short story about a lost umbrella.",
    "Give tips for a first camping trip.",
    "Describe a market on a Saturday morning.",
    "Explain how a refrigerator keeps food cold.",
    "Write a product description for a wooden chess set.",
    "Summarize why sleep matters for students.",
    "Write a note reminding a friend about a picnic.",
    "Explain how a post office sorts letters.",
    "Describe the life of a honeybee colony in winter.",
    "Write a short poem about a snowy evening.",
    "Explain the difference between a lake and a pond.",
    "Write a review of an imaginary cafe.",
    "Describe how to repair a flat bicycle tyre.",
    "Explain why people save money for emergencies.",
    "Write a short speech thanking volunteers at a fair.",
    "Describe a thunderstorm to someone who has never seen one.",
    "Explain how glass is made from sand.",
    "Write a travel guide entry for an imaginary mountain village.",
    "Give tips for learning new words in a foreign language.",
    "Explain how a kite stays in the air.",
    "Write a short biography of a fictional sailor.",
    "Describe a school playground at lunchtime.",
    "Explain why people plant gardens on rooftops.",
    "Write instructions for folding a paper boat.",
    "Describe the smell of a bakery in the morning.",
    "Explain how a clock keeps time.",
    "Write a thank-you note to a neighbour who helped you move.",
    "Describe how a river changes from its source to the sea.",
]

# constrained_response demands a yes/no/maybe answer, so it goes with questions, not tasks.
QUESTIONS = [
    "Is it a good idea to drink water during a long walk?",
    "Can a person learn to swim as an adult?",
    "Is reading before sleep helpful for most people?",
    "Should a beginner gardener start with herbs?",
    "Is it worth learning to cook simple meals at home?",
    "Can music help people concentrate?",
]

WORDS = ["river", "garden", "window", "lantern", "harbor", "meadow", "pencil", "orchard", "bridge",
         "candle", "compass", "island", "ladder", "mirror", "pocket", "ribbon", "shadow", "thunder"]
LANGUAGES = {"es": "Spanish", "fr": "French", "de": "German", "it": "Italian", "pt": "Portuguese"}
RELATIONS = ("less than", "at least")
CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _rel(r: random.Random) -> str:
    return r.choice(RELATIONS)


def _words(r: random.Random, k: int) -> list[str]:
    return sorted(r.sample(WORDS, k))


def _nth_first_word(r: random.Random) -> dict[str, Any]:
    n = r.randint(2, 5)
    return {"num_paragraphs": n, "nth_paragraph": r.randint(1, n), "first_word": r.choice(WORDS)}


# instruction id -> (kwargs sampler, description built from the kwargs). Kwarg names and
# sentences follow IFEval's instructions.py; ranges are the reference's, trimmed where its
# extremes are degenerate (e.g. "less than 1 sentences").
Spec = tuple[Callable[[random.Random], dict[str, Any]], Callable[[dict[str, Any]], str]]
SPECS: dict[str, Spec] = {
    "keywords:existence": (
        lambda r: {"keywords": _words(r, 2)},
        lambda k: f"Include keywords {', '.join(k['keywords'])} in the response."),
    "keywords:frequency": (
        lambda r: {"keyword": r.choice(WORDS), "frequency": r.randint(1, 3), "relation": _rel(r)},
        lambda k: f"In your response, the word {k['keyword']} should appear {k['relation']} {k['frequency']} times."),
    "keywords:forbidden_words": (
        lambda r: {"forbidden_words": _words(r, 2)},
        lambda k: f"Do not include keywords {', '.join(k['forbidden_words'])} in the response."),
    "keywords:letter_frequency": (
        lambda r: {"letter": r.choice("abcdefghijklmnopqrstuvwxyz"), "let_frequency": r.randint(1, 10),
                   "let_relation": _rel(r)},
        lambda k: f"In your response, the letter {k['letter']} should appear {k['let_relation']} {k['let_frequency']} times."),
    "language:response_language": (
        lambda r: {"language": r.choice(sorted(LANGUAGES))},
        lambda k: f"Your ENTIRE response should be in {LANGUAGES[k['language']]} language, no other language is allowed."),
    "length_constraints:number_sentences": (
        lambda r: {"num_sentences": r.randint(2, 20), "relation": _rel(r)},
        lambda k: f"Your response should contain {k['relation']} {k['num_sentences']} sentences."),
    "length_constraints:number_paragraphs": (
        lambda r: {"num_paragraphs": r.randint(2, 5)},
        lambda k: f"There should be {k['num_paragraphs']} paragraphs. Paragraphs are separated with the markdown divider: ***"),
    "length_constraints:number_words": (
        lambda r: {"num_words": r.randint(50, 300), "relation": _rel(r)},
        lambda k: f"Answer with {k['relation']} {k['num_words']} words."),
    "length_constraints:nth_paragraph_first_word": (
        _nth_first_word,
        lambda k: (f"There should be {k['num_paragraphs']} paragraphs. Paragraphs and only paragraphs are separated "
                   f"with each other by two new lines as if it was '\\n\\n' in python. "
                   f"Paragraph {k['nth_paragraph']} must start with word {k['first_word']}.")),
    "detectable_content:number_placeholders": (
        lambda r: {"num_placeholders": r.randint(1, 4)},
        lambda k: (f"The response must contain at least {k['num_placeholders']} placeholders represented by "
                   "square brackets, such as [address].")),
    "detectable_content:postscript": (
        lambda r: {"postscript_marker": r.choice(("P.S.", "P.P.S"))},
        lambda k: f"At the end of your response, please explicitly add a postscript starting with {k['postscript_marker']}"),
    "detectable_format:number_bullet_lists": (
        lambda r: {"num_bullets": r.randint(1, 5)},
        lambda k: (f"Your answer must contain exactly {k['num_bullets']} bullet points. Use the markdown bullet "
                   "points such as:\n* This is point 1. \n* This is point 2")),
    "detectable_format:constrained_response": (
        lambda r: {},
        lambda k: f"Answer with one of the following options: {CONSTRAINED_OPTIONS}"),
    "detectable_format:number_highlighted_sections": (
        lambda r: {"num_highlights": r.randint(1, 4)},
        lambda k: (f"Highlight at least {k['num_highlights']} sections in your answer with markdown, "
                   "i.e. *highlighted section*.")),
    "detectable_format:multiple_sections": (
        lambda r: {"section_spliter": r.choice(("Section", "SECTION")), "num_sections": r.randint(2, 5)},
        lambda k: (f"Your response must have {k['num_sections']} sections. Mark the beginning of each section "
                   f"with {k['section_spliter']} X, such as:\n{k['section_spliter']} 1\n[content of section 1]\n"
                   f"{k['section_spliter']} 2\n[content of section 2]")),
    "detectable_format:json_format": (
        lambda r: {},
        lambda k: "Entire output should be wrapped in JSON format. You can use markdown ticks such as ```."),
    "detectable_format:title": (
        lambda r: {},
        lambda k: "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>."),
    "combination:two_responses": (
        lambda r: {},
        lambda k: "Give two different responses. Responses and only responses should be separated by 6 asterisk symbols: ******."),
    "combination:repeat_prompt": (
        lambda r: {},  # prompt_to_repeat is filled in once the rest of the prompt is known
        lambda k: ("First repeat the request word for word without change, then give your answer (1. do not say "
                   "any words or characters before repeating the request; 2. the request you need to repeat does "
                   "not include this sentence)")),
    "startend:end_checker": (
        lambda r: {"end_phrase": r.choice(("Any other questions?", "Is there anything else I can help with?"))},
        lambda k: f"Finish your response with this exact phrase {k['end_phrase']}. No other words should follow this phrase."),
    "startend:quotation": (
        lambda r: {},
        lambda k: "Wrap your entire response with double quotation marks."),
    "change_case:capital_word_frequency": (
        lambda r: {"capital_frequency": r.randint(1, 20), "capital_relation": _rel(r)},
        lambda k: f"In your response, words with all capital letters should appear {k['capital_relation']} {k['capital_frequency']} times."),
    "change_case:english_capital": (
        lambda r: {},
        lambda k: "Your entire response should be in English, and in all capital letters."),
    "change_case:english_lowercase": (
        lambda r: {},
        lambda k: "Your entire response should be in English, and in all lowercase letters. No capital letters are allowed."),
    "punctuation:no_comma": (
        lambda r: {},
        lambda k: "In your entire response, refrain from the use of any commas."),
}
IDS = sorted(SPECS)


# Not in the reference's table: both claim the end of the response (end_checker/postscript);
# the section marker, end phrase or postscript marker need capitals that an all-lowercase or
# all-capital response cannot have; an English first word contradicts another language.
EXTRA_CONFLICTS = {
    "startend:end_checker": {"detectable_content:postscript", "change_case:english_lowercase",
                             "change_case:english_capital"},
    "detectable_format:multiple_sections": {"change_case:english_lowercase", "change_case:english_capital"},
    "detectable_content:postscript": {"change_case:english_lowercase"},
    "length_constraints:nth_paragraph_first_word": {"language:response_language"},
}


def _conflicts() -> dict[str, set[str]]:
    """IFEval's INSTRUCTION_CONFLICTS (made symmetric), plus pairs whose texts contradict each
    other though the reference's checkers might let both pass (see EXTRA_CONFLICTS)."""
    every = set(IDS)
    c: dict[str, set[str]] = {i: {i} for i in IDS}
    pairs = {
        "language:response_language": {"detectable_format:multiple_sections", "keywords:existence",
                                       "keywords:frequency", "keywords:forbidden_words", "startend:end_checker",
                                       "change_case:english_capital", "change_case:english_lowercase"},
        "length_constraints:number_paragraphs": {"length_constraints:nth_paragraph_first_word",
                                                 "length_constraints:number_sentences"},
        "detectable_format:constrained_response": every,
        "detectable_format:multiple_sections": {"detectable_format:number_highlighted_sections"},
        "detectable_format:json_format": every - {"keywords:forbidden_words", "keywords:existence"},
        "combination:two_responses": every - {"keywords:forbidden_words", "keywords:existence",
                                              "language:response_language", "detectable_format:title",
                                              "punctuation:no_comma"},
        "combination:repeat_prompt": every - {"keywords:existence", "detectable_format:title", "punctuation:no_comma"},
        "change_case:capital_word_frequency": {"change_case:english_lowercase", "change_case:english_capital"},
        "change_case:english_lowercase": {"change_case:english_capital"},
        "startend:quotation": {"detectable_format:title"},
    }
    for a, bs in [*pairs.items(), *EXTRA_CONFLICTS.items()]:
        for b in bs:
            c[a].add(b)
            c[b].add(a)
    return c


CONFLICTS = _conflicts()


# A held-out split of the tasks: every fifth task and every third question is only ever asked in
# `--split heldout` files, so a held-out evaluation asks for tasks the policy never trained on.
SPLITS = ("all", "train", "heldout")


def split_prompts(pool: list[str], split: str, every: int) -> list[str]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "all":
        return pool
    return [p for i, p in enumerate(pool) if (i % every == every - 1) == (split == "heldout")]


def check_kinds(kinds: list[str] | None) -> list[str]:
    """The instruction ids a --kinds list names (an id, or a prefix such as `startend`); ValueError names an unknown one."""
    if not kinds:
        return list(IDS)
    out: list[str] = []
    for k in kinds:
        hit = [i for i in IDS if i == k or i.split(":")[0] == k]
        if not hit:
            raise ValueError(f"unknown constraint kind {k!r}: give an IFEval instruction id or its group "
                             f"(e.g. startend:end_checker or startend)")
        out += [i for i in hit if i not in out]
    return out


def constraint_row(r: random.Random, max_constraints: int = 2, kinds: list[str] | None = None,
                   split: str = "all") -> dict[str, Any]:
    """One RLVR row: a task with 1..max_constraints mutually compatible IFEval constraints (of `kinds`: all
    by default), the task drawn from `split`'s tasks."""
    pool = IDS if kinds is None else kinds
    ids: list[str] = []
    for _ in range(r.randint(1, max_constraints)):
        allowed = [i for i in pool if not any(i in CONFLICTS[j] for j in ids)]
        if not allowed:
            break
        ids.append(r.choice(allowed))
    kwargs = [SPECS[i][0](r) for i in ids]
    while not _words_consistent(kwargs):
        kwargs = [SPECS[i][0](r) for i in ids]
    texts = [SPECS[i][1](kw) for i, kw in zip(ids, kwargs)]
    # Multi-line constraints (with an example) go after one-line ones so no sentence is glued to
    # an example's last line; repeating the request goes last, as the request is all before it.
    order = sorted(range(len(ids)), key=lambda j: (ids[j] == "combination:repeat_prompt", "\n" in texts[j]))
    prompt = r.choice(split_prompts(QUESTIONS, split, 3) if "detectable_format:constrained_response" in ids
                      else split_prompts(TASKS, split, 5))
    for j in order:
        if ids[j] == "combination:repeat_prompt":
            kwargs[j]["prompt_to_repeat"] = prompt
        prompt += ("\n" if "\n" in prompt else " ") + texts[j]
    ids, kwargs = [ids[j] for j in order], [kwargs[j] for j in order]
    return {"messages": [{"role": "user", "content": prompt}],
            "ground_truth": {"instruction_id_list": ids, "kwargs": kwargs}, "dataset": "ifeval"}


def _words_consistent(kwargs: list[dict[str, Any]]) -> bool:
    """A forbidden word must not also be one the response is asked to use."""
    forbidden = {w for kw in kwargs for w in kw.get("forbidden_words", [])}
    wanted = {w for kw in kwargs for w in [*kw.get("keywords", []), kw.get("keyword"), kw.get("first_word")]}
    return not forbidden & wanted


def generate_constraint_prompts(n: int, seed: int, dst_jsonl: str | Path, max_constraints: int = 2,
                                kinds: list[str] | None = None, split: str = "all", unique: bool = False) -> int:
    """Write n constraint prompts (deterministic for a seed) to dst_jsonl; returns n. `unique`: no prompt twice
    (an evaluation's n prompts are then n measurements); ValueError when the kinds and split have fewer."""
    if n < 0 or max_constraints < 1:
        raise ValueError(f"need n >= 0 and max_constraints >= 1, got n={n}, max_constraints={max_constraints}")
    kinds = check_kinds(kinds) if kinds else None
    split_prompts([], split, 5)  # checks the name before anything is written
    r = random.Random(seed)
    rows, seen = [], set()
    for _ in range(100 * n):
        if len(rows) == n:
            break
        row = constraint_row(r, max_constraints, kinds, split)
        text = row["messages"][0]["content"]
        if unique and text in seen:
            continue
        seen.add(text)
        rows.append(row)
    if len(rows) < n:
        raise ValueError(f"only {len(rows)} distinct prompts for these kinds and split: ask for fewer (--n)")
    dst = Path(dst_jsonl)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return n
