"""Schemathesis against the running API (bounded, fixed seed), with an ordinary user's key and without one:
no 5xx, and every status code and content type is one the OpenAPI document declares.
(Runs last: it submits and uploads whatever the schema allows.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from api_tests.harness import Service

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance"


def schemathesis(service: Service, tmp_path: Path, *headers: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    args = [exe, "run", f"{service.base}/openapi.json", "--checks", CHECKS, "--max-examples", "15", "--seed", "18",
            "--generation-deterministic", "--request-timeout", "20", "--phases", "examples,coverage,fuzzing",
            "--no-color", *[x for h in headers for x in ("-H", h)]]
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=420, env=service.env)


@pytest.mark.parametrize("who", ["user", "anonymous"])
def test_fuzz(service: Service, tmp_path: Path, who: str) -> None:
    headers = [f"Authorization: Bearer {service.add_user(f'fuzz-{tmp_path.name[-6:]}')}"] if who == "user" else []
    r = schemathesis(service, tmp_path, *headers)
    assert r.returncode == 0, (r.stdout[-6000:] + r.stderr[-2000:])
    assert " passed" in r.stdout and "generated" in r.stdout, r.stdout[-2000:]

