"""The ``code`` verifier: run the completion's Python program against tests, in the sandbox.

Ground truth, any of (or its JSON string):
* a list of test statements, e.g. ``["assert add(1, 2) == 3", ...]`` (``{"asserts": [...]}`` too);
* HumanEval style ``{"test": "def check(candidate): ...", "entry_point": "add"}`` (one test; with
  ``"prompt"`` given, it is put in front of a program that does not define the entry point);
* stdin/stdout pairs ``{"inputs": ["1 2\\n", ...], "outputs": ["3\\n", ...]}``.

Score: fraction of tests passed (``code_all_or_nothing``: 1 only if all pass). The program is
the last ```python fenced block of the response (else the last fenced block, else the whole
response after any reasoning section). How results are kept unforgeable is described in
``_code_harness.py``.
"""
from __future__ import annotations

import ast
import functools
import json
import marshal
import re
import secrets
from pathlib import Path
from typing import Any

from rlvr.verifiers import sandbox

_HARNESS = (Path(__file__).with_name("_code_harness.py")).read_text()
_FENCE_RE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_PY_LANGS = {"python", "py", "python3", "py3"}


def extract_program(response: str) -> str:
    text = response.rsplit("</think>", 1)[1] if "</think>" in response else response
    blocks = [(lang.lower(), body) for lang, body in _FENCE_RE.findall(text)]
    python = [body for lang, body in blocks if lang in _PY_LANGS]
    if python:
        return python[-1]
    if blocks:
        return blocks[-1][1]
    return text


def parse_tests(ground_truth: Any) -> dict:
    """{"mode": "asserts", "tests": [...], "prompt": str|None} or {"mode": "io", "inputs", "outputs"}."""
    gt = ground_truth
    if isinstance(gt, str) and gt.strip()[:1] in ("[", "{"):
        gt = json.loads(gt)
    if isinstance(gt, str):
        return {"mode": "asserts", "tests": [gt], "prompt": None}
    if isinstance(gt, list):
        if not all(isinstance(t, str) for t in gt):
            raise ValueError("code ground truth list must hold test statements (strings)")
        return {"mode": "asserts", "tests": list(gt), "prompt": None}
    if not isinstance(gt, dict):
        raise ValueError(f"unsupported code ground truth type {type(gt).__name__}")
    if "input_output" in gt:  # APPS / TACO rows keep the pairs as a JSON string
        inner = gt["input_output"]
        return parse_tests(json.loads(inner) if isinstance(inner, str) else inner)
    if "test" in gt and "entry_point" in gt:
        return {"mode": "asserts", "tests": [f"{gt['test']}\n\ncheck({gt['entry_point']})\n"],
                "prompt": gt.get("prompt"), "entry_point": gt["entry_point"]}
    for key in ("asserts", "tests", "test_list"):
        if key in gt:
            return {"mode": "asserts", "tests": list(gt[key]), "prompt": gt.get("prompt")}
    if "inputs" in gt and "outputs" in gt:
        ins, outs = list(gt["inputs"]), list(gt["outputs"])
        if len(ins) != len(outs):
            raise ValueError(f"code ground truth has {len(ins)} inputs but {len(outs)} outputs")
        if gt.get("fn_name"):  # call-based pairs: arguments in, return value out
            fn = gt["fn_name"]
            return {"mode": "asserts", "prompt": None,
                    "tests": [f"assert {fn}(*{i!r}) == {o!r}" for i, o in zip(ins, outs)]}
        return {"mode": "io", "inputs": [_as_text(i) for i in ins], "outputs": [_as_text(o) for o in outs]}
    raise ValueError("code ground truth needs test statements, {'test', 'entry_point'} or {'inputs', 'outputs'}")


def _as_text(v: Any) -> str:
    if isinstance(v, list):
        return "\n".join(str(x) for x in v) + "\n"
    return str(v)


def outputs_match(got: str, want: str) -> bool:
    """Same lines ignoring trailing spaces and blank lines at the end; else same tokens, numbers to 1e-6."""
    g = [ln.rstrip() for ln in got.strip().splitlines()]
    w = [ln.rstrip() for ln in want.strip().splitlines()]
    if g == w:
        return True
    gt, wt = got.split(), want.split()
    if len(gt) != len(wt):
        return False
    for a, b in zip(gt, wt):
        if a == b:
            continue
        try:
            if abs(float(a) - float(b)) > 1e-6 * max(1.0, abs(float(b))):
                return False
        except ValueError:
            return False
    return True


class _EqRewriter(ast.NodeTransformer):
    """``a == b`` -> ``__rlvr_eq__(a, b)`` and ``a != b`` -> ``not __rlvr_eq__(a, b)`` in asserts."""

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        node.test = _CompareRewriter().visit(node.test)
        return node


class _CompareRewriter(ast.NodeTransformer):
    def visit_Compare(self, node: ast.Compare):
        self.generic_visit(node)
        if len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
            call = ast.Call(func=ast.Name(id="__rlvr_eq__", ctx=ast.Load()), args=[node.left, node.comparators[0]],
                            keywords=[])
            return ast.UnaryOp(op=ast.Not(), operand=call) if isinstance(node.ops[0], ast.NotEq) else call
        return node


@functools.lru_cache(maxsize=4096)
def harden_test(source: str) -> str:
    """The test with its assert equalities routed through the harness's strict comparison.

    Cached: in GRPO the same tests come with every sample of a group. A test that does not
    parse is left alone (it will fail in the sandbox and be reported as a broken test).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    tree = ast.fix_missing_locations(_EqRewriter().visit(tree))
    return ast.unparse(tree)


def run_tests(program: str, tests: dict, *, timeout_s: float = 6.0, memory_mb: int = 1024) -> dict:
    """Run in the sandbox; returns {"passed": [bool per test], "reason": str|None, ...}."""
    nonce = secrets.token_hex(16)
    if tests["mode"] == "io":
        spec = {"mode": "io", "inputs": tests["inputs"], "timeout_s": max(0.5, timeout_s - 0.5),
                "max_case_output": 1 << 20}
        n = len(tests["inputs"])
    else:
        if tests.get("prompt") and tests.get("entry_point") and \
                not re.search(rf"def\s+{re.escape(tests['entry_point'])}\s*\(", program):
            program = tests["prompt"] + program  # a completion that continues the prompt's signature
        spec = {"mode": "asserts", "program": program, "tests": [harden_test(t) for t in tests["tests"]]}
        n = len(tests["tests"])
    files = {"harness.py": _HARNESS, "spec.bin": marshal.dumps(spec, 4)}
    if tests["mode"] == "io":
        files["solution.py"] = program
    res = sandbox.run(["{python}", "-I", "-S", "/box/harness.py", "{fd0}"], files=files,
                      stdin=(nonce + "\n").encode(), timeout_s=timeout_s, memory_mb=memory_mb, channels=1)
    events = []
    for line in res.channels.get(0, b"").decode("utf-8", "replace").splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3 or parts[0] != nonce:
            continue  # not from the harness: ignore
        try:
            events.append((parts[1], int(parts[2]), parts[3] if len(parts) > 3 else ""))
        except ValueError:
            continue
    if not any(kind == "start" for kind, _, _ in events):
        # The harness never ran: a sandbox that failed to start is not the program's fault, and a 0 for it
        # would be a false reward. Raising makes it a verifier error, and the sample is left out.
        raise RuntimeError(f"the sandbox did not start the test harness (exit code {res.returncode}"
                           f"{', timed out' if res.timed_out else ''}): {res.stderr[-200:].decode('utf-8', 'replace')}")
    passed = [False] * n
    reason = None
    for kind, i, text in events:
        if kind == "pass" and 0 <= i < n:
            passed[i] = True
        elif kind == "output" and 0 <= i < n:
            code, out_hex, err_hex = (text.split(" ") + ["", ""])[:3]
            out = bytes.fromhex(out_hex).decode("utf-8", "replace")
            passed[i] = code == "0" and outputs_match(out, tests["outputs"][i])
            if not passed[i] and reason is None:
                err = bytes.fromhex(err_hex).decode("utf-8", "replace")[-200:]
                reason = f"case {i}: " + (f"exit code {code}: {err}" if code != "0" else "wrong output")
        elif kind in ("fail", "test_error") and reason is None:
            reason = f"test {i}: {text}"
        elif kind == "load_error":
            reason = f"program failed to load: {text}"
    if res.timed_out and reason is None:
        reason = f"timeout after {timeout_s:g}s"
    elif res.output_capped and reason is None:
        reason = "output limit exceeded"
    elif not events and reason is None:
        reason = f"harness reported nothing (exit code {res.returncode}): {res.stderr[-200:].decode('utf-8', 'replace')}"
    return {"passed": passed, "reason": reason, "timed_out": res.timed_out, "seconds": round(res.duration_s, 3)}


def verify_code(response: str, ground_truth: Any, *, prompt: str | None = None, config=None):
    tests = parse_tests(ground_truth)
    program = extract_program(response)
    timeout = 6.0
    memory = 1024
    all_or_nothing = False
    if config is not None:
        # Stay inside the pool's per-check deadline so the check ends with a result, not a kill.
        timeout = min(config.code_timeout_s, max(0.5, config.timeout_s * 0.8))
        memory = config.code_memory_mb
        all_or_nothing = config.code_all_or_nothing
    out = run_tests(program, tests, timeout_s=timeout, memory_mb=memory)
    passed = out["passed"]
    n = len(passed)
    frac = sum(passed) / n if n else 0.0
    score = (1.0 if n and all(passed) else 0.0) if all_or_nothing else frac
    details = {"passed": sum(passed), "total": n, "mode": tests["mode"], "seconds": out["seconds"]}
    if out["reason"]:
        details["reason"] = out["reason"]
    return score, details
