"""A user's own colour data end to end: upload a 32x32 RGB .npz, ask for a model without naming a
learngene, get the best-fitting one (measured when two fit equally), download a 3-channel 32x32 checkpoint.
A 16x16 grey upload (a side the learngenes were not trained at) runs end to end too."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors import safe_open

from api_tests.conftest import distributed_service
from api_tests.harness import Service, create_database, drop_database

JOB = {"depth": 2, "hidden_size": 64, "sigma_steps": 3, "subset_size": 32, "batch_size": 8, "eval_images": 8,
       "sample_steps": 2}
SIDE, CLASSES = 32, 4


def colour_images(n: int, side: int = SIDE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Coloured shapes (square, disc, cross, stripes: the label) on two-colour gradients, made here."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / (side - 1)
    labels = np.arange(n) % CLASSES
    images = np.empty((n, side, side, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        a, b, fg = rng.uniform(0, 255, (3, 3))
        t = (xx if rng.random() < 0.5 else yy)[..., None]
        img = a * (1 - t) + b * t
        cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
        mask = {0: (abs(yy - cy) < r) & (abs(xx - cx) < r),
                1: (yy - cy) ** 2 + (xx - cx) ** 2 < r * r,
                2: ((abs(yy - cy) < r / 3) | (abs(xx - cx) < r / 3)) & (abs(yy - cy) < r) & (abs(xx - cx) < r),
                3: (np.floor((xx + yy) * 6) % 2 == 0) & ((yy - cy) ** 2 + (xx - cx) ** 2 < 1.5 * r * r)}[int(label)]
        img[mask] = fg
        images[i] = np.clip(img, 0, 255).astype(np.uint8)
    return images, labels


def npz(images: np.ndarray, labels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images, labels=labels)
    return buf.getvalue()


def colour_learngene(out: Path, name: str, steps: int, seed: int) -> Path:
    """A tiny 32x32 RGB learngene set (patch 4, width 64) pre-trained a few steps on the synthetic shapes."""
    import torch

    from fine.config import DiTConfig
    from fine.data import validate_arrays
    from fine.pretrain import PretrainConfig, pretrain
    from fine.training import OptimConfig

    torch.set_num_threads(1)
    images, labels = colour_images(64, seed=100 + seed)
    data = validate_arrays({"images": images, "labels": labels}, name)
    cfg = DiTConfig(image_size=SIDE, in_channels=3, patch_size=4, depth=2, hidden_size=64, head_dim=32,
                    num_classes=CLASSES, rank=4)
    pretrain(out, cfg, data, data, PretrainConfig(steps=steps, widths=[32], ckpt_every=steps, eval_every=steps,
                                                  eval_images=16, name=name, seed=seed),
             OptimConfig(lr=1e-3, warmup=1, batch_size=16))
    return out / "learngene" / "learngene.safetensors"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, toy_learngene: Path) -> Iterator[Service]:
    """A service of this module's own: the learngenes it registers would change what other tests list."""
    name, url = create_database()
    try:
        with distributed_service(tmp_path_factory.mktemp("colour"), toy_learngene, url) as svc:
            yield svc
    finally:
        drop_database(name)


@pytest.fixture(scope="module")
def painter(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, list[str]]]:
    """A user with two private colour learngenes (so only their own jobs see them)."""
    c = service.client_for(service.add_user("painter"))
    ids = []
    for i, steps in enumerate((2, 6)):
        path = colour_learngene(tmp_path_factory.mktemp(f"colour-lg-{i}"), f"toy-colour{i}", steps, seed=i)
        r = c.post("/v1/learngenes", files={"file": ("learngene.safetensors", path.read_bytes(),
                                                      "application/octet-stream")},
                   data={"config": (path.parent / "config.json").read_text()})
        assert r.status_code == 201, r.text
        assert r.json()["public"] is False
        ids.append(r.json()["id"])
    yield c, ids
    c.close()


def header_config(body: bytes) -> dict:
    n = int.from_bytes(body[:8], "little")
    return json.loads(json.loads(body[8:8 + n])["__metadata__"]["config"])


def run_job(service: Service, c: httpx.Client, dataset: str) -> tuple[dict, bytes]:
    r = c.post("/v1/jobs", json={**JOB, "dataset": dataset})
    assert r.status_code == 202, r.text
    done = service.wait_final(r.json()["id"], timeout=300)
    assert done["status"] == "succeeded", done
    f = c.get(f"/v1/checkpoints/{done['checkpoint_id']}/file")
    assert f.status_code == 200
    return done, f.content


def test_colour_upload_to_checkpoint(service: Service, painter: tuple[httpx.Client, list[str]],
                                     tmp_path: Path) -> None:
    c, colour_ids = painter
    up = c.post("/v1/datasets", files={"file": ("shapes.npz", npz(*colour_images(48)), "application/octet-stream")})
    assert up.status_code == 201, up.text
    ds = up.json()
    assert (ds["image_size"], ds["channels"], ds["num_classes"]) == (SIDE, 3, CLASSES)

    done, body = run_job(service, c, ds["id"])
    rec = done["spec"]["learngene_choice"]
    # both colour sets fit equally (3 channels, 32x32, width trained) and better than the grey 8x8 default:
    # the worker measured them and the job names the winner, with the losses in its reason
    assert rec["by"] == "measured" and set(rec["losses"]) == set(colour_ids)
    assert done["learngene"] == rec["chosen"] == min(rec["losses"], key=rec["losses"].get)
    assert "fit equally" in rec["reason"] and "is lowest" in rec["reason"]
    assert {x["id"] for x in rec["candidates"]} >= set(colour_ids)
    assert rec["candidates"][0]["tier"] == 0 and rec["candidates"][-1]["tier"] == 2  # the default: other channels
    assert service.wait_metrics(done["id"], timeout=300)["metrics_status"] == "ready"  # evaluated after download
    ckpt = c.get(f"/v1/checkpoints/{done['checkpoint_id']}").json()
    assert ckpt["learngene"] == done["learngene"] and "heldout_loss" in ckpt["metrics"]
    events = c.get(f"/v1/jobs/{done['id']}/events").text
    assert "event: learngene" in events and rec["chosen"] in events

    path = tmp_path / "model.safetensors"
    path.write_bytes(body)
    with safe_open(str(path), "numpy") as f:
        patch = f.get_tensor("x_embedder.proj.weight")
        final = f.get_tensor("final_layer.linear.weight")
    assert patch.shape == (64, 3, 4, 4) and final.shape == (4 * 4 * 3, 64)
    cfg = header_config(body)
    assert (cfg["image_size"], cfg["in_channels"], cfg["num_classes"]) == (SIDE, 3, CLASSES)


def test_grey_16x16_upload_uses_the_default(service: Service, painter: tuple[httpx.Client, list[str]]) -> None:
    c, _ = painter
    images, labels = colour_images(40, side=16, seed=7)
    up = c.post("/v1/datasets", files={"file": ("grey16.npz", npz(images.mean(-1).astype(np.uint8), labels),
                                                "application/octet-stream")})
    assert up.status_code == 201, up.text
    done, body = run_job(service, c, up.json()["id"])
    rec = done["spec"]["learngene_choice"]
    assert rec["by"] == "default" and "same channels, another image size" in rec["reason"]
    cfg = header_config(body)
    assert (cfg["image_size"], cfg["in_channels"]) == (16, 1)
