"""The package's shape, checked from the source: rooms import downwards only, and no module is long.

Floors, top to bottom (a module may import its own room and any room on a lower floor):
cli -> loop -> {engines, cluster} -> config.py -> {environments, learners} -> {verifiers, weights, data}
-> the small shared files at the root (the ground floor, whose files may use one another). The tools toy
builds on environments, so it sits with the loop.
"""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "rlvr"
FLOORS = [
    {"cli"},
    {"loop", "toy_tools"},
    {"engines", "cluster"},
    {"config"},
    {"environments", "learners"},
    {"verifiers", "weights", "data"},
    {"errors", "metrics", "checkpoint", "evaluation", "models", "plot", "replay", "toy_model", "toy_rm", "hub", "plugins"},
]
GROUND = len(FLOORS) - 1  # the small shared files may use one another
MAX_LINES = 500


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _floor(room: str) -> int | None:
    return next((i for i, rooms in enumerate(FLOORS) if room in rooms), None)


def _modules():
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), p


def _imports(module: str, path: Path):
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("rlvr"):
                yield node.lineno, target
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("rlvr"):
                    yield node.lineno, a.name


def test_every_room_is_on_a_floor():
    rooms = {_room(m) for m, _ in _modules()} - {""}
    assert sorted(r for r in rooms if _floor(r) is None) == []


def test_imports_point_down():
    up = []
    for module, path in _modules():
        here = _floor(_room(module))
        if here is None:
            continue
        for line, target in _imports(module, path):
            room = _room(target)
            if room == _room(module) or not room:
                continue
            there = _floor(room)
            if there is None or there < here or (there == here and here != GROUND):
                up.append(f"{path.relative_to(PKG.parent)}:{line} imports {target}")
    assert up == []


@pytest.mark.parametrize("module,path", list(_modules()), ids=lambda x: x if isinstance(x, str) else "")
def test_module_is_short(module, path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{module} has {n} lines (limit {MAX_LINES}): split it by what its parts do"
