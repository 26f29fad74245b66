"""The yardstick of bench/api_rps.py: a minimal FastAPI + SQLAlchemy + SQLite app that returns one row.

It is written the way the FastAPI tutorial writes one (a sync route, a session per request from a
dependency, `session.get` by primary key, the row as a dict) and served by uvicorn with the same
settings as `fine serve --api-only` (one process, `log_level="info"`, so the access log is on).

    python bench/api_min_app.py --port 8001 --db /tmp/min.db      # GET /items/1
"""

import argparse
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy import DateTime, Integer, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime)


def make_app(db: str) -> FastAPI:
    engine = create_engine(f"sqlite:///{db}", connect_args={"check_same_thread": False})
    Base.metadata.create_all(engine)
    factory = sessionmaker(engine)
    with factory() as session:
        if session.get(Item, 1) is None:
            session.add(Item(id=1, name="one row", status="queued", created_at=datetime.now(UTC)))
            session.commit()

    def get_session() -> Iterator[Session]:
        with factory() as session:
            yield session

    app = FastAPI()

    @app.get("/items/{item_id}")
    def read_item(item_id: int, session: Annotated[Session, Depends(get_session)]) -> dict:
        item = session.get(Item, item_id)
        if item is None:
            raise HTTPException(404, "not found")
        return {"id": item.id, "name": item.name, "status": item.status, "created_at": item.created_at}

    return app


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", required=True)
    a = p.parse_args()
    uvicorn.run(make_app(a.db), host="127.0.0.1", port=a.port, log_level="info")


if __name__ == "__main__":
    main()
