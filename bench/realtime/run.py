#!/usr/bin/env python3
"""Realtime side by side: ferrobase's SSE against PocketBase's realtime, same load.

Each target is set up and started with its hook from the shared benchmark kit
(`../shared/bench/targets/pocketbase.py`, this repository's `bench/ferrobase_target.py`,
production defaults), on the kit's dataset. Both users log in; the load generator
(`bench/realtime`, Rust, one thread) opens the subscribers, half for each user, and
writes posts as the first user at a steady rate, alternating draft and published:

  user A's subscribers  filter `status = 'draft'`: A's own drafts, half of the writes
  user B's subscribers  filter `status = 'draft' || status = 'published'`: the view rule
                        hides A's drafts from B, so the published half

It prints, per target and write rate: events delivered per second, delay from write
acknowledgement to receipt (p50, p99), lost / repeated / leaked events (leaked: a draft
reaching B, or anything a filter excludes), server CPU and peak RSS, server RSS per idle
connection, and the load generator's own CPU (one core at most; far below it means the
server, not the generator, set the pace).

Usage: python3 bench/realtime/run.py [--subscribers 1000] [--rates 50,100,200]
       [--seconds 10] [--repeat 1] [--targets pocketbase,ferrobase] [--rows 10000]
(`ferrobase-pg` is ferrobase on PostgreSQL, `bench/ferrobase_pg_target.py`.)
ferrobase is allowed more connections per user than its default 20 (one user holds 500
here): FERROBASE_REALTIME__MAX_CONNECTIONS_PER_USER.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KIT = os.path.join(os.path.dirname(ROOT), "shared", "bench")
sys.path.insert(0, os.path.join(KIT, "lib"))
import benchlib as bl  # noqa: E402

HOOKS = {
    "pocketbase": os.path.join(KIT, "targets", "pocketbase.py"),
    "ferrobase": os.path.join(ROOT, "bench", "ferrobase_target.py"),
    "ferrobase-pg": os.path.join(ROOT, "bench", "ferrobase_pg_target.py"),
}
SCRATCH = "/tmp/bench-realtime"


def hook(name, what, work, dataset, port, extra=()):
    argv = [sys.executable, HOOKS[name], what, "--work", work, "--dataset", dataset, "--port", str(port), *extra]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{name} {what} failed:\n{out.stdout}\n{out.stderr}")
    lines = [l for l in out.stdout.strip().splitlines() if l.strip()]
    return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}


def login(name, base, user):
    if name == "pocketbase":
        status, body = bl.http("POST", f"{base}/api/collections/users/auth-with-password",
                               {"identity": user["email"], "password": user["password"]})
        if status != 200:
            raise SystemExit(f"pocketbase login: {status} {body}")
        return body["token"], body["record"]["id"]
    status, body = bl.http("POST", f"{base}/api/v1/auth/login",
                           {"email": user["email"], "password": user["password"]})
    if status != 200:
        raise SystemExit(f"ferrobase login: {status} {body}")
    return body["data"]["accessToken"], body["data"]["user"]["id"]


def build_loadgen():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=HERE, check=True)
    return os.path.join(HERE, "target", "release", "realtime-load")


def run_once(name, loadgen, dataset, subscribers, rate, seconds):
    work = os.path.join(SCRATCH, name)
    port = bl.free_port()
    info = hook(name, "start", work, dataset, port)
    try:
        base = info["base_url"]
        users = bl.load_users(dataset)
        token_a, id_a = login(name, base, users[0])
        token_b, _ = login(name, base, users[1])
        out = subprocess.run(
            [loadgen, "pocketbase" if name == "pocketbase" else "ferrobase", base, token_a, token_b, id_a, str(subscribers), str(rate), str(seconds), str(info["pid"])],
            capture_output=True, text=True, timeout=seconds + 300,
        )
        if out.returncode != 0:
            raise SystemExit(f"load generator failed on {name}:\n{out.stderr}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["version"] = info.get("version", "")
        return result
    finally:
        hook(name, "stop", work, dataset, port, ["--pid", str(info["pid"])])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--rates", default="50,100,200")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--targets", default="pocketbase,ferrobase")
    p.add_argument("--rows", type=int, default=10000)
    a = p.parse_args()
    os.environ["FERROBASE_REALTIME__MAX_CONNECTIONS_PER_USER"] = str(a.subscribers)
    targets = a.targets.split(",")
    rates = [float(r) for r in a.rates.split(",")]
    shutil.rmtree(SCRATCH, ignore_errors=True)
    dataset = os.path.join(SCRATCH, "dataset")
    bl.make_dataset(dataset, rows=a.rows)
    loadgen = build_loadgen()
    for name in targets:
        work = os.path.join(SCRATCH, name)
        os.makedirs(work)
        hook(name, "setup", work, dataset, bl.free_port())
    results = {}
    # Interleaved: every target at one rate before the next rate, repeats last.
    for _ in range(a.repeat):
        for rate in rates:
            for name in targets:
                r = run_once(name, loadgen, dataset, a.subscribers, rate, a.seconds)
                results.setdefault((name, rate), []).append(r)
                print(json.dumps({"target": name, **r}), flush=True)
    print()
    print(f"| target | writes/s asked (achieved) | delivered events/s | delay p50 ms | delay p99 ms | lost | repeated | leaked | server CPU % | load generator CPU % | server peak RSS MiB | idle bytes/connection (all / added) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for rate in rates:
        for name in targets:
            rs = results[(name, rate)]
            med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
            print(f"| {name} | {rate:g} ({med('achieved_write_rate'):g}) | {med('delivered_per_s'):,.0f} | {med('delay_ms_p50'):.2f} | {med('delay_ms_p99'):.2f} | "
                  f"{sum(r['lost'] for r in rs)} | {sum(r['repeated'] for r in rs)} | {sum(r['leaked'] for r in rs)} | "
                  f"{med('server_cpu_pct'):.0f} | {med('loadgen_cpu_pct'):.0f} | {med('server_peak_rss_mib'):.1f} | "
                  f"{med('idle_bytes_per_connection'):,.0f} / {med('idle_bytes_per_added_connection'):,.0f} |")


if __name__ == "__main__":
    main()
