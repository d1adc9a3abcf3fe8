"""Compare the official SDK's traffic against the local server with a reference capture.

Usage:
  compare_traffic.py RECORDED.jsonl REFERENCE.jsonl          # order comparison (default flags run)
  compare_traffic.py --expect-flags RECORDED.jsonl           # the flags took effect (flags run)

What is compared (both files are JSONL, one request per line, in the captures' shape):

1. Each request becomes an *endpoint kind*: the method plus the path under /api/v1/ with ids
   replaced by placeholders (`GET training_runs/{run}/checkpoints`,
   `PUT training_runs/{run}/checkpoints/{kind}/{name}/ttl`, `POST sessions/{id}/finish`, ...).
   Background traffic whose timing depends on the clock (`session_heartbeat`, `telemetry`) is
   left out.
2. Startup sequence: the kinds before the first `create_model` must be identical in both files
   (`client/config`, `client/dynamic_config`, `create_session` for SDK 0.38 with default flags).
3. Order of endpoint kinds for the calls both flows make: the lists of *first occurrences* of
   every kind present in both files must be identical (the flows differ in length and repeat
   calls a different number of times, so repetitions are not compared).
4. Request shapes: for every common kind, the top-level keys of the first request's JSON body
   (or decoded protobuf body) must be identical.

--expect-flags checks the JWT exchange happened and later requests carried the JWT, that
forward_backward bodies were zstd-compressed, that retrieve_futures was polled, and that the
cloned sampling client called join_sampling_session.

Exit status 0 when everything matches; otherwise a diff is printed and the status is 1.
"""

import difflib
import json
import re
import sys

BACKGROUND = {"POST session_heartbeat", "POST telemetry"}


def load(path):
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    # The local server appends a line when a request is answered (long polls answer late); the
    # arrival time orders them as they were sent.
    rows.sort(key=lambda r: r["t"])
    return rows


def kind(row):
    path = row["path"]
    path = path[len("/api/v1/"):] if path.startswith("/api/v1/") else path
    m = re.match(r"^training_runs/([^/]+)(/checkpoints)?(?:/([^/]+)/([^/]+))?(/.*)?$", path)
    if m:
        run, ckpts, ckind, _name, tail = m.groups()
        path = "training_runs/{run}"
        if ckpts:
            path += "/checkpoints"
        if ckind:
            path += "/{kind}/{name}"
        if tail:
            path += tail
    path = re.sub(r"^sessions/(?!search$)[^/]+", "sessions/{id}", path)
    path = re.sub(r"^samplers/.+$", "samplers/{id}", path)
    return f"{row['method']} {path}"


def kinds(rows):
    return [kind(r) for r in rows if kind(r) not in BACKGROUND]


def first_occurrences(ks):
    seen, out = set(), []
    for k in ks:
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out


def body_keys(row):
    body = row.get("body")
    if body is None:
        body = row.get("body_proto")
    return sorted(body.keys()) if isinstance(body, dict) else None


def diff(title, expected, actual, names=("reference capture", "local server")):
    print(f"MISMATCH: {title}")
    for line in difflib.unified_diff(expected, actual, names[0], names[1], lineterm=""):
        print("  " + line)


def compare(recorded_path, reference_path):
    recorded, reference = load(recorded_path), load(reference_path)
    rk, fk = kinds(recorded), kinds(reference)
    ok = True

    def startup(ks):
        return ks[: ks.index("POST create_model")] if "POST create_model" in ks else ks

    if startup(rk) != startup(fk):
        diff("startup sequence (requests before the first create_model)", startup(fk), startup(rk))
        ok = False
    else:
        print("startup sequence matches:", " -> ".join(startup(rk)))

    common = set(rk) & set(fk)
    r_order = [k for k in first_occurrences(rk) if k in common]
    f_order = [k for k in first_occurrences(fk) if k in common]
    if r_order != f_order:
        diff("order of first occurrences of the endpoint kinds both flows use", f_order, r_order)
        ok = False
    else:
        print(f"order of {len(common)} common endpoint kinds matches:")
        for k in r_order:
            print("   ", k)
    only_ref = sorted(set(fk) - common)
    only_rec = sorted(set(rk) - common)
    print("kinds only in the reference capture (not compared):", only_ref or "none")
    print("kinds only in the local-server run (not compared):", only_rec or "none")

    def first_rows(rows):
        out = {}
        for r in rows:
            out.setdefault(kind(r), r)
        return out

    r_first, f_first = first_rows(recorded), first_rows(reference)
    shape_diffs = []
    for k in r_order:
        a, b = body_keys(f_first[k]), body_keys(r_first[k])
        if a != b:
            shape_diffs.append((k, a, b))
    if shape_diffs:
        ok = False
        for k, a, b in shape_diffs:
            print(f"MISMATCH: request body keys of {k}: reference {a} vs local {b}")
    else:
        print("request body keys match for every common kind")
    return ok


def expect_flags(recorded_path):
    rows = load(recorded_path)
    ks = [kind(r) for r in rows]
    problems = []
    if "POST auth/token" not in ks:
        problems.append("no JWT exchange (POST auth/token)")
    else:
        after = rows[ks.index("POST auth/token") + 1:]
        keys = {dict((n.lower(), v) for n, v in r["headers"]).get("x-api-key", "") for r in after}
        if not any(k.startswith("eyJ") for k in keys):
            problems.append("no request after auth/token carried the JWT")
    fb = [r for r in rows if kind(r) == "POST forward_backward"]
    if not fb or not all(
        dict((n.lower(), v) for n, v in r["headers"]).get("content-encoding") == "zstd" for r in fb
    ):
        problems.append("forward_backward bodies were not all zstd-compressed")
    if "POST retrieve_futures" not in ks:
        problems.append("retrieve_futures was never polled")
    if "POST join_sampling_session" not in ks:
        problems.append("the cloned sampling client did not call join_sampling_session")
    for p in problems:
        print("MISMATCH:", p)
    if not problems:
        print("flags took effect: JWT exchange + JWT on later requests, zstd forward_backward "
              f"bodies ({len(fb)}), retrieve_futures ({ks.count('POST retrieve_futures')} polls), "
              "join_sampling_session")
    return not problems


def main(argv):
    if len(argv) == 3 and argv[1] == "--expect-flags":
        return 0 if expect_flags(argv[2]) else 1
    if len(argv) == 3:
        return 0 if compare(argv[1], argv[2]) else 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
