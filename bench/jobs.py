#!/usr/bin/env python3
"""The job queue: throughput and pickup delay, on SQLite and on PostgreSQL.

Runs the release binary on a scratch project with one HTTP job type whose target is a
minimal local service (asyncio, keep-alive, answers 200 `{}` and notes when each job
arrived), then measures:

  throughput  N jobs enqueued with the same `runAt` a few seconds ahead (with wrk and a
              Lua script, so enqueueing is not what is measured), then the time from that
              `runAt` to the last delivery: jobs completed per second (all N are checked
              `completed` through the admin API afterwards).
  pickup      jobs enqueued one at a time on an idle queue, 20 ms apart: the delay from
              each job's `runAt` (its creation) to the start of its delivery, p50 / p99.

Usage: python3 bench/jobs.py [--jobs 20000] [--binary PATH] [--postgres URL]
(`--postgres postgres://postgres@127.0.0.1/ferrobase_jobs_bench` uses a database that is
dropped and created again.)
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIGH_LIMITS = '[rate_limit]\ndefault = "1000000000/1m"\nauth = "1000000/1m"\n'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """The jobs' target: records (job id, arrival time) and answers 200 at once."""

    def __init__(self):
        self.port = free_port()
        self.arrivals = {}
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port, backlog=1024))
        self.loop.run_forever()

    async def _client(self, reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.time()
                length, job = 0, None
                for line in head.split(b"\r\n"):
                    low = line.lower()
                    if low.startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                    elif low.startswith(b"ferrobase-job-id:"):
                        job = line.split(b":", 1)[1].strip().decode()
                if length:
                    await reader.readexactly(length)
                if job and job not in self.arrivals:
                    self.arrivals[job] = now
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def call(base, method, path, body=None, token=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"{}")


def stamp(t):
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def parse(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Node:
    def __init__(self, binary, service, database_url):
        self.work = tempfile.mkdtemp(prefix="ferrobase-bench-jobs-")
        with open(os.path.join(self.work, "schema.toml"), "w") as f:
            f.write(f'[jobs.bench]\nurl = "http://127.0.0.1:{service.port}/job"\ntimeout = "10s"\n')
        with open(os.path.join(self.work, "ferrobase.toml"), "w") as f:
            f.write(HIGH_LIMITS + '[jobs]\nqueues = ["default=64"]\n[log]\nlevel = "warn"\n')
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, FERROBASE_SECRET="bench-secret-" + "x" * 40, FERROBASE_ENV="production",
                   FERROBASE_LOG__FORMAT="json")
        env.pop("DATABASE_URL", None)
        if database_url:
            env["DATABASE_URL"] = database_url
        subprocess.run([binary, "users", "create", "--dir", self.work, "--email", "bench@example.com",
                        "--role", "admin"], input=b"bench-password-1\n", env=env, check=True,
                       capture_output=True)
        self.log = open(os.path.join(self.work, "server.log"), "w")
        self.proc = subprocess.Popen([binary, "serve", "--dir", self.work, "--addr", f"127.0.0.1:{self.port}"],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(300):
            try:
                urllib.request.urlopen(self.base + "/ready")
                break
            except Exception:
                time.sleep(0.1)
        self.token = call(self.base, "POST", "/api/v1/auth/login",
                          {"email": "bench@example.com", "password": "bench-password-1"})["data"]["accessToken"]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.log.close()
        shutil.rmtree(self.work, ignore_errors=True)


LUA = """
local n = 0
request = function()
  n = n + 1
  local body = '{"type":"bench","payload":{"n":' .. n .. ',"t":' .. math.random(1, 1000000000) .. '},"runAt":"%s"}'
  return wrk.format("POST", "/api/v1/jobs", {["content-type"]="application/json", ["authorization"]="Bearer %s"}, body)
end
"""


def throughput(node, service, jobs):
    lead = max(5.0, jobs / 2500.0)
    run_at = time.time() + lead
    script = os.path.join(node.work, "enqueue.lua")
    with open(script, "w") as f:
        f.write(LUA % (stamp(run_at), node.token))
    # wrk sends for a fixed time; enqueue in rounds until N jobs are in.
    enqueued = 0
    while enqueued < jobs and time.time() < run_at - 0.5:
        out = subprocess.run(["wrk", "-t2", "-c16", "-d1s", "-s", script, node.base + "/api/v1/jobs"],
                             capture_output=True, text=True, check=True).stdout
        stats = call(node.base, "GET", "/api/v1/admin/queues", token=node.token)["data"]
        enqueued = sum(q["counts"].get("scheduled", 0) + q["counts"].get("available", 0)
                       for q in stats if q["queue"] == "default")
    if time.time() >= run_at:
        sys.exit("enqueueing took longer than the lead time; use fewer jobs")
    total = enqueued
    deadline = run_at + 300
    while len(service.arrivals) < total and time.time() < deadline:
        time.sleep(0.05)
    last = max(service.arrivals.values())
    # Wait for the last completions to be recorded, then check every job completed.
    for _ in range(200):
        stats = call(node.base, "GET", "/api/v1/admin/queues", token=node.token)["data"]
        done = sum(q["counts"].get("completed", 0) for q in stats if q["queue"] == "default")
        if done >= total:
            break
        time.sleep(0.05)
    rate = total / (last - run_at)
    print(f"  throughput: {total} jobs due at once, all delivered {last - run_at:.2f} s after runAt: "
          f"{rate:,.0f} jobs/s; completed {done}/{total}")
    service.arrivals.clear()
    return rate


def pickup(node, service, count=300):
    delays = []
    for i in range(count):
        job = call(node.base, "POST", "/api/v1/jobs", {"type": "bench", "payload": {"pickup": i}},
                   token=node.token)["data"]
        deadline = time.time() + 10
        while job["id"] not in service.arrivals and time.time() < deadline:
            time.sleep(0.0005)
        delays.append((service.arrivals[job["id"]] - parse(job["runAt"])) * 1000)
        time.sleep(0.02)
    delays.sort()
    p50 = statistics.median(delays)
    p99 = delays[int(len(delays) * 0.99) - 1]
    print(f"  pickup on an idle queue ({count} jobs, 20 ms apart): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    service.arrivals.clear()
    return p50, p99


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "ferrobase"))
    parser.add_argument("--postgres", default="")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed (apt-get install wrk)")
    if args.binary == os.path.join(ROOT, "target", "release", "ferrobase"):
        subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "ferrobase"], cwd=ROOT, check=True)
    service = Service()
    if args.postgres:
        admin = args.postgres.rsplit("/", 1)[0] + "/postgres"
        name = args.postgres.rsplit("/", 1)[1]
        subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {name}"], check=True)
        subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True)
    store = "PostgreSQL" if args.postgres else "SQLite"
    node = Node(args.binary, service, args.postgres)
    try:
        print(f"{store}:")
        pickup(node, service)
        throughput(node, service, args.jobs)
    finally:
        node.stop()


if __name__ == "__main__":
    main()
