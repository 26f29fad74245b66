"""GET /: the web page (plain HTML, CSS and a little JavaScript from service/web/, no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

WEB = Path(__file__).resolve().parent.parent.parent / "web"
router = APIRouter(tags=["web"])


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    """The page: browse learngenes and checkpoints, submit and watch a job, see curves and samples."""
    return FileResponse(WEB / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


def static_files() -> StaticFiles:
    """The page's script and style sheet, mounted at /web."""
    return StaticFiles(directory=WEB)
