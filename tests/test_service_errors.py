"""In-process checks of the problem+json layer (embedded settings, no worker)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fine_zoo.settings import Settings
from service.app import create_app

PROBLEM = "application/problem+json"


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path, register_default_learngene=False)
    with TestClient(create_app(settings, reaper=False), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {settings.admin_key_file.read_text().strip()}"  # written at start-up
        yield c


def test_no_learngene_is_a_409(client: TestClient) -> None:
    r = client.post("/v1/jobs", json={"depth": 2, "hidden_size": 32, "dataset": "digits"})
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM
    assert "POST /v1/learngenes" in r.json()["detail"]


def test_framework_errors(client: TestClient) -> None:
    for r, status in ((client.get("/v2/x"), 404), (client.patch("/v1/jobs"), 405),
                      (client.post("/v1/jobs", content=b"{", headers={"content-type": "application/json"}), 400),
                      (client.post("/v1/jobs", content=b"x", headers={"content-type": "text/csv"}), 415),
                      (client.get("/v1/jobs?limit=abc"), 422)):
        assert r.status_code == status and r.headers["content-type"] == PROBLEM
        body = r.json()
        assert body["status"] == status and body["detail"] and body["instance"]


def test_builtin_datasets_seeded(client: TestClient) -> None:
    from fine.data import BUILTIN  # the names the library loads: the API lists exactly those

    ids = {d["id"] for d in client.get("/v1/datasets").json()}
    assert ids == set(BUILTIN) and {"fashion-mnist", "mnist-5k", "digits", "colour-fashion-mnist"} <= ids


def _chunks(n: int = 100, size: int = 10_000):  # type: ignore[no-untyped-def]
    for _ in range(n):
        yield b"x" * size


def test_oversize_bodies_are_413(client: TestClient) -> None:
    r = client.post("/v1/jobs", content=_chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.headers["content-type"] == PROBLEM and "job spec" in r.json()["detail"]
    r = client.post("/v1/datasets", content=b"x" * (70 * 1024 * 1024),
                    headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and "FINE_MAX_UPLOAD_BYTES" in r.json()["detail"]
