"""Learngene tags: the owner (or an admin) replaces a set's tags; the registry lists sets by tag."""

from __future__ import annotations

from api_tests.harness import Service

PROBLEM = "application/problem+json"


def test_tags_are_set_by_the_owner_and_filter_the_registry(service: Service) -> None:
    admin = service.client
    lg = admin.get("/v1/learngenes").json()[0]
    r = admin.put(f"/v1/learngenes/{lg['id']}/tags", json={"tags": ["toy", "digits", "toy"]})
    assert r.status_code == 200, r.text
    assert r.json()["tags"] == ["digits", "toy"]
    assert [x["id"] for x in admin.get("/v1/learngenes", params={"tag": "toy"}).json()] == [lg["id"]]
    assert admin.get("/v1/learngenes", params={"tag": "nothing-has-this"}).json() == []
    assert admin.get(f"/v1/learngenes/{lg['id']}").json()["tags"] == ["digits", "toy"]
    # A public set is visible to every user but only its owner or an admin tags it.
    other = service.client_for(service.add_user("tagger"))
    assert [x["tags"] for x in other.get("/v1/learngenes").json() if x["id"] == lg["id"]] == [["digits", "toy"]]
    r = other.put(f"/v1/learngenes/{lg['id']}/tags", json={"tags": ["mine"]})
    assert r.status_code == 403 and r.headers["content-type"] == PROBLEM and "owner" in r.json()["detail"]
    r = admin.put(f"/v1/learngenes/{lg['id']}/tags", json={"tags": ["Not OK"]})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    assert admin.put("/v1/learngenes/no-such-set/tags", json={"tags": []}).status_code == 404
    assert admin.put(f"/v1/learngenes/{lg['id']}/tags", json={"tags": []}).json()["tags"] == []
