#!/usr/bin/env python3
"""Server-side latency of a benchmark phase, from the nodes' Prometheus histograms.

The histograms count from a node's start, so a phase is the difference of two scrapes:

    scripts/server-latency.py --save before.json 127.0.0.1:7180 127.0.0.1:7181 ...
    ... run the phase ...
    scripts/server-latency.py --since before.json --save after.json 127.0.0.1:7180 ...

prints, over every node given, the count and p50 / p99 / p999 (upper bucket bounds, so a
figure means "at most") of each request operation's duration and of the log fsyncs.
Used by scripts/bench-cluster.sh to split a client's latency into server and the rest.
"""
import argparse
import json
import re
import sys
import urllib.request

LINE = re.compile(r'^(runnel_[a-z_]+)_bucket\{([^}]*)\} (\S+)$')


def scrape(addr):
    """{(metric, op): {le: cumulative count}} of one node."""
    text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        name, labels, value = m.groups()
        if name not in ("runnel_request_duration_seconds", "runnel_fsync_duration_seconds"):
            continue
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        key = f"{name}|{fields.get('op', '')}"
        out.setdefault(key, {})[fields["le"]] = float(value)
    return out


def merge(scrapes):
    total = {}
    for s in scrapes:
        for key, buckets in s.items():
            t = total.setdefault(key, {})
            for le, n in buckets.items():
                t[le] = t.get(le, 0.0) + n
    return total


def quantile(buckets, q):
    """Upper bound of the bucket holding quantile q; buckets are cumulative."""
    ordered = sorted(buckets.items(), key=lambda kv: float(kv[0]))
    total = ordered[-1][1] if ordered else 0
    if total <= 0:
        return None
    for le, n in ordered:
        if n >= q * total:
            return float(le)
    return float("inf")


def fmt(seconds):
    if seconds is None:
        return "-"
    if seconds == float("inf"):
        return "> 26 s"
    return f"{seconds * 1000:.2f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--since", help="a scrape saved by --save: report only what came after it")
    p.add_argument("--save", help="write this scrape here")
    p.add_argument("admin", nargs="+", help="admin addresses host:port of the nodes")
    a = p.parse_args()
    try:
        now = merge(scrape(addr) for addr in a.admin)
    except OSError as e:
        print(f"server-latency: cannot scrape /metrics: {e}", file=sys.stderr)
        return 1
    if a.save:
        with open(a.save, "w") as f:
            json.dump(now, f)
    if not a.since:
        return 0
    with open(a.since) as f:
        before = json.load(f)
    rows = []
    for key, buckets in sorted(now.items()):
        old = before.get(key, {})
        delta = {le: n - old.get(le, 0.0) for le, n in buckets.items()}
        count = int(delta.get("+Inf", 0))
        if count == 0:
            continue
        name, op = key.split("|")
        what = "fsync (log)" if name.startswith("runnel_fsync") else op
        rows.append((what, count, *(quantile(delta, q) for q in (0.5, 0.99, 0.999))))
    print(f"  {'server side':<22} {'count':>9} {'p50 <=':>10} {'p99 <=':>10} {'p999 <=':>10}")
    for what, count, p50, p99, p999 in rows:
        print(f"  {what:<22} {count:>9} {fmt(p50):>10} {fmt(p99):>10} {fmt(p999):>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
