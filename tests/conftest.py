"""Shared fixtures: the toy policy (built once, cached in .cache/ like `make demo` does)."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOY_DIR = ROOT / ".cache" / "rlvr" / "toy-addition"
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def toy_dir() -> Path:
    """The toy policy and its addition data; built on first use (about a minute on 2 cores)."""
    if not (TOY_DIR / "toy.json").is_file():
        import torch

        from rlvr.toy_model import build_toy

        torch.set_num_threads(os.cpu_count() or 1)
        build_toy(TOY_DIR, seed=0, log=lambda *_: None)
    return TOY_DIR


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared test data at {SHARED_DATA} (present in CI; see its README)")
    return SHARED_DATA


TOY_RM_DIR = ROOT / ".cache" / "rlvr" / "toy-rm"


@pytest.fixture(scope="session")
def toy_rm_dir() -> Path:
    """The toy reward model (score > 0 iff the response ends in an even digit); built on first use (~10 s)."""
    if not (TOY_RM_DIR / "toy_rm.json").is_file():
        from rlvr.toy_rm import build_toy_rm

        build_toy_rm(TOY_RM_DIR, seed=0, log=lambda *_: None)
    return TOY_RM_DIR
