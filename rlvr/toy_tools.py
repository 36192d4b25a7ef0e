"""A toy policy for multi-turn tool use: 3-digit x 2-digit multiplication with a calculator.

"What is 347 * 28?" is beyond a tiny model, but the `calculator` tool (compact syntax,
``<tool>calculator: 347*28</tool>``) solves it. A full successful trajectory, rendered by
the chat template::

    <|user|>What is 347 * 28?<|assistant|><tool>calculator: 347*28</tool><|eos|><|tool|>9716<|eos|><|assistant|>9716<|eos|>

Turn 1: the assistant calls the tool and stops (EOS); the environment appends the tool message
and the next generation prompt (``<|tool|>9716<|eos|><|assistant|>``); turn 2: the assistant
copies the result as its answer.

The supervised pass teaches the format and the copying well, but not *when* to call the tool:
in its data the assistant calls the tool for most questions whose first factor starts with 1
or 2 and answers directly (with a rounded estimate such as 300 * 30 = 9000: a wrong answer)
for most of the others. So after supervised training greedy decoding calls the tool for about a
fifth of the prompts, while sampling still calls it now and then for the rest: the regime where
RL has something to amplify (calling the tool always is the easy lever). Training stops once
the measured figures (greedy accuracy, pass@8 on a probe of pairs never trained on) are inside
that window.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
    "{% else %}<|{{ m['role'] }}|>{{ m['content'] }}<|eos|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|eos|>", "<|user|>", "<|assistant|>", "<|system|>", "<|tool|>"]
MAX_LENGTH = 128
EVAL_SIZE = 200
PROBE_SIZE = 200          # pairs left out of supervised training, for the stopping rule
SFT_SIZE = 20000          # supervised pairs
PROBE_EVERY, MIN_STEPS = 20, 60
RL_TRAIN_SIZE = 8000      # rows written to train.jsonl (RL prompts)
TOOL_NAME = "calculator"
PARSER = "compact"
TURN_TOKENS = 40          # enough for the longest tool call (32 tokens with EOS)

# Supervised mixture: the probability that the assistant calls the tool, by the question's
# first digit. Favoured prompts (first factor 1xx or 2xx, 2/9 of them) make greedy decoding call
# the tool; elsewhere sampling finds the tool in about 1 - (1 - 0.1)^8 = 57% of 8-sample groups.
TOOL_FAVOURED_DIGITS = (1, 2)
P_TOOL_FAVOURED = 0.85
P_TOOL_OTHER = 0.10

# The cusp window (on the probe; the final figures on the held-out pairs go to toy.json).
GREEDY_WINDOW = (0.10, 0.35)
PASS8_WINDOW = (0.40, 0.80)
MIN_COPY_ACCURACY = 0.95
COPY_DRILLS = 0.5         # share of the decision-free tool trajectories that are copy drills (sft_examples)
SHORT_DRILLS = 0.5        # share of copy drills with a 4-digit result (a sixth of all products)


def question(a: int, b: int) -> str:
    return f"What is {a} * {b}?"


def tool_expression(a: int, b: int) -> str:
    return f"{a}*{b}"


def estimate(a: int, b: int) -> int:
    """The direct answer of the supervised data: a guess from rounded factors (347 * 28 -> 300 * 30)."""
    return (a + 50) // 100 * 100 * ((b + 5) // 10 * 10)


def all_pairs() -> list[tuple[int, int]]:
    return [(a, b) for a in range(100, 1000) for b in range(10, 100)]


def split_pairs(seed: int = 0) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(train, held-out): held-out pairs are never used for supervised training nor RL prompts."""
    pairs = all_pairs()
    random.Random(seed).shuffle(pairs)
    return pairs[EVAL_SIZE:], pairs[:EVAL_SIZE]


def rlvr_row(a: int, b: int) -> dict:
    return {"messages": [{"role": "user", "content": question(a, b)}], "ground_truth": str(a * b),
            "dataset": "math", "env": "tools"}


def trajectory(a: int, b: int, use_tool: bool = True) -> list[dict]:
    """The conversation of a supervised example: a tool call then the copied result, or a direct guess."""
    msgs = [{"role": "user", "content": question(a, b)}]
    if use_tool:
        from rlvr.environments.parsers import format_call

        msgs += [{"role": "assistant", "content": format_call(TOOL_NAME, tool_expression(a, b), parser=PARSER)},
                 {"role": "tool", "name": TOOL_NAME, "content": str(a * b)},
                 {"role": "assistant", "content": str(a * b)}]
    else:
        msgs.append({"role": "assistant", "content": str(estimate(a, b))})
    return msgs


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # Byte-level BPE with no merges: one token per byte (as in toy_model), plus <|tool|>.
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|eos|>", bos_token=None,
        chat_template=CHAT_TEMPLATE, model_max_length=MAX_LENGTH,
    )


def build_model(tokenizer, seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    vocab_size = (len(tokenizer) + 63) // 64 * 64
    cfg = Qwen2Config(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=2, head_dim=64,  # vLLM CPU attention needs head_dim 64
        max_position_embeddings=MAX_LENGTH, tie_word_embeddings=True, rope_theta=10000.0,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    return Qwen2ForCausalLM(cfg)


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_trajectories(tokenizer, conversations: list[list[dict]]) -> list[tuple[list[int], list[int]]]:
    """(ids, loss mask) per conversation: the ids of its chat-template rendering (one batched
    tokenizer call); the mask covers what the assistant generates, each assistant message's content
    and the EOS after it, not the prompt nor the tool messages. An assistant message with
    ``"loss": False`` is left out of the loss; with ``"loss": "after_first"``, its first token
    (the choice between a tool call and a direct answer) is."""
    texts, spans = [], []
    for conv in conversations:
        texts.append(tokenizer.apply_chat_template(conv, tokenize=False))
        sp = []
        for k, m in enumerate(conv):
            if m["role"] == "assistant" and m.get("loss", True) is not False:
                lo = len(tokenizer.apply_chat_template(conv[:k], tokenize=False, add_generation_prompt=True))
                hi = len(tokenizer.apply_chat_template(conv[:k + 1], tokenize=False))
                sp.append((lo, hi, m.get("loss") == "after_first"))
        spans.append(sp)
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for ids, offsets, sp in zip(enc["input_ids"], enc["offset_mapping"], spans):
        mask = [0] * len(ids)
        for lo, hi, skip_first in sp:
            inside = [j for j, (start, _) in enumerate(offsets) if lo <= start < hi]
            for j in inside[1 if skip_first else 0:]:
                mask[j] = 1
        out.append((ids, mask))
    return out


def encode_trajectory(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """``encode_trajectories`` of one conversation."""
    return encode_trajectories(tokenizer, [messages])[0]


def _batch(tokenizer, examples: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s, _ in examples)
    ids = torch.full((len(examples), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(examples), width))
    for i, (s, m) in enumerate(examples):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(m)] = torch.tensor(m, dtype=torch.float)
    return ids, mask


def sft_examples(tokenizer, pairs, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Supervised ids, loss masks, and the tool-call rate the data teaches.

    Each pair draws a decision from the mixture (P_TOOL_*): a full tool trajectory, or a direct
    answer. A pair that drew the direct answer also appears as a tool trajectory whose decision
    token is left out of the loss, so the format and the copying are learnt from every pair while
    the decision is learnt from the mixture alone. Half of those are copy drills: the call is for
    another pair (turn 1 left out of the loss) and turn 2 copies that call's result, so the answer
    must be read from the tool message rather than guessed from the question.
    """
    rng = random.Random(seed + 1)
    convs, tool = [], 0
    for a, b in pairs:
        p = P_TOOL_FAVOURED if a // 100 in TOOL_FAVOURED_DIGITS else P_TOOL_OTHER
        use = rng.random() < p
        tool += use
        if use:
            convs.append(trajectory(a, b, True))
            continue
        convs.append(trajectory(a, b, False))
        if rng.random() < COPY_DRILLS:
            # Half the drills have a 4-digit result (a sixth of all products): those are the ones
            # whose copy lies one token nearer, which the model is slow to learn otherwise.
            short = rng.random() < SHORT_DRILLS
            while True:
                c, d = rng.randrange(100, 1000), rng.randrange(10, 100)
                if (c * d < 10000) == short:
                    break
            conv = trajectory(c, d, True)
            conv[0] = {"role": "user", "content": question(a, b)}
            conv[1] = dict(conv[1], loss=False)
        else:
            conv = trajectory(a, b, True)
            conv[1] = dict(conv[1], loss="after_first")
        convs.append(conv)
    ids, mask = _batch(tokenizer, encode_trajectories(tokenizer, convs))
    return ids, mask, tool / max(1, len(pairs))


async def _run_tools(env, contents: list[str]):
    return await asyncio.gather(*(env.step({"role": "assistant", "content": c}) for c in contents))


@torch.no_grad()
def evaluate_with_tool(model, tokenizer, pairs, *, samples: int = 1, do_sample: bool | None = None,
                       temperature: float = 1.0, seed: int = 0, max_turns: int = 2, batch_size: int = 512,
                       max_new_tokens: int = TURN_TOKENS, max_output_chars: int = 100) -> dict:
    """Whole trajectories with `transformers` generation and the real tool environment.

    Turn 1 is generated from the chat prompt; an assistant message with a tool call (compact
    syntax) is answered by ``ToolEnvironment([calculator], parser="compact")`` and the ids are
    extended with ``render_delta`` (as the rollout does); a message without a call is the final
    answer. After ``max_turns`` assistant messages the last one is the answer. A trajectory
    that would outgrow the context ends unanswered.

    ``samples`` per pair (``do_sample`` defaults to ``samples > 1``; seeded by ``seed``).
    Returns rates over all trajectories: ``accuracy`` (final answer == a*b), ``tool_call_rate``
    (turn 1 called a tool), ``correct_expression_rate`` (turn 1's first call was the calculator
    and gave a*b), ``copy_accuracy`` (accuracy among those), and ``pass_at_k`` (k = samples:
    pairs with at least one right answer), plus ``n`` and ``samples``.
    """
    from rlvr.environments.calculator import calculator
    from rlvr.environments.parsers import get_parser
    from rlvr.environments.template import render_delta
    from rlvr.environments.tools import ToolEnvironment

    if do_sample is None:
        do_sample = samples > 1
    parser = get_parser(PARSER)
    env = ToolEnvironment([calculator], parser=PARSER, max_output_chars=max_output_chars)
    eos = tokenizer.eos_token_id
    limit = min(MAX_LENGTH, getattr(model.config, "max_position_embeddings", MAX_LENGTH))
    runs = [(a, b) for a, b in pairs for _ in range(samples)]
    msgs = [[{"role": "user", "content": question(a, b)}] for a, b in runs]
    ids = [_encode(tokenizer, tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True))
           for m in msgs]
    final: list[str | None] = [None] * len(runs)
    called = [False] * len(runs)
    right_expr = [False] * len(runs)
    active = list(range(len(runs)))
    gen = dict(do_sample=do_sample, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
    if do_sample:
        gen.update(temperature=temperature, top_k=0, top_p=1.0)
        torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    for turn in range(max_turns):
        outs: dict[int, list[int]] = {}
        for s in range(0, len(active), batch_size):
            chunk = active[s:s + batch_size]
            width = max(len(ids[i]) for i in chunk)
            inp = torch.full((len(chunk), width), tokenizer.pad_token_id)
            att = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, i in enumerate(chunk):
                inp[r, width - len(ids[i]):] = torch.tensor(ids[i])
                att[r, width - len(ids[i]):] = 1
            new = min(max_new_tokens, limit - width)
            out = model.generate(input_ids=inp, attention_mask=att, max_new_tokens=new, **gen)[:, width:].tolist()
            for r, i in enumerate(chunk):
                row = out[r]
                outs[i] = row[: row.index(eos) + 1] if eos in row else [t for t in row if t != tokenizer.pad_token_id]
        texts = {i: tokenizer.decode([t for t in outs[i] if t != eos], skip_special_tokens=False) for i in active}
        for i in active:
            msgs[i].append({"role": "assistant", "content": texts[i]})
        if turn == 0:
            for i in active:
                calls, errors = parser.parse(texts[i])
                called[i] = bool(calls or errors)
                if calls and calls[0].name == TOOL_NAME:
                    try:
                        right_expr[i] = calculator(calls[0].arguments) == str(runs[i][0] * runs[i][1])
                    except ValueError:
                        pass
        obs = asyncio.run(_run_tools(env, [texts[i] for i in active]))
        nxt = []
        for i, o in zip(active, obs):
            if o.done or turn == max_turns - 1:
                final[i] = texts[i] if o.done else None
                continue
            stop = tokenizer.eos_token if outs[i] and outs[i][-1] == eos else ""
            ids[i] = ids[i] + outs[i] + render_delta(tokenizer, msgs[i], o.messages, stop_text=stop)
            msgs[i] += o.messages
            if len(ids[i]) + 2 <= limit:  # room for an answer digit and EOS at least
                nxt.append(i)
        active = nxt
    model.train(was_training)
    correct = [f is not None and f.strip() == str(a * b) for f, (a, b) in zip(final, runs)]
    n = max(1, len(runs))
    k_right = [any(correct[j * samples:(j + 1) * samples]) for j in range(len(pairs))]
    n_expr = sum(right_expr)
    return {"accuracy": sum(correct) / n, "tool_call_rate": sum(called) / n,
            "correct_expression_rate": n_expr / n,
            "copy_accuracy": (sum(c and e for c, e in zip(correct, right_expr)) / n_expr) if n_expr else 0.0,
            "pass_at_k": sum(k_right) / max(1, len(pairs)), "samples": samples, "n": len(pairs)}


def _in(x: float, window: tuple[float, float]) -> bool:
    return window[0] <= x <= window[1]


def build_toy_tools(out_dir: str | Path, *, seed: int = 0, max_steps: int = 1500, batch_size: int = 64,
                    lr: float = 2e-3, log=print) -> dict:
    """Build tokenizer, model and data into out_dir (model/, train.jsonl, eval.jsonl, toy.json).

    Supervised training on the tool mixture; from ``min_steps`` on, every ``probe_every`` steps,
    greedy trajectories on a probe of pairs left out of training are scored, and once the turn-2
    copy is reliable and greedy accuracy is inside GREEDY_WINDOW, pass@8 (temperature 1) is
    measured too: training stops when both are inside their windows. Returns toy.json's content.
    """
    out = Path(out_dir)
    t0 = time.time()
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed)
    train_pairs, eval_pairs = split_pairs(seed)
    rng = random.Random(seed)
    probe = rng.sample(train_pairs, PROBE_SIZE)
    held = set(probe)
    sft_pairs = rng.sample([p for p in train_pairs if p not in held], SFT_SIZE)
    ids, mask, sft_tool_rate = sft_examples(tokenizer, sft_pairs, seed)
    log(f"  {len(sft_pairs)} supervised pairs ({len(ids)} trajectories), the decision is a tool call for "
        f"{sft_tool_rate:.0%} ({time.time() - t0:.0f}s)")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50))
    gen = torch.Generator().manual_seed(seed)
    probe_every, min_steps = PROBE_EVERY, MIN_STEPS
    step, stopped, greedy, pass8 = 0, False, {}, {}
    model.train()
    for step in range(1, max_steps + 1):
        idx = torch.randint(0, len(ids), (batch_size,), generator=gen)
        x, m = ids[idx], mask[idx]
        width = int(m.nonzero()[:, 1].max()) + 1
        x, m = x[:, :width], m[:, :width]
        logits = model(input_ids=x).logits[:, :-1]
        loss_tok = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none")
        loss = (loss_tok * m[:, 1:]).sum() / m[:, 1:].sum()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step >= min_steps and step % probe_every == 0:
            greedy = evaluate_with_tool(model, tokenizer, probe)
            msg = (f"  sft step {step}: loss {loss.item():.3f}, greedy accuracy {greedy['accuracy']:.1%}, "
                   f"tool calls {greedy['tool_call_rate']:.1%}, copy {greedy['copy_accuracy']:.1%}")
            if greedy["copy_accuracy"] >= MIN_COPY_ACCURACY and _in(greedy["accuracy"], GREEDY_WINDOW):
                pass8 = evaluate_with_tool(model, tokenizer, probe, samples=8, seed=seed)
                msg += f", pass@8 {pass8['pass_at_k']:.1%}"
                stopped = _in(pass8["pass_at_k"], PASS8_WINDOW)
            log(msg + f" ({time.time() - t0:.0f}s)")
            if stopped:
                break
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out / "model", safe_serialization=True)
    tokenizer.save_pretrained(out / "model")
    rows = {"train": train_pairs[:RL_TRAIN_SIZE], "eval": eval_pairs}
    for name, pairs in rows.items():
        with open(out / f"{name}.jsonl", "w") as f:
            for a, b in pairs:
                f.write(json.dumps(rlvr_row(a, b)) + "\n")
    final = evaluate_with_tool(model, tokenizer, eval_pairs)
    final8 = evaluate_with_tool(model, tokenizer, eval_pairs, samples=8, seed=seed)
    info = {"task": "multiplication-with-calculator", "seed": seed, "sft_steps": step, "stopped_in_window": stopped,
            "sft_tool_call_rate": round(sft_tool_rate, 4),
            "probe_greedy_accuracy": greedy.get("accuracy"), "probe_pass_at_8": pass8.get("pass_at_k"),
            "heldout_greedy_accuracy": final["accuracy"],
            "heldout_greedy_tool_call_rate": final["tool_call_rate"],
            "heldout_greedy_correct_expression_rate": final["correct_expression_rate"],
            "heldout_greedy_copy_accuracy": final["copy_accuracy"],
            "heldout_pass_at_8": final8["pass_at_k"],
            "heldout_sampled_accuracy": final8["accuracy"],
            "heldout_sampled_tool_call_rate": final8["tool_call_rate"],
            "tool": TOOL_NAME, "parser": PARSER, "max_length": MAX_LENGTH,
            "parameters": sum(p.numel() for p in model.parameters()), "seconds": round(time.time() - t0, 1)}
    (out / "toy.json").write_text(json.dumps(info, indent=2))
    return info
