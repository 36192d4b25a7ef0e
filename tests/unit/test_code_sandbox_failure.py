"""A sandbox that fails to start is a verifier error, never a 0 reward for the program (the learner would
train on a false reward)."""
from types import SimpleNamespace

import pytest

from rlvr.verifiers import code_exec


def test_a_sandbox_that_never_started_the_harness_raises(monkeypatch):
    dead = SimpleNamespace(channels={}, returncode=1, stderr=b"bwrap: Creating new namespace failed", timed_out=False,
                           output_capped=False, duration_s=0.01)
    monkeypatch.setattr(code_exec.sandbox, "run", lambda *a, **k: dead)
    with pytest.raises(RuntimeError, match="sandbox did not start"):
        code_exec.verify_code("def f():\n    return 1\n", {"test": "assert f() == 1", "entry_point": "f"})
