"""Service mode: the seed's HTTP gateway and Redis-backed workers, on the library's runner.

    python -m videobatch serve    # the HTTP API (FastAPI) in front of one Redis
    python -m videobatch worker   # any number of workers, on any machines, sharing that Redis

Jobs live in Redis (one hash per request, a stream as the queue); workers reuse the runner, the
providers and the state machine of the library. Needs the ``service`` extra (fastapi, redis).

The gateway (HTTP in, requests into Redis):

    api.py      the routes: requests checked, then created in Redis
    idempotency.py  the Redis transaction that creates a request exactly once (Idempotency-Key)
    batch_views.py  a batch read back: its rows in order, counts per state, its results table
    auth.py     bearer tokens, checked before a body is read; the tenant a token stands for
    tenants.py  tenants, their tokens (only keyed hashes kept) and limits, from the settings
    schemas.py  the HTTP bodies with their limits (the OpenAPI spec), problems as 422 answers
    checks.py   the service's own checks of a body (limits, images, URLs), before the library's
    limits.py   how much a client may send: body size (413 unread), rows, metadata, prompt length
    images.py   what an image may be over HTTP (URL, bytes, the operator's folder; never a path)
    addresses.py  which addresses a client may make the service call (webhooks, image URLs)
    accesslog.py  the access log without query-string values (secrets)
    cors.py     which web origins may call the API from a browser (none unless listed)

The workers: the library's runner with each of its three seams backed by Redis:

    worker.py   one worker process: the runner wired to the three below, and webhooks
    queue.py    ``RedisSource``, the runner's ``JobSource``: the stream, leases on its entries
    slots.py    ``RedisSlots``, the runner's ``SlotPool``: the account's slots, leased across workers
    store.py    ``RedisStore``, the runner's ``Store``: one hash per request, written asynchronously
    records.py  the key layout (shared), a request's hash <-> a Job, waiting out a Redis outage
    redis_loss.py  a Redis that lost its data: reported at start, no paid submit without a record

    cli.py      ``serve`` and ``worker`` commands
"""
