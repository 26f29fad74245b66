"""The Python client and the `fine jobs|checkpoints|learngenes|datasets` commands against the real
embedded service (`fine serve`: API + worker, SQLite, local blobs, filesystem broker)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from api_tests.conftest import TINY
from api_tests.harness import ROOT, Service, embedded_service
from api_tests.helpers import npz_bytes
from client import ApiError, Client


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, toy_learngene: Path) -> Iterator[Service]:
    with embedded_service(tmp_path_factory.mktemp("client"), toy_learngene) as svc:
        yield svc


def fine(svc: Service, *args: str) -> subprocess.CompletedProcess[str]:
    """The `fine` script, as a user runs it (FINE_URL points at the service)."""
    env = {**svc.env, "FINE_URL": svc.base}
    return subprocess.run([sys.executable, "-m", "fine_zoo", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_submits_follows_lists_and_downloads(served: Service, tmp_path: Path) -> None:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY, "hidden_size": 32, "sigma_steps": 12}.items()]
    run = fine(served, "jobs", "submit", *flags, "--wait")
    assert run.returncode == 0, run.stderr
    job_id, done = run.stdout.split()[0], run.stdout.strip().splitlines()[-1]
    assert job_id.startswith("job_") and done.startswith(f"{job_id} succeeded: checkpoint ckpt_")
    assert "sigma" in run.stderr and "running" in run.stderr  # the bar and the status lines, from the SSE stream
    ckpt_id = done.rsplit(" ", 1)[1]
    listed = fine(served, "checkpoints", "list", "--depth", str(TINY["depth"]), "--hidden-size", "32")
    assert listed.returncode == 0 and ckpt_id in listed.stdout
    assert fine(served, "jobs", "list").stdout.count(job_id) == 1
    assert f'"checkpoint_id": "{ckpt_id}"' in fine(served, "jobs", "get", job_id).stdout
    got = fine(served, "checkpoints", "download", ckpt_id, "--out", str(tmp_path))
    assert got.returncode == 0, got.stderr
    model = tmp_path / "model.safetensors"
    etag = served.client.head(f"/v1/checkpoints/{ckpt_id}/file").headers["etag"].strip('"')
    assert hashlib.sha256(model.read_bytes()).hexdigest() == etag and etag in got.stdout
    lgs = fine(served, "learngenes", "list")
    lg_id = lgs.stdout.splitlines()[1].split()[0]
    assert lgs.returncode == 0 and "digits" in lgs.stdout
    assert ckpt_id in fine(served, "learngenes", "get", lg_id).stdout
    npz = tmp_path / "four.npz"
    npz.write_bytes(npz_bytes(n=24, side=8, classes=4, seed=5))
    up = fine(served, "datasets", "upload", str(npz), "--name", "four")
    assert up.returncode == 0 and up.stdout.startswith("ds_") and "24 images 1x8x8, 4 classes" in up.stdout


def test_cli_errors_are_one_line_from_the_problem_detail(served: Service) -> None:
    bad = fine(served, "jobs", "submit", "--depth", "3", "--hidden-size", "96", "--dataset", "digits")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("fine jobs submit: error: ") and "at most 64" in bad.stderr and "422" in bad.stderr
    missing = fine(served, "jobs", "get", "job_nope")
    assert missing.returncode == 1 and "no job 'job_nope'" in missing.stderr and missing.stderr.count("\n") == 1
    away = fine(served, "learngenes", "list", "--url", "http://127.0.0.1:9")
    assert away.returncode == 1 and "cannot reach http://127.0.0.1:9" in away.stderr
    assert away.stderr.count("\n") == 1


def test_a_download_interrupted_is_resumed_and_verified(served: Service, tmp_path: Path) -> None:
    c = Client(served.base, served.admin_key())
    job = c.wait(c.submit({**TINY, "hidden_size": 32, "seed": 7})["id"])
    assert job["status"] == "succeeded", job
    whole = served.client.get(f"/v1/checkpoints/{job['checkpoint_id']}/file").content

    def cut(done: int, total: int) -> None:
        if done >= 8192:
            raise KeyboardInterrupt  # the user gives up mid-way

    with pytest.raises(KeyboardInterrupt):
        c.download(job["checkpoint_id"], tmp_path, chunk_size=4096, on_bytes=cut)
    part = tmp_path / "model.safetensors.part"
    assert 0 < part.stat().st_size < len(whole) and not (tmp_path / "model.safetensors").exists()
    kept = part.stat().st_size
    got = c.download(job["checkpoint_id"], tmp_path)
    assert got.resumed_from == kept and not part.exists()
    assert got.path.read_bytes() == whole and got.sha256 == hashlib.sha256(whole).hexdigest()
    # a damaged partial file is caught by the sha256 check, removed, and the next try starts clean
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "model.safetensors.part").write_bytes(b"\0" * 100)
    with pytest.raises(ApiError, match="does not match the server's ETag"):
        c.download(job["checkpoint_id"], tmp_path / "again")
    assert c.download(job["checkpoint_id"], tmp_path / "again").path.read_bytes() == whole
