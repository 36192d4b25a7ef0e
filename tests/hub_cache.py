"""Lay a local checkpoint out in the Hugging Face Hub cache layout, as `hf download` leaves it."""
import shutil
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, repo: str, model_dir: Path, commit: str = COMMIT) -> Path:
    """models--ORG--NAME/refs/main -> commit, snapshots/<commit>/ the files; returns the cache root."""
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snap = repo_dir / "snapshots" / commit
    if not snap.exists():
        shutil.copytree(model_dir, snap)
    return root
