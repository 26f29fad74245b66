"""Operators' `alembic` command (learngene_store/alembic.ini) upgrades a fresh SQLite database to head."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

ROOT = Path(__file__).resolve().parent.parent
INI = ROOT / "learngene_store" / "alembic.ini"


def test_alembic_upgrades_a_fresh_sqlite_db_to_head(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "FINE_DATABASE_URL")}
    env |= {"FINE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "alembic", "-c", str(INI), "upgrade", "head"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    head = ScriptDirectory.from_config(Config(str(INI))).get_current_head()
    with sqlite3.connect(tmp_path / "fine.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(head,)]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"learngenes", "datasets", "jobs", "checkpoints", "checkpoint_files"} <= tables
