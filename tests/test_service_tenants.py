"""Tenants apart (issue 13, item 3): a tenant sees only its own requests and batches (another's id
answers exactly like an unknown one), Idempotency-Keys are per tenant, the admin sees all, per-
tenant limits hold, and no token ever reaches Redis in clear.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from service_fixtures import ApiHandle, RedisServer, needs_redis, serving
from videobatch.errors import ConfigError
from videobatch.request import VideoRequest
from videobatch.service.api import create_app
from videobatch.service.records import new_job_fields
from videobatch.service.tenants import Tenants

pytestmark = needs_redis

SECRET = "tenant-test-secret-0123456789"
TOKENS = {"a": "tok-alpha-0123456789", "a2": "tok-alpha-second-0123", "b": "tok-beta-0123456789",
          "bare": "tok-bare-0123456789", "admin": "tok-admin-0123456789",
          "limited": "tok-limited-0123456789"}
TOKENS_TOML = f"""
[tenants.acme]
tokens = ["{TOKENS['a']}", "{TOKENS['a2']}"]

[tenants.globex]
tokens = ["{TOKENS['b']}"]

[tenants.small]
tokens = ["{TOKENS['limited']}"]
max_rows = 2
requests_per_minute = 5
"""
UNKNOWN = "0" * 32


@pytest.fixture(scope="module")
def tenants_api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[ApiHandle]:
    path = tmp_path_factory.mktemp("tenants") / "tokens.toml"
    path.write_text(TOKENS_TOML)
    tenants = Tenants.build([TOKENS["bare"]], file=path, admin_token=TOKENS["admin"], secret=SECRET)
    with serving(create_app(redis_server.url, tenants=tenants)) as handle:
        yield handle


@pytest.fixture(scope="module")
def made(tenants_api: ApiHandle) -> dict[str, str]:
    """One request and one batch (JSON rows) of tenant acme, one CSV batch of the bare token."""
    with tenants_api.client(TOKENS["a"]) as a, tenants_api.client(TOKENS["bare"]) as bare:
        video = a.post("/api/v1/videos", json={"prompt": "acme's secret prompt"})
        batch = a.post("/api/v1/batches", json={"rows": [{"prompt": "acme row", "client": "x"}]})
        csv = bare.post("/api/v1/batches/csv",
                        files={"file": ("p.csv", b"prompt\nthe bare token's row\n", "text/csv")})
    assert video.status_code == batch.status_code == csv.status_code == 202
    return {"video": video.json()["request_id"], "batch": batch.json()["batch_id"],
            "row": batch.json()["request_ids"][0], "csv_batch": csv.json()["batch_id"]}


def _paths(made: dict[str, str], which: str) -> list[str]:
    video, batch = made["video"] if which == "a" else made["row"], made["batch"]
    if which == "bare":
        video, batch = UNKNOWN, made["csv_batch"]
    return [f"/api/v1/videos/{video}", f"/api/v1/batches/{batch}",
            *(f"/api/v1/batches/{batch}/results?format={f}" for f in ("csv", "json", "parquet"))]


def _unknown_answers(client: httpx.Client) -> list[tuple[int, str]]:
    out = []
    for path in (f"/api/v1/videos/{UNKNOWN}", f"/api/v1/batches/{UNKNOWN}",
                 f"/api/v1/batches/{UNKNOWN}/results?format=csv"):
        response = client.get(path)
        out.append((response.status_code, response.text))
    return out


def test_another_tenants_request_and_batch_answer_exactly_like_unknown_ones(tenants_api, made):
    with tenants_api.client(TOKENS["b"]) as b, tenants_api.client(TOKENS["bare"]) as bare:
        unknown = _unknown_answers(b)
        assert [status for status, _ in unknown] == [404, 404, 404]
        for client in (b, bare):
            for path in _paths(made, "a"):
                response = client.get(path)
                assert response.status_code == 404, path
                # the same body as for an id that does not exist: no existence oracle
                expected = unknown[0] if "/videos/" in path else unknown[1]
                assert (response.status_code, response.text) == expected, path
                assert "acme" not in response.text
        for path in _paths(made, "bare")[1:]:  # the bare token's CSV batch, read by globex
            assert b.get(path).status_code == 404, path


def test_every_token_of_a_tenant_sees_its_requests(tenants_api, made):
    for token in (TOKENS["a"], TOKENS["a2"]):
        with tenants_api.client(token) as a:
            for path in _paths(made, "a"):
                assert a.get(path).status_code == 200, path
            assert a.get(f"/api/v1/videos/{made['video']}").json()["request"]["prompt"] == \
                "acme's secret prompt"
    with tenants_api.client(TOKENS["bare"]) as bare:
        for path in _paths(made, "bare")[1:]:
            assert bare.get(path).status_code == 200, path


def test_the_admin_sees_every_tenants_requests_and_older_records_without_a_tenant(
        tenants_api, made, redis_server):
    legacy = "1" * 32  # a request stored before tenants existed
    r = redis_server.client()
    try:
        r.hset(f"vb:job:{legacy}", mapping=new_job_fields(legacy, VideoRequest(prompt="old")))
    finally:
        r.close()
    with tenants_api.client(TOKENS["admin"]) as admin:
        for path in [*_paths(made, "a"), *_paths(made, "bare")[1:], f"/api/v1/videos/{legacy}"]:
            assert admin.get(path).status_code == 200, path
        assert admin.get(f"/api/v1/videos/{UNKNOWN}").status_code == 404
    for token in (TOKENS["a"], TOKENS["b"], TOKENS["bare"]):
        with tenants_api.client(token) as client:
            assert client.get(f"/api/v1/videos/{legacy}").status_code == 404


def test_idempotency_keys_are_per_tenant_not_per_token(tenants_api):
    body = {"prompt": "same body"}
    key = {"Idempotency-Key": "tenant-key-1"}
    ids = {}
    for name in ("a", "a2", "b", "bare"):
        with tenants_api.client(TOKENS[name]) as client:
            response = client.post("/api/v1/videos", json=body, headers=key)
            assert response.status_code == 202
            ids[name] = response.json()["request_id"]
    assert ids["a"] == ids["a2"]  # two tokens of one tenant: one request
    assert len({ids["a"], ids["b"], ids["bare"]}) == 3  # three tenants: three requests
    with tenants_api.client(TOKENS["b"]) as b:  # and each tenant's is its own
        assert b.get(f"/api/v1/videos/{ids['a']}").status_code == 404
        assert b.get(f"/api/v1/videos/{ids['b']}").status_code == 200


def test_per_tenant_limits(tenants_api):
    with tenants_api.client(TOKENS["limited"]) as small:
        rows = {"rows": [{"prompt": f"p{n}"} for n in range(3)]}
        refused = small.post("/api/v1/batches", json=rows)
        assert refused.status_code == 422 and "at most 2" in refused.text
        csv = small.post("/api/v1/batches/csv",
                         files={"file": ("p.csv", b"prompt\na\nb\nc\n", "text/csv")})
        assert csv.status_code == 422 and "at most 2" in csv.text
        answers = [small.get(f"/api/v1/videos/{UNKNOWN}") for _ in range(10)]
        limited = [a for a in answers if a.status_code == 429]
        # 5 a minute: of these 12 calls some are over, even across a minute boundary
        assert limited, [a.status_code for a in answers]
        assert int(limited[0].headers["Retry-After"]) >= 1
    with tenants_api.client(TOKENS["a"]) as a:  # other tenants are not held back
        assert a.post("/api/v1/batches", json=rows).status_code == 202


def test_no_token_is_stored_in_redis_in_clear(tenants_api, made, redis_server):
    dump: list[str] = []
    r = redis_server.client()
    try:
        for key in r.scan_iter("*"):
            dump.append(key)
            kind = r.type(key)
            if kind == "hash":
                dump.append(json.dumps(r.hgetall(key)))
            elif kind == "string":
                dump.append(str(r.get(key)))
            elif kind == "list":
                dump.append(json.dumps(r.lrange(key, 0, -1)))
            elif kind == "stream":
                dump.append(json.dumps(r.xrange(key)))
            elif kind == "zset":
                dump.append(json.dumps(r.zrange(key, 0, -1)))
    finally:
        r.close()
    text = "\n".join(dump)
    assert "n:acme" in text  # tenants are there, by name ...
    for token in TOKENS.values():  # ... never a token, nor a bare token's plain hash
        assert token not in text
        assert token[:12] not in text


def test_tokens_come_from_names_a_file_and_the_environment(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("VIDEOBATCH_API_TOKENS", " team1:tok-1 , tok-2 ,")
    monkeypatch.setenv("VIDEOBATCH_ADMIN_TOKEN", "tok-root")
    monkeypatch.setenv("VIDEOBATCH_TOKEN_SECRET", SECRET)
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tenants": {"acme": {"tokens": ["tok-3"], "max_rows": 7}}}))
    monkeypatch.setenv("VIDEOBATCH_API_TOKENS_FILE", str(path))
    tenants = Tenants.from_env()
    one, two, three, root = (tenants.of(t) for t in ("tok-1", "tok-2", "tok-3", "tok-root"))
    assert one is not None and one.id == "n:team1" and not one.admin
    assert two is not None and two.id.startswith("h:") and "tok-2" not in two.id
    assert three is not None and three.id == "n:acme" and three.max_rows == 7
    assert root is not None and root.admin
    assert tenants.of("") is None and tenants.of("tok-4") is None
    # the same secret (a restarted API, a second API process): the same tenant for a bare token
    assert Tenants.build(["tok-2"], secret=SECRET).of("tok-2") == two
    with caplog.at_level(logging.WARNING, logger="videobatch.service"):
        other = Tenants.build(["tok-2"])  # no secret: a per-process one, and a warning
    assert other.of("tok-2") != two and "VIDEOBATCH_TOKEN_SECRET" in caplog.text


@pytest.mark.parametrize(("content", "message"), [
    ("not toml [", "cannot read"),
    ("[other]\nx = 1\n", "[tenants.<name>]"),
    ('[tenants.acme]\ntokens = []\n', "non-empty strings"),
    ('[tenants.acme]\ntokens = ["t"]\nmax_rows = 0\n', "max_rows"),
    ('[tenants.acme]\ntokens = ["t"]\nmaxrows = 3\n', "unknown setting"),
    ('[tenants.admin]\ntokens = ["t"]\n', "reserved"),
    ('[tenants.acme]\ntokens = ["t"]\n[tenants.globex]\ntokens = ["t"]\n', "two tenants"),
])
def test_a_bad_tokens_file_is_a_clear_config_error(tmp_path, content, message):
    path = tmp_path / "tokens.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        Tenants.build([], file=path)


def test_serve_refuses_a_bad_tokens_file_and_no_tokens_at_all(tmp_path, monkeypatch, capsys):
    from videobatch.service.cli import serve_main

    monkeypatch.setenv("VIDEOBATCH_API_TOKENS", "")
    monkeypatch.delenv("VIDEOBATCH_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("VIDEOBATCH_API_TOKENS_FILE", raising=False)
    with pytest.raises(SystemExit) as exited:
        serve_main([])
    assert exited.value.code == 2 and "VIDEOBATCH_API_TOKENS_FILE" in capsys.readouterr().err
    path = tmp_path / "tokens.toml"
    path.write_text('[tenants.acme]\ntokens = "one-token"\n')  # not a list
    monkeypatch.setenv("VIDEOBATCH_API_TOKENS_FILE", str(path))
    with pytest.raises(SystemExit) as exited:
        serve_main([])
    error = capsys.readouterr().err
    assert exited.value.code == 2 and "tokens must be a list" in error and "one-token" not in error
