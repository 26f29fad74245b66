"""The HTTP client's pieces without a server: headers, errors, the SSE reader, the CLI's spec options."""

from __future__ import annotations

import argparse

import httpx
import pytest

from client import ApiError, Client, parse_events
from client.cli import add_spec_options, spec_from_args
from fine.spec import JobSpec


def _echo(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v1/jobs/job_x":
        return httpx.Response(404, json={"type": "x", "title": "Not Found", "status": 404,
                                         "detail": "no job 'job_x'; list jobs with GET /v1/jobs"},
                              headers={"content-type": "application/problem+json"})
    return httpx.Response(200, json={"authorization": request.headers.get("authorization")})


def test_the_key_goes_as_bearer_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("FINE_HOME", str(tmp_path))  # no local admin key unless this test writes one
    transport = httpx.MockTransport(_echo)
    assert Client("http://api", "k1", transport=transport).datasets() == {"authorization": "Bearer k1"}
    monkeypatch.setenv("FINE_API_KEY", "k2")
    monkeypatch.setenv("FINE_URL", "http://other/")
    c = Client(transport=transport)
    assert c.url == "http://other" and c.datasets() == {"authorization": "Bearer k2"}
    monkeypatch.delenv("FINE_API_KEY")
    assert Client("http://api", transport=transport).datasets() == {"authorization": None}
    (tmp_path / "admin.key").write_text("k3\n")  # the embedded service's key on this machine, as a last resort
    assert Client("http://api", transport=transport).datasets() == {"authorization": "Bearer k3"}


def test_an_error_is_the_problem_detail_in_one_line() -> None:
    with pytest.raises(ApiError) as e:
        Client("http://api", transport=httpx.MockTransport(_echo)).job("job_x")
    assert str(e.value) == "no job 'job_x'; list jobs with GET /v1/jobs (HTTP 404)" and e.value.status == 404


def test_sse_reader() -> None:
    text = "retry: 1000\n\n: keep-alive\n\nid: 1\nevent: status\ndata: {\"status\":\ndata: \"queued\"}\n\n" \
           "event: end\ndata: {}\n\n"
    events = list(parse_events(text.splitlines(keepends=True)))
    assert [(e.event, e.id, e.data) for e in events] == [("status", 1, {"status": "queued"}), ("end", None, {})]


def test_submit_options_are_the_job_spec_fields() -> None:
    p = argparse.ArgumentParser()
    add_spec_options(p)
    a = p.parse_args(["--depth", "3", "--hidden-size", "64", "--dataset", "digits", "--no-train-bias",
                      "--sigma-steps", "7"])
    assert spec_from_args(a) == {"depth": 3, "hidden_size": 64, "dataset": "digits", "train_bias": False,
                                 "sigma_steps": 7}
    flags = {o for action in p._actions for o in action.option_strings}
    assert {"--" + name.replace("_", "-") for name in JobSpec.model_fields} <= flags
    with pytest.raises(SystemExit):
        p.parse_args(["--hidden-size", "64", "--dataset", "digits"])  # --depth is required


def test_wait_returns_at_the_checkpoint_or_after_the_metrics() -> None:
    stream = ("id: 1\nevent: status\ndata: {\"status\": \"running\"}\n\n"
              "id: 2\nevent: status\ndata: {\"status\": \"succeeded\", \"checkpoint_id\": \"ckpt_a\"}\n\n"
              "id: 3\nevent: evaluation\ndata: {\"metrics_status\": \"running\"}\n\n"
              "id: 4\nevent: evaluation\ndata: {\"metrics_status\": \"ready\"}\n\n"
              "event: end\ndata: {\"status\": \"succeeded\", \"metrics_status\": \"ready\"}\n\n")
    seen: list[str] = []

    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, text=stream, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json={"status": "succeeded", "metrics_status": "running"})  # GET /v1/jobs/job_a

    c = Client("http://api", "k", transport=httpx.MockTransport(serve))
    assert c.wait("job_a", on_event=lambda e: seen.append(e.event)) == {"status": "succeeded",
                                                                        "metrics_status": "running"}
    assert seen == ["status", "status"]  # it stopped reading at the checkpoint
    assert c.wait("job_a", metrics=True) == {"status": "succeeded", "metrics_status": "ready"}
