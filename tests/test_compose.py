"""docker-compose.yml, read as a file (no container engine runs here): the distributed set-up's structure."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import AliasChoices

from fine_zoo.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = re.compile(r"^(redis|postgres):[\w.-]+$")  # official images, pinned to a tag


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def ours(service: dict) -> bool:
    """Runs this project's code (the `fine` command)."""
    return "build" in service or not UPSTREAM.match(service.get("image", ""))


def settings_names() -> set[str]:
    """Every environment variable the Settings classes read."""
    prefix = Settings.model_config["env_prefix"]
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names |= {str(c) for c in alias.choices} if isinstance(alias, AliasChoices) else {(prefix + name).upper()}
    return names


def test_every_service_builds_or_uses_an_image_built_here() -> None:
    services = compose()["services"]
    built = {s.get("image") for s in services.values() if "build" in s}
    for name, s in services.items():
        assert "build" in s or s.get("image") in built or UPSTREAM.match(s.get("image", "")), name
    assert {"api", "worker"} <= {n for n, s in services.items() if "build" in s}


def test_restart_policies_and_healthchecks() -> None:
    for name, s in compose()["services"].items():
        assert s.get("restart") in ("always", "unless-stopped", "on-failure"), name
        assert s.get("healthcheck", {}).get("test"), name


def test_depends_on_waits_for_health() -> None:
    services = compose()["services"]
    for name, s in services.items():
        deps = s.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must name conditions"
        for dep, how in deps.items():
            assert dep in services and how.get("condition") == "service_healthy", (name, dep)
    assert set(services["worker"]["depends_on"]) >= {"redis", "postgres"}
    assert set(services["api"]["depends_on"]) >= {"redis", "postgres"}


def test_environment_names_are_the_ones_the_code_reads() -> None:
    known = settings_names()
    assert {"DATABASE_URL", "REDIS_URL", "FINE_HOME", "FINE_BLOB_DIR"} <= known
    for name, s in compose()["services"].items():
        if ours(s):
            env = s.get("environment") or {}
            unknown = set(env) - known
            assert not unknown, f"{name}: {sorted(unknown)} are read by no Settings class"


def test_the_image_holds_every_package() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r"include = \[(.*?)\]", pyproject).group(1)
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in re.findall(r'"(\w+)\*"', packages):
        assert f"COPY {package} ./{package}" in dockerfile, package
