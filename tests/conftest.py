"""Shared test set-up: make tests/ importable (fakes.py), keep provider state in tmp dirs, and
the service tests' Redis, API and client (one per module, started only where a test asks)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _local_provider_dir(tmp_path, monkeypatch):
    """The offline provider keeps its 'account' on disk; each test gets its own."""
    monkeypatch.setenv("VIDEOBATCH_LOCAL_DIR", str(tmp_path / "local-provider"))
    # and model catalogues as packaged: a catalogue file in the user's home must not change tests
    monkeypatch.setenv("VIDEOBATCH_CATALOG_DIR", str(tmp_path / "catalog"))
    # and the result cache (reuse=True) of this test alone, never the user's ~/.cache/videobatch
    monkeypatch.setenv("VIDEOBATCH_CACHE_DIR", str(tmp_path / "result-cache"))


@pytest.fixture(autouse=True)
def _videobatch_logger_restored():
    """A command run in-process (``status_main([...])``) shows videobatch's log on stderr and stops
    it propagating; undo that after each test so later tests' ``caplog`` still sees records."""
    import logging

    logger = logging.getLogger("videobatch")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    from videobatch.cli._boundary import _restore_logging

    _restore_logging()
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """A Debian redis-server of this test module's own (service tests)."""
    from service_fixtures import running_redis

    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def api(redis_server):
    """The service's HTTP API on loopback, on this module's Redis."""
    from service_fixtures import running_api

    with running_api(redis_server.url) as handle:
        yield handle


@pytest.fixture
def client(api):
    """An HTTP client of the API, with a valid token."""
    with api.client() as c:
        yield c
