"""Joins the JSON lines of `tinker-bench` and official_sdk_bench.py (plus the server-side
observations bench/run.sh adds) into one markdown table.

    report.py results.jsonl [poll_rust.json poll_python.json]
"""

import json
import sys
from collections import OrderedDict


def fmt_time(s):
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_mb(v):
    return "-" if v is None else f"{v:.1f} MB"


def load(path):
    rows = OrderedDict()
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        key = (r["sdk"], r["workload"], r["size"])
        rows.setdefault(key, {}).update(r)
    return rows


def polls(recording_path):
    """Per sample call after the warm-up: retrieve_future requests for its future, and the peak
    number of those in any 1 s window."""
    exchanges = json.load(open(recording_path))
    samples = [e for e in exchanges if e["path"].endswith("/asample") and e.get("resp_body")]
    out = []
    for s in samples[1:]:
        rid = s["resp_body"].get("request_id")
        times = sorted(e["t"] for e in exchanges
                       if e["path"].endswith("/retrieve_future") and (e.get("body") or {}).get("request_id") == rid)
        peak, j = 0, 0
        for i, t in enumerate(times):
            while times[j] < t - 1.0:
                j += 1
            peak = max(peak, i - j + 1)
        statuses = [e["resp_status"] for e in exchanges
                    if e["path"].endswith("/retrieve_future") and (e.get("body") or {}).get("request_id") == rid]
        out.append({"polls": len(times), "peak_per_s": peak, "errors": sum(1 for st in statuses if st >= 500)})
    return out


def main():
    rows = load(sys.argv[1])
    poll_stats = {}
    if len(sys.argv) > 3:
        for sdk, path in (("rust", sys.argv[2]), ("python", sys.argv[3])):
            try:
                poll_stats[sdk] = polls(path)
            except (OSError, ValueError) as e:
                print(f"(no poll recording for {sdk}: {e})", file=sys.stderr)

    print("| workload | size | Python (official SDK 0.38): medians | tinker-rs: medians | ratio (CPU) | memory (Python / tinker-rs) | notes |")
    print("|---|---|---|---|---|---|---|")
    # Timed stages: median time.
    for (sdk, workload, size), r in rows.items():
        if sdk != "rust" or "median_s" not in r:
            continue
        py = rows.get(("python", workload, size), {})
        if workload == "B8 SSE decode (owned events)":
            py = rows.get(("python", "B8 SSE decode", size), {})
        if "eventsource" in workload:
            # CPU time, as every ratio here; owned events are the like-for-like comparison.
            faster = []
            for name, label in (("B8 SSE decode (owned events)", "owned events"),
                                ("B8 SSE decode", "borrowed events")):
                ours = rows.get(("rust", name, size), {})
                if ours.get("cpu_median_s") and r.get("cpu_median_s"):
                    faster.append(f"{r['cpu_median_s'] / ours['cpu_median_s']:.1f}× ({label})")
            if faster:
                r = dict(r, notes=f"{r.get('notes', '')}; tinker-core's decoder uses "
                                  f"{' and '.join(faster)} less CPU than this crate")
        # CPU time per call is the fair measure on a shared, loaded machine; wall time is shown too.
        if py.get("cpu_median_s") and r.get("cpu_median_s"):
            ratio = f"{py['cpu_median_s'] / r['cpu_median_s']:.1f}×"
        else:
            ratio = "-"
        notes = r.get("notes", "")
        if "proto_bytes" in r and "proto_bytes" in py and r["proto_bytes"] != py["proto_bytes"]:
            notes += f" (proto sizes differ: Python {py['proto_bytes']} B)"
        if py.get("notes") and not workload.startswith("B8 SSE decode ("):
            notes = f"{notes}; Python: {py['notes']}" if notes else f"Python: {py['notes']}"
        def cell(x):
            if not x.get("median_s"):
                return "-"
            return (f"CPU {fmt_time(x.get('cpu_median_s'))}; wall {fmt_time(x['median_s'])} "
                    f"({x['runs']} runs, {fmt_time(x['min_s'])} - {fmt_time(x['max_s'])})")

        print(f"| {workload} | {size} | {cell(py)} | {cell(r)} | {ratio} | "
              f"{fmt_mb(py.get('mem_mb'))} / {fmt_mb(r.get('mem_mb'))} | {notes} |")
    # B3: CPU per 1,000 requests.
    for (sdk, workload, size), r in rows.items():
        if sdk != "rust" or not workload.startswith("B3"):
            continue
        py = rows.get(("python", "B3 sample fan-out (asyncio)", size), {})
        ratio = f"{py['cpu_ms_per_1k'] / r['cpu_ms_per_1k']:.1f}×" \
            if py.get("cpu_ms_per_1k") and r.get("cpu_ms_per_1k") else "-"

        def side(x):
            if not x:
                return "-"
            if "cpu_ms_per_1k" not in x:
                return x.get("error", "no result")
            s = f"{x['cpu_ms_per_1k']:.0f} ms CPU/1k req, {x['wall_s']:.2f} s wall, {x['failures']} failed"
            if "asample_peak_in_flight" in x:
                s += f", peak {x['asample_peak_in_flight']} asample in flight"
            return s

        def rss(x):
            if "peak_rss_mb" not in x:
                return "-"
            return f"{x['peak_rss_mb']:.0f} (+{x['peak_rss_mb'] - x['rss_before_mb']:.0f})"

        mem = f"{rss(py)} / {rss(r)} MB peak RSS (+growth)"
        notes = r.get("notes") or ""
        err = r.get("first_error") or py.get("first_error")
        if err:
            notes += f" first error: {err[:120]}"
        print(f"| {workload} | {size} (max_tokens {r.get('max_tokens')}) | {side(py)} | {side(r)} | {ratio} | {mem} | {notes} |")
    # B4: polls per future.
    for (sdk, workload, size), r in rows.items():
        if sdk != "rust" or not workload.startswith("B4"):
            continue
        case = [k[2] for k in rows if k[0] == "rust" and k[1] == workload].index(size)
        py = rows.get(("python", workload, size), {})

        def side(x, who):
            if not x:
                return "-"
            st = poll_stats.get(who, [])
            p = st[case] if case < len(st) else None
            s = f"{x['wall_s']:.2f} s, CPU {x['cpu_s'] * 1e3:.0f} ms"
            if p:
                s = f"{p['polls']} polls ({p['errors']} answered 5xx), peak {p['peak_per_s']}/s; " + s
            if x.get("failures"):
                s += f", FAILED: {(x.get('first_error') or '')[:100]}"
            return s

        print(f"| {workload} | {size} | {side(py, 'python')} | {side(r, 'rust')} (tokio) | - | - | |")


if __name__ == "__main__":
    main()
