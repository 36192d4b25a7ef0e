"""The tools toy's pure parts: its data is exactly the token stream the multi-turn rollout builds."""

import json

from rlvr import toy_tools as tt
from rlvr.data import encode_prompts, render_prompt
from rlvr.environments.calculator import calculator
from rlvr.environments.parsers import get_parser
from rlvr.environments.template import render_delta


def test_supervised_trajectory_ids_equal_the_rollouts_turn_by_turn_ids():
    tok = tt.build_tokenizer()
    for a, b in [(347, 28), (100, 10), (999, 99), (105, 95)]:
        conv = tt.trajectory(a, b, True)
        ids, mask = tt.encode_trajectory(tok, conv)
        # What the rollout does: the prompt rendered once, turn 1's generated ids (content + EOS),
        # the environment's delta, then turn 2's generated ids.
        prompt = encode_prompts(tok, [render_prompt(tok, {"messages": conv[:1]})])[0]
        call = tok(conv[1]["content"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        delta = render_delta(tok, conv[:2], [conv[2]])
        answer = tok(conv[3]["content"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert ids == prompt + call + delta + answer
        # The loss covers exactly the generated ids, never the prompt or the tool's message.
        assert mask == [0] * len(prompt) + [1] * len(call) + [0] * len(delta) + [1] * len(answer)
        assert len(ids) <= tt.MAX_LENGTH and len(call) <= tt.TURN_TOKENS
        # The call the toy learns is one the real parser reads and the real calculator answers.
        calls, errors = get_parser(tt.PARSER).parse(conv[1]["content"])
        assert not errors and calls[0].name == tt.TOOL_NAME and calculator(calls[0].arguments) == str(a * b)


def test_decision_token_and_copy_drills_are_masked_as_documented():
    tok = tt.build_tokenizer()
    conv = tt.trajectory(347, 28, True)
    full, _ = tt.encode_trajectory(tok, conv)
    _, skip_first = tt.encode_trajectory(tok, [conv[0], dict(conv[1], loss="after_first"), *conv[2:]])
    _, no_call = tt.encode_trajectory(tok, [conv[0], dict(conv[1], loss=False), *conv[2:]])
    _, mask = tt.encode_trajectory(tok, conv)
    first = mask.index(1)
    assert skip_first == mask[:first] + [0] + mask[first + 1:]
    # loss=False: only turn 2 (the copied answer and its EOS) is learnt.
    assert sum(no_call) == len(str(347 * 28)) + 1 and no_call[-1] == 1 and full[-1] == tok.eos_token_id


def test_splits_are_disjoint_rows_are_tool_rows_and_direct_answers_are_wrong():
    train, held = tt.split_pairs(0)
    assert len(held) == tt.EVAL_SIZE and not set(train) & set(held)
    assert len(train) + len(held) == len(tt.all_pairs()) == 900 * 90
    assert tt.split_pairs(0) == (train, held) and tt.split_pairs(1)[1] != held
    row = tt.rlvr_row(347, 28)
    assert row["env"] == "tools" and row["ground_truth"] == "9716" and json.loads(json.dumps(row)) == row
    # A direct answer is an estimate, wrong for nearly all pairs: the tool is needed.
    assert sum(tt.estimate(a, b) == a * b for a, b in held) / len(held) < 0.05


def test_supervised_mixture_teaches_the_documented_tool_rate():
    tok = tt.build_tokenizer()
    pairs = tt.split_pairs(0)[0][:900]
    ids, mask, rate = tt.sft_examples(tok, pairs, seed=0)
    favoured = sum(a // 100 in tt.TOOL_FAVOURED_DIGITS for a, _ in pairs) / len(pairs)
    expected = favoured * tt.P_TOOL_FAVOURED + (1 - favoured) * tt.P_TOOL_OTHER
    assert abs(rate - expected) < 0.05
    assert ids.shape[1] <= tt.MAX_LENGTH and ids.shape == mask.shape
    assert len(ids) > len(pairs)  # direct-answer pairs also appear as (masked-decision) tool trajectories
