#!/usr/bin/env python3
"""Benchmark of ferrobase's list endpoint on a 100,000-row table.

Builds the release binary (unless --binary), creates a scratch project in /tmp with a
public `posts` resource, lets ferrobase create its database, seeds the rows straight
into SQLite, restarts the server with warn-level logs and drives two URLs with wrk:

  W-list-filter-sort  /api/v1/posts?filter=status = 'published'&sort=-created_at&limit=20
  W-list-plain        /api/v1/posts?limit=20

each for a 3 s warm-up and then --duration measured seconds, after one request has
checked its first page. A 400 "not supported" to filter/sort is reported and only the
plain list is measured (exit 0); any other failed check skips that URL, and it or a
wrk error (non-2xx, socket error) makes the exit status 2.
Prints req/s, p50/p99, non-2xx count and the server's peak RSS (VmHWM, reset after
each warm-up), and writes them to bench/results/list-latest.json.
"""
import argparse, json, os, random, shutil, signal, socket, sqlite3, subprocess, sys
import tempfile, time, urllib.error, urllib.request, uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "list-latest.json"
WARMUP_S, THREADS = 3, 2
SCHEMA = """\
[resources.posts]
timestamps = true
[resources.posts.fields]
title   = { type = "string", required = true, max_length = 200 }
slug    = { type = "string", required = true, unique = true }
content = { type = "text" }
status  = { type = "enum", values = ["draft", "published"], default = "draft" }
[resources.posts.indexes]
by_status = ["status", "-created_at"]
[resources.posts.rules]
list = "true"
view = "true"
"""
WORKLOADS = [
    ("W-list-filter-sort",
     "/api/v1/posts?filter=status%20%3D%20'published'&sort=-created_at&limit=20"),
    ("W-list-plain", "/api/v1/posts?limit=20"),
]
EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)


def uuid7(ms, rng):
    """A UUIDv7: 48-bit ms timestamp, version 7, 12 random bits, variant 10, 62 random bits."""
    n = (ms << 80) | (7 << 76) | (rng.getrandbits(12) << 64) | (2 << 62) | rng.getrandbits(62)
    return str(uuid.UUID(int=n))


def seed(db_path, rows):
    """Inserts `rows` posts in one transaction and returns their ids in creation order."""
    con = sqlite3.connect(db_path, isolation_level=None)
    cols = [r[1] for r in con.execute("PRAGMA table_info(posts)")]
    expected = {"id", "version", "created_at", "updated_at", "title", "slug", "content", "status"}
    if set(cols) != expected:
        sys.exit(f"unexpected columns in posts: {cols}")
    rng, ids, filler = random.Random(42), [], "lorem ipsum dolor sit amet " * 10
    def row(i):
        at = EPOCH + timedelta(seconds=i)
        ids.append(uuid7(int(at.timestamp() * 1000), rng))
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        values = {"id": ids[-1], "version": 1, "created_at": stamp, "updated_at": stamp,
                  "title": f"Seed post {i}", "slug": f"seed-post-{i}",
                  "content": f"Post {i}: {filler}"[:200],
                  "status": "published" if i % 2 == 0 else "draft"}
        return [values[c] for c in cols]
    con.execute("BEGIN")
    con.executemany(f"INSERT INTO posts ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    (row(i) for i in range(rows)))
    con.execute("COMMIT")
    con.execute("ANALYZE")
    con.close()
    return ids


def get(url):
    """(status, parsed JSON body or None) of one GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


class Server:
    def __init__(self, binary, project, env=None):
        with socket.socket() as s:  # a free loopback port
            s.bind(("127.0.0.1", 0))
            self.base = f"http://127.0.0.1:{s.getsockname()[1]}"
        self.log = open(project / "server.log", "ab")
        self.proc = subprocess.Popen(
            [binary, "serve", "--dir", str(project), "--addr", self.base[7:]],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.time() + 30
        while time.time() < deadline and self.proc.poll() is None:
            try:
                if get(self.base + "/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        tail = (project / "server.log").read_text(errors="replace")[-2000:]
        sys.exit(f"server did not become ready:\n{tail}")

    def peak_rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))

    def reset_peak(self):
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            pass  # older kernel: the peak then includes earlier workloads

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def ensure_wrk():
    if not shutil.which("wrk"):
        apt = ([] if os.geteuid() == 0 else ["sudo"]) + ["apt-get"]
        print("wrk not found; installing the Debian package wrk", flush=True)
        if subprocess.run(apt + ["install", "-y", "wrk"]).returncode:
            subprocess.run(apt + ["update"], check=True)  # stale package lists
            subprocess.run(apt + ["install", "-y", "wrk"], check=True)


def to_ms(text):
    for unit, factor in (("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 6e4)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    raise ValueError(text)


def wrk(url, seconds, connections):
    """Runs wrk and returns the figures parsed from its text report."""
    out = subprocess.run(["wrk", f"-t{THREADS}", f"-c{connections}", f"-d{seconds}s",
                          "--latency", url], capture_output=True, text=True, check=True).stdout
    res = {"requests": 0, "req_s": 0.0, "p50_ms": None, "p99_ms": None,
           "non_2xx": 0, "socket_errors": 0}
    for line in out.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            res["req_s"] = float(words[1])
        elif " requests in " in line:
            res["requests"] = int(words[0])
        elif len(words) == 2 and words[0] in ("50%", "99%"):
            res[f"p{words[0][:2]}_ms"] = round(to_ms(words[1]), 3)
        elif line.startswith("Non-2xx or 3xx responses:"):
            res["non_2xx"] = int(words[-1])
        elif line.strip().startswith("Socket errors:"):
            res["socket_errors"] = sum(int(w.strip(",")) for w in words[3::2])
    return res


def check(name, status, body, ids, rows):
    """None if the first page is right, else 'unsupported: ...' or 'check failed: ...'."""
    if name == "W-list-filter-sort" and status == 400 and "not supported" in json.dumps(body):
        return "unsupported: the server answers 400 to filter/sort: " + json.dumps(body)
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return f"check failed: HTTP {status}: {json.dumps(body)[:500]}"
    data = body["data"]
    if name == "W-list-plain":
        expected = ids[:20]
    else:
        if any(r.get("status") != "published" for r in data):
            return "check failed: a record that is not published is in the page"
        stamps = [r.get("created_at") for r in data]
        if any(not a or not b or a <= b for a, b in zip(stamps, stamps[1:])):
            return f"check failed: created_at is not strictly descending: {stamps}"
        expected = [ids[i] for i in range(rows - 1, -1, -1) if i % 2 == 0][:20]
    got = [r.get("id") for r in data]
    return None if got == expected else f"check failed: expected ids {expected}, got {got}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--duration", type=int, default=10, help="measured seconds per URL")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--binary", help="ferrobase binary to use (default: build the release one)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch project dir")
    args = ap.parse_args()
    if args.rows < 40:
        ap.error("--rows must be at least 40")  # 20 published rows for the first page
    binary = args.binary
    if not binary:
        subprocess.run(["cargo", "build", "--release"], cwd=REPO, check=True)
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        binary = str((REPO / target / "release" / "ferrobase").resolve())
    ensure_wrk()

    project = Path(tempfile.mkdtemp(prefix="ferrobase-bench-list-", dir="/tmp"))
    server, results, failed = None, {}, False
    try:
        (project / "schema.toml").write_text(SCHEMA)
        # Rate limits on, as by default, with a quota one wrk client never reaches.
        (project / "ferrobase.toml").write_text(
            '[rate_limit]\ndefault = "1000000000/1m"\n'
        )
        Server(binary, project).stop()  # creates data/ferrobase.db with the table and index
        t0 = time.time()
        ids = seed(project / "data" / "ferrobase.db", args.rows)
        print(f"seeded {args.rows} posts in {time.time() - t0:.1f} s", flush=True)

        server = Server(binary, project, {"FERROBASE_LOG__LEVEL": "warn"})
        for name, path in WORKLOADS:
            problem = check(name, *get(server.base + path), ids, args.rows)
            if problem:
                print(f"{name}: NOT MEASURED: {problem}", flush=True)
                failed |= not problem.startswith("unsupported")
                results[name] = {"path": path, "skipped": problem}
                continue
            print(f"{name}: {WARMUP_S} s warm-up + {args.duration} s ...", flush=True)
            wrk(server.base + path, WARMUP_S, args.connections)
            server.reset_peak()
            r = wrk(server.base + path, args.duration, args.connections)
            if server.proc.poll() is not None:
                sys.exit(f"the server died during {name}")
            results[name] = {"path": path, **r, "peak_rss_kb": server.peak_rss_kb()}
            if r["non_2xx"] or r["socket_errors"] or not r["requests"]:
                failed = True  # every request must succeed for the figures to mean anything
    finally:
        if server:
            server.stop()
        if args.keep:
            print(f"kept {project}")
        else:
            shutil.rmtree(project, ignore_errors=True)

    print(f"\n{'workload':<20}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}"
          f"{'sock err':>9}{'peak RSS MB':>13}")
    for name, r in results.items():
        if "skipped" in r:
            print(f"{name:<20} not measured: {r['skipped'].split(':')[0]}")
        else:
            print(f"{name:<20}{r['req_s']:>9.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
                  f"{r['non_2xx']:>9}{r['socket_errors']:>9}{r['peak_rss_kb'] / 1024:>13.1f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "binary": binary,
        "rows": args.rows, "duration_s": args.duration, "warmup_s": WARMUP_S,
        "connections": args.connections, "threads": THREADS, "workloads": results,
    }, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(REPO)}")
    sys.exit(2 if failed else 0)


if __name__ == "__main__":
    main()
