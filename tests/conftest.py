"""Shared test set-up: make tests/ importable (fakes.py) and keep provider state in tmp dirs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _local_provider_dir(tmp_path, monkeypatch):
    """The offline provider keeps its 'account' on disk; each test gets its own."""
    monkeypatch.setenv("VIDEOBATCH_LOCAL_DIR", str(tmp_path / "local-provider"))
