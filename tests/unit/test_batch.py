import torch

from rlvr.learners.batch import build_batch, shard_by_groups


def test_build_batch_aligns_masks_and_logprobs_with_predicted_tokens():
    b = build_batch([[5, 6], [5, 6, 7]], [[8, 9], [10]], [[-0.1, -0.2], [-0.3]], [1.0, 0.0],
                    group_size=2, pad_id=0, temperature=1.0)
    assert b["input_ids"].tolist() == [[5, 6, 8, 9], [5, 6, 7, 10]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]
    # position t predicts input_ids[t+1]: response tokens 8, 9 are predicted from positions 1, 2
    assert b["response_mask"].tolist() == [[0, 1, 1], [0, 0, 1]]
    assert torch.allclose(b["rollout_logprobs"], torch.tensor([[0, -0.1, -0.2], [0, 0, -0.3]]))
    assert b["total_tokens"] == 3.0 and b["total_sequences"] == 2.0


def test_build_batch_right_pads():
    b = build_batch([[1], [1, 2, 3]], [[4], [5]], [[-1.0], [-1.0]], [0.0, 1.0], group_size=1, pad_id=9, temperature=1.0)
    assert b["input_ids"].tolist() == [[1, 4, 9, 9], [1, 2, 3, 5]]
    assert b["attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert b["response_mask"].tolist() == [[1, 0, 0], [0, 0, 1]]


def test_shards_keep_whole_groups():
    b = build_batch([[1]] * 6, [[2]] * 6, [[-1.0]] * 6, [0, 1, 2, 3, 4, 5], group_size=2, pad_id=0, temperature=1.0)
    shards = shard_by_groups(b, 2)
    assert [s["rewards"].tolist() for s in shards] == [[0, 1, 2, 3], [4, 5]]
    assert all(s["group_size"] == 2 and s["total_tokens"] == 6.0 for s in shards)


def test_shards_balanced_by_tokens_keep_whole_groups():
    # group 0's responses are 10 tokens, the other three groups' 1: by tokens, group 0 alone
    # weighs as much as the rest together
    responses = [[2] * 10] * 2 + [[2]] * 6
    b = build_batch([[1]] * 8, responses, [[-1.0] * len(r) for r in responses], list(range(8)), group_size=2,
                    pad_id=0, temperature=1.0)
    shards = shard_by_groups(b, 2, balance_tokens=True)
    assert [s["rewards"].tolist() for s in shards] == [[0, 1], [2, 3, 4, 5, 6, 7]]
    assert [int(s["attention_mask"].sum()) for s in shards] == [22, 12]
    assert [s["rewards"].tolist() for s in shard_by_groups(b, 2)] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_pick_groups_prefers_fresh_informative_then_tops_up_never_stale():
    from rlvr.learners.batch import pick_groups

    informative = [True, False, True, True, False, True]
    stale = [False, False, True, False, False, False]
    assert pick_groups(informative, stale, 2) == [0, 3]  # the stale informative group 2 is skipped
    assert pick_groups(informative, stale, 3) == [0, 3, 5]
    # Short of informative groups: uninformative fresh ones fill up, in order; stale never.
    assert pick_groups(informative, stale, 5) == [0, 1, 3, 4, 5]
    assert pick_groups(informative, stale, 9) == [0, 1, 3, 4, 5]


def test_split_weighted_balances_engines_by_speed():
    from rlvr.learners.partition import split_weighted

    assert split_weighted(10, [1.0, 1.0]) == [slice(0, 5), slice(5, 10)]
    assert split_weighted(12, [3.0, 1.0]) == [slice(0, 9), slice(9, 12)]  # a 3x faster engine takes 3x the prompts
    parts = split_weighted(7, [1.0, 1.0, 1.0])
    assert [s.stop - s.start for s in parts] == [3, 2, 2] and parts[-1].stop == 7
    assert split_weighted(1, [1.0, 5.0]) == [slice(0, 0), slice(0, 1)]
    from rlvr.learners.batch import split_even  # equal weights: the first parts take the extras
    assert split_even(7, 3) == [slice(0, 3), slice(3, 5), slice(5, 7)]
    assert split_even(2, 3) == [slice(0, 1), slice(1, 2), slice(2, 2)]


def test_micro_batch_is_cut_after_its_longest_sequence():
    from types import SimpleNamespace

    from rlvr.learners.actor import LearnerActor

    b = build_batch([[1], [1, 2], [1, 2, 3, 4]], [[5], [6, 7], [8, 9]], [[-1.0], [-2.0, -3.0], [-4.0, -5.0]],
                    [0.0, 1.0, 0.5], group_size=1, pad_id=0, temperature=1.0)
    learner = SimpleNamespace(device="cpu")
    mb = LearnerActor._micro_batch(learner, b, slice(0, 2), mask=b["response_mask"], lp=b["rollout_logprobs"], none=None)
    # rows 0-1 are 2 and 4 tokens long: 4 columns of ids, 3 of per-position tensors (the batch has 6 and 5)
    assert mb["ids"].tolist() == [[1, 5, 0, 0], [1, 2, 6, 7]]
    assert mb["attn"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert mb["mask"].tolist() == [[1, 0, 0], [0, 1, 1]]  # every response token kept
    assert mb["lp"].tolist() == [[-1.0, 0, 0], [0, -2.0, -3.0]]
    assert mb["none"] is None
    assert LearnerActor._micro_batch(learner, b, slice(2, 3), mask=b["response_mask"])["mask"].shape == (1, 5)


def test_micro_batch_rows_sort_by_length_within_each_minibatch():
    from rlvr.learners.batch import micro_batch_rows

    lengths = torch.tensor([9, 2, 7, 3, 8, 1, 5, 4])
    # two minibatches: rows 0-3 and 4-7, never mixed; each sorted by length, then split in two
    out = micro_batch_rows(lengths, num_minibatches=2, micro_batches=2)
    assert [[r.tolist() for r in mb] for mb in out] == [[[1, 3], [2, 0]], [[5, 7], [6, 4]]]
    # every row exactly once; uneven splits differ by at most one row
    out = micro_batch_rows(torch.tensor([3, 3, 1, 2, 5]), num_minibatches=1, micro_batches=2)
    assert [r.tolist() for r in out[0]] == [[2, 3, 0], [1, 4]]
