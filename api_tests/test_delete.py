"""DELETE a user's own checkpoints and uploaded datasets; blobs go when nothing references them."""

from __future__ import annotations

from pathlib import Path

from api_tests.conftest import TINY
from api_tests.harness import Service
from api_tests.helpers import npz_bytes


def _blob(service: Service, sha: str) -> Path:
    return service.home / "blobs" / sha[:2] / sha[2:4] / sha


def test_delete_a_checkpoint_collects_its_unshared_blobs(service: Service) -> None:
    c = service.client
    job = service.wait_final(c.post("/v1/jobs", json={**TINY, "seed": 303}).json()["id"])
    ckpt = c.get(f"/v1/checkpoints/{job['checkpoint_id']}").json()
    shas = {f["format"]: f["sha256"] for f in ckpt["files"]}
    assert all(_blob(service, sha).exists() for sha in shas.values())
    r = c.delete(f"/v1/checkpoints/{ckpt['id']}")
    assert r.status_code == 204, r.text
    assert c.get(f"/v1/checkpoints/{ckpt['id']}").status_code == 404
    assert c.delete(f"/v1/checkpoints/{ckpt['id']}").status_code == 404
    assert not _blob(service, shas["dense"]).exists()
    assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"  # the job's record stays


def test_delete_an_upload_but_not_a_builtin_nor_one_in_use(service: Service) -> None:
    c = service.client
    data = npz_bytes(n=40, side=8, classes=4, seed=9)
    ds = c.post("/v1/datasets", files={"file": ("del.npz", data, "application/octet-stream")}).json()
    busy = c.post("/v1/jobs", json={**TINY, "dataset": ds["id"], "sigma_steps": 20000, "seed": 304}).json()
    r = c.delete(f"/v1/datasets/{ds['id']}")
    assert r.status_code == 409 and busy["id"] in r.json()["detail"]
    c.post(f"/v1/jobs/{busy['id']}/cancel")
    assert service.wait_final(busy["id"], timeout=60)["status"] == "canceled"
    assert c.delete(f"/v1/datasets/{ds['id']}").status_code == 204
    assert c.get(f"/v1/datasets/{ds['id']}").status_code == 404
    assert not _blob(service, ds["sha256"]).exists()
    builtin = c.delete("/v1/datasets/digits")
    assert builtin.status_code == 403 and "built-in" in builtin.json()["detail"]
    assert c.delete("/v1/datasets/ds_nope").status_code == 404
