"""`python -m worker.health`: exit 0 when this worker's registry and broker answer (container healthcheck)."""

from __future__ import annotations

import sys

from sqlalchemy import text

from dispatch.broker import check_broker, make_celery
from learngene_store.db import get_engine
from worker.settings import get_settings


def main() -> int:
    settings = get_settings()
    try:
        with get_engine(settings).connect() as conn:
            conn.execute(text("SELECT 1"))
        check_broker(make_celery(settings))
    except Exception as e:
        print(f"unhealthy: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
