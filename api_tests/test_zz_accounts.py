"""Accounts against the real servers: owner, another user, an admin and no key, on every route.
(Runs last: it adds users' private learngenes and datasets that earlier tests do not expect.)"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from safetensors import safe_open

from api_tests.conftest import TINY
from api_tests.harness import Service
from api_tests.helpers import npz_bytes

PROBLEM = "application/problem+json"


@dataclass
class World:
    owner: httpx.Client  # alice: owns the resources below
    other: httpx.Client  # bob: an ordinary user
    admin: httpx.Client
    anon: httpx.Client  # no Authorization header
    job: str
    checkpoint: str
    dataset: str
    learngene: str  # alice's private learngene set
    public_learngene: str


def _private_copy(toy: Path, dest: Path, new_id: str) -> tuple[bytes, str]:
    """The toy learngene under another id (so another sha256), with its config.json sidecar."""
    from safetensors.numpy import save_file

    with safe_open(str(toy), "numpy") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    config = json.loads((toy.parent / "config.json").read_text())
    config.update(id=new_id)
    config.pop("sha256", None)
    meta["id"] = new_id
    meta.pop("sha256", None)
    save_file(tensors, str(dest), metadata=meta)
    return dest.read_bytes(), json.dumps(config)


@pytest.fixture(scope="module")
def world(service: Service, toy_learngene: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    alice, bob = service.client_for(service.add_user("alice")), service.client_for(service.add_user("bob"))
    admin, anon = service.client_for(service.admin_key()), service.client_for(None)
    ds = alice.post("/v1/datasets", files={"file": ("a.npz", npz_bytes(n=40, seed=11), "application/octet-stream")})
    assert ds.status_code == 201, ds.text
    job = alice.post("/v1/jobs", json={**TINY, "dataset": ds.json()["id"]})
    assert job.status_code == 202, job.text
    done = service.wait_final(job.json()["id"])
    assert done["status"] == "succeeded", done
    body, config = _private_copy(toy_learngene, tmp_path_factory.mktemp("private") / "lg.safetensors", "alice-lg")
    lg = alice.post("/v1/learngenes", files={"file": ("lg.safetensors", body, "application/octet-stream")},
                    data={"config": config})
    assert lg.status_code == 201, lg.text
    assert lg.json()["public"] is False and lg.json()["owner"] == "alice"
    public = next(x["id"] for x in admin.get("/v1/learngenes").json() if "default" in x["aliases"])
    w = World(alice, bob, admin, anon, done["id"], done["checkpoint_id"], ds.json()["id"], lg.json()["id"], public)
    yield w
    for c in (alice, bob, admin, anon):
        c.close()


def _problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status and body["detail"]
    return body


def _reads(w: World) -> list[tuple[str, str]]:
    return [("GET", f"/v1/jobs/{w.job}"), ("GET", f"/v1/checkpoints/{w.checkpoint}"),
            ("GET", f"/v1/checkpoints/{w.checkpoint}/file"), ("HEAD", f"/v1/checkpoints/{w.checkpoint}/file"),
            ("GET", f"/v1/checkpoints/{w.checkpoint}/file?format=config"), ("GET", f"/v1/datasets/{w.dataset}"),
            ("GET", f"/v1/learngenes/{w.learngene}"), ("GET", f"/v1/learngenes/{w.learngene}/file"),
            ("HEAD", f"/v1/learngenes/{w.learngene}/file")]


def test_owner_and_admin_read_another_user_gets_404(world: World) -> None:
    for method, path in _reads(world):
        for who in (world.owner, world.admin):
            r = who.request(method, path)
            assert r.status_code == 200, (method, path, r.text)
        r = world.other.request(method, path)
        assert r.status_code == 404, (method, path, r.status_code)
        if method == "GET":
            assert r.headers["content-type"] == PROBLEM and "no " in r.json()["detail"]


def test_no_key_is_401_on_every_v1_route(world: World, service: Service) -> None:
    """Every /v1 path and method in the OpenAPI document (and the undocumented HEADs) wants a key."""
    schema = world.anon.get("/openapi.json").json()
    ids = {"job_id": world.job, "ckpt_id": world.checkpoint, "dataset_id": world.dataset,
           "lg_id": world.learngene, "name": "default"}
    seen = 0
    for path, ops in schema["paths"].items():
        if not path.startswith("/v1"):
            continue
        concrete = re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "x"), path)
        for method in [m.upper() for m in ops if m in ("get", "post", "put", "patch", "delete")] + ["HEAD"]:
            if method == "HEAD" and not concrete.endswith("/file"):
                continue
            for headers in ({}, {"Authorization": "Bearer fz_not-a-key"}, {"Authorization": "Basic YTpi"}):
                r = world.anon.request(method, concrete, headers=headers, json={} if method in ("POST", "PUT") else None)
                assert r.status_code == 401, (method, concrete, headers, r.status_code, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
                if method != "HEAD":
                    detail = _problem(r, 401)["detail"]
                    assert "Authorization: Bearer" in detail or "unknown or revoked" in detail
            seen += 1
    assert seen >= 12, seen
    for open_path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/"):
        assert world.anon.get(open_path).status_code != 401, open_path


def test_lists_show_only_what_one_may_see(world: World) -> None:
    def ids(c: httpx.Client, path: str) -> set[str]:
        body = c.get(path).json()
        return {x["id"] for x in (body["items"] if isinstance(body, dict) else body)}

    for path, mine in (("/v1/jobs", world.job), ("/v1/datasets", world.dataset), ("/v1/learngenes", world.learngene)):
        assert mine in ids(world.owner, path) and mine in ids(world.admin, path), path
        assert mine not in ids(world.other, path), path
        _problem(world.anon.get(path), 401)
    assert world.public_learngene in ids(world.other, "/v1/learngenes")  # public sets: everyone
    assert {"digits", "fashion-mnist"} <= ids(world.other, "/v1/datasets")  # built-ins: everyone
    lg = world.owner.get(f"/v1/learngenes/{world.public_learngene}").json()
    assert world.checkpoint in [d["checkpoint_id"] for d in lg["descendants"]]
    assert world.checkpoint not in [d["checkpoint_id"] for d in
                                    world.other.get(f"/v1/learngenes/{world.public_learngene}").json()["descendants"]]
    assert world.other.get(f"/v1/learngenes/{world.public_learngene}/file").status_code == 200


def test_acting_on_others_resources(world: World) -> None:
    _problem(world.other.post(f"/v1/jobs/{world.job}/cancel"), 404)
    assert world.owner.post(f"/v1/jobs/{world.job}/cancel").status_code == 409  # own, but finished
    assert world.admin.post(f"/v1/jobs/{world.job}/cancel").status_code == 409
    # another user's dataset or private learngene cannot be built from: unknown to them
    body = _problem(world.other.post("/v1/jobs", json={**TINY, "dataset": world.dataset}), 422)
    assert f"unknown dataset {world.dataset!r}" in body["detail"]
    body = _problem(world.other.post("/v1/jobs", json={**TINY, "learngene": world.learngene}), 422)
    assert f"unknown learngene {world.learngene!r}" in body["detail"]
    r = world.owner.post("/v1/jobs", json={**TINY, "learngene": world.learngene, "sigma_steps": 2})
    assert r.status_code == 202 and r.json()["learngene"] == world.learngene
    assert world.owner.post(f"/v1/jobs/{r.json()['id']}/cancel").status_code == 202


def test_default_alias_is_explicit_and_admin_only(world: World, service: Service) -> None:
    aliases = world.other.get("/v1/aliases").json()
    assert [(a["name"], a["learngene"]) for a in aliases] == [("default", world.public_learngene)]
    r = world.other.post("/v1/jobs", json={**TINY, "sigma_steps": 2})
    assert r.status_code == 202 and r.json()["learngene"] == world.public_learngene  # not the newest set
    world.other.post(f"/v1/jobs/{r.json()['id']}/cancel")
    body = _problem(world.owner.put("/v1/aliases/default", json={"learngene": world.public_learngene}), 403)
    assert "not an admin" in body["detail"]
    body = _problem(world.admin.put("/v1/aliases/default", json={"learngene": world.learngene}), 422)
    assert "private" in body["detail"]
    moved = world.admin.put("/v1/aliases/default", json={"learngene": world.public_learngene})
    assert moved.status_code == 200 and moved.json()["updated_by"] == "admin"
    # an ordinary user's upload is private and never becomes the default
    assert world.owner.get(f"/v1/learngenes/{world.learngene}").json()["aliases"] == []


def test_revoked_key_is_401(service: Service) -> None:
    key = service.add_user("carol")
    with service.client_for(key) as carol:
        assert carol.get("/v1/jobs").status_code == 200
        service.users("revoke", "carol")
        body = _problem(carol.get("/v1/jobs"), 401)
        assert "revoked" in body["detail"]
