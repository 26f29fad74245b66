"""Count, from a size table's table.csv, where each of the paper's comparisons holds.

    python bench/claims.py bench/results/size_table            # writes <dir>/claims.md

bench/results/README.md's claim table quotes these counts; regenerate after new runs land instead of
recounting by hand. Values are means over the seeds present (the seed count is shown).
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path

INITS = ("fine", "linear-fit", "weight-selection")
ROOT = Path(__file__).resolve().parent.parent


def load_means(path: Path) -> dict[tuple[int, int, str, int], dict]:
    """(depth, width, method, K) -> {'heldout', 'fd', 'seeds'} averaged over seeds."""
    rows: dict[tuple, list[dict]] = defaultdict(list)
    with path.open() as f:
        for r in csv.DictReader(f):
            rows[(int(r["depth"]), int(r["width"]), r["method"], int(r["k"]))].append(r)
    out = {}
    for key, rs in rows.items():
        fds = [float(r["fd"]) for r in rs if r["fd"]]
        out[key] = {"heldout": statistics.fmean(float(r["heldout"]) for r in rs),
                    "fd": statistics.fmean(fds) if fds else None, "seeds": len(rs)}
    return out


def fmt(v: float | None, digits: int = 4) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def claims(means: dict) -> str:
    sizes = sorted({(d, w) for d, w, _m, _k in means})
    ks = sorted({k for *_x, k in means})  # budgets without all three inits (scratch's 10 K) are skipped below
    lines = ["| depth | width | K | seeds | lowest MSE (init) | MSE fine / linear-fit / ws | lowest FD (init) | "
             "FD fine / linear-fit / ws | fine vs scratch@K | best init vs scratch@10K |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    wins: dict[str, dict] = defaultdict(lambda: defaultdict(int))
    for k in ks:
        for d, w in sizes:
            got = {m: means.get((d, w, m, k)) for m in INITS}
            if any(v is None for v in got.values()):
                continue
            best_mse = min(INITS, key=lambda m: got[m]["heldout"])
            with_fd = [m for m in INITS if got[m]["fd"] is not None]
            best_fd = min(with_fd, key=lambda m: got[m]["fd"]) if with_fd else ""
            wins[f"K={k} lowest MSE"][best_mse] += 1
            if best_fd:
                wins[f"K={k} lowest FD"][best_fd] += 1
            sc, sc10 = means.get((d, w, "scratch", k)), means.get((d, w, "scratch", 10 * k))
            vs_sc = vs_sc10 = ""
            if sc is not None:
                beat = got["fine"]["heldout"] < sc["heldout"]
                wins[f"K={k} fine vs scratch@K"]["fine" if beat else "scratch"] += 1
                vs_sc = f"{'fine' if beat else 'scratch'} ({fmt(got['fine']['heldout'])} vs {fmt(sc['heldout'])})"
            if sc10 is not None and k:
                beat = got[best_mse]["heldout"] < sc10["heldout"]
                wins[f"K={k} best init vs scratch@10K"]["init" if beat else "scratch"] += 1
                vs_sc10 = f"{'init' if beat else 'scratch'} ({fmt(got[best_mse]['heldout'])} vs {fmt(sc10['heldout'])})"
            seeds = min(v["seeds"] for v in got.values())
            lines.append(f"| {d} | {w} | {k} | {seeds} | {best_mse} | "
                         + " / ".join(fmt(got[m]["heldout"]) for m in INITS)
                         + f" | {best_fd} | " + " / ".join(fmt(got[m]["fd"], 0) for m in INITS)
                         + f" | {vs_sc} | {vs_sc10} |")
    tally = ["| comparison | count over sizes |", "| --- | --- |"]
    for name, counts in wins.items():
        tally.append(f"| {name} | " + ", ".join(f"{m} {n}" for m, n in sorted(counts.items(), key=lambda x: -x[1]))
                     + " |")
    return "\n".join(tally) + "\n\n" + "\n".join(lines) + "\n"


def write_claims(results: Path) -> str:
    """Write <results>/claims.md from <results>/table.csv; returns its text."""
    shown = results.resolve().relative_to(ROOT) if results.resolve().is_relative_to(ROOT) else results
    text = (f"# Claims counted from {results.name}/table.csv\n\n"
            f"Command: `python bench/claims.py {shown}` (also written by size_table.py's report). "
            "Means over the seeds present; ws = weight-selection; FD in the committed classifier's features.\n\n"
            + claims(load_means(results / "table.csv")))
    (results / "claims.md").write_text(text)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="a size-table results directory holding table.csv")
    print(write_claims(p.parse_args().results))


if __name__ == "__main__":
    main()
