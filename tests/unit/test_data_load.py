"""Loading and normalising sources: jsonl, parquet, saved datasets; errors and drop reports."""
from pathlib import Path

import pytest

from rlvr.data import DataConfig, DataError, DataSourceConfig, load_sources, mix_report

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "data"
TULU = str(FIX / "tulu_small.jsonl")
PROMPTS = str(FIX / "prompts_small.jsonl")


def src(path, **kw):
    return DataSourceConfig(path=str(path), **kw)


def test_tulu_rows_are_normalised():
    rows = load_sources([src(TULU)])
    assert [r["index"] for r in rows] == [0, 1, 2, 4, 7]  # line 6 is blank; lines 4 and 7 are dropped
    first = rows[0]
    assert first == {"messages": [{"role": "user", "content": "What is 2 + 3?"}], "ground_truth": "5",
                     "verifier": ["gsm8k"], "source": TULU, "index": 0}
    assert rows[1]["verifier"] == ["ifeval"]  # Tülu `dataset` given as a list
    # trailing assistant turn (the reference answer) is not part of the prompt; system is kept
    assert [m["role"] for m in rows[2]["messages"]] == ["system", "user"]
    assert rows[4]["verifier"] == ["gsm8k"]  # our `verifier` column wins over Tülu's `dataset`


def test_drops_are_reported_per_source_with_lines():
    rows = load_sources([src(TULU, name="tulu")])
    rep = rows.report.sources[0]
    assert (rep.source, rep.available, rep.valid, rep.taken) == ("tulu", 7, 5, 5)
    assert rep.dropped == {"no ground_truth": 1, "no verifier": 1}
    assert rep.examples == {"no ground_truth": ["line 4"], "no verifier": ["line 7"]}
    text = mix_report(rows)
    assert "tulu: available 7, usable 5, taken 5" in text
    assert "dropped 1 (no verifier): line 7" in text


def test_strict_raises_naming_file_and_line():
    with pytest.raises(DataError, match=r"tulu_small\.jsonl line 4: no ground_truth"):
        load_sources([src(TULU)], strict=True)


def test_plain_prompt_rows_with_source_default_verifier():
    rows = load_sources([src(PROMPTS, verifier="gsm8k", name="p")])
    assert [r["messages"] for r in rows[:1]] == [[{"role": "user", "content": "What is 1 + 1?"}]]
    assert [r["verifier"] for r in rows] == [["gsm8k"], ["gsm8k"], ["math"]]  # row's own name wins
    assert rows.report.sources[0].dropped == {"no prompt": 1}
    assert {r["source"] for r in rows} == {"p"}


def test_bad_json_line_names_file_and_line():
    with pytest.raises(DataError) as e:
        load_sources([src(FIX / "bad_line.jsonl")])
    msg = str(e.value)
    assert "bad_line.jsonl line 3: not valid JSON (Expecting ','" in msg
    assert "\n" not in msg


def test_missing_path():
    with pytest.raises(DataError, match="data path not found: /nonexistent/x.jsonl"):
        load_sources([src("/nonexistent/x.jsonl")])


def test_unknown_format(tmp_path):
    p = tmp_path / "rows.txt"
    p.write_text("a,b\n")
    with pytest.raises(DataError, match="unknown data format"):
        load_sources([src(p)])


def test_non_object_line_and_bad_messages(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('[1, 2]\n')
    with pytest.raises(DataError, match="line 1: expected a JSON object, got list"):
        load_sources([src(p)])
    p.write_text('{"messages": [{"role": "robot", "content": "hi"}], "ground_truth": "1", "dataset": "x"}\n')
    with pytest.raises(DataError, match=r"x\.jsonl line 1: messages\[0\] must be"):
        load_sources([src(p)])


def _tulu_table():
    import pyarrow as pa

    return pa.table({
        "messages": [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(6)],
        "ground_truth": [str(2 * i) for i in range(5)] + [None],
        "dataset": ["gsm8k"] * 6,
    })


def test_parquet_written_by_pyarrow(tmp_path):
    import pyarrow.parquet as pq

    p = tmp_path / "train.parquet"
    pq.write_table(_tulu_table(), p)
    rows = load_sources([src(p)])
    assert len(rows) == 5 and rows[3]["ground_truth"] == "6" and rows[3]["index"] == 3
    assert rows.report.sources[0].examples == {"no ground_truth": ["row 5"]}


def test_corrupt_parquet(tmp_path):
    p = tmp_path / "broken.parquet"
    p.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="broken.parquet: not a readable parquet file"):
        load_sources([src(p)])


def test_saved_datasets_dir(tmp_path):
    import datasets

    ds = datasets.Dataset(_tulu_table())
    datasets.DatasetDict({"train": ds, "test": ds.select(range(2))}).save_to_disk(str(tmp_path / "dd"))
    ds.save_to_disk(str(tmp_path / "single"))
    assert len(load_sources([src(tmp_path / "dd")])) == 5
    assert len(load_sources([src(tmp_path / "dd", split="test")])) == 2
    assert len(load_sources([src(tmp_path / "single")])) == 5
    with pytest.raises(DataError, match="no split 'dev'"):
        load_sources([src(tmp_path / "dd", split="dev")])
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="neither a datasets.save_to_disk dataset"):
        load_sources([src(tmp_path / "plain")])


def test_ifeval_input_rows_become_rlvr_rows():
    path = Path("/work/shared/data/ifeval/input_data.jsonl")
    if not path.exists():
        pytest.skip(f"real IFEval data missing: {path}")
    rows = load_sources([src(path, verifier="ifeval")])
    assert len(rows) == 541
    gt = rows[0]["ground_truth"]
    assert gt["instruction_id_list"][0] == "punctuation:no_comma" and gt["kwargs"][1] == {"num_highlights": 3}


def test_config_fields_documented_and_amounts_exclusive():
    for model in (DataConfig, DataSourceConfig):
        for name, f in model.model_fields.items():
            assert f.description and "\n" not in f.description, f"{model.__name__}.{name}"
    cfg = DataConfig(train=[{"path": "a.jsonl", "fraction": 0.5}])
    assert cfg.seed == 0 and cfg.eval == [] and cfg.strict is False and cfg.cache_dir is None
    with pytest.raises(ValueError, match="at most one of fraction/count/upsample"):
        DataSourceConfig(path="a.jsonl", fraction=0.5, count=3)
    with pytest.raises(ValueError):
        DataConfig(train=[{"path": "a.jsonl", "fraction": 1.5}])


def test_gzipped_jsonl(tmp_path):
    import gzip

    p = tmp_path / "rows.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write(open(PROMPTS, encoding="utf-8").read())
    assert len(load_sources([src(p, verifier="gsm8k")])) == 3


def test_tulu_dataset_names_match_verifiers_case_insensitively(tmp_path):
    p = tmp_path / "math.jsonl"
    p.write_text('{"messages": [{"role": "user", "content": "1+1?"}], "ground_truth": "2", "dataset": "MATH"}\n')
    assert load_sources([src(p)])[0]["verifier"] == ["math"]  # allenai/RLVR-MATH rows say "MATH"
