"""Trusted test driver, run inside the sandbox by the system Python (stdlib only).

Usage: python -I -S harness.py REPORT_FD   with the run's nonce as the first line of stdin and
/box/spec.bin (marshal) describing the tests. It reports one line per event on REPORT_FD,
``<nonce> <event> <index> <text>``; the nonce changes on every run and the program under
test never sees it in its input, so printing look-alike lines is useless.

Mode "asserts": the program runs, then each test, in this process; a test passes only if its
code runs to the end without raising. Equality in the tests' asserts is checked by ``_strict_eq``
(the tests are rewritten outside the sandbox), so a returned object cannot claim to equal
anything. Before the program runs, the harness keeps
its own references to everything it uses (so patching os, sys, builtins or this module has no
effect on it), removes the tracing hooks (a trace function can jump over a failing assert) and
blocks ctypes (which could reinstall them). Exiting early (sys.exit, os._exit, a crash) simply
leaves the remaining tests unreported, i.e. failed.

Mode "io": each case runs the program as a separate process with the case on stdin; its stdout
is reported (hex) for comparison outside the sandbox. Those processes never get the report fd.

Only built-in modules are imported on the asserts path (no json, re or threading): each import
would cost milliseconds on every one of thousands of runs.
"""
import marshal
import os
import sys


def _read_nonce():
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(0, 64)
        if not chunk:
            break
        data += chunk
    # The program must not be able to read the nonce again: stdin becomes /dev/null.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return data.strip().decode()


def _make_reporter(fd, nonce):
    write = os.write

    def report(event, index=-1, text=""):
        text = text.replace("\n", " ").replace("\r", " ")
        write(fd, ("%s %s %d %s\n" % (nonce, event, index, text)).encode("utf-8", "replace"))
    return report


_NUMBERS = (int, float, complex, bool)


def _strict_eq(a, b):
    """``a == b`` without letting a program-defined ``__eq__`` decide.

    The test rewriter turns ``assert x == y`` into ``assert __rlvr_eq__(x, y)``: an object whose
    ``__eq__`` always answers True (the classic "always equal" hack) no longer passes. Built-in
    values compare as usual (numbers across int/float/bool, containers element by element);
    values of other types must be of the same type, and then their own ``==`` decides.
    """
    ta, tb = type(a), type(b)
    if ta in _NUMBERS and tb in _NUMBERS:
        return a == b
    if ta is not tb:
        return False
    if ta is list or ta is tuple:
        return len(a) == len(b) and all(_strict_eq(x, y) for x, y in zip(a, b))
    if ta is dict:
        return len(a) == len(b) and all(k in b and _strict_eq(v, b[k]) for k, v in a.items())
    return a == b


def _run_asserts(spec, report):
    import builtins
    _exec, _compile, _BaseException = builtins.exec, builtins.compile, BaseException
    _exit, _type, _str = os._exit, type, str
    tests = []
    for i, src in enumerate(spec["tests"]):
        try:
            tests.append(_compile(src, "test_%d.py" % i, "exec", dont_inherit=True, optimize=0))
        except _BaseException as e:  # a broken test counts as failed, it says nothing about the program
            tests.append(None)
            report("test_error", i, "%s: %s" % (_type(e).__name__, e))
    for mod in (sys, sys.modules.get("threading")):
        for name in ("settrace", "setprofile"):
            if mod is not None and hasattr(mod, name):
                delattr(mod, name)
    sys.modules["ctypes"] = None
    sys.modules["_ctypes"] = None
    namespace = {"__name__": "solution", "__builtins__": builtins}
    try:
        code = _compile(spec["program"], "solution.py", "exec", dont_inherit=True, optimize=0)
        _exec(code, namespace)
    except _BaseException as e:  # SyntaxError, SystemExit, anything: nothing passes
        report("load_error", -1, "%s: %s" % (_type(e).__name__, _str(e)[:300]))
        _exit(0)
    report("loaded")
    # Tests run in their own globals (a copy): the program's functions, whose globals are the
    # program's namespace, cannot swap the comparison helper the tests use.
    test_namespace = dict(namespace)
    for i, code in enumerate(tests):
        if code is None:
            continue
        test_namespace["__rlvr_eq__"] = _strict_eq
        try:
            _exec(code, test_namespace)
        except _BaseException as e:
            report("fail", i, "%s: %s" % (_type(e).__name__, _str(e)[:200]))
            continue
        report("pass", i)
    report("done")
    _exit(0)  # also ends any threads the program left running


def _run_io(spec, report):
    import subprocess
    import time
    deadline = time.monotonic() + spec["timeout_s"]
    cap = spec["max_case_output"]
    for i, case in enumerate(spec["inputs"]):
        left = deadline - time.monotonic()
        if left <= 0.05:
            report("fail", i, "no time left")
            continue
        try:
            proc = subprocess.run([sys.executable, "-I", "-S", "/box/solution.py"], input=case.encode(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=left, close_fds=True)
        except subprocess.TimeoutExpired:
            report("fail", i, "timeout")
            continue
        report("output", i, "%d %s %s" % (proc.returncode, proc.stdout[:cap].hex(), proc.stderr[-300:].hex()))
    report("done")


def main():
    fd = int(sys.argv[1])
    os.set_inheritable(fd, False)  # processes started by the program under test do not get it
    nonce = _read_nonce()
    report = _make_reporter(fd, nonce)
    del nonce
    report("start")  # before the program loads: without it, the sandbox itself failed (not the program)
    with open("/box/spec.bin", "rb") as f:
        spec = marshal.loads(f.read())
    if spec["mode"] == "io":
        _run_io(spec, report)
    else:
        _run_asserts(spec, report)


main()
