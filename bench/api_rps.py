"""Requests per second of `GET /v1/jobs/{id}` against a minimal FastAPI + SQLAlchemy + SQLite app (issue 17).

Starts the real API as `fine serve --api-only` does (embedded mode: SQLite, local blobs, filesystem
broker; uvicorn in one process, log level info) in a fresh FINE_HOME, creates a user (`fine users add`)
and one job (POST /v1/jobs with that user's key; no worker runs, so it stays queued), and starts
bench/api_min_app.py beside it (same uvicorn settings, same single process). Then it runs `wrk`
(Debian package) against the two in alternating rounds on loopback, ours with the Authorization
header, and writes `<out>/<label>.json` and `<label>.md`, together with the machine's fp32 matmul rate
measured in the same run (bench/speed.py's yardstick).

    python bench/api_rps.py --label after                       # 3 rounds x 15 s each, 2 threads, 4 connections
    python bench/api_rps.py --label profile --profile --rounds 1   # + py-spy on our API during one extra run

`--profile` needs py-spy (`pip install py-spy`); its stacks are summarised into the .md and kept
as `<label>_<app>_pyspy.txt.gz` (py-spy's collapsed format: `zcat ... | flamegraph.pl` or speedscope).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "api_rps"
JOB = {"depth": 4, "hidden_size": 96, "dataset": "mnist-5k"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, key: str | None = None, body: dict | None = None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if http("GET", url)[0] < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not up after {timeout}s:\n{log.read_text()[-3000:]}")


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    assert m, text
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50_ms": lat["50"], "p75_ms": lat["75"], "p90_ms": lat["90"], "p99_ms": lat["99"],
            "requests": total, "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1).strip() if errors else None}


def wrk_cmd(url: str, key: str | None, threads: int, connections: int, duration: int) -> list[str]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    if key:
        cmd += ["-H", f"Authorization: Bearer {key}"]
    return cmd + [url]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(cmd: list[str], pid: int | None = None) -> dict:
    """One wrk run; with the server's pid, also the server's CPU time per request (less sensitive to what
    else runs on the machine than req/s: a quiet machine's req/s is about its inverse)."""
    before = cpu_s(pid) if pid else 0.0
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = parse_wrk(out)
    if pid:
        result["server_cpu_us_per_request"] = 1e6 * (cpu_s(pid) - before) / max(1, result["requests"])
    return result


def matmul(threads: int) -> dict:
    """bench/speed.py's yardstick: one fp32 1024x1024 matmul, median of 10, in its own process."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "speed.py"), "--case", "matmul", "--threads", str(threads)],
                       capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _cpu_ticks() -> dict[int, tuple[int, str]]:
    """pid -> (utime + stime in clock ticks, state) of every process, from /proc."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
        out[int(stat.parent.name)] = (int(fields[11]) + int(fields[12]), fields[0])
    return out


def busy_processes(window: float = 1.0) -> list[str]:
    """Other processes using a CPU right now (over `window` s; ps's %cpu is a lifetime average), stopped ones
    (state T: a run paused for the measurement) left out."""
    before = _cpu_ticks()
    time.sleep(window)
    hz = os.sysconf("SC_CLK_TCK")
    busy = sorted(((100 * (ticks - before[pid][0]) / hz / window, pid) for pid, (ticks, state) in _cpu_ticks().items()
                   if pid in before and state != "T" and pid != os.getpid()), reverse=True)
    rows = []
    for pct, pid in busy[:8]:
        if pct < 20:
            break
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # gone meanwhile
        rows.append(f"{pct:.0f}% {cmd[:160]}")
    return rows


# ---- py-spy ----------------------------------------------------------------------------------------------

AREAS = [  # first match wins, on the file path of a frame
    ("logging (uvicorn access log)", ("logging/",)), ("sqlite3 driver", ("sqlite3/",)),
    ("sqlalchemy", ("sqlalchemy/",)), ("pydantic", ("pydantic/", "pydantic_core/")),
    ("fastapi", ("fastapi/",)), ("starlette", ("starlette/",)), ("anyio (thread pool)", ("anyio/",)),
    ("uvicorn + h11 (HTTP)", ("uvicorn/", "h11/")), ("asyncio event loop", ("asyncio/", "selectors.py")),
    ("prometheus_client", ("prometheus_client/",)), ("threading", ("threading.py", "concurrent/")),
    ("ours: service/", ("service/",)), ("ours: learngene_store/", ("learngene_store/",)),
    ("ours: dispatch/", ("dispatch/",)),
]


def _area(frame: str) -> str:
    path = frame[frame.rfind("(") + 1:]
    for name, needles in AREAS:
        if any(n in path for n in needles):
            return name
    return "other"


BOILERPLATE = ("runpy>", "fine_zoo/", "fine/cli.py", "service/cli.py", "uvicorn/main.py", "uvicorn/server.py",
               "uvicorn/_compat.py", "asyncio/runners.py", "threading.py)", "api_min_app.py")


def summarise_profile(raw: Path, requests: int, top: int = 40) -> dict:
    """Collapsed stacks ('f (file:line);g (...) N', only samples of the thread holding the GIL) → self
    time by area, and inclusive time by function (the frames every stack starts with left out)."""
    self_area: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        total += count
        self_area[_area(frames[-1])] += count
        for f in set(frames):
            if not any(b in f for b in BOILERPLATE):
                incl[f] += count
    return {"samples": total, "requests": requests,
            "self_by_area": [(a, c / total) for a, c in self_area.most_common()],
            "inclusive": [(f, c / total) for f, c in incl.most_common(top)]}


def profile_round(pid: int, cmd: list[str], duration: int, out_dir: Path, label: str) -> dict | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy not installed (pip install py-spy): no profile", file=sys.stderr)
        return None
    raw = out_dir / f"{label}_pyspy.txt"
    p = subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(duration + 1), "--rate", "250",
                          "--gil", "--nonblocking", "--format", "raw", "--output", str(raw)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1)
    result = run_wrk(cmd)
    p.wait(timeout=60)
    if not raw.exists():
        print(f"py-spy wrote nothing: {p.stderr.read().decode()[-500:]}", file=sys.stderr)
        return None
    summary = summarise_profile(raw, result["requests"])
    summary["wrk"] = result
    with open(raw, "rb") as f, gzip.open(f"{raw}.gz", "wb") as z:  # the stacks, kept (compressed) beside the page
        shutil.copyfileobj(f, z)
    raw.unlink()
    return summary


# ---- the run ---------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (each: one wrk run per app)")
    p.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--label", default="run", help="names the result files")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--profile", action="store_true", help="py-spy on both apps during one more run each")
    p.add_argument("--note", default="", help="a line for the .md (e.g. what else ran on the machine)")
    a = p.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: `make bench-tools` (apt-get install wrk)")
    a.out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="fine-api-rps-"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FINE_") and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"FINE_HOME": str(home), "PYTHONUNBUFFERED": "1"})
    ours_port, min_port = free_port(), free_port()
    ours = start([sys.executable, "-m", "fine_zoo", "serve", "--api-only", "--port", str(ours_port)], env,
                 home / "api.log")
    minimal = start([sys.executable, str(ROOT / "bench" / "api_min_app.py"), "--port", str(min_port),
                     "--db", str(home / "minimal.db")], env, home / "minimal.log")
    try:
        base = f"http://127.0.0.1:{ours_port}"
        wait_up(f"{base}/healthz", ours, home / "api.log")
        wait_up(f"http://127.0.0.1:{min_port}/items/1", minimal, home / "minimal.log")
        key = subprocess.run([sys.executable, "-m", "fine_zoo", "users", "add", "bench"], env=env, cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        status, body = http("POST", f"{base}/v1/jobs", key, JOB)
        assert status == 202, (status, body)
        job_id = json.loads(body)["id"]
        urls = {"minimal": f"http://127.0.0.1:{min_port}/items/1", "ours": f"{base}/v1/jobs/{job_id}"}
        keys = {"minimal": None, "ours": key}
        for name, url in urls.items():
            status, body = http("GET", url, keys[name])
            assert status == 200, (name, status, body[:300])
            print(f"{name}: GET {url} -> 200, {len(body)} bytes")
        cmds = {n: wrk_cmd(urls[n], keys[n], a.threads, a.connections, a.duration) for n in urls}
        warm = {n: wrk_cmd(urls[n], keys[n], a.threads, a.connections, 3) for n in urls}
        mm = {t: matmul(t) for t in (1, 2)}
        busy, load = busy_processes(), os.getloadavg()
        pids = {"ours": ours.pid, "minimal": minimal.pid}
        for n in urls:
            run_wrk(warm[n])
        rounds = []
        for r in range(a.rounds):
            order = ["minimal", "ours"] if r % 2 == 0 else ["ours", "minimal"]
            row = {n: run_wrk(cmds[n], pids[n]) for n in order}
            row["ratio"] = row["ours"]["rps"] / row["minimal"]["rps"]
            row["cpu_ratio"] = (row["minimal"]["server_cpu_us_per_request"]
                                / row["ours"]["server_cpu_us_per_request"])
            rounds.append(row)
            print(f"round {r + 1}: minimal {row['minimal']['rps']:.0f} req/s (p99 {row['minimal']['p99_ms']:.1f} ms), "
                  f"ours {row['ours']['rps']:.0f} req/s (p99 {row['ours']['p99_ms']:.1f} ms), "
                  f"ratio {row['ratio']:.2f}; server CPU per request {row['minimal']['server_cpu_us_per_request']:.0f} vs "
                  f"{row['ours']['server_cpu_us_per_request']:.0f} us")
        profiles = {}
        if a.profile:
            for n in urls:
                prof = profile_round(pids[n], cmds[n], a.duration, a.out, f"{a.label}_{n}")
                if prof:
                    profiles[n] = prof
        mm_after = matmul(1)
    finally:
        stop(ours)
        stop(minimal)
    result = {
        "command": "python bench/api_rps.py " + " ".join(sys.argv[1:]),
        "wrk": {n: shlex.join(c).replace(key, "$KEY") for n, c in cmds.items()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "busy_processes": busy, "load_average_1_5_15": load,
                    "matmul_fp32_gflops": {"threads_1": mm[1]["gflops"], "threads_2": mm[2]["gflops"],
                                           "threads_1_after": mm_after["gflops"]}},
        "note": a.note, "job": JOB, "rounds": rounds,
        "median": {"minimal_rps": statistics.median(r["minimal"]["rps"] for r in rounds),
                   "ours_rps": statistics.median(r["ours"]["rps"] for r in rounds),
                   "ratio": statistics.median(r["ratio"] for r in rounds),
                   "minimal_p50_ms": statistics.median(r["minimal"]["p50_ms"] for r in rounds),
                   "ours_p50_ms": statistics.median(r["ours"]["p50_ms"] for r in rounds),
                   "minimal_p99_ms": statistics.median(r["minimal"]["p99_ms"] for r in rounds),
                   "ours_p99_ms": statistics.median(r["ours"]["p99_ms"] for r in rounds),
                   "minimal_cpu_us": statistics.median(r["minimal"]["server_cpu_us_per_request"] for r in rounds),
                   "ours_cpu_us": statistics.median(r["ours"]["server_cpu_us_per_request"] for r in rounds),
                   "cpu_ratio": statistics.median(r["cpu_ratio"] for r in rounds)},
        "profiles": profiles,
    }
    (a.out / f"{a.label}.json").write_text(json.dumps(result, indent=2) + "\n")
    (a.out / f"{a.label}.md").write_text(markdown(result, a))
    m = result["median"]
    print(f"median: ours {m['ours_rps']:.0f} vs minimal {m['minimal_rps']:.0f} req/s = {m['ratio']:.2f}x; "
          f"p99 {m['ours_p99_ms']:.1f} vs {m['minimal_p99_ms']:.1f} ms -> {a.out / a.label}.md")
    shutil.rmtree(home, ignore_errors=True)


def markdown(res: dict, a: argparse.Namespace) -> str:
    m, mm = res["median"], res["machine"]["matmul_fp32_gflops"]
    goal = m["ratio"] >= 0.8 and m["ours_p99_ms"] <= 15
    lines = [
        f"# GET /v1/jobs/{{id}} vs a minimal FastAPI + SQLAlchemy + SQLite app: `{a.label}`", "",
        f"    {res['command']}", "",
        "wrk, per run: `" + res["wrk"]["ours"] + "` and `" + res["wrk"]["minimal"] + "`", "",
        f"Machine: {res['machine']['cpus']} CPUs, {res['machine']['platform']}, Python {res['machine']['python']}; "
        f"fp32 matmul (1024², bench/speed.py) {mm['threads_1']:.1f} GFLOP/s on 1 thread, {mm['threads_2']:.1f} on 2, "
        f"{mm['threads_1_after']:.1f} on 1 after the runs.",
    ]
    if res["machine"]["busy_processes"]:
        lines += ["", "Busy while measured: " + "; ".join(f"`{b}`" for b in res["machine"]["busy_processes"])
                  + "; load average {:.1f} / {:.1f} / {:.1f}.".format(*res["machine"]["load_average_1_5_15"])]
    if res["note"]:
        lines += ["", res["note"]]
    lines += ["", "Server CPU per request: the server process's CPU time (/proc) over the requests wrk counted; "
                  "its ratio (minimal / ours) is roughly what the req/s ratio tends to when neither server has to wait "
                  "for a core.",
              "", "| round | minimal req/s | p50 / p99 ms | CPU µs/req | ours req/s | p50 / p99 ms | CPU µs/req "
                  "| ours / minimal req/s | CPU ratio |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i, r in enumerate(res["rounds"], 1):
        mi, ou = r["minimal"], r["ours"]
        lines.append(f"| {i} | {mi['rps']:.0f} | {mi['p50_ms']:.2f} / {mi['p99_ms']:.2f} | "
                     f"{mi['server_cpu_us_per_request']:.0f} | {ou['rps']:.0f} | {ou['p50_ms']:.2f} / {ou['p99_ms']:.2f} | "
                     f"{ou['server_cpu_us_per_request']:.0f} | {r['ratio']:.2f} | {r['cpu_ratio']:.2f} |")
    lines.append(f"| median | {m['minimal_rps']:.0f} | {m['minimal_p50_ms']:.2f} / {m['minimal_p99_ms']:.2f} | "
                 f"{m['minimal_cpu_us']:.0f} | {m['ours_rps']:.0f} | {m['ours_p50_ms']:.2f} / {m['ours_p99_ms']:.2f} | "
                 f"{m['ours_cpu_us']:.0f} | {m['ratio']:.2f} | {m['cpu_ratio']:.2f} |")
    lines += ["", f"Goal (≥ 0.80x and p99 ≤ 15 ms at {a.connections} connections): "
                  + ("**met**" if goal else "**missed**") + "."]
    bad = [(i, n) for i, r in enumerate(res["rounds"], 1) for n in ("minimal", "ours")
           if r[n]["non_2xx"] or r[n]["socket_errors"]]
    if bad:
        lines += ["", f"Non-2xx responses or socket errors in: {bad}"]
    for name, prof in res["profiles"].items():
        us = 1e6 / prof["wrk"]["rps"]
        lines += ["", f"## py-spy, {name} ({prof['samples']} samples at 250 Hz over {prof['wrk']['requests']} requests, "
                      f"{prof['wrk']['rps']:.0f} req/s under the profiler, 1/rate = {us:.0f} µs)", "",
                  "Self time by area (share of the samples in which one of its threads held the GIL):", "",
                  "| area | share |", "| --- | --- |"]
        lines += [f"| {area} | {100 * s:.1f} % |" for area, s in prof["self_by_area"]]
        lines += ["", "Inclusive, top functions:", "", "| function | share |", "| --- | --- |"]
        lines += [f"| `{f.replace('|', '/')}` | {100 * s:.1f} % |" for f, s in prof["inclusive"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
