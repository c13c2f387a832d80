"""CORS: no web page of another origin may call the API unless the operator lists its origin.

Against the real API on loopback (``running_api``) and a real redis-server; browsers are played by
requests carrying ``Origin`` (and preflights: OPTIONS with ``Access-Control-Request-Method``).
"""

from __future__ import annotations

import httpx
import pytest

from service_fixtures import TOKEN, needs_redis, running_api
from videobatch.errors import ConfigError
from videobatch.service.cors import CORS_ENV, CorsPolicy

pytestmark = needs_redis

APP = "https://app.example.com"
OTHER = "https://evil.example.net"
SOME_ID = "0" * 32


def preflight(client: httpx.Client, origin: str, path: str = "/api/v1/videos") -> httpx.Response:
    return client.options(path, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,idempotency-key"})


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def test_by_default_no_origin_gets_any_cors_header(redis_server, monkeypatch):
    monkeypatch.delenv(CORS_ENV, raising=False)
    with running_api(redis_server.url) as api, api.client() as client:
        for origin in (APP, OTHER, "null"):
            answer = client.post("/api/v1/videos", json={"prompt": "a fox"}, headers={"Origin": origin})
            assert answer.status_code == 202
            assert cors_headers(answer) == {}
            flight = preflight(client, origin)
            assert flight.status_code != 200 and cors_headers(flight) == {}


def test_listed_origins_may_call_with_a_bearer_token_but_never_credentials(redis_server):
    policy = CorsPolicy.of([f"{APP}/", "http://localhost:3000"])
    with running_api(redis_server.url, cors=policy) as api, \
            httpx.Client(base_url=api.url, timeout=10) as anonymous:
        flight = preflight(anonymous, APP)  # no token: a browser sends none with a preflight
        assert flight.status_code == 200
        assert flight.headers["access-control-allow-origin"] == APP
        allowed = flight.headers["access-control-allow-headers"].lower()
        assert {"authorization", "content-type", "idempotency-key"} <= set(allowed.split(", "))
        assert set(flight.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
        assert "access-control-allow-credentials" not in flight.headers

        created = anonymous.post("/api/v1/videos", json={"prompt": "a fox"}, headers={
            "Origin": APP, "Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "k1"})
        assert created.status_code == 202
        assert created.headers["access-control-allow-origin"] == APP
        assert "idempotent-replayed" in created.headers["access-control-expose-headers"].lower()
        assert "access-control-allow-credentials" not in created.headers
        # A refusal is readable by the page too (it can tell the user the token is wrong).
        refused = anonymous.get(f"/api/v1/videos/{SOME_ID}", headers={"Origin": "http://localhost:3000"})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "http://localhost:3000"

        for origin in (OTHER, "null", "https://app.example.com.evil.net", "http://app.example.com"):
            assert preflight(anonymous, origin).status_code == 400
            answer = anonymous.get(f"/api/v1/videos/{SOME_ID}", headers={
                "Origin": origin, "Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 404
            assert "access-control-allow-origin" not in answer.headers, origin


def test_any_origin_is_a_wildcard_without_credentials(redis_server):
    with running_api(redis_server.url, cors=CorsPolicy.of(["*"])) as api, api.client() as client:
        answer = client.get(f"/api/v1/videos/{SOME_ID}",
                            headers={"Origin": OTHER, "Cookie": "session=1"})
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in answer.headers
        flight = preflight(client, OTHER)
        assert flight.status_code == 200 and "access-control-allow-credentials" not in flight.headers


def test_the_setting_is_read_from_the_environment_and_checked(redis_server, monkeypatch):
    monkeypatch.setenv(CORS_ENV, " https://App.Example.com:8443/ , http://localhost:3000,")
    assert CorsPolicy.from_env().origins == ("https://app.example.com:8443", "http://localhost:3000")
    with running_api(redis_server.url) as api, api.client() as client:  # create_app reads it
        flight = preflight(client, "https://app.example.com:8443")
        assert flight.headers["access-control-allow-origin"] == "https://app.example.com:8443"
    monkeypatch.setenv(CORS_ENV, "")
    assert not CorsPolicy.from_env()
    for bad, says in [("https://app.example.com/path", "no path"), ("ftp://files.example.com", "http or https"),
                      ("app.example.com", "http or https"), ("*,https://app.example.com", "alone"),
                      ("null", "sandboxed"), ("https://app.example.com:99999", "port")]:
        monkeypatch.setenv(CORS_ENV, bad)
        with pytest.raises(ConfigError, match=says) as caught:
            CorsPolicy.from_env()
        assert CORS_ENV in str(caught.value)
