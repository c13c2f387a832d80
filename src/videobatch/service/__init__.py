"""Service mode: the seed's HTTP gateway and Redis-backed workers, on the library's runner.

    python -m videobatch serve    # the HTTP API (FastAPI) in front of one Redis
    python -m videobatch worker   # any number of workers, on any machines, sharing that Redis

Jobs live in Redis (one hash per request, a stream as the queue); workers reuse the runner, the
providers and the state machine of the library. Needs the ``service`` extra (fastapi, redis).
"""
