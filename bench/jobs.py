#!/usr/bin/env python3
"""The job queue: throughput and pickup delay, on SQLite and on PostgreSQL.

Runs the release binary on a scratch project with one HTTP job type whose target is a
minimal local service (asyncio, keep-alive, answers 200 `{}` and notes when each job
arrived), then measures:

  throughput  N jobs enqueued (with wrk and a Lua script) through a node that runs no
              worker (`[jobs] worker = false`); that node stops and a `ferrobase worker`
              starts on the same database: jobs delivered per second from the first
              delivery to the last (all N are checked `completed` through the admin API
              of a third node afterwards).
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
    """A node of the scratch project: `serve` (API, with or without a worker) or
    `worker` (jobs only)."""

    def __init__(self, binary, service, database_url, work=None, worker=True, command="serve"):
        fresh = work is None
        self.work = work or tempfile.mkdtemp(prefix="ferrobase-bench-jobs-")
        with open(os.path.join(self.work, "schema.toml"), "w") as f:
            f.write(f'[jobs.bench]\nurl = "http://127.0.0.1:{service.port}/job"\ntimeout = "10s"\n')
        with open(os.path.join(self.work, "ferrobase.toml"), "w") as f:
            f.write(HIGH_LIMITS + f'[jobs]\nworker = {"true" if worker else "false"}\nqueues = ["default=64"]\n'
                    '[webhooks]\nallow_private_addresses = true\n[log]\nlevel = "warn"\n')
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, FERROBASE_SECRET="bench-secret-" + "x" * 40, FERROBASE_ENV="production",
                   FERROBASE_LOG__FORMAT="json")
        env.pop("DATABASE_URL", None)
        if database_url:
            env["DATABASE_URL"] = database_url
        if fresh:
            subprocess.run([binary, "users", "create", "--dir", self.work, "--email", "bench@example.com",
                            "--role", "admin"], input=b"bench-password-1\n", env=env, check=True,
                           capture_output=True)
        self.log = open(os.path.join(self.work, f"{command}-{self.port}.log"), "w")
        args = [binary, command, "--dir", self.work]
        if command == "serve":
            args += ["--addr", f"127.0.0.1:{self.port}"]
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.token = None
        if command == "serve":
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


LUA = """
local n = 0
request = function()
  n = n + 1
  local body = '{"type":"bench","payload":{"n":' .. n .. ',"t":' .. math.random(1, 1000000000) .. '}}'
  return wrk.format("POST", "/api/v1/jobs", {["content-type"]="application/json", ["authorization"]="Bearer %s"}, body)
end
"""


def counts(node):
    stats = call(node.base, "GET", "/api/v1/admin/queues", token=node.token)["data"]
    return next((q["counts"] for q in stats if q["queue"] == "default"), {})


def throughput(binary, service, database_url, work, jobs):
    api = Node(binary, service, database_url, work=work, worker=False)
    script = os.path.join(work, "enqueue.lua")
    with open(script, "w") as f:
        f.write(LUA % api.token)
    waiting = 0
    started = time.time()
    while waiting < jobs:
        subprocess.run(["wrk", "-t2", "-c16", "-d1s", "-s", script, api.base + "/api/v1/jobs"],
                       capture_output=True, text=True, check=True)
        waiting = counts(api).get("available", 0)
    enqueue_rate = waiting / (time.time() - started)
    api.stop()
    service.arrivals.clear()
    spawned = time.time()
    worker = Node(binary, service, database_url, work=work, command="worker")
    deadline = time.time() + 600
    while len(service.arrivals) < waiting and time.time() < deadline:
        time.sleep(0.02)
    times = sorted(service.arrivals.values())
    worker.stop()
    check = Node(binary, service, database_url, work=work, worker=False)
    done = counts(check)
    check.stop()
    rate = len(times) / (times[-1] - times[0])
    print(f"  throughput: {waiting} jobs waiting (enqueued at {enqueue_rate:,.0f}/s through the API); "
          f"a worker delivered them in {times[-1] - times[0]:.2f} s ({times[-1] - spawned:.2f} s "
          f"after it was started): {rate:,.0f} jobs/s; completed {done.get('completed', 0)}, "
          f"left {sum(v for k, v in done.items() if k != 'completed')}")
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
    print(f"{store}:")
    try:
        pickup(node, service)
    finally:
        node.stop()
    throughput(args.binary, service, args.postgres, node.work, args.jobs)
    shutil.rmtree(node.work, ignore_errors=True)


if __name__ == "__main__":
    main()
