"""Import user plugins named in a recipe: a module (``my_project.rewards``), a ``.py`` file, either
with ``:function`` (a plain reward function, no decorator). Shared by verifier, environment and agent plugins.

A module is imported from ``sys.path`` plus the directory rlvr was started in (so a project's own
package works without PYTHONPATH, as ``python -m`` would). A file is imported once per absolute
path under a private module name; relative paths in a recipe are resolved against the recipe file
(like ``base:``) when it is read, elsewhere (``--plugin``) against the current directory.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

# private module name -> the file it was imported from (worker processes re-import by path)
FILE_MODULES: dict[str, str] = {}


def split_spec(spec: str) -> tuple[str, str | None]:
    """("a/b.py", "fn") for "a/b.py:fn", ("pkg.mod", None) for "pkg.mod"."""
    target, sep, attr = spec.rpartition(":")
    if sep and attr.isidentifier() and target:
        return target, attr
    return spec, None


def is_file(target: str) -> bool:
    return target.endswith(".py") or os.sep in target


def resolve_spec(spec: str, base_dir: str | os.PathLike) -> str:
    """A file spec made absolute against base_dir (the recipe's folder); module names unchanged."""
    target, attr = split_spec(spec)
    if not is_file(target) or os.path.isabs(target):
        return spec
    full = str((Path(base_dir) / target).resolve())
    return f"{full}:{attr}" if attr else full


def ensure_cwd_on_path() -> None:
    """The start directory is importable, as with ``python -m``; appended so it never shadows installed packages."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def import_target(target: str) -> types.ModuleType:
    """The module for a dotted name or a .py path; raises the import's own exception."""
    if not is_file(target):
        ensure_cwd_on_path()
        return importlib.import_module(target)
    full = os.path.abspath(target)
    if not os.path.isfile(full):
        raise FileNotFoundError(f"no such file {full}")
    stem = os.path.splitext(os.path.basename(full))[0]
    mod_name = f"rlvr_plugin_{stem}_{hashlib.sha1(full.encode()).hexdigest()[:8]}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, full)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    # The file's own folder is importable too: a reward file may import its helper module beside it.
    folder = os.path.dirname(full)
    if folder not in sys.path:
        sys.path.append(folder)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(mod_name, None)
        raise
    FILE_MODULES[mod_name] = full
    return module
