"""Hugging Face Hub model ids wherever a model is named (model.path, judges, reward models, `rlvr eval --model`).

A name is a local directory when it exists (an existing path always wins, so `a/b` on disk is
never looked up on the Hub); otherwise `org/name` is a Hub id, resolved once on the driver with
`huggingface_hub.snapshot_download` into the standard cache (HF_TOKEN, HF_HOME, HF_HUB_CACHE and
HF_HUB_OFFLINE are the library's own: rlvr writes no token anywhere) before any engine starts.
The commit it resolved to is pinned in the run's config.yaml (`revision`), and engines and
learners load the snapshot directory of that commit, so every process reads the same files.
Anything else (`./x`, `/abs/path`, `a/b/c`) that does not exist is a missing directory.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

# owner/name as the Hub spells repository ids (no leading dot or dash, one slash)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# weights formats rlvr never loads, skipped so a download is not doubled (safetensors/bin stay)
IGNORE = ["*.pth", "*.pt", "original/*", "*.gguf", "*.onnx", "onnx/*", "*.msgpack", "*.h5", "*.ot", "*.tflite"]

_resolved: dict[tuple[str, str | None], tuple[str, str]] = {}  # (id, revision) -> (snapshot dir, commit), per process


class ModelPathError(ValueError):
    """A model name that is neither a local checkpoint nor a resolvable Hub id; one line saying what to do."""


def is_hub_id(name: str) -> bool:
    """True for `org/name` that is not an existing local path."""
    return bool(_HUB_ID.match(name)) and not Path(name).exists()


def _offline() -> bool:
    # read at call time: huggingface_hub reads HF_HUB_OFFLINE once, at import
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _fetch_hint(repo: str, revision: str | None) -> str:
    return f"`hf download {repo}" + (f" --revision {revision}" if revision else "") + "`"


def resolve(name: str, revision: str | None = None, field: str = "model.path",
            cache_only: bool = False) -> tuple[str, str | None]:
    """(local checkpoint directory, Hub commit or None for a local path); ModelPathError on anything else.
    `cache_only`: look in the Hugging Face cache but never download."""
    if Path(name).exists():
        if not (Path(name) / "config.json").is_file():
            raise ModelPathError(f"{field}: no Hugging Face checkpoint at {name} (config.json missing)")
        return name, None
    if not _HUB_ID.match(name):
        raise ModelPathError(f"{field}: no Hugging Face checkpoint at {name} (no such directory, and not a Hub id org/name)")
    key = (name, revision)
    if key in _resolved:
        return _resolved[key]
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    at = f"{name}@{revision}" if revision else name
    cache = os.environ.get("HF_HUB_CACHE") or None
    try:
        local = snapshot_download(name, revision=revision, cache_dir=cache, local_files_only=cache_only or _offline(),
                                  ignore_patterns=IGNORE)
    except GatedRepoError:
        raise ModelPathError(f"{field}: {name} is a gated Hub model: accept its terms on huggingface.co and set HF_TOKEN "
                             "(or `hf auth login`)") from None
    except RepositoryNotFoundError:
        raise ModelPathError(f"{field}: {name} is neither a local directory nor a Hub model you can read (a private "
                             "model needs HF_TOKEN; a local path must exist)") from None
    except RevisionNotFoundError:
        raise ModelPathError(f"{field}: {name} has no revision {revision!r} on the Hub") from None
    except LocalEntryNotFoundError:  # offline (or the Hub unreachable) and not in the cache
        raise ModelPathError(f"{field}: {at} is not a local directory and not in the Hugging Face cache "
                             f"({cache or 'the default cache'}), and the Hub cannot be reached"
                             f"{' (HF_HUB_OFFLINE=1)' if _offline() else ''}; fetch it with {_fetch_hint(name, revision)}") from None
    except (HfHubHTTPError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelPathError(f"{field}: cannot fetch {at} from the Hub ({first}); fetch it with "
                             f"{_fetch_hint(name, revision)}") from None
    if not (Path(local) / "config.json").is_file():
        raise ModelPathError(f"{field}: Hub repository {at} has no config.json: not a transformers checkpoint")
    _resolved[key] = _resolved[(name, Path(local).name)] = (local, Path(local).name)  # the snapshot dir is named by its commit
    return _resolved[key]


def local_path(name: str, revision: str | None = None, field: str = "model.path") -> str:
    """The directory to load `name` from: itself when local, else its Hub snapshot (resolved once per process)."""
    return resolve(name, revision, field)[0]
