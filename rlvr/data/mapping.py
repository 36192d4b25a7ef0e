"""Column mapping: build an RLVR record (messages, ground_truth, verifier, extra) from any table's columns.

    - hf: openai/gsm8k
      config: main
      prompt_template: "{question}\nAnswer with a number."
      answer_key: answer
      answer_extractor: gsm8k
      verifier: gsm8k

A mapping mistake (a column that is not there, a template naming one) is a DataError naming the
source, the field and the row: every row would fail the same way, so dropping would hide it.
"""
from __future__ import annotations

import re
import string
from typing import Any

from .config import DataError, DataSourceConfig

_GSM8K = re.compile(r"####\s*(-?[\d,]*\d(?:\.\d+)?)\s*$")


def map_record(rec: dict[str, Any], src: DataSourceConfig, where: str) -> dict[str, Any]:
    """The record in the form normalize_record reads; unmapped parts keep their usual columns."""
    out: dict[str, Any] = {}
    if src.prompt_template is not None:
        out["prompt"] = _fill(src.prompt_template, rec, src, where)
    else:
        key = src.prompt_key
        if key is None:
            key = "messages" if "messages" in rec else "prompt"
        value = _column(rec, key, "prompt_key", src, where, required=src.prompt_key is not None)
        if isinstance(value, str):
            out["prompt"] = value.strip()
        elif value is not None:
            out["messages"] = value  # normalize_record checks the role/content structure
    if src.system_prompt is not None:
        msgs = out.pop("messages", None) or ([{"role": "user", "content": out.pop("prompt")}] if out.get("prompt") else [])
        if msgs and not (isinstance(msgs, list) and msgs and isinstance(msgs[0], dict) and msgs[0].get("role") == "system"):
            msgs = [{"role": "system", "content": src.system_prompt}, *msgs]
        out["messages"] = msgs
    answer = _column(rec, src.answer_key or "ground_truth", "answer_key", src, where, required=src.answer_key is not None)
    if answer is None and src.answer_key is None:
        answer = rec.get("ground_truth") if "ground_truth" in rec else None
        if answer is None and "instruction_id_list" in rec:  # IFEval's own columns; normalize_record folds them
            out.update(instruction_id_list=rec["instruction_id_list"], kwargs=rec.get("kwargs"))
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)  # a csv/parquet number column: verifiers compare answers as text, like converted rows
    if answer is not None and src.answer_extractor is not None:
        answer = extract_answer(answer, src.answer_extractor)
        if answer is None:
            out["_drop"] = "answer not extracted"
    out["ground_truth"] = answer
    if src.verifier_key is not None:
        # A `dataset` column is Tülu 3's: its names ("MATH") are matched lower-cased, as open-instruct does.
        key = "dataset" if src.verifier_key == "dataset" else "verifier"
        out[key] = _column(rec, src.verifier_key, "verifier_key", src, where, required=True)
    else:
        for k in ("verifier", "dataset"):
            if k in rec:
                out[k] = rec[k]
    if src.extra_keys:
        out["extra"] = {k: _column(rec, k, "extra_keys", src, where, required=True) for k in src.extra_keys}
    if "env" in rec:
        out["env"] = rec["env"]
    return out


def extract_answer(answer: Any, how: str) -> str | None:
    """The final answer inside an answer text: gsm8k '#### N' (commas dropped), the last \\boxed{...}, or a regex's group."""
    if not isinstance(answer, str):
        answer = str(answer)
    if how == "gsm8k":
        m = _GSM8K.search(answer.strip())
        return m.group(1).replace(",", "") if m else None
    if how == "boxed":
        return last_boxed(answer)
    m = None
    for m in re.finditer(how, answer):
        pass  # the last match: worked solutions mention intermediate values first
    return m.group(1).strip() if m else None


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), braces balanced; None when there is none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None


def check_template(src: DataSourceConfig, columns: list[str], where: str) -> None:
    """Placeholders of prompt_template that name no column (checked on the first row, before any work)."""
    if src.prompt_template is None:
        return
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(src.prompt_template) if f is not None]
    except ValueError as e:
        raise DataError(f"data source {src.label}: prompt_template: {e} (write literal braces as {{{{ and }}}})") from None
    for name in names:
        col = re.split(r"[.\[]", name, maxsplit=1)[0]
        if col not in columns:
            raise DataError(f"data source {src.label}: prompt_template names column {{{name}}}, which {where} does not "
                            f"have (columns: {', '.join(columns)})")


def _fill(template: str, rec: dict[str, Any], src: DataSourceConfig, where: str) -> str:
    check_template(src, list(rec), where)
    try:
        return template.format_map(rec).strip()
    except (KeyError, IndexError, AttributeError, ValueError) as e:
        raise DataError(f"data source {src.label}: prompt_template cannot be filled from {where} ({type(e).__name__}: {e})") from None


def _column(rec: dict[str, Any], key: str, field: str, src: DataSourceConfig, where: str, *, required: bool) -> Any:
    if key not in rec:
        if not required:
            return None
        raise DataError(f"data source {src.label}: {field}: no column {key!r} in {where} (columns: {', '.join(rec)})")
    return rec[key]
