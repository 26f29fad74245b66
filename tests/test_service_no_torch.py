"""The API process must never import torch (it stays small and starts fast)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_api_does_not_import_torch(tmp_path: Path) -> None:
    code = ("import sys; import service.app, service.cli, service.run_default, fine.cli; "
            "from fastapi.testclient import TestClient\n"
            "with TestClient(service.app.app) as c:\n"
            "    assert c.get('/readyz').status_code == 200\n"
            "    key = open(f'{sys.argv[1]}/admin.key').read().strip()\n"
            "    assert c.get('/v1/datasets').status_code == 401\n"
            "    assert c.get('/v1/datasets', headers={'Authorization': f'Bearer {key}'}).status_code == 200\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FINE_")
              and k not in ("DATABASE_URL", "REDIS_URL")}, "FINE_HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
