"""The `fine` script's commands over HTTP: `fine jobs|checkpoints|learngenes|datasets|webhooks ...`.

Every command takes `--url` (or FINE_URL) and `--key` (or FINE_API_KEY). `fine jobs submit`'s
options are fine/spec.py's JobSpec fields (flag = field name with dashes); only the flags given are
sent, so the API's defaults apply to the rest. Every error is one line on stderr (the problem+json
`detail`) and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args, get_origin

from client.api import FINAL, ApiError, Client
from client.sse import Event
from fine.spec import METHODS, JobSpec

Handler = Callable[[Client, argparse.Namespace], int]


def _field_type(annotation: Any) -> type:
    """int, str, bool or list: the type a JobSpec field takes (None stripped from an optional one)."""
    kinds = [a for a in (get_args(annotation) or (annotation,)) if a is not type(None)]
    return get_origin(kinds[0]) or kinds[0]


def _comma_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_spec_options(p: argparse.ArgumentParser) -> None:
    """One option per JobSpec field: required ones required, the rest default to the API's default."""
    for name, field in JobSpec.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind = _field_type(field.annotation)
        default = None if field.is_required() else field.default
        help_ = (field.description or name) + ("" if default is None else f" (default {default})")
        if kind is bool:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif name == "method":
            p.add_argument(flag, dest=name, choices=METHODS, default=None, help=help_)
        elif kind is list:  # webhook_events_filter: start,completed
            p.add_argument(flag, dest=name, type=_comma_list, default=None, help=help_ + " (comma-separated)")
        else:
            p.add_argument(flag, dest=name, type=kind, required=field.is_required(), default=None, help=help_)


def spec_from_args(a: argparse.Namespace) -> dict[str, Any]:
    """The JSON body of POST /v1/jobs: the spec flags that were given."""
    return {name: getattr(a, name) for name in JobSpec.model_fields if getattr(a, name, None) is not None}


class ProgressBars:
    """tqdm bars fed by a job's events: one bar per phase, status changes printed above them."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.tqdm = tqdm
        self.bars: dict[str, Any] = {}

    def __call__(self, event: Event) -> None:
        d = event.data
        if event.event == "progress" and d.get("total"):
            bar = self.bars.get(d["phase"])
            if bar is None:
                bar = self.bars[d["phase"]] = self.tqdm(total=d["total"], desc=d["phase"], unit="step",
                                                        dynamic_ncols=True, file=sys.stderr)
            bar.n = min(d["step"], d["total"])
            if d.get("loss") is not None:
                bar.set_postfix(loss=f"{d['loss']:.4f}", refresh=False)
            bar.refresh()
        elif event.event == "status":
            ready = f" (checkpoint {d['checkpoint_id']} downloadable)" if d.get("checkpoint_id") else ""
            self.tqdm.write(f"{d['status']}{ready}" + (f": {d['error']}" if d.get("error") else ""), file=sys.stderr)
        elif event.event == "evaluation":
            self.tqdm.write(f"metrics {d['metrics_status']}" + (f": {d['error']}" if d.get("error") else ""),
                            file=sys.stderr)
        elif event.event == "end":
            self.close()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[str(r.get(c, "") if r.get(c) is not None else "") for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    for row in [columns, *cells]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _finish(job: dict[str, Any]) -> int:
    """Exit status of a followed job: 0 when it succeeded; else its error on stderr."""
    if job["status"] == "succeeded":
        if job.get("metrics_status"):  # the last line of stdout stays "<job> succeeded: checkpoint <id>"
            print(f"metrics {job['metrics_status']}", file=sys.stderr)
        print(f"{job['id']} succeeded" + (f": checkpoint {job['checkpoint_id']}" if job.get("checkpoint_id") else ""))
        return 0
    print(f"fine: job {job['id']} {job['status']}: {job.get('error') or 'no error recorded'}", file=sys.stderr)
    return 1


def _follow(c: Client, job_id: str, metrics: bool) -> int:
    """Follow a job with progress bars to its checkpoint (`metrics`: to the end of its evaluation)."""
    bars = ProgressBars()
    try:
        return _finish(c.wait(job_id, on_event=bars, metrics=metrics))
    finally:
        bars.close()


def jobs_submit(c: Client, a: argparse.Namespace) -> int:
    job = c.submit(spec_from_args(a), idempotency_key=a.idempotency_key)
    print(job["id"])
    for w in job.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    if not (a.wait or a.wait_metrics):
        return 0
    return _follow(c, job["id"], a.wait_metrics)


def jobs_list(c: Client, a: argparse.Namespace) -> int:
    page = c.jobs(status=a.status, dataset=a.dataset, kind=a.kind, limit=a.limit, cursor=a.cursor)
    rows = [{**j, "step": f"{j['progress']['step']}/{j['progress']['total']}"} for j in page["items"]]
    _table(rows, ["id", "kind", "status", "dataset", "method", "step", "checkpoint_id", "created_at"])
    if page.get("next_cursor"):
        print(f"more: --cursor {page['next_cursor']}", file=sys.stderr)
    return 0


def jobs_get(c: Client, a: argparse.Namespace) -> int:
    if a.wait or a.wait_metrics:
        return _follow(c, a.id, a.wait_metrics)
    _print_json(c.job(a.id))
    return 0


def jobs_cancel(c: Client, a: argparse.Namespace) -> int:
    job = c.cancel(a.id)
    print(f"{job['id']} {job['status']}" + (" (cancel requested)" if job["status"] not in FINAL else ""))
    return 0


def jobs_webhooks(c: Client, a: argparse.Namespace) -> int:
    rows = [{**d, "codes": " ".join(str(t["status_code"] or "err") for t in d["history"])} for d in c.webhooks(a.id)]
    _table(rows, ["id", "event", "job_status", "state", "attempts", "codes", "next_attempt_at", "delivered_at", "url"])
    return 0


def webhooks_secret(c: Client, a: argparse.Namespace) -> int:
    print(c.webhook_secret())
    return 0


def checkpoints_list(c: Client, a: argparse.Namespace) -> int:
    page = c.checkpoints(dataset=a.dataset, learngene=a.learngene, method=a.method, depth=a.depth,
                         hidden_size=a.hidden_size, limit=a.limit, cursor=a.cursor)
    rows = [{**ck, "heldout_loss": ck["metrics"].get("heldout_loss")} for ck in page["items"]]
    _table(rows, ["id", "dataset", "method", "depth", "hidden_size", "learngene", "metrics_status", "heldout_loss",
                  "created_at"])
    if page.get("next_cursor"):
        print(f"more: --cursor {page['next_cursor']}", file=sys.stderr)
    return 0


def checkpoints_get(c: Client, a: argparse.Namespace) -> int:
    _print_json(c.checkpoint(a.id))
    return 0


def checkpoints_download(c: Client, a: argparse.Namespace) -> int:
    from tqdm import tqdm

    bar: Any = None

    def on_bytes(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=a.format, file=sys.stderr)
        bar.n = done
        bar.refresh()

    a.out.mkdir(parents=True, exist_ok=True)
    try:
        got = c.download(a.id, a.out, a.format, on_bytes=on_bytes)
    finally:
        if bar is not None:
            bar.close()
    resumed = f" (resumed at byte {got.resumed_from})" if got.resumed_from else ""
    print(f"{got.path}  sha256 {got.sha256}  {got.bytes} bytes{resumed}")
    return 0


def learngenes_list(c: Client, a: argparse.Namespace) -> int:
    rows = [{**lg, "widths": ",".join(str(w) for w in lg["widths"]) or str(lg["hidden_size"])}
            for lg in c.learngenes()]
    _table(rows, ["id", "source_dataset", "depth", "hidden_size", "widths", "rank", "steps", "bytes",
                  "descendants_count"])
    return 0


def learngenes_get(c: Client, a: argparse.Namespace) -> int:
    _print_json(c.learngene(a.id))
    return 0


def datasets_list(c: Client, a: argparse.Namespace) -> int:
    _table(c.datasets(), ["id", "kind", "name", "num_images", "image_size", "channels", "num_classes"])
    return 0


def datasets_upload(c: Client, a: argparse.Namespace) -> int:
    ds = c.upload_dataset(a.path, a.name)
    print(f"{ds['id']}  {ds['num_images']} images {ds['channels']}x{ds['image_size']}x{ds['image_size']}, "
          f"{ds['num_classes']} classes")
    return 0


def _connection() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--url", default=None, help="the API (default: $FINE_URL or http://127.0.0.1:8000)")
    p.add_argument("--key", default=None, help="API key, sent as Bearer (default: $FINE_API_KEY)")
    return p


def _runner(handler: Handler) -> Callable[[argparse.Namespace], None]:
    """An argparse `func` that runs `handler` with a Client and exits with its status; ApiError -> one line."""

    def run(a: argparse.Namespace) -> None:
        try:
            with Client(a.url, a.key) as c:
                code = handler(c, a)
        except ApiError as e:
            print(f"fine {a.command} {a.action}: error: {e}", file=sys.stderr)
            raise SystemExit(1) from None
        if code:
            raise SystemExit(code)

    return run


def _wait_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true",
                   help="follow the job's events until it ends: succeeded means its checkpoint is downloadable")
    p.add_argument("--wait-metrics", action="store_true",
                   help="follow it until its checkpoint's evaluation (held-out loss, FD, samples) has ended too")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add jobs, checkpoints, learngenes, datasets and webhooks (each with its actions) to the `fine` parser."""
    conn = _connection()

    def group(name: str, help_: str) -> argparse._SubParsersAction:
        g = sub.add_parser(name, help=help_)
        return g.add_subparsers(dest="action", required=True, parser_class=type(g))

    def action(actions: argparse._SubParsersAction, name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_, parents=[conn])
        p.set_defaults(func=_runner(handler))
        return p

    jobs = group("jobs", "jobs on a fine-zoo service (over HTTP)")
    p = action(jobs, "submit", jobs_submit, "queue a job; --wait follows it with a progress bar")
    add_spec_options(p)
    _wait_options(p)
    p.add_argument("--idempotency-key", default=None, help="repeat-safe submit: the same key gives the same job")
    p = action(jobs, "list", jobs_list, "list jobs, newest first")
    p.add_argument("--status", default=None)
    p.add_argument("--dataset", default=None)
    p.add_argument("--kind", default=None, choices=("init", "pretrain"))
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--cursor", default=None)
    p = action(jobs, "get", jobs_get, "a job as JSON (--wait: follow it to its checkpoint)")
    p.add_argument("id")
    _wait_options(p)
    action(jobs, "cancel", jobs_cancel, "cancel a queued or running job").add_argument("id")
    action(jobs, "webhooks", jobs_webhooks, "a job's webhook deliveries and their attempts").add_argument("id")
    hooks = group("webhooks", "webhook signing on a fine-zoo service (over HTTP)")
    action(hooks, "secret", webhooks_secret, "print your signing secret (whsec_...), to check deliveries with")

    ckpts = group("checkpoints", "checkpoints on a fine-zoo service (over HTTP)")
    p = action(ckpts, "list", checkpoints_list, "list checkpoints, newest first, with filters")
    for name, kind in (("dataset", str), ("learngene", str), ("method", str), ("depth", int), ("hidden_size", int)):
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--cursor", default=None)
    action(ckpts, "get", checkpoints_get, "a checkpoint's metadata and metrics as JSON").add_argument("id")
    p = action(ckpts, "download", checkpoints_download, "download a file (resumes a broken download, checks sha256)")
    p.add_argument("id")
    p.add_argument("--format", default="dense",
                   choices=("dense", "factored", "diffusers", "samples", "config", "metrics", "curve", "losses"))
    p.add_argument("--out", type=Path, default=Path("."), help="directory (default: here)")

    lgs = group("learngenes", "learngene sets in a fine-zoo registry (over HTTP)")
    action(lgs, "list", learngenes_list, "list learngene sets, newest first")
    action(lgs, "get", learngenes_get, "one learngene set with its descendants, as JSON").add_argument("id")

    ds = group("datasets", "datasets on a fine-zoo service (over HTTP)")
    action(ds, "list", datasets_list, "built-in datasets and uploads")
    p = action(ds, "upload", datasets_upload, "upload an .npz (uint8 images, optional labels)")
    p.add_argument("path", type=Path)
    p.add_argument("--name", default=None)
