"""Choosing the learngene of a job that names none: fit first (the API), then measurement on a tie (the worker)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import select

from fine.choice import candidate_losses, fixed_timestep_loss
from fine.data import load
from fine.formats import load_learngene, save_learngene
from fine.model import DiT
from fine.spec import JobSpec
from fine_zoo.settings import Settings
from learngene_store import choice
from learngene_store.accounts import add_user
from learngene_store.blobs import make_blob_store
from learngene_store.catalog import ensure_builtin_datasets, register_default_learngene, register_learngene
from learngene_store.db import migrate, session_factory
from learngene_store.learngene_meta import read_metadata
from learngene_store.models import Checkpoint, Dataset, Job, JobEvent, Learngene
from service.app import create_app
from tests.conftest import TOY
from worker.runner import run_job

PROBLEM = "application/problem+json"


def lg(id_: str, channels: int = 1, side: int = 28, patch: int = 4, width: int = 128, widths=(64, 96, 128),
       public: bool = True, owner: str = "system") -> Learngene:
    return Learngene(id=id_, in_channels=channels, image_size=side, patch_size=patch, hidden_size=width,
                     head_dim=32, widths=list(widths), source_dataset=f"src-{id_}", public=public, owner=owner)


def ds(channels: int = 1, side: int = 28) -> Dataset:
    return Dataset(id="ds_x", kind="upload", name="x", num_images=100, image_size=side, channels=channels,
                   num_classes=10)


def spec(**kw: object) -> JobSpec:
    return JobSpec.model_validate({"depth": 2, "hidden_size": 64, "dataset": "ds_x", **kw})


# -- fit (torch-free ranking) ------------------------------------------------------------------------
def test_tiers_channels_and_size_first() -> None:
    same, other_size, other_channels = lg("same"), lg("big", side=56), lg("rgb", channels=3)
    assert choice.fit_of(same, ds(), spec()).tier == 0
    assert choice.fit_of(other_size, ds(), spec()).tier == 1
    assert choice.fit_of(other_channels, ds(), spec()).tier == 2
    picked = choice.choose([other_channels, other_size, same], ds(), spec(), default=other_channels)
    assert picked.learngene is same and picked.record["by"] == "fit"
    assert "same fits best: same channels and image size" in picked.record["reason"]
    assert "the `default` alias rgb fits less well: other channels" in picked.record["reason"]
    assert [c["id"] for c in picked.record["candidates"]] == ["same", "big", "rgb"]


def test_what_cannot_build_the_job_is_no_candidate() -> None:
    assert choice.fit_of(lg("p5", patch=5), ds(side=32), spec()) is None  # 32 is not a multiple of 5
    assert choice.fit_of(lg("narrow", width=32, widths=(32,)), ds(), spec()) is None  # hidden_size 64 > 32
    assert choice.fit_of(lg("heads"), ds(), spec(hidden_size=48)) is None  # not whole heads of 32
    assert choice.fit_of(lg("rgba", channels=4), ds(channels=3), spec()) is None  # only 1 <-> C adapts
    assert choice.fit_of(lg("rgb", channels=3), ds(channels=1), spec()) is not None
    assert choice.choose([lg("p5", patch=5)], ds(side=32), spec(), default=None) is None


def test_a_trained_width_beats_an_untrained_one_within_a_tier() -> None:
    untrained, trained = lg("untrained", widths=(32, 128)), lg("trained", widths=(64, 128))
    picked = choice.choose([untrained, trained], ds(), spec(), default=untrained)
    assert picked.learngene is trained and "width not trained" in picked.record["reason"]


def test_the_default_alias_wins_when_it_fits_as_well_as_the_best() -> None:
    default, newer = lg("default"), lg("newer")
    picked = choice.choose([newer, default], ds(), spec(), default=default)
    assert picked.learngene is default and picked.record["by"] == "default" and not picked.measure
    assert "fits as well as any" in picked.record["reason"] and "newer" in picked.record["reason"]
    # ... but not when something fits better
    better = lg("colour", channels=3, side=32)
    picked = choice.choose([newer, default, better], ds(channels=3, side=32), spec(), default=default)
    assert picked.learngene is better


def test_a_tie_without_the_default_is_measured() -> None:
    a, b, default = lg("a", channels=3, side=32), lg("b", channels=3, side=32), lg("default")
    picked = choice.choose([a, b, default], ds(channels=3, side=32), spec(), default=default)
    assert picked.record["by"] == "pending" and picked.measure == ["a", "b"]
    assert "2 learngenes fit equally" in picked.record["reason"] and "held-out loss" in picked.record["reason"]
    many = [lg(f"m{i}", channels=3, side=32) for i in range(6)]
    assert choice.choose(many, ds(channels=3, side=32), spec(), default).measure == ["m0", "m1", "m2", "m3"]
    # scratch uses no learngene weights: nothing to measure
    scratch = choice.choose([a, b], ds(channels=3, side=32), spec(method="scratch"), default)
    assert scratch.record["by"] == "fit" and scratch.learngene is a and not scratch.measure
    done = choice.measured(picked.record, {"a": 0.5, "b": 0.25}, {})
    assert done["chosen"] == "b" and done["by"] == "measured" and "measure" not in done
    assert "b 0.2500, a 0.5000" in done["reason"] and "b is lowest" in done["reason"]


# -- the measurement -------------------------------------------------------------------------------
def _random_learngene(out: Path) -> Path:
    torch.manual_seed(1)
    model = DiT(TOY)
    save_learngene(out, model, {"name": "random", "source_dataset": "none", "steps": 0, "widths": [32, 64]})
    return out / "learngene.safetensors"


def test_measurement_prefers_the_learngene_trained_on_the_target(toy_learngene_dir: Path, tmp_path: Path) -> None:
    trained = load_learngene(toy_learngene_dir / "learngene.safetensors")
    random = load_learngene(_random_learngene(tmp_path / "random"))
    target = load("digits", "train")
    s = spec(dataset="digits", hidden_size=64)
    protocol = {"n_images": 32, "timesteps": (50, 250, 500, 750), "seed": 0}
    losses = candidate_losses({"trained": trained, "random": random}, s, target, **protocol)
    assert losses["trained"] < losses["random"]
    assert candidate_losses({"trained": trained}, s, target, **protocol) == {"trained": losses["trained"]}
    model = DiT(TOY)
    a = fixed_timestep_loss(model, target.subset(8), (10, 900), seed=3)
    assert a == fixed_timestep_loss(model, target.subset(8), (10, 900), seed=3)
    assert a != fixed_timestep_loss(model, target.subset(8), (10, 900), seed=4)


# -- the API records the choice --------------------------------------------------------------------
def _fake_learngene(session, store, tmp: Path, id_: str, owner: str = "system", public: bool = True,  # type: ignore[no-untyped-def]
                    **cols: object) -> Learngene:
    path = tmp / f"{id_}.safetensors"
    path.write_bytes(id_.encode())  # the API reads only the registry row
    meta = {"id": id_, "hidden_size": 64, "head_dim": 32, "depth": 2, "rank": 4, "patch_size": 4, "image_size": 32,
            "in_channels": 3, "num_classes": 10, "source_dataset": f"src-{id_}", "steps": 1, "widths": [32, 64],
            **cols}
    return register_learngene(session, store, path, meta, owner=owner, public=public)


def _npz(side: int, channels: int = 3, n: int = 16) -> bytes:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, side, side, channels) if channels > 1 else (n, side, side)).astype(np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images, labels=np.arange(n) % 4)
    return buf.getvalue()


@pytest.fixture()
def api(tmp_path: Path, toy_learngene_dir: Path) -> Iterator[tuple[TestClient, Settings]]:
    settings = Settings(home=tmp_path / "home", default_learngene=toy_learngene_dir / "learngene.safetensors")
    with TestClient(create_app(settings, reaper=False), raise_server_exceptions=False) as c:
        yield c, settings


def _key(settings: Settings, name: str, admin: bool = False) -> dict[str, str]:
    with session_factory(settings)() as s:
        return {"Authorization": f"Bearer {add_user(s, name, admin)}"}


def test_api_records_the_choice(api: tuple[TestClient, Settings], tmp_path: Path) -> None:
    c, settings = api
    alice, bob = _key(settings, "alice"), _key(settings, "bob")
    store = make_blob_store(settings)
    with session_factory(settings)() as s:
        _fake_learngene(s, store, tmp_path, "colour-a")
        _fake_learngene(s, store, tmp_path, "colour-b", owner="alice", public=False)
        _fake_learngene(s, store, tmp_path, "colour-bob", owner="bob", public=False)
    up = c.post("/v1/datasets", files={"file": ("rgb.npz", _npz(32), "application/octet-stream")}, headers=alice)
    assert up.status_code == 201, up.text
    body = {"depth": 2, "hidden_size": 64, "dataset": up.json()["id"], "sigma_steps": 2, "subset_size": 8}
    job = c.post("/v1/jobs", json=body, headers=alice).json()
    got = c.get(f"/v1/jobs/{job['id']}", headers=alice).json()
    rec = got["spec"]["learngene_choice"]
    assert rec["by"] == "pending" and rec["measure"] == ["colour-b", "colour-a"]  # newest first; not bob's
    assert got["learngene"] == "colour-b" == got["spec"]["learngene"]  # provisional until measured
    assert {x["id"] for x in rec["candidates"]} == {"colour-a", "colour-b", next(iter(_default_id(settings)))}
    # a named learngene is used as named
    named = c.post("/v1/jobs", json={**body, "learngene": "colour-a"}, headers=alice).json()
    assert named["learngene"] == "colour-a" and named["spec"]["learngene_choice"]["by"] == "named"
    # an admin's automatic choice never takes another user's private set
    admin = _key(settings, "root", admin=True)
    up_admin = c.post("/v1/datasets", files={"file": ("rgb.npz", _npz(32, n=17), "application/octet-stream")},
                      headers=admin).json()
    picked = c.post("/v1/jobs", json={**body, "dataset": up_admin["id"]}, headers=admin).json()
    assert picked["learngene"] == "colour-a" and picked["spec"]["learngene_choice"]["by"] == "fit"
    # a grey 8x8 dataset: the default alias (the toy digits set) fits as well as any
    grey = c.post("/v1/jobs", json={**body, "dataset": "digits"}, headers=bob).json()
    assert grey["spec"]["learngene_choice"]["by"] == "default"


def _default_id(settings: Settings) -> set[str]:
    from learngene_store.accounts import alias_target

    with session_factory(settings)() as s:
        return {alias_target(s).id}


def _upload_and_submit(api: tuple[TestClient, Settings], user: str, side: int, channels: int):  # type: ignore[no-untyped-def]
    """A new user uploads a side x side dataset and asks for a job on it without naming a learngene."""
    c, settings = api
    key = _key(settings, user)
    up = c.post("/v1/datasets", files={"file": ("g.npz", _npz(side, channels=channels), "application/octet-stream")},
                headers=key)
    assert up.status_code == 201, up.text
    return c.post("/v1/jobs", json={"depth": 2, "hidden_size": 64, "dataset": up.json()["id"]}, headers=key)


@pytest.mark.parametrize("side", [8, 16, 32, 40])  # the toy default: 8x8, patch 2
def test_any_square_side_that_is_a_multiple_of_the_patch(api: tuple[TestClient, Settings], side: int) -> None:
    r = _upload_and_submit(api, f"u{side}", side, channels=1)
    assert r.status_code == 202, r.text
    assert r.json()["spec"]["learngene_choice"]["by"] == "default"


@pytest.mark.parametrize(("side", "near"), [(5, "4 or 6"), (15, "14 or 16"), (33, "32 or 34")])
def test_other_sides_are_a_clear_422(api: tuple[TestClient, Settings], side: int, near: str) -> None:
    r = _upload_and_submit(api, f"v{side}", side, channels=3)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    detail = r.json()["detail"]
    assert f"{side}x{side} images, not a multiple of learngene" in detail and "patch size 2" in detail  # the toy's
    assert f"any square side that is a multiple of 2 works (e.g. {near})" in detail
    assert [e["field"] for e in r.json()["errors"]] == ["dataset"]


# -- the worker measures a tie ---------------------------------------------------------------------
def test_worker_measures_a_tie_and_records_it(tmp_path: Path, toy_learngene_dir: Path) -> None:
    settings = Settings(home=tmp_path, heartbeat_interval=0.2, torch_threads=1)
    migrate(settings)
    store = make_blob_store(settings)
    random_path = _random_learngene(tmp_path / "random")
    with session_factory(settings)() as s:
        ensure_builtin_datasets(s)
        trained = register_default_learngene(s, store, toy_learngene_dir / "learngene.safetensors")
        random = register_learngene(s, store, random_path, read_metadata(random_path), public=True)
        record = {"chosen": random.id, "by": "pending", "reason": "2 learngenes fit equally: x; the worker measures",
                  "candidates": [], "measure": [random.id, trained.id, "gone"]}
        job_spec = {"depth": 2, "hidden_size": 32, "dataset": "digits", "learngene": random.id, "sigma_steps": 1,
                    "subset_size": 16, "batch_size": 8, "eval_images": 0, "sample_steps": 1,
                    choice.CHOICE_KEY: record}
        job = Job(request_hash="h", spec=job_spec, learngene_id=random.id, dataset="digits", method="fine")
        s.add(job)
        s.commit()
        job_id, trained_id, random_id = job.id, trained.id, random.id
    assert run_job(settings, job_id).startswith("succeeded: ")
    with session_factory(settings)() as s:
        done = s.get(Job, job_id)
        rec = done.spec[choice.CHOICE_KEY]
        assert done.learngene_id == trained_id == done.spec["learngene"] == rec["chosen"]
        assert rec["by"] == "measured" and set(rec["losses"]) == {trained_id, random_id}
        assert rec["losses"][trained_id] < rec["losses"][random_id]
        assert "gone not measured: no longer in the registry" in rec["reason"]
        ckpt = s.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)).scalar_one()
        assert ckpt.learngene_id == trained_id and ckpt.config["learngene_id"] == trained_id
        ev = s.execute(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == "learngene")).scalar_one()
        assert ev.data["learngene"] == trained_id and ev.data["by"] == "measured"
        phases = [e.data.get("phase") for e in s.execute(select(JobEvent).where(JobEvent.job_id == job_id)).scalars()]
        assert "choosing" in phases


def test_settle_needs_the_lease(tmp_path: Path, toy_learngene_dir: Path) -> None:
    settings = Settings(home=tmp_path)
    migrate(settings)
    with session_factory(settings)() as s:
        lg_row = register_default_learngene(s, make_blob_store(settings), toy_learngene_dir / "learngene.safetensors")
        job = Job(request_hash="h", spec={}, learngene_id=lg_row.id, dataset="digits", method="fine",
                  status="running", lease="mine")
        s.add(job)
        s.commit()
        assert not choice.settle(s, job.id, "theirs", lg_row.id, {"by": "measured", "reason": "r"})
        assert choice.settle(s, job.id, "mine", lg_row.id, {"by": "measured", "reason": "r"})
        assert s.get(Job, job.id, populate_existing=True).spec[choice.CHOICE_KEY]["by"] == "measured"
