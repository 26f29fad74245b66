"""A zip-bomb upload is refused from the zip directory and .npy headers, before anything is unpacked:
the API process's peak memory barely moves (bench/results/upload_bomb.md has the numbers)."""

from __future__ import annotations

import httpx

from api_tests.bomb import npz_bomb, peak_rss_mb
from api_tests.harness import Service


def test_zip_bomb_is_refused_in_bounded_memory(service: Service, client: httpx.Client) -> None:
    bomb = npz_bomb()
    assert len(bomb) < int(service.env["FINE_MAX_UPLOAD_BYTES"])  # passes the upload limit: a real bomb
    assert service.api is not None
    before = peak_rss_mb(service.api.pid)
    r = client.post("/v1/datasets", files={"file": ("bomb.npz", bomb, "application/octet-stream")})
    assert r.status_code == 422 and "FINE_MAX_UPLOAD_UNPACKED_BYTES" in r.json()["detail"], r.text
    grown = peak_rss_mb(service.api.pid) - before
    assert grown < 64, f"the API's peak RSS grew {grown:.0f} MB on a {len(bomb)} byte upload"
