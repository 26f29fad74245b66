"""The database goes away under a running API (a TCP proxy in front of PostgreSQL is closed; the shared
server itself is untouched): every route that needs it answers 503 + Retry-After, /healthz 200, /readyz 503,
/metrics still answers; when the database is back, so is the API."""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from fastapi.testclient import TestClient

from fine_zoo.settings import Settings
from learngene_store.db import get_engine
from service.app import create_app

PG_HOST, PG_PORT = "127.0.0.1", 5432
PG_ADMIN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test"


class Proxy:
    """Forwards a local port to PostgreSQL until `down()`; `up()` listens again on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self.conns: list[socket.socket] = []
        self.up()

    def up(self) -> None:
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection((PG_HOST, PG_PORT))
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self) -> None:
        try:
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread (close alone does not on Linux)
        except OSError:
            pass
        self.server.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass
        self.conns.clear()


@pytest.fixture()
def setup(tmp_path: Path) -> Iterator[tuple[TestClient, Proxy]]:
    try:
        admin = psycopg2.connect(PG_ADMIN)
    except psycopg2.OperationalError:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    admin.autocommit = True
    name = f"fine_test_down_{secrets.token_hex(4)}"
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    proxy = Proxy()
    settings = Settings(home=tmp_path, database_url=f"postgresql://postgres@127.0.0.1:{proxy.port}/{name}",
                        register_default_learngene=False, bootstrap_admin=True)
    try:
        with TestClient(create_app(settings, reaper=False), raise_server_exceptions=False) as c:
            c.headers["Authorization"] = f"Bearer {settings.admin_key_file.read_text().strip()}"
            yield c, proxy
    finally:
        proxy.down()
        get_engine(settings).dispose()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_database_down_is_503(setup: tuple[TestClient, Proxy]) -> None:
    client, proxy = setup
    assert client.get("/v1/jobs").status_code == 200
    proxy.down()
    for method, path, body in (("GET", "/v1/jobs", None), ("GET", "/v1/jobs/job_x", None),
                               ("POST", "/v1/jobs", {"depth": 2, "hidden_size": 32, "dataset": "digits"}),
                               ("GET", "/v1/datasets", None), ("GET", "/v1/learngenes", None),
                               ("GET", "/v1/checkpoints/ckpt_x", None), ("GET", "/v1/aliases", None)):
        r = client.request(method, path, json=body)
        assert r.status_code == 503, (method, path, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json" and int(r.headers["retry-after"]) > 0
        assert "database is unavailable" in r.json()["detail"]
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("failed")
    assert client.get("/metrics").status_code == 200
    proxy.up()
    assert client.get("/v1/jobs").status_code == 200
