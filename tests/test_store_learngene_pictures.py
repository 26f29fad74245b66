"""A learngene set's pictures (curve, sample grid per width) are registered with it and kept while used."""

from __future__ import annotations

import shutil
from pathlib import Path

from fine_zoo.settings import Settings
from learngene_store.blobs import LocalBlobStore
from learngene_store.catalog import register_default_learngene
from learngene_store.collect import referenced
from learngene_store.db import migrate, session_factory
from learngene_store.models import LearngeneFile


def test_pictures_beside_the_default_learngene_are_registered_once(tmp_path: Path, toy_learngene_dir: Path) -> None:
    shipped = tmp_path / "shipped"
    shutil.copytree(toy_learngene_dir, shipped)
    (shipped / "loss_curve.png").write_bytes(b"\x89PNG curve")
    (shipped / "samples_w32.png").write_bytes(b"\x89PNG w32")
    (shipped / "samples_wide.png").write_bytes(b"not a width")  # not a picture name we serve
    settings = Settings(home=tmp_path / "home")
    migrate(settings)
    store = LocalBlobStore(tmp_path / "blobs")
    with session_factory(settings)() as s:
        lg = register_default_learngene(s, store, shipped / "learngene.safetensors")
        assert lg is not None
        again = register_default_learngene(s, store, shipped / "learngene.safetensors")  # the next start-up
        assert again is not None and again.id == lg.id
        rows = s.query(LearngeneFile).order_by(LearngeneFile.name).all()
        assert [(r.name, r.media_type) for r in rows] == [("curve.png", "image/png"), ("samples_w32.png", "image/png")]
        assert store.local_path(rows[0].sha256).read_bytes() == b"\x89PNG curve"
        assert referenced(s, rows[0].sha256)


def test_shipped_versions_are_all_registered_and_a_new_release_moves_default_unless_an_admin_did(
        tmp_path: Path, toy_learngene_dir: Path) -> None:
    from api_tests.toy_learngene import build
    from learngene_store.accounts import alias_target, set_alias

    old = toy_learngene_dir / "learngene.safetensors"
    new = build(tmp_path / "v2", steps=2)  # another set (other weights, other sha256)
    settings = Settings(home=tmp_path / "home")
    migrate(settings)
    store = LocalBlobStore(tmp_path / "blobs")
    with session_factory(settings)() as s:
        first = register_default_learngene(s, store, old, {"toy-v1": old})
        assert first is not None and alias_target(s, "default").id == first.id
        # The next release ships v2 as the default: both stay registered, each under its version alias.
        second = register_default_learngene(s, store, new, {"toy-v1": old, "toy-v2": new})
        assert second is not None and second.id != first.id
        assert alias_target(s, "default").id == second.id
        assert alias_target(s, "toy-v1").id == first.id and alias_target(s, "toy-v2").id == second.id
        # An admin's choice of default survives later start-ups.
        set_alias(s, first.id, by="admin-user")
        register_default_learngene(s, store, new, {"toy-v1": old, "toy-v2": new})
        assert alias_target(s, "default").id == first.id


def test_every_shipped_learngene_is_in_the_checkout_and_finished() -> None:
    """A shipped version is registered on every start: it must exist, and a recipe's run must be complete
    (a paused ancestry's export changes at every checkpoint, and would register a new set each time)."""
    from fine.formats import read_learngene_metadata
    from fine.spec import DEFAULT_LEARNGENE, SHIPPED_LEARNGENES, default_learngene

    assert DEFAULT_LEARNGENE in SHIPPED_LEARNGENES.values()
    for name, rel in SHIPPED_LEARNGENES.items():
        path = default_learngene(rel)
        assert path.exists(), f"{name}: {rel} is missing"
        meta = read_learngene_metadata(path)
        total = meta.get("recipe", {}).get("total_steps")
        assert total is None or meta["steps"] == total, f"{name}: at step {meta['steps']} of {total}"
