"""Every metric key the code logs is in docs/metrics.md (the glossary must not fall behind the code)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PREFIXES = ("reward", "verifier", "pool", "judge", "reward_model", "loss", "policy", "critic", "value", "drift",
            "learner", "time", "throughput", "rollout", "inflight", "staleness", "env", "agent", "fault", "eval",
            "dynamic_sampling", "collapse", "response_length", "data", "sync")
# A string literal (plain or f-string) that starts like a metric key.
KEY = re.compile(r"""f?["']((?:%s)/[A-Za-z0-9_@{}./]*)["']""" % "|".join(PREFIXES))
SKIP = {"rlvr/plot.py"}  # reads keys, logs none
NOT_KEYS = {"verifier/dataset"}  # message text ("the rows' verifier/dataset column")


def logged_keys() -> dict[str, str]:
    out = {}
    for path in sorted((ROOT / "rlvr").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in SKIP or "/bench" in rel or rel.endswith("bench.py"):
            continue  # bench tables print their own columns
        for key in KEY.findall(path.read_text()):
            if key in NOT_KEYS:
                continue
            if "." in key.split("/")[-1] and "{" not in key:
                continue  # a file name such as "eval/x.jsonl", not a key
            out.setdefault(key, rel)
    return out


def test_every_logged_metric_key_is_documented():
    doc = (ROOT / "docs" / "metrics.md").read_text()
    keys = logged_keys()
    assert "dynamic_sampling/informative_fraction" in keys and "reward/mean" in keys  # the scan finds keys at all
    missing = []
    for key, where in keys.items():
        stem = key.split("{")[0]  # f"verifier/{name}/calls": the fixed part must be there
        if stem.rstrip("/") + ("/" if "{" in key else "") not in doc and key not in doc:
            missing.append(f"{key} ({where})")
    assert not missing, "metric keys not in docs/metrics.md: " + ", ".join(missing)
