"""Every validation rule and every malformed request is a 4xx problem+json with a useful detail."""

from __future__ import annotations

import httpx
import pytest

from api_tests.conftest import TINY
from api_tests.helpers import npz_bytes

PROBLEM = "application/problem+json"


def problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status and body["title"] and body["type"].startswith("https://")
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.mark.parametrize(("override", "field", "detail"), [
    ({"depth": 0}, "depth", "depth must be between 1 and 64, got 0"),
    ({"depth": 65}, "depth", "depth must be between 1 and 64, got 65"),
    ({"hidden_size": 48}, "hidden_size", "hidden_size must be a multiple of 32 and at most 64 for learngene toy-"),
    ({"hidden_size": 96}, "hidden_size", "hidden_size must be a multiple of 32 and at most 64"),
    ({"hidden_size": 0}, "hidden_size", "hidden_size must be a multiple of 32"),
    ({"num_heads": 4}, "num_heads", "num_heads must be hidden_size / head size = 64 / 32 = 2"),
    ({"dataset": "imagenet"}, "dataset", "unknown dataset 'imagenet': use one of"),
    ({"dataset": "digits:x-y"}, "dataset", "bad class filter 'x-y'"),
    ({"dataset": "digits:5-12"}, "dataset", "classes [10, 11, 12] out of range: digits has classes 0-9"),
    ({"learngene": "nope"}, "learngene", "unknown learngene 'nope'; registered: toy-"),
    ({"method": "magic"}, "method", "method must be one of fine, scratch, weight-selection, linear-fit"),
    ({"sigma_steps": -1}, "sigma_steps", "sigma_steps must be between 0 and 20000, got -1"),
    ({"sigma_steps": 20001}, "sigma_steps", "sigma_steps must be between 0 and 20000, got 20001"),
    ({"finetune_steps": 50001}, "finetune_steps", "finetune_steps must be between 0 and 50000"),
    ({"subset_size": 7}, "subset_size", "subset_size must be between 8 and 100000, got 7"),
    ({"seed": -1}, "seed", "seed must be between 0 and 2147483647"),
    ({"batch_size": 0}, "batch_size", "batch_size must be between 1 and 1024"),
    ({"eval_images": 10001}, "eval_images", "eval_images must be between 0 and 10000"),
    ({"sample_steps": 0}, "sample_steps", "sample_steps must be between 1 and 1000"),
])
def test_spec_rule(client: httpx.Client, override: dict, field: str, detail: str) -> None:
    body = problem(client.post("/v1/jobs", json={**TINY, **override}), 422)
    assert detail in body["detail"]
    assert field in [e["field"] for e in body["errors"]]


def test_several_errors_reported_together(client: httpx.Client) -> None:
    body = problem(client.post("/v1/jobs", json={**TINY, "depth": 0, "sigma_steps": -5}), 422)
    assert {e["field"] for e in body["errors"]} == {"depth", "sigma_steps"}


def test_dataset_side_not_multiple_of_patch(client: httpx.Client) -> None:
    r = client.post("/v1/datasets", files={"file": ("six.npz", npz_bytes(side=6), "application/octet-stream")})
    assert r.status_code == 201, r.text
    body = problem(client.post("/v1/jobs", json={**TINY, "dataset": r.json()["id"]}), 422)
    assert "not a multiple of learngene" in body["detail"] and "patch size 4" in body["detail"]


@pytest.mark.parametrize(("payload", "detail"), [
    ({k: v for k, v in TINY.items() if k != "depth"}, "depth: required field is missing"),
    ({**TINY, "colour": "red"}, "colour: unknown field"),
    ({**TINY, "depth": "6"}, "depth: Input should be a valid integer"),
    ({**TINY, "depth": 2.5}, "depth: Input should be a valid integer"),
    ([1, 2, 3], "must be a JSON object"),
])
def test_body_shape(client: httpx.Client, payload: object, detail: str) -> None:
    body = problem(client.post("/v1/jobs", json=payload), 422)
    assert detail in body["detail"]


def test_malformed_json(client: httpx.Client) -> None:
    body = problem(client.post("/v1/jobs", content=b'{"depth": 3,', headers={"Content-Type": "application/json"}),
                   400)
    assert "not valid JSON" in body["detail"]


def test_wrong_content_type(client: httpx.Client) -> None:
    body = problem(client.post("/v1/jobs", content=b"depth=3", headers={"Content-Type": "text/plain"}), 415)
    assert "application/json" in body["detail"]
    problem(client.post("/v1/jobs", data={"depth": "3"}), 415)


def test_framework_errors_are_problems(client: httpx.Client) -> None:
    assert "/v1" in problem(client.get("/nowhere"), 404)["detail"]
    assert "no job 'job_missing'" in problem(client.get("/v1/jobs/job_missing"), 404)["detail"]
    problem(client.post("/v1/jobs/job_missing/cancel"), 404)
    problem(client.get("/v1/checkpoints/ckpt_missing"), 404)
    problem(client.get("/v1/checkpoints/ckpt_missing/file"), 404)
    problem(client.get("/v1/learngenes/missing"), 404)
    problem(client.get("/v1/datasets/missing"), 404)
    body = problem(client.delete("/v1/jobs"), 405)
    assert "DELETE is not allowed" in body["detail"] and "GET" in body["detail"]
    problem(client.get("/v1/jobs", params={"limit": 0}), 422)


# -- uploads ----------------------------------------------------------------------------------------
def upload(client: httpx.Client, content: bytes, name: str = "data.npz") -> httpx.Response:
    return client.post("/v1/datasets", files={"file": (name, content, "application/octet-stream")})


def test_upload_valid_dataset(client: httpx.Client) -> None:
    r = upload(client, npz_bytes(n=40, side=8, classes=4, seed=1), "mine.npz")
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["kind"] == "upload" and d["num_images"] == 40 and d["image_size"] == 8 and d["num_classes"] == 4
    assert r.headers["location"] == f"/v1/datasets/{d['id']}"
    assert d["id"] in [x["id"] for x in client.get("/v1/datasets").json()]
    builtin = {x["id"] for x in client.get("/v1/datasets").json() if x["kind"] == "builtin"}
    from learngene_store.datasets import BUILTIN

    assert builtin == {info.id for info in BUILTIN} and {"fashion-mnist", "mnist-5k", "digits"} <= builtin
    again = upload(client, npz_bytes(n=40, side=8, classes=4, seed=1))
    assert again.status_code == 200 and again.json()["id"] == d["id"]
    # a class filter on an upload is checked against its labels
    body = problem(client.post("/v1/jobs", json={**TINY, "dataset": f"{d['id']}:2-5"}), 422)
    assert "classes [4, 5] out of range" in body["detail"]


@pytest.mark.parametrize(("content", "status", "detail"), [
    (b"this is not a zip archive at all", 422, "not an .npz file"),
    (npz_bytes(dtype="float32"), 422, "'images' must be uint8, got float32"),
    (npz_bytes(n=3), 422, "needs at least 8 images, got 3"),
    (npz_bytes(labels_len=5), 422, "'labels' must be a vector of 16 entries"),
    (npz_bytes(rect=True), 422, "images must be square"),
    (npz_bytes(key="pictures"), 422, "missing array 'images' (found: labels, pictures)"),
    (npz_bytes(side=2), 422, "image side must be between 4 and 256"),
    (npz_bytes(negative_label=True), 422, "labels must be in 0..999"),
    (npz_bytes(n=3000, side=16), 413, "exceeds the limit"),
])
def test_upload_rejects(client: httpx.Client, content: bytes, status: int, detail: str) -> None:
    body = problem(upload(client, content), status)
    assert detail in body["detail"]


def test_upload_without_file(client: httpx.Client) -> None:
    body = problem(client.post("/v1/datasets", data={"name": "x"}), 422)
    assert "file" in body["detail"]
    problem(client.post("/v1/datasets", content=b"raw", headers={"Content-Type": "application/octet-stream"}), 422)


def test_register_learngene(client: httpx.Client, toy_learngene) -> None:  # type: ignore[no-untyped-def]
    files = {"file": ("learngene.safetensors", toy_learngene.read_bytes(), "application/octet-stream")}
    config = (toy_learngene.parent / "config.json").read_text()
    body = problem(client.post("/v1/learngenes", files=files, data={"config": config}), 409)
    assert "already registered" in body["detail"]
    bad = {"file": ("x.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......", "application/octet-stream")}
    assert "not a safetensors file" in problem(client.post("/v1/learngenes", files=bad), 422)["detail"]
    truncated = {"file": ("t.safetensors", toy_learngene.read_bytes()[:5000], "application/octet-stream")}
    assert "truncated" in problem(client.post("/v1/learngenes", files=truncated, data={"config": config}),
                                  422)["detail"]
    problem(client.post("/v1/learngenes", files=files, data={"config": "{oops"}), 422)
    lgs = client.get("/v1/learngenes").json()
    assert len(lgs) == 1 and lgs[0]["widths"] == [32, 64] and lgs[0]["rank"] == 4
    dl = client.get(f"/v1/learngenes/{lgs[0]['id']}/file")
    assert dl.status_code == 200 and dl.content == toy_learngene.read_bytes()


def test_chunked_oversize_upload(client: httpx.Client) -> None:
    def body():  # type: ignore[no-untyped-def]
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.npz\"\r\n\r\n"
        for _ in range(100):
            yield b"x" * 10_000
        yield b"\r\n--b--\r\n"

    r = client.post("/v1/datasets", content=body(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert "FINE_MAX_UPLOAD_BYTES" in problem(r, 413)["detail"]
