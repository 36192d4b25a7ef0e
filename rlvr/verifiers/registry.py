"""The verifier registry: built-ins, the ``@register`` decorator, and plugin discovery.

Built-ins are listed here by module path and imported on first use, so that importing
``rlvr.verifiers`` (which the config layer does) stays cheap: math-verify pulls in sympy,
which alone takes about a second.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import types
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from rlvr.verifiers.base import PluginError

ENTRY_POINT_GROUP = "rlvr.verifiers"


@dataclass
class Entry:
    name: str
    description: str
    source: str
    fn: Callable[..., Any] | None = None   # None until a lazy built-in is imported
    target: str | None = None              # "module:attr" of a lazy built-in
    is_async: bool = False
    wants_config: bool = False
    wants_extra: bool = False                # takes **kwargs: gets the row's extra columns
    plain: Callable[..., Any] | None = None  # the user's function behind a `file.py:function` plugin

    def resolve(self) -> "Entry":
        if self.fn is None:
            mod_name, attr = self.target.split(":")
            self._set_fn(getattr(importlib.import_module(mod_name), attr))
        return self

    def _set_fn(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}
        self.wants_config = "config" in params
        self.wants_extra = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


_BUILTINS = {
    "math": ("rlvr.verifiers.math_answer:verify_math",
             "final-answer equivalence for competition math (boxed / 'The answer is'), via math-verify"),
    "gsm8k": ("rlvr.verifiers.gsm8k:verify_gsm8k",
              "last number (or after ####, or boxed) equals the integer ground truth"),
    "ifeval": ("rlvr.verifiers.ifeval:verify_ifeval",
               "fraction of IFEval / Tulu 3 instruction constraints followed (Google reference semantics)"),
    "code": ("rlvr.verifiers.code_exec:verify_code",
             "fraction of tests (asserts, HumanEval check, or stdin/stdout pairs) passed in a bwrap sandbox"),
    "string_match": ("rlvr.verifiers.string_match:verify_string_match",
                     "normalised exact match of the answer against one or more accepted strings"),
    "f1": ("rlvr.verifiers.f1:verify_f1", "SQuAD-style token F1 of the answer against the best reference"),
    "format": ("rlvr.verifiers.format_tags:verify_format",
               "required tags such as <think>...</think><answer>...</answer> present exactly once, non-empty"),
    "max_length": ("rlvr.verifiers.max_length:verify_max_length",
                   "1 if the response is within a length budget in words or chars (not tokens), with optional soft decay"),
}

_REGISTRY: dict[str, Entry] = {
    name: Entry(name, desc, target.split(":")[0], target=target) for name, (target, desc) in _BUILTINS.items()
}
# Set while an entry point is loading, so that its decorator registrations name the dist.
_LOADING_SOURCE: str | None = None
_ENTRY_POINTS_LOADED = False


def register(name: str, description: str = "") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn(response, ground_truth, *, prompt=None)`` under ``name``.

    The function may be sync or ``async def`` and may return a float, a bool, a
    ``(float, dict)`` pair or a ``VerifyResult``. If it takes a ``config`` keyword argument,
    it receives the pool's ``VerifierConfig``.
    """
    if not isinstance(name, str) or not name:
        raise PluginError(f"verifier name must be a non-empty string, got {name!r}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        source = _LOADING_SOURCE or getattr(fn, "__module__", None) or "?"
        desc = description or _first_line(fn.__doc__)
        old = _REGISTRY.get(name)
        if old is not None:
            # Re-running the same definition (a module imported twice under one name) is harmless;
            # two different definitions of one name are a real conflict.
            same = old.fn is not None and _qualname(old.fn) == _qualname(fn) and old.source == source
            if not same:
                raise PluginError(f"verifier '{name}' registered twice: by {old.source} and by {source}")
        entry = Entry(name, desc, source)
        entry._set_fn(fn)
        _REGISTRY[name] = entry
        return fn

    return deco


def unregister(name: str) -> None:
    """Remove a plugin registration (tests use this); built-ins come back as they were."""
    _REGISTRY.pop(name, None)
    if name in _BUILTINS:
        target, desc = _BUILTINS[name]
        _REGISTRY[name] = Entry(name, desc, target.split(":")[0], target=target)


def get_entry(name: str) -> Entry:
    try:
        entry = _REGISTRY[name]
    except (KeyError, TypeError):
        raise PluginError(unknown_message([name])) from None
    return entry.resolve()


def get_verifier(name: str) -> Callable[..., Any]:
    """The callable registered under ``name``; PluginError if there is none."""
    return get_entry(name).fn


def list_verifiers() -> list[tuple[str, str, str]]:
    """(name, description, source) of every registered verifier, sorted by name."""
    return [(e.name, e.description, e.source) for e in sorted(_REGISTRY.values(), key=lambda e: e.name)]


def main_module_verifiers() -> list[str]:
    """Names registered from ``__main__``: worker processes cannot import them."""
    return sorted(e.name for e in _REGISTRY.values()
                  if e.fn is not None and getattr(e.fn, "__module__", None) in ("__main__", "__mp_main__"))


def plugin_modules() -> list[str]:
    """Modules that registered verifiers in this process (not built-ins, not entry points).

    The pool re-imports them in its workers, so a plugin imported by the user's own code
    works there without being listed in ``verifiers.plugins``.
    """
    from rlvr.plugins import FILE_MODULES

    builtin_mods = {t.split(":")[0] for t, _ in _BUILTINS.values()}
    mods = {e.fn.__module__ for e in _REGISTRY.values()
            if e.fn is not None and e.fn.__module__ not in builtin_mods
            and e.fn.__module__ not in ("__main__", "__mp_main__") and e.source == e.fn.__module__}
    # A file's private module name imports nowhere else: hand on its path instead.
    return sorted({FILE_MODULES.get(m, m) for m in mods} | set(_LOADED_SPECS))


def check_verifier_names(names: Iterable[str | list[str] | tuple[str, ...]], also_known: Iterable[str] = (),
                         field: str | None = None) -> None:
    """Raise PluginError naming every unknown verifier (called before any cluster starts).

    ``also_known``: further valid names (the recipe's judges and reward models); ``field``: where the
    names came from, put first in the message."""
    extra = set(also_known)
    unknown: list[str] = []
    for n in names:
        for name in ([n] if isinstance(n, str) else list(n)):
            if name not in _REGISTRY and name not in extra and name not in unknown:
                unknown.append(name)
    if unknown:
        raise PluginError(unknown_message(unknown, extra, field))


def unknown_message(unknown: list[str], also_known: Iterable[str] = (), field: str | None = None) -> str:
    """One line: which names are unknown, where they came from, and every name that would work."""
    known = ", ".join(sorted(set(_REGISTRY) | set(also_known)))
    listed = ", ".join(f"'{u}'" for u in unknown)
    where = f" in {field}" if field else ""
    return (f"unknown verifier{'s' if len(unknown) > 1 else ''} {listed}{where} (known: {known}; plugins load from "
            "verifiers.plugins / --plugin (module, file.py or file.py:function) and the 'rlvr.verifiers' entry points)")


# specs loaded through load_plugins in this process; worker processes load the same list
_LOADED_SPECS: list[str] = []


def load_plugins(modules: Iterable[str] = (), entry_points: bool = True) -> None:
    """Import user plugins, then every ``rlvr.verifiers`` entry point (once per process).

    Each item is a module (``my_project.rewards``, importable from sys.path or the start
    directory) or a ``.py`` file, whose ``@register`` decorators run on import; with
    ``:function`` appended, that plain function is registered under its own name, called as
    ``function(completion, ground_truth, **row)`` (row: ``prompt`` and the source's extra_keys).
    """
    global _LOADING_SOURCE
    from rlvr.plugins import import_target, split_spec

    for spec in modules:
        target, attr = split_spec(spec)
        try:
            module = import_target(target)
            if attr is not None:
                fn = getattr(module, attr, None)
                if not callable(fn):
                    raise PluginError(f"verifier plugin '{spec}': {target} has no function {attr!r}")
                if not (attr in _REGISTRY and getattr(_REGISTRY[attr], "plain", None) is fn):
                    _LOADING_SOURCE = spec
                    try:
                        register(attr)(_plain(fn))
                    finally:
                        _LOADING_SOURCE = None
                    _REGISTRY[attr].plain = fn
        except PluginError:
            raise
        except BaseException as e:  # noqa: BLE001 - a plugin's SystemExit must not end the run either
            raise PluginError(f"cannot import verifier plugin '{spec}': {type(e).__name__}: {e}") from e
        if spec not in _LOADED_SPECS:
            _LOADED_SPECS.append(spec)
    if entry_points:
        _load_entry_points()


def _plain(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A TRL-style ``fn(completion, ground_truth, **row)`` as a verifier: it gets the row fields it accepts."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    def verifier(response, ground_truth, *, prompt=None, **extra):
        row = {"prompt": prompt, **extra}
        return fn(response, ground_truth, **(row if takes_all else {k: v for k, v in row.items() if k in params}))

    verifier.__doc__ = fn.__doc__
    verifier.__qualname__ = f"plain({_qualname(fn)})"
    return verifier


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED, _LOADING_SOURCE
    if _ENTRY_POINTS_LOADED:
        return
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(getattr(ep, "dist", None), "name", None) or ep.value
        _LOADING_SOURCE = f"{dist} (entry point {ep.name})"
        try:
            obj = ep.load()
        except PluginError:
            raise
        except BaseException as e:  # noqa: BLE001
            raise PluginError(f"cannot load verifier entry point '{ep.name} = {ep.value}' from {dist}: "
                              f"{type(e).__name__}: {e}") from e
        finally:
            _LOADING_SOURCE = None
        if isinstance(obj, types.ModuleType):
            continue  # its @register decorators ran on import
        if not callable(obj):
            raise PluginError(f"verifier entry point '{ep.name} = {ep.value}' from {dist} is neither a module nor a callable")
        already = any(e.fn is obj for e in _REGISTRY.values())
        if not already:
            _LOADING_SOURCE = f"{dist} (entry point {ep.name})"
            try:
                register(ep.name)(obj)
            finally:
                _LOADING_SOURCE = None
    _ENTRY_POINTS_LOADED = True


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0].strip() if (doc or "").strip() else ""


def _qualname(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
