"""`Client`: the fine-zoo HTTP API over httpx. Every error answer becomes an `ApiError` with the
problem+json `detail`; downloads resume with `Range` and are verified against the sha256 `ETag`."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from client.sse import Event, parse_events

DEFAULT_URL = "http://127.0.0.1:8000"
FINAL = ("succeeded", "failed", "canceled")
METRICS_FINAL = ("ready", "failed", "canceled")  # a checkpoint's evaluation has ended


class ApiError(Exception):
    """An error answer (or no answer) from the API, as one line."""

    def __init__(self, detail: str, status: int | None = None, body: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.body = body or {}


@dataclass(frozen=True)
class DownloadResult:
    """Where a download landed, its verified sha256 and size, and the byte it resumed from (0: fresh)."""

    path: Path
    sha256: str
    bytes: int
    resumed_from: int


def _problem(r: httpx.Response) -> ApiError:
    try:
        body = r.json()
        detail = body.get("detail") if isinstance(body, dict) else None
    except ValueError:
        body, detail = None, None
    if not detail:
        detail = (r.text.strip().splitlines() or [r.reason_phrase])[0]
    return ApiError(f"{detail} (HTTP {r.status_code})", r.status_code, body if isinstance(body, dict) else None)


def local_admin_key() -> str | None:
    """The embedded service's admin key ($FINE_HOME/admin.key, `var/` by default) when this machine has one."""
    path = Path(os.environ.get("FINE_HOME", "var")) / "admin.key"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class Client:
    """A session with one fine-zoo API; `key` is sent as `Authorization: Bearer <key>`."""

    def __init__(self, url: str | None = None, key: str | None = None, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = (url or os.environ.get("FINE_URL") or DEFAULT_URL).rstrip("/")
        key = key if key is not None else os.environ.get("FINE_API_KEY") or local_admin_key()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request; an error status or an unreachable server raises ApiError."""
        try:
            r = self.http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise ApiError(f"cannot reach {self.url}: {e or type(e).__name__}") from None
        if r.status_code >= 400:
            raise _problem(r)
        return r

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        return self.request(method, path, **kw).json()

    # jobs
    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """Queue a job (POST /v1/jobs); returns the job."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._json("POST", "/v1/jobs", json=spec, headers=headers)

    def jobs(self, **filters: Any) -> dict[str, Any]:
        """One page of jobs, newest first: {items, next_cursor}."""
        return self._json("GET", "/v1/jobs", params={k: v for k, v in filters.items() if v is not None})

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/jobs/{job_id}/cancel")

    def webhooks(self, job_id: str) -> list[dict[str, Any]]:
        """The job's webhook deliveries, each with every attempt."""
        return self._json("GET", f"/v1/jobs/{job_id}/webhooks")["items"]

    def webhook_secret(self) -> str:
        """Your signing secret (`whsec_...`): what client.webhooks.verify checks a delivery with."""
        return self._json("GET", "/v1/webhooks/default/secret")["key"]

    def events(self, job_id: str, after: int = 0, *, reconnects: int = 20) -> Iterator[Event]:
        """The job's events after number `after`, through `end`; a dropped stream resumes with Last-Event-ID."""
        last, failures = after, 0
        while True:
            try:
                headers = {"Last-Event-ID": str(last), "Accept": "text/event-stream"}
                with self.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                                      timeout=httpx.Timeout(self.http.timeout.connect, read=60.0)) as r:
                    if r.status_code >= 400:
                        r.read()
                        raise _problem(r)
                    for event in parse_events(r.iter_lines()):
                        failures = 0
                        if event.id is not None:
                            last = event.id
                        yield event
                        if event.event == "end":
                            return
            except httpx.TransportError as e:
                failures += 1
                if failures > reconnects:
                    raise ApiError(f"lost the event stream of {job_id}: {e or type(e).__name__}") from None
                time.sleep(min(5.0, 0.2 * 2 ** failures))

    def wait(self, job_id: str, on_event: Callable[[Event], None] | None = None, *,
             metrics: bool = False) -> dict[str, Any]:
        """Follow the job's events until it is final (succeeded: its checkpoint is downloadable), or with
        `metrics=True` until its checkpoint's evaluation has ended too; returns the job then."""
        for event in self.events(job_id):
            if on_event is not None:
                on_event(event)
            if event.event == "end":
                return event.data
            if not metrics and event.event == "status" and event.data.get("status") in FINAL:
                return self.job(job_id)
        return self.job(job_id)

    # checkpoints
    def checkpoints(self, **filters: Any) -> dict[str, Any]:
        """One page of checkpoints, newest first: {items, next_cursor}."""
        return self._json("GET", "/v1/checkpoints", params={k: v for k, v in filters.items() if v is not None})

    def checkpoint(self, ckpt_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/checkpoints/{ckpt_id}")

    def download(self, ckpt_id: str, dest: Path | str, fmt: str = "dense", *, chunk_size: int = 256 * 1024,
                 on_bytes: Callable[[int, int], None] | None = None) -> DownloadResult:
        """Download one file of a checkpoint into `dest` (a directory or a file path).

        The bytes go to `<file>.part` first; a later call resumes from its size with `Range` +
        `If-Range`, and the whole file must hash to the `ETag` (sha256) before it is renamed."""
        meta = self.checkpoint(ckpt_id)
        entry = next((f for f in meta["files"] if f["format"] == fmt), None)
        if entry is None:
            have = ", ".join(f["format"] for f in meta["files"])
            raise ApiError(f"checkpoint {ckpt_id} has no {fmt} file; available formats: {have}")
        dest = Path(dest)
        path = dest / entry["filename"] if dest.is_dir() or str(dest).endswith(os.sep) else dest
        return self._fetch(entry["url"], path, entry["sha256"], entry["bytes"], chunk_size, on_bytes)

    def _fetch(self, url: str, path: Path, sha256: str, size: int, chunk_size: int,
               on_bytes: Callable[[int, int], None] | None) -> DownloadResult:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        start = part.stat().st_size if part.exists() else 0
        if start > size:
            part.unlink()
            start = 0
        digest = hashlib.sha256()
        if start:
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        headers = {"Range": f"bytes={start}-", "If-Range": f'"{sha256}"'} if 0 < start < size else {}
        if start < size:
            try:
                with self.http.stream("GET", url, headers=headers) as r:
                    if r.status_code >= 400:
                        r.read()
                        raise _problem(r)
                    if r.status_code == 200 and start:  # the server sent everything: start again
                        start, digest = 0, hashlib.sha256()
                    with open(part, "ab" if start else "wb") as f:
                        done = start
                        for chunk in r.iter_bytes(chunk_size):
                            f.write(chunk)
                            digest.update(chunk)
                            done += len(chunk)
                            if on_bytes is not None:
                                on_bytes(done, size)
            except httpx.TransportError as e:
                raise ApiError(f"download of {url} broke off ({e or type(e).__name__}); run it again to resume "
                               f"from {part}") from None
        got = digest.hexdigest()
        if got != sha256:
            part.unlink(missing_ok=True)
            raise ApiError(f"{path.name}: sha256 {got} does not match the server's ETag {sha256}; "
                           "the partial file was removed, download again")
        part.replace(path)
        return DownloadResult(path, got, path.stat().st_size, start)

    # learngenes and datasets
    def learngenes(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/learngenes")

    def learngene(self, lg_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/learngenes/{lg_id}")

    def datasets(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/datasets")

    def upload_dataset(self, path: Path | str, name: str | None = None) -> dict[str, Any]:
        """Upload an .npz (uint8 `images`, optional `labels`); returns the dataset with its id."""
        path = Path(path)
        with open(path, "rb") as f:
            data = {"name": name} if name else {}
            return self._json("POST", "/v1/datasets", files={"file": (path.name, f, "application/octet-stream")},
                              data=data)
