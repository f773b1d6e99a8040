"""gunicorn settings for tests/test_gunicorn.py: a scheduler per worker, started after
the fork (never with --preload before it) and shut down when the worker exits."""

from __future__ import annotations

from typing import Any

workers = 4


def post_fork(server: Any, worker: Any) -> None:
    import wsgi_app

    wsgi_app.start_scheduler()


def worker_exit(server: Any, worker: Any) -> None:
    import wsgi_app

    wsgi_app.stop_scheduler()
