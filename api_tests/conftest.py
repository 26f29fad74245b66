"""Fixtures: a toy learngene (built with `fine`), and the service in distributed mode
(uvicorn + Celery worker process + real Redis + a fresh PostgreSQL database)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from api_tests.harness import REDIS, Service, base_env, clear_redis_prefix, create_database, drop_database

# A job small enough to finish in seconds on one CPU thread.
TINY = {"depth": 3, "hidden_size": 64, "dataset": "digits", "sigma_steps": 3, "subset_size": 64,
        "batch_size": 16, "eval_images": 16, "sample_steps": 2}


@pytest.fixture(scope="session")
def toy_learngene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from api_tests.toy_learngene import build

    return build(tmp_path_factory.mktemp("toy-learngene"))


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name, url = create_database()
    try:
        yield url
    finally:
        drop_database(name)


@contextmanager
def distributed_service(home: Path, learngene: Path, database_url: str) -> Iterator[Service]:
    """An API process and a worker process on `database_url` and the real Redis (a private key prefix)."""
    prefix = f"fine_test_{secrets.token_hex(4)}:"
    env = base_env(home, learngene, DATABASE_URL=database_url, REDIS_URL=REDIS, FINE_BROKER_KEY_PREFIX=prefix)
    svc = Service(env, home)
    try:
        svc.start_api()
        svc.start_worker()
        yield svc
    finally:
        svc.stop()
        clear_redis_prefix(prefix)


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory, toy_learngene: Path, pg_url: str) -> Iterator[Service]:
    with distributed_service(tmp_path_factory.mktemp("distributed"), toy_learngene, pg_url) as svc:
        yield svc


@pytest.fixture()
def client(service: Service):  # type: ignore[no-untyped-def]
    return service.client
