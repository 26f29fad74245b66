"""The `fine` command line, run as a user runs it (a subprocess)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def fine(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fine.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--depth", "0", "--hidden-size", "32", "--dataset", "digits"], "--depth must be >= 1"),
        (["--depth", "2", "--hidden-size", "48", "--dataset", "digits"], "multiple of 32"),
        (["--depth", "2", "--hidden-size", "96", "--dataset", "digits"], "between 32 and 64"),
        (["--depth", "2", "--hidden-size", "32", "--dataset", "cifar-10"], "unknown dataset 'cifar-10'"),
        (["--depth", "two", "--hidden-size", "32", "--dataset", "digits"], "invalid int value"),
        (["--depth", "2", "--hidden-size", "32", "--dataset", "digits", "--method", "magic"], "unknown --method"),
    ],
)
def test_bad_arguments_give_one_line_and_nonzero_exit(tmp_path, toy_learngene_dir, args, message) -> None:
    r = fine("init", *args, "--learngene", str(toy_learngene_dir / "learngene.safetensors"), "--out", str(tmp_path))
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert message in lines[0] and "Traceback" not in r.stderr


def test_missing_learngene_is_one_line(tmp_path) -> None:
    r = fine("init", "--depth", "2", "--hidden-size", "32", "--dataset", "digits",
             "--learngene", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path))
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "no such file" in r.stderr


def test_tiny_init_writes_the_four_files(tmp_path, toy_learngene_dir) -> None:
    out = tmp_path / "desc"
    r = fine("init", "--depth", "3", "--hidden-size", "32", "--dataset", "digits", "--sigma-steps", "5",
             "--subset", "64", "--eval-images", "32", "--sample-steps", "3", "--batch-size", "16",
             "--learngene", str(toy_learngene_dir / "learngene.safetensors"), "--out", str(out))
    assert r.returncode == 0, r.stderr
    for name in ("model.safetensors", "config.json", "samples.png", "metrics.json", "factored.safetensors"):
        assert (out / name).stat().st_size > 0, name
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["depth"] == 3 and config["config"]["hidden_size"] == 32 and config["method"] == "fine"
    assert config["steps"] == {"sigma": 5, "finetune": 0}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["heldout_loss"] > 0
    r2 = fine("sample", str(out), "--out", str(tmp_path / "s.png"), "--steps", "2", "--per-class", "2")
    assert r2.returncode == 0, r2.stderr
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    r3 = fine("eval", str(out), "--eval-images", "16", "--sample-steps", "2")
    assert r3.returncode == 0, r3.stderr
    assert json.loads(r3.stdout)["heldout_loss"] > 0
