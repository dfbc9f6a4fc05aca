#!/usr/bin/env python3
"""What the protection middleware costs on get-one.

Runs the release binary on the scratch project of auth.py once per configuration and
measures the same two get-one workloads with wrk (G-public: anonymous, view rule "true";
G-rule: Bearer token, view rule "published or mine"):

  bare      rate limits off, compression off, metrics off
  defaults  everything on: rate limiting (sliding window, in memory; limits raised so
            that wrk's single client is never refused), compression, metrics, request ids,
            security headers; the server-side read cache off (its default)
  cached    defaults plus the in-memory read cache (serves G-public from memory)

Configurations are interleaved (bare, defaults, cached, bare, ...) for --repeat rounds
and medians are printed, so machine drift hits all of them alike.
Usage: python3 bench/middleware.py [--duration 10] [--repeat 3] [--binary PATH]
"""

import argparse, os, statistics, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from auth import HIGH_LIMITS as HIGH, ROOT, scratch_server, wrk  # noqa: E402

CONFIGS = {
    "bare": "[rate_limit]\nenabled = false\n[server]\ncompression = false\n[metrics]\nenabled = false\n",
    "defaults": HIGH,
    "cached": HIGH + "[cache]\nserver = \"memory\"\n",
}


def measure(binary, settings, duration, connections):
    with scratch_server(binary, settings) as (base, token, post, page):
        out = {}
        for name, url, header in [
            ("G-public", f"{base}/api/v1/pages/{page}", None),
            ("G-rule", f"{base}/api/v1/posts/{post}", f"Authorization: Bearer {token}"),
        ]:
            wrk(url, 2, connections, header)  # warm-up
            out[name] = wrk(url, duration, connections, header)
        return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--binary")
    args = ap.parse_args()
    binary = args.binary or os.path.join(ROOT, "target/release/ferrobase")
    if not args.binary:
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    runs = {c: [] for c in CONFIGS}
    for _ in range(args.repeat):
        for name, settings in CONFIGS.items():
            runs[name].append(measure(binary, settings, args.duration, args.connections))
    print(f"{'config':9} {'workload':9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    medians = {}
    for name, results in runs.items():
        for workload in ["G-public", "G-rule"]:
            rps = statistics.median(r[workload][0] for r in results)
            p50 = statistics.median(r[workload][1] for r in results)
            p99 = statistics.median(r[workload][2] for r in results)
            bad = sum(r[workload][3] for r in results)
            medians[(name, workload)] = rps
            print(f"{name:9} {workload:9} {rps:9.0f} {p50:8.2f} {p99:8.2f} {bad:8d}")
    for workload in ["G-public", "G-rule"]:
        bare, full = medians[("bare", workload)], medians[("defaults", workload)]
        print(f"{workload}: the default middleware costs {100 * (1 - full / bare):.1f}% of bare throughput")


if __name__ == "__main__":
    sys.exit(main())
