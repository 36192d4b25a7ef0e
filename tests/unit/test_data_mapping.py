"""Column mapping: any table's columns become RLVR rows (hub, parquet, csv, json, saved datasets)."""
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlvr.data import DataError, DataSourceConfig, convert_gsm8k, load_sources
from rlvr.data.mapping import extract_answer

SLICE = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "gsm8k_slice.jsonl"  # first 20 rows of GSM8K test


def _gsm8k_records():
    return [json.loads(line) for line in SLICE.read_text().splitlines()]


def _essential(rows):
    return [{k: r[k] for k in ("messages", "ground_truth", "verifier")} for r in rows]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json", "saved"])
def test_gsm8k_columns_equal_the_converted_rows(tmp_path, fmt):
    recs = _gsm8k_records()
    convert_gsm8k(SLICE, tmp_path / "converted.jsonl")
    want = _essential(load_sources([DataSourceConfig(path=str(tmp_path / "converted.jsonl"))]))
    if fmt == "parquet":
        path = tmp_path / "gsm8k.parquet"
        pq.write_table(pa.Table.from_pylist(recs), path)
    elif fmt == "csv":
        import csv
        path = tmp_path / "gsm8k.csv"
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["question", "answer"])
            w.writeheader()
            w.writerows(recs)
    elif fmt == "json":
        path = tmp_path / "gsm8k.json"
        path.write_text(json.dumps(recs))
    else:
        import datasets
        path = tmp_path / "saved"
        datasets.DatasetDict({"train": datasets.Dataset.from_list(recs)}).save_to_disk(str(path))
    src = DataSourceConfig(path=str(path), prompt_template="{question}", answer_key="answer",
                           answer_extractor="gsm8k", verifier="gsm8k")
    got = load_sources([src])
    assert len(got) == 20
    assert _essential(got) == want


def test_hub_source_passes_config_split_revision(monkeypatch):
    import datasets

    seen = {}

    def fake_load(name, config=None, split=None, revision=None):
        seen.update(name=name, config=config, split=split, revision=revision)
        return datasets.Dataset.from_list(_gsm8k_records()[:3])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    src = DataSourceConfig(hf="openai/gsm8k", config="main", split="test", revision="abc123",
                           prompt_key="question", answer_key="answer", answer_extractor="gsm8k", verifier="gsm8k")
    assert src.path == "hf:openai/gsm8k" and src.label == "hf:openai/gsm8k"
    rows = load_sources([src])
    assert seen == {"name": "openai/gsm8k", "config": "main", "split": "test", "revision": "abc123"}
    assert rows[0]["ground_truth"] == "18" and rows[0]["messages"][0]["content"].startswith("Janet")
    # A dumped config.yaml holds both spellings; it must load again (resume).
    assert DataSourceConfig.model_validate(src.model_dump()).path == "hf:openai/gsm8k"


def _csv(tmp_path, text):
    p = tmp_path / "t.csv"
    p.write_text(text)
    return str(p)


def test_template_system_prompt_verifier_key_and_extras(tmp_path):
    path = _csv(tmp_path, "a,b,sum,kind,unit\n2,3,5,math,apples\n4,4,8,gsm8k,pears\n")
    rows = load_sources([DataSourceConfig(path=path, prompt_template="What is {a} + {b}?", system_prompt="Be brief.",
                                          answer_key="sum", verifier_key="kind", extra_keys=["unit"])])
    assert rows[0]["messages"] == [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "What is 2 + 3?"}]
    assert rows[0]["ground_truth"] == "5" and rows[0]["verifier"] == ["math"] and rows[0]["extra"] == {"unit": "apples"}
    assert rows[1]["verifier"] == ["gsm8k"]


def test_chat_messages_column_like_tulu3(tmp_path):
    recs = [{"messages": [{"role": "user", "content": "Say hi in 3 words."}], "ground_truth": "x", "dataset": "IFEval"}]
    p = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(recs), p)
    rows = load_sources([DataSourceConfig(path=str(p), prompt_key="messages", answer_key="ground_truth",
                                          verifier_key="dataset", system_prompt="S")])
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user"] and rows[0]["verifier"] == ["ifeval"]


@pytest.mark.parametrize("kw, match", [
    ({"prompt_key": "q"}, r"data source .*t\.csv: prompt_key: no column 'q' in .*row 0 \(columns: question, answer\)"),
    ({"prompt_template": "{question} in {units}"}, r"prompt_template names column \{units\}, which .*row 0 does not have"),
    ({"prompt_key": "question", "answer_key": "gold"}, r"answer_key: no column 'gold' in .*row 0"),
    ({"prompt_key": "question", "extra_keys": ["nope"]}, r"extra_keys: no column 'nope'"),
])
def test_bad_mapping_is_one_line_naming_source_field_and_row(tmp_path, kw, match):
    path = _csv(tmp_path, "question,answer\nWhat is 1+1?,#### 2\n")
    kw.setdefault("answer_key", "answer")
    with pytest.raises(DataError, match=match) as e:
        load_sources([DataSourceConfig(path=path, verifier="gsm8k", **kw)])
    assert "\n" not in str(e.value)


def test_unextractable_answer_is_dropped_and_reported(tmp_path):
    path = _csv(tmp_path, "question,answer\nq1,#### 2\nq2,no final answer\n")
    rows = load_sources([DataSourceConfig(path=path, prompt_key="question", answer_key="answer",
                                          answer_extractor="gsm8k", verifier="gsm8k")])
    assert len(rows) == 1 and rows.report.sources[0].dropped == {"answer not extracted": 1}
    with pytest.raises(DataError, match="answer not extracted"):
        load_sources([DataSourceConfig(path=path, prompt_key="question", answer_key="answer",
                                       answer_extractor="gsm8k", verifier="gsm8k")], strict=True)


def test_extractors():
    assert extract_answer("so 3,000 ... #### 1,450", "gsm8k") == "1450"
    assert extract_answer(r"first \boxed{1} then \boxed{\frac{1}{2}}", "boxed") == r"\frac{1}{2}"
    assert extract_answer("Answer: 4. Final Answer: 7", r"Answer:\s*(\d+)") == "7"
    assert extract_answer("nothing", "boxed") is None
    with pytest.raises(ValueError, match="exactly one group"):
        DataSourceConfig(path="x.csv", answer_extractor=r"\d+")


def test_source_verifier_no_row_uses_is_an_error(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"prompt": "q", "ground_truth": "1", "dataset": "gsm8k"}) + "\n")
    with pytest.raises(DataError, match=r"verifier: 'nonsense' is used by no row: every row names its own \(gsm8k"):
        load_sources([DataSourceConfig(path=str(p), verifier="nonsense")])
    # The same name as the rows' own is what they use: fine (the toy recipe says verifier: math on math rows).
    assert load_sources([DataSourceConfig(path=str(p), verifier="gsm8k")])[0]["verifier"] == ["gsm8k"]
    p.write_text(json.dumps({"prompt": "q", "ground_truth": "1", "dataset": "gsm8k"}) + "\n"
                 + json.dumps({"prompt": "q", "ground_truth": "1"}) + "\n")
    assert [r["verifier"] for r in load_sources([DataSourceConfig(path=str(p), verifier="math")])] == [["gsm8k"], ["math"]]


def test_mixer_amounts_and_order_work_on_mapped_sources(tmp_path):
    path = _csv(tmp_path, "q,a\n" + "".join(f"q{i},{i}\n" for i in range(10)))
    mk = lambda **kw: DataSourceConfig(path=path, prompt_key="q", answer_key="a", verifier="math", **kw)  # noqa: E731
    assert len(load_sources([mk(count=25)], seed=1)) == 25
    assert len(load_sources([mk(fraction=0.5)], seed=1)) == 5
    a = load_sources([mk(fraction=0.5)], seed=1)
    assert a == load_sources([mk(fraction=0.5)], seed=1)  # seeded: same rows, same order, as for jsonl sources


def test_source_verifier_among_the_rows_own_is_what_they_use(tmp_path):
    # Rows naming several verifiers, the source's among them (a judge beside the rule check): they agree with it.
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"prompt": "q", "ground_truth": "1", "verifier": ["math", "style"]}) + "\n")
    assert load_sources([DataSourceConfig(path=str(p), verifier="math")])[0]["verifier"] == ["math", "style"]
    with pytest.raises(DataError, match=r"verifier: 'gsm8k' is used by no row"):
        load_sources([DataSourceConfig(path=str(p), verifier="gsm8k")])
