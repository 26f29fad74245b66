"""Peak memory of the API process on a zip-bomb upload, with the declared-size check and without it
(FINE_MAX_UPLOAD_UNPACKED_BYTES raised out of the way: how uploads were read before issue 18).

    python -m api_tests.bench_upload_bomb [--out bench/results/upload_bomb.md]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from api_tests.bomb import npz_bomb, peak_rss_mb
from api_tests.harness import Service, base_env
from fine.spec import DEFAULT_LEARNGENE, default_learngene


def measure(bomb: bytes, unpacked_limit: int | None) -> dict:
    with tempfile.TemporaryDirectory() as home:
        extra = {"FINE_MAX_UPLOAD_BYTES": str(1 << 20), "FINE_REGISTER_DEFAULT_LEARNGENE": "false"}
        if unpacked_limit is not None:
            extra["FINE_MAX_UPLOAD_UNPACKED_BYTES"] = str(unpacked_limit)
        svc = Service(base_env(Path(home), default_learngene(DEFAULT_LEARNGENE), **extra), Path(home))
        try:
            svc.start_api()
            assert svc.api is not None
            svc.client.get("/v1/datasets")  # warm: first request imports and caches what requests need
            before = peak_rss_mb(svc.api.pid)
            r = svc.client.post("/v1/datasets", files={"file": ("bomb.npz", bomb, "application/octet-stream")},
                                timeout=300)
            after = peak_rss_mb(svc.api.pid)
        finally:
            svc.stop()
    return {"status": r.status_code, "before": before, "after": after, "detail": r.json().get("detail", "")[:120]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("bench/results/upload_bomb.md"))
    a = ap.parse_args()
    n, side = 6000, 256
    bomb = npz_bomb(n, side)
    rows = [("declared sizes checked (default, 256 MiB)", measure(bomb, None)),
            ("check out of the way (limit 1 TB: as before issue 18)", measure(bomb, 10**12))]
    lines = ["# Upload zip bomb: peak RSS of the API process", "",
             f"Command: `python -m api_tests.bench_upload_bomb` (embedded API, one uvicorn process, SQLite). "
             f"The upload: an `.npz` of {len(bomb):,} bytes whose `images` member is {n} x {side} x {side} uint8 "
             f"zeros, {n * side * side:,} bytes unpacked (under the 1 MiB upload limit set for the run).", "",
             "| API | answer | peak RSS before (MB) | peak RSS after (MB) | growth (MB) |", "| --- | --- | --- | --- | --- |"]
    for name, m in rows:
        lines.append(f"| {name} | {m['status']} | {m['before']:.0f} | {m['after']:.0f} | {m['after'] - m['before']:.0f} |")
    lines += ["", f"Refusal detail: {rows[0][1]['detail']}", "",
              "The check reads the zip central directory and each member's `.npy` header (shape, dtype) and refuses "
              "before numpy unpacks anything; `api_tests/test_upload_bomb.py` asserts the growth stays under 64 MB."]
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
