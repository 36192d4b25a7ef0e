"""`rlvr eval --judges`: the toy policy's completions scored by a rule verifier and the toy reward model
together (the reward model in the command's own process, no Ray)."""
import json
import subprocess
import sys

import pytest

from rlvr.toy_rm import label_of

pytestmark = pytest.mark.integration


def test_eval_with_a_reward_model_beside_the_rule_verifier(toy_dir, toy_rm_dir, tmp_path):
    rows = [json.loads(line) for line in open(toy_dir / "eval.jsonl")][:8]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"messages": r["messages"], "ground_truth": r["ground_truth"],
                                                             "verifier": ["math", "parity"]}) + "\n" for r in rows))
    # affine x1000 then clip: the parity part is exactly 1 for an even last digit, 0 otherwise (|raw| > 2)
    (tmp_path / "judges.yaml").write_text(f"reward_models:\n  parity: {{path: {toy_rm_dir}, normalize: "
                                          "{kind: affine, scale: 1000, clip: [0, 1]}}\n")
    out = tmp_path / "res.json"
    proc = subprocess.run([sys.executable, "-m", "rlvr.cli", "eval", "--model", str(toy_dir / "model"), "--data",
                           str(tmp_path / "rows.jsonl"), "--max-tokens", "6", "--judges", str(tmp_path / "judges.yaml"),
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    samples = json.loads(out.read_text())["samples"]
    assert len(samples) == 8
    for s in samples:
        math_part = 2 * s["score"] - label_of(s["completion"])  # score = (math + parity) / 2
        assert math_part in (0.0, 1.0), s
        assert math_part == float(s["completion"].strip() == s["ground_truth"]), s
    assert "reward_model/parity/samples 8" in proc.stderr
    # a row naming a verifier neither registered nor in the file fails before any engine starts
    bad = subprocess.run([sys.executable, "-m", "rlvr.cli", "eval", "--model", str(toy_dir / "model"), "--data",
                          str(tmp_path / "rows.jsonl")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown verifier 'parity'" in bad.stderr
