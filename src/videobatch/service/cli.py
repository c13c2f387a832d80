"""``python -m videobatch serve`` and ``python -m videobatch worker``: run the service's parts."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

__all__ = ["serve_main", "worker_main"]

_REDIS_HELP = "Redis address (default: $VIDEOBATCH_REDIS_URL or redis://127.0.0.1:6379/0)"


def _redis_url(value: str | None) -> str:
    return value or os.environ.get("VIDEOBATCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def serve_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m videobatch serve",
        description="Run the HTTP API. Clients authenticate with a bearer token: each entry of "
                    "VIDEOBATCH_API_TOKENS (comma-separated, 'token' or 'name:token') is a tenant; "
                    "VIDEOBATCH_API_TOKENS_FILE names tenants with their tokens and limits; "
                    "VIDEOBATCH_ADMIN_TOKEN sees every tenant's requests; VIDEOBATCH_TOKEN_SECRET "
                    "keys the hash of bare tokens (see the README). The OpenAPI spec is at "
                    "/openapi.json, interactive docs at /docs.",
        epilog="Settings (environment): VIDEOBATCH_SERVICE_ALLOW (CIDRs and host names webhook and "
               "image URLs may name although internal), VIDEOBATCH_SERVICE_IMAGE_DIR (a folder whose "
               "files clients may name as images), VIDEOBATCH_SERVICE_MAX_BODY_BYTES (10485760), "
               "VIDEOBATCH_SERVICE_MAX_ROWS (10000), VIDEOBATCH_SERVICE_MAX_METADATA_BYTES (16384), "
               "VIDEOBATCH_SERVICE_MAX_PROMPT_CHARS (2500), VIDEOBATCH_SERVICE_REDIS_CONNECTIONS (100), "
               "VIDEOBATCH_SERVICE_CORS_ORIGINS (web origins that may call it from a browser; "
               "default none).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--redis-url", help=_REDIS_HELP)
    parser.add_argument("--prefix", default="vb:", help="Redis key prefix (default vb:)")
    parser.add_argument("--provider", default="local",
                        help="the workers' provider: requests are checked against its models and "
                             "options before they are queued (default local)")
    args = parser.parse_args(argv)
    import uvicorn

    from ..errors import ConfigError
    from .api import create_app
    from .tenants import Tenants

    try:
        tenants = Tenants.from_env()
        if not tenants:
            parser.error("set VIDEOBATCH_API_TOKENS (comma-separated bearer tokens) or "
                         "VIDEOBATCH_API_TOKENS_FILE first: without tokens every request would be "
                         "refused")
        app = create_app(_redis_url(args.redis_url), prefix=args.prefix, provider=args.provider,
                         tenants=tenants)
    except ConfigError as exc:
        parser.error(str(exc))
    from .accesslog import log_config

    # The access log shows query strings without their values (a token sent there stays secret).
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", log_config=log_config())
    return 0


def worker_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m videobatch worker",
        description="Take video requests from the shared Redis queue and generate them. Run as many "
                    "as you like, on any machines: together they never exceed the account's "
                    "parallel-task limit, and requests of a worker that dies are taken over.",
        epilog="Settings (environment): VIDEOBATCH_WEBHOOK_SECRET (signs webhooks), "
               "VIDEOBATCH_SERVICE_ALLOW and VIDEOBATCH_SERVICE_IMAGE_DIR (as for serve: set the "
               "same on the API and every worker), VIDEOBATCH_SERVICE_RETENTION_DAYS (30: how long "
               "a request's record is kept after it ended; 0 keeps it forever).")
    parser.add_argument("--redis-url", help=_REDIS_HELP)
    parser.add_argument("--prefix", default="vb:", help="Redis key prefix (default vb:)")
    parser.add_argument("--provider", default="local", help="video provider (default local)")
    parser.add_argument("-P", "--provider-option", action="append", default=[], metavar="KEY=VALUE",
                        help="provider setting, repeatable")
    parser.add_argument("--base-url", help="provider API address (same as -P base_url=...)")
    parser.add_argument("--concurrency", type=int, help="rows this worker drives at once")
    parser.add_argument("--account-limit", type=int,
                        help="parallel tasks for all workers together (default: the provider's limit)")
    parser.add_argument("--lease", type=float, default=30.0,
                        help="seconds after which a silent worker's requests are taken over (30)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    from ..cli._options import parse_options

    options = parse_options(args.provider_option, parser)
    if args.base_url:
        options["base_url"] = args.base_url
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per provider call is noise
    import redis

    from ..errors import ConfigError
    from .addresses import AddressPolicy
    from .images import IMAGE_DIR_ENV
    from .records import retention_from_env
    from .worker import WorkerSettings, run_worker

    try:
        settings = WorkerSettings(redis_url=_redis_url(args.redis_url), prefix=args.prefix,
                                  provider=args.provider, provider_options=options,
                                  concurrency=args.concurrency, account_limit=args.account_limit,
                                  lease=args.lease,
                                  webhook_secret=os.environ.get("VIDEOBATCH_WEBHOOK_SECRET") or None,
                                  image_dir=os.environ.get(IMAGE_DIR_ENV) or None,
                                  addresses=AddressPolicy.from_env(),
                                  retention=retention_from_env())
        outcome = asyncio.run(run_worker(settings))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except redis.exceptions.ConnectionError as exc:
        print(f"error: cannot reach Redis at {_without_password(settings.redis_url)}: {exc}",
              file=sys.stderr)
        return 2
    if outcome.stopped_by is not None:  # e.g. the provider refused the credentials
        print(f"error: the worker stopped: {outcome.stopped_by}", file=sys.stderr)
        return 1
    return 0
