"""Turn one raw record into the normalised row the rest of rlvr uses.

Row: {"messages": [{"role", "content"}...], "ground_truth": Any, "verifier": [str],
      "source": str, "index": int, optional "env": str, "extra": {column: value}}
"""
from __future__ import annotations

from typing import Any

from .config import DataError

ROLES = ("system", "user", "assistant", "tool")


def normalize_record(rec: dict[str, Any], *, source: str, index: int, where: str,
                     default_verifier: str | None, default_env: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """(row, None) for a usable record, (None, reason) for one to drop.

    Malformed structure (messages that are not role/content dicts) raises DataError: it
    means a wrong file or column mapping, which dropping would hide.
    """
    if rec.get("_drop"):  # the column mapping already knows (e.g. no answer to extract)
        return None, rec["_drop"]
    messages = _messages(rec, where)
    if not messages:
        return None, "no prompt"
    ground_truth = _ground_truth(rec)
    if ground_truth is None:
        return None, "no ground_truth"
    verifier = _verifiers(rec, where) or ([default_verifier] if default_verifier else [])
    if not verifier:
        return None, "no verifier"
    row = {"messages": messages, "ground_truth": ground_truth, "verifier": verifier, "source": source, "index": index}
    env = rec.get("env") or default_env  # a multi-turn environment; none: the single-turn case
    if env is not None:
        if not isinstance(env, str):
            raise DataError(f"{where}: field 'env' must be an environment name (string), got {type(env).__name__}")
        row["env"] = env
    if rec.get("extra"):  # further columns for the verifier (a source's extra_keys)
        row["extra"] = dict(rec["extra"])
    return row, None


def names_own_verifier(rec: dict[str, Any], where: str) -> bool:
    """True when the record names its verifier(s) itself (`verifier` or Tulu 3's `dataset`)."""
    return bool(_verifiers(rec, where))


def _messages(rec: dict[str, Any], where: str) -> list[dict[str, str]]:
    msgs = rec.get("messages")
    if msgs is None:
        prompt = rec.get("prompt")
        if prompt is None:
            return []
        if not isinstance(prompt, str):
            raise DataError(f"{where}: field 'prompt' must be a string, got {type(prompt).__name__}")
        return [{"role": "user", "content": prompt}] if prompt.strip() else []
    if not isinstance(msgs, list):
        raise DataError(f"{where}: field 'messages' must be a list, got {type(msgs).__name__}")
    out = []
    for i, m in enumerate(msgs):
        if not (isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)):
            raise DataError(f"{where}: messages[{i}] must be {{'role': one of {'/'.join(ROLES)}, 'content': str}}")
        out.append({"role": m["role"], "content": m["content"]})
    # A trailing assistant turn is the reference answer (as in Tülu/open-instruct data):
    # the policy has to produce it, so it is not part of the prompt.
    while out and out[-1]["role"] == "assistant":
        out.pop()
    return out if any(m["role"] == "user" for m in out) else []


def _ground_truth(rec: dict[str, Any]) -> Any:
    gt = rec.get("ground_truth")
    if gt is None and "instruction_id_list" in rec and "kwargs" in rec:
        # IFEval's own input rows carry their checks as two columns; fold them into one.
        gt = {"instruction_id_list": rec["instruction_id_list"], "kwargs": rec["kwargs"]}
    if isinstance(gt, str) and not gt.strip():
        return None  # an empty answer can only ever score 0; treat it as missing
    return gt


def _verifiers(rec: dict[str, Any], where: str) -> list[str]:
    # `verifier` is ours; `dataset` is Tülu 3's name for the same thing (str or list).
    for key in ("verifier", "dataset"):
        v = rec.get(key)
        if v is None or v == "" or v == []:
            continue
        names = [v] if isinstance(v, str) else v
        if not (isinstance(names, list) and all(isinstance(n, str) and n for n in names)):
            raise DataError(f"{where}: field '{key}' must be a string or a list of strings")
        # Tülu 3 rows say "MATH"/"gsm8k"/"ifeval"; open-instruct matches them lower-cased.
        return [n.lower() for n in names] if key == "dataset" else list(names)
    return []
