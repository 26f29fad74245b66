"""Quotas, the write rate and hard field limits, in-process (embedded settings, no worker: jobs stay queued)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from fine_zoo.settings import Settings
from learngene_store.accounts import add_user
from learngene_store.db import session_factory
from service.app import create_app

JOB = {"depth": 2, "hidden_size": 64, "dataset": "digits", "sigma_steps": 10, "subset_size": 64}
PROBLEM = "application/problem+json"


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, quota_active_jobs=2, quota_steps_per_day=25, quota_stored_bytes=3000,
                    write_rate_per_minute=8, max_upload_unpacked_bytes=100_000)


@pytest.fixture()
def app(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, reaper=False), raise_server_exceptions=False) as c:
        yield c


def _user(settings: Settings, name: str, admin: bool = False) -> dict[str, str]:
    with session_factory(settings)() as s:
        return {"Authorization": f"Bearer {add_user(s, name, admin)}"}


def _problem(r, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    return r.json()


def test_active_jobs_and_steps_per_day(app: TestClient, settings: Settings) -> None:
    alice = _user(settings, "alice")
    ids = [app.post("/v1/jobs", json={**JOB, "seed": i}, headers=alice).json()["id"] for i in range(2)]
    body = _problem(app.post("/v1/jobs", json=JOB, headers=alice), 409)
    assert "2 queued or running jobs, the limit is 2" in body["detail"] and body["limit"] == 2 and body["usage"] == 2
    for job_id in ids:
        assert app.post(f"/v1/jobs/{job_id}/cancel", headers=alice).status_code == 202
    r = app.post("/v1/jobs", json={**JOB, "sigma_steps": 6}, headers=alice)  # 20 + 6 > 25 steps today
    body = _problem(r, 403)
    assert "you used 20 of your 25 steps" in body["detail"] and int(r.headers["retry-after"]) > 0
    admin = {"Authorization": f"Bearer {settings.admin_key_file.read_text().strip()}"}
    assert app.post("/v1/jobs", json={**JOB, "sigma_steps": 5000}, headers=admin).status_code == 202  # exempt


def test_write_rate_is_429_with_retry_after(app: TestClient, settings: Settings) -> None:
    bob = _user(settings, "bob")
    for _ in range(8):
        assert app.post("/v1/jobs/job_nope/cancel", headers=bob).status_code == 404
    r = app.post("/v1/jobs/job_nope/cancel", headers=bob)
    body = _problem(r, 429)
    assert "more than 8 write requests" in body["detail"] and 1 <= int(r.headers["retry-after"]) <= 60
    assert app.get("/v1/jobs", headers=bob).status_code == 200  # reads are not limited


def _npz(n: int, seed: int | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8) if seed is not None else np.zeros((n, 8, 8), np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images, labels=np.arange(n) % 10)
    return buf.getvalue()


def test_stored_bytes_quota(app: TestClient, settings: Settings) -> None:
    carol = _user(settings, "carol")
    first = app.post("/v1/datasets", files={"file": ("a.npz", _npz(16), "application/octet-stream")}, headers=carol)
    assert first.status_code == 201, first.text
    used, noisy = first.json()["bytes"], _npz(40, seed=1)  # random pixels do not compress: > 2,560 bytes
    assert used + len(noisy) > 3000
    r = app.post("/v1/datasets", files={"file": ("b.npz", noisy, "application/octet-stream")}, headers=carol)
    body = _problem(r, 403)
    assert f"you store {used} bytes of your 3000 (FINE_QUOTA_STORED_BYTES) and this upload adds" in body["detail"]


def test_declared_sizes_checked_before_unpacking(app: TestClient, settings: Settings) -> None:
    dave = _user(settings, "dave")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:  # 400 kB of zeros: a tiny upload
        with z.open("images.npy", "w") as f:
            np.lib.format.write_array(f, np.zeros((100, 64, 64), np.uint8))
    body = _problem(app.post("/v1/datasets", files={"file": ("bomb.npz", buf.getvalue(), "application/octet-stream")},
                             headers=dave), 422)
    assert "over the limit of 100000" in body["detail"] and "FINE_MAX_UPLOAD_UNPACKED_BYTES" in body["detail"]


def test_lying_npy_header(app: TestClient, settings: Settings) -> None:
    dave = _user(settings, "dave")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("images.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False,
                                                     "shape": (10**9, 64, 64)})
            f.write(b"\0" * 64)
    body = _problem(app.post("/v1/datasets", files={"file": ("lie.npz", buf.getvalue(), "application/octet-stream")},
                             headers=dave), 422)
    assert "declares (1000000000, 64, 64) uint8" in body["detail"]


@pytest.mark.parametrize("path", ["/v1/jobs/" + "j" * 65, "/v1/checkpoints/" + "c" * 65, "/v1/datasets/" + "d" * 65,
                                  "/v1/learngenes/" + "l" * 129, "/v1/jobs?dataset=" + "d" * 257,
                                  "/v1/jobs?cursor=" + "c" * 257])
def test_over_long_ids_are_422(app: TestClient, settings: Settings, path: str) -> None:
    admin = {"Authorization": f"Bearer {settings.admin_key_file.read_text().strip()}"}
    _problem(app.get(path, headers=admin), 422)


@pytest.mark.parametrize("field, value", [("dataset", "d" * 257), ("learngene", "l" * 129)])
def test_over_long_spec_strings_are_422(app: TestClient, settings: Settings, field: str, value: str) -> None:
    admin = {"Authorization": f"Bearer {settings.admin_key_file.read_text().strip()}"}
    body = _problem(app.post("/v1/jobs", json={**JOB, field: value}, headers=admin), 422)
    assert body["errors"][0]["field"] == field


def test_local_admin_key_file(tmp_path: Path) -> None:
    from learngene_store.accounts import authenticate, ensure_local_admin
    from learngene_store.db import migrate

    settings = Settings(home=tmp_path)
    migrate(settings)
    key_file = settings.admin_key_file
    with session_factory(settings)() as s:
        ensure_local_admin(s, key_file)
        key = key_file.read_text().strip()
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        ensure_local_admin(s, key_file)
        assert key_file.read_text().strip() == key  # kept while valid
        key_file.unlink()
        ensure_local_admin(s, key_file)  # lost: a second admin, the first one untouched
        second = authenticate(s, key_file.read_text().strip())
        assert second is not None and second.is_admin and second.name.startswith("admin-")
        assert authenticate(s, key).name == "admin"
