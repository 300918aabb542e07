"""Run every benchmark at its default size and print one table: each figure beside its
target and beside the ceiling measured in the same run, as a ratio.

Runs bench_overhead.py, bench_throughput.py, bench_notifications.py, bench_backlog.py,
bench_latency.py and, when present, bench_reconcile.py (each in its own process, its own
output shown as it goes), then reads their JSON from bench/results/ and prints the
summary (also written to bench/results/summary.json). The ceilings, from the same run:
the raw SDK call (overhead, throughput, latency), the channel's rate limit (backlog,
latency), the commit floor (two durable one-row transactions on the same store:
overhead), the pandas baseline (reconciliation). Exit status 0 even when a target is
missed: the table says so; 1 only when a benchmark itself failed.

    .venv/bin/python bench/run_all.py          # or: make bench
    .venv/bin/python bench/run_all.py --quick  # the backlog and latency benches' --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SCRIPTS = ("bench_overhead.py", "bench_throughput.py", "bench_notifications.py",
           "bench_backlog.py", "bench_latency.py", "bench_reconcile.py")
QUICK = {"bench_backlog.py", "bench_latency.py"}       # scripts with a --quick profile
FRESH = ("overhead.json", "throughput.json", "notifications.json", "backlog.json",
         "latency.json")


@dataclass(frozen=True)
class Row:
    """One figure: what was measured, the target, the ceiling measured in the same run
    and the figure as a share (or multiple) of that ceiling."""

    figure: str
    measured: str
    target: str
    ceiling: str = "-"
    ratio: str = "-"
    ok: bool | None = None


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def overhead_rows() -> list[Row]:
    out = []
    ovh = load("overhead.json")
    for route, r in (ovh or {}).get("routes", {}).items():
        out.append(Row(f"overhead {route}: gateway at the median",
                       f"{r['gateway_median_ms']:.2f} ms", "<= 1.2x raw",
                       f"raw SDK {r['raw_median_ms']:.2f} ms",
                       f"{r['ratio_median']:.2f}x", r["ratio_median"] <= 1.2))
        out.append(Row(f"overhead {route}: (gateway - raw) p99",
                       f"{r['overhead_p99_ms']:.1f} ms", "<= 5 ms", ok=r["overhead_p99_ms"] <= 5))
        if "commit_floor_median_ms" in r:
            multiple = r["overhead_floor_multiple"]
            out.append(Row(f"overhead {route}: (gateway - raw) median",
                           f"{r['overhead_median_ms']:.2f} ms", "<= 2x floor",
                           f"2 commits {r['commit_floor_median_ms']:.2f} ms",
                           f"{multiple:.2f}x", multiple <= 2.0))
    return out


def throughput_rows() -> list[Row]:
    out = []
    tp = load("throughput.json") or {}
    raw = {r["route"]: r["per_second"] for r in tp.get("runs", [])
           if r.get("mode", "").startswith("raw") and "per_second" in r}
    for r in tp.get("runs", []):
        if r.get("mode") != "gateway":
            continue
        label = f"throughput {r['route']} {r['database']} ({tp.get('procs')} procs)"
        if "skipped" in r:
            out.append(Row(label, "skipped", ">= 300/s"))
            continue
        ceiling = raw.get(r["route"])
        out.append(Row(label, f"{r['per_second']:.0f}/s", ">= 300/s",
                       f"raw SDK {ceiling:.0f}/s" if ceiling else "-",
                       f"{r['per_second'] / ceiling:.0%}" if ceiling else "-",
                       r["meets_target"]))
    return out


def notification_rows() -> list[Row]:
    out = []
    for r in (load("notifications.json") or {}).get("runs", []):
        label = f"notifications wechatpay {r['database']}"
        if "skipped" in r:
            out.append(Row(label, "skipped", ">= 3,000/s"))
            continue
        web, queue = r.get("parallel") or {}, r.get("batched") or {}
        s = r.get("split_ms") or {}
        # The ceiling: one thread's time for a notification (parse + apply, its own
        # commit), times the processes: what the processes reach without sharing commits.
        per = s.get("handle_total") or 0
        procs = web.get("procs", 1)
        ceiling = procs * 1000 / per if per else 0
        worst = min(web.get("per_second", 0), queue.get("per_second", 0))
        out.append(Row(label, f"{web.get('per_second', 0):.0f}/s web "
                       f"({procs}x{web.get('threads', '?')} threads, "
                       f"{web.get('per_commit')}/commit), "
                       f"{queue.get('per_second', 0):.0f}/s queue "
                       f"(batches of {queue.get('batch', '?')}); 1 thread "
                       f"{r['per_second']:.0f}/s",
                       ">= 3,000/s both", f"{ceiling:.0f}/s ({procs} x 1 commit each)",
                       f"{worst / 3000:.0%} of target", r["meets_target"]))
    return out


def backlog_rows() -> list[Row]:
    out = []
    bl = load("backlog.json") or {}
    for r in bl.get("runs", []):
        label = f"backlog {r.get('refunds', bl.get('n'))} refunds, {r['procs']} resolver(s)"
        if "skipped" in r or "error" in r:
            out.append(Row(label, r.get("skipped") or r.get("error", "?"), ">= 90% limit"))
            continue
        out.append(Row(f"{label}: channel calls/s", f"{r['calls_per_second']:.0f}/s",
                       ">= 90% limit", f"limit {r['limit']:.0f}/s",
                       f"{r['calls_share_of_limit']:.0%}", r["meets_target"]))
        out.append(Row(f"{label}: refunds/s drained", f"{r['refunds_per_second']:.0f}/s "
                       f"({r['calls_per_refund']:.2f} calls each)", ">= 90% ceiling",
                       f"limit / calls each {r['limit'] / r['calls_per_refund']:.0f}/s",
                       f"{r['refunds_share_of_ceiling']:.0%}",
                       r["refunds_share_of_ceiling"] >= 0.9))
        out.append(Row(f"{label}: queried twice in one cycle",
                       f"{r['queried_twice_in_one_cycle']} (429s {r['limited_429']})", "0",
                       ok=r["queried_twice_in_one_cycle"] == 0 and r["undecided"] == 0))
    return out


def latency_rows() -> list[Row]:
    out = []
    lt = load("latency.json") or {}
    raw = next((r["per_second"] for r in lt.get("runs", []) if r.get("mode") == "raw SDK"),
               None)
    for r in lt.get("runs", []):
        if r.get("mode") != "gateway":
            continue
        label = (f"refund() at {lt.get('latency_ms', 0):.0f} ms, {lt.get('procs')}x"
                 f"{lt.get('threads')} threads {r['database']}")
        if "skipped" in r:
            out.append(Row(label, "skipped", ">= 90% limit"))
            continue
        limit = lt.get("rate_limit", 150.0)
        ceiling = min(limit, raw) if raw else limit
        out.append(Row(label, f"{r['per_second']:.0f}/s", f">= {lt.get('target', 135):.0f}/s",
                       f"limit {limit:.0f}/s" + (f", raw SDK {raw:.0f}/s" if raw else ""),
                       f"{r['per_second'] / ceiling:.0%}", r["meets_target"]))
        mem = r.get("memory") or {}
        if mem:
            out.append(Row(f"{label}: memory per in-flight refund",
                           f"{mem['kib_per_in_flight_refund']:.0f} KiB", "bounded",
                           ratio=f"{mem['rss_growth_bytes_per_refund']:.0f} B/refund growth"))
    return out


def reconcile_rows() -> list[Row]:
    out = []
    for path in sorted(RESULTS.glob("reconcile_*.json")):
        r = json.loads(path.read_text(encoding="utf-8"))
        lines = path.stem.split("_")[-1]
        wall = r.get("wall_s")
        rss = r.get("peak_rss_mb")
        base = r.get("pandas", {}).get("wall_s") if isinstance(r.get("pandas"), dict) else None
        limits = {"1000000": (3.0, 1024), "10000000": (60.0, 2048)}.get(lines)
        target = f"<= {limits[0]:g} s, {limits[1]} MiB" if limits else "(1M/10M only)"
        ok = (float(wall) <= limits[0] and int(rss) <= limits[1]) \
            if limits and wall is not None and rss is not None else None
        out.append(Row(f"reconcile {lines} lines", f"{wall} s, {rss} MiB", target,
                       f"pandas {base} s" if base else "pandas not run",
                       f"{base / max(float(wall or 0), 1e-9):.1f}x faster" if base else "-",
                       ok))
    return out


def rows() -> list[Row]:
    return [*overhead_rows(), *throughput_rows(), *notification_rows(), *backlog_rows(),
            *latency_rows(), *reconcile_rows()]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="the --quick profile of the benchmarks that have one")
    args = ap.parse_args()
    failed = []
    for stale in FRESH:
        (RESULTS / stale).unlink(missing_ok=True)
    for script in SCRIPTS:
        path = HERE / script
        if not path.exists():
            print(f"== {script}: not present, skipped", flush=True)
            continue
        print(f"== {script}", flush=True)
        extra = ["--quick"] if args.quick and script in QUICK else []
        if subprocess.run([sys.executable, str(path), *extra], cwd=HERE.parent,
                          check=False).returncode != 0:
            failed.append(script)
    table = rows()
    print_table(table)
    print(f"(1-minute load average at the end: {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores; a busy machine lowers rates and inflates p99)")
    if failed:
        print(f"failed: {', '.join(failed)}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(
        [asdict(r) for r in table], indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 1 if failed else 0


def print_table(table: list[Row]) -> None:
    heads = ("figure", "measured", "target", "ceiling (same run)", "ratio", "verdict")
    cells = [(r.figure, r.measured, r.target, r.ceiling, r.ratio,
              "-" if r.ok is None else ("ok" if r.ok else "MISS")) for r in table]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(heads)]
    print()
    for line in (heads, *cells):
        print("  ".join(f"{v:<{w}}" for v, w in zip(line, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
