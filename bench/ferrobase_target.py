#!/usr/bin/env python3
"""Target hook for the shared benchmark kit (`../shared/bench/`, "Adding a target"):
ferrobase with its production defaults on embedded SQLite, or on PostgreSQL with
`FERROBASE_BENCH_DATABASE_URL` set (see bench/ferrobase_pg_target.py).

setup  cargo build --release; write schema.toml (the kit's rules and indexes) and
       ferrobase.toml (rate limits on, high enough for one wrk client; 24 h tokens);
       start once to create the tables, register the two users through the API, stop;
       bulk-insert the posts straight into the store (UUIDv7 ids derived from each row's
       time and number); translate the kit's ids into WORK/dataset/.
start  ferrobase serve (production: JSON request logs, rate limiting, security headers),
       wait for /ready.
token  POST /api/v1/auth/login as the bench user.
stop   SIGTERM.
"""

import calendar
import json
import os
import sqlite3
import subprocess
import sys
import time

KIT = os.environ.get(
    "BENCH_KIT",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench"),
)
sys.path.insert(0, os.path.join(KIT, "lib"))
import benchlib as bl  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXE = os.path.abspath(
    os.environ.get("FERROBASE_BENCH_BINARY", os.path.join(ROOT, "target", "release", "ferrobase"))
)
PG_URL = os.environ.get("FERROBASE_BENCH_DATABASE_URL", "")

SCHEMA = """
[resources.users.fields]
name = { type = "string", max_length = 100 }

[resources.posts]
timestamps = true
[resources.posts.fields]
title   = { type = "string", required = true, max_length = 200 }
slug    = { type = "string", required = true, unique = true }
content = { type = "text" }
status  = { type = "enum", values = ["draft", "published"], default = "draft" }
author  = { type = "relation", resource = "users", required = true, on_delete = "cascade" }
[resources.posts.indexes]
by_status = ["status", "-created_at"]
[resources.posts.rules]
list   = "status = 'published' || author = @auth.id"
view   = "status = 'published' || author = @auth.id"
create = "@auth.id != null && @body.author = @auth.id"
"""

SETTINGS = """
[auth]
access_token_ttl = "24h"
[rate_limit]
# On, as in production, with quotas one wrk client never reaches.
default = "1000000000/1m"
auth = "1000000/1m"
"""

SECRET = "bench-secret-0123456789-abcdefghijklmnopqrstuvwxyz"

PATHS = {
    "health": "/health",
    "get_one": "/api/v1/posts/{id}",
    "create": "/api/v1/posts",
    "list": "/api/v1/posts?filter=status%20%3D%20%27published%27&sort=-created_at&limit=20",
}


def env():
    e = dict(os.environ, FERROBASE_ENV="production", FERROBASE_SECRET=SECRET)
    if PG_URL:
        e["DATABASE_URL"] = PG_URL
    return e


def uuid7(epoch_ms, n):
    """A UUIDv7 for a row: its time, then its number (unique, ordered like the rows)."""
    rand_a = (n >> 62) & 0xFFF
    rand_b = n & ((1 << 62) - 1)
    value = (epoch_ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def stamp(pb_text):
    """The kit's 'YYYY-MM-DD HH:MM:SS.mmmZ' as ferrobase's canonical datetime."""
    day, clock = pb_text.rstrip("Z").split(" ")
    whole, frac = clock.split(".")
    return f"{day}T{whole}.{frac:0<6}Z"


def epoch_ms(pb_text):
    t = time.strptime(pb_text.split(".")[0], "%Y-%m-%d %H:%M:%S")
    return calendar.timegm(t) * 1000


def serve(a, log_name="server.log"):
    argv = [EXE, "serve", "--dir", a.work, "--addr", f"127.0.0.1:{a.port}"]
    proc = bl.spawn_detached(argv, os.path.join(a.work, log_name), cwd=a.work, env=env())
    bl.wait_http_ok(f"http://127.0.0.1:{a.port}/ready", timeout=60, proc=proc)
    return proc


def rows(a, users):
    con = sqlite3.connect(os.path.join(a.dataset, "dataset.db"))
    out = []
    for n, (pid, title, slug, content, status, author, created, updated) in enumerate(
        con.execute("SELECT id, title, slug, content, status, author, created, updated FROM posts ORDER BY rowid")
    ):
        out.append((pid, uuid7(epoch_ms(created), n), stamp(created), stamp(updated),
                    title, slug, content, status, users[author]))
    con.close()
    return out


def seed_sqlite(a, posts):
    db = os.path.join(a.work, "data", "ferrobase.db")
    con = sqlite3.connect(db)
    con.executemany(
        "INSERT INTO posts (id, version, created_at, updated_at, title, slug, content, status, author) "
        "VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?)",
        [p[1:] for p in posts],
    )
    con.commit()
    con.execute("ANALYZE")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def seed_postgres(posts):
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    for p in posts:
        w.writerow(p[1:])
    copy = ("\\copy posts (id, created_at, updated_at, title, slug, content, status, author) "
            "FROM STDIN WITH (FORMAT csv)")
    subprocess.run(["psql", PG_URL, "-v", "ON_ERROR_STOP=1", "-q", "-c", copy],
                   input=buf.getvalue(), text=True, check=True)
    # VACUUM as well: the visibility map lets PostgreSQL answer from the index alone, as
    # the other PostgreSQL targets' set-up does.
    subprocess.run(["psql", PG_URL, "-q", "-c", "VACUUM (ANALYZE) posts, users"], check=True)


def setup(a):
    if "FERROBASE_BENCH_BINARY" not in os.environ:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True,
                       stdout=sys.stderr)
    with open(os.path.join(a.work, "schema.toml"), "w") as f:
        f.write(SCHEMA)
    with open(os.path.join(a.work, "ferrobase.toml"), "w") as f:
        f.write(SETTINGS)
    if PG_URL:
        # A fresh database each setup: drop what an earlier run left.
        base, name = PG_URL.rsplit("/", 1)
        admin = base + "/postgres"
        subprocess.run(["psql", admin, "-q", "-c", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], check=True)
        subprocess.run(["psql", admin, "-q", "-c", f'CREATE DATABASE "{name}"'], check=True)
    proc = serve(a, "setup.log")
    base = f"http://127.0.0.1:{a.port}"
    ids = {}
    for u in bl.load_users(a.dataset):
        status, body = bl.http("POST", base + "/api/v1/auth/register",
                               {"email": u["email"], "password": u["password"], "name": u["name"]})
        if status != 201:
            raise SystemExit(f"registering {u['email']}: {status} {body}")
        ids[u["id"]] = body["data"]["user"]["id"]
    bl.stop_pid(proc.pid, timeout=10)
    posts = rows(a, ids)
    if PG_URL:
        seed_postgres(posts)
    else:
        seed_sqlite(a, posts)
    # The kit's id files, in ferrobase's ids.
    mapping = {p[0]: p[1] for p in posts}
    out = os.path.join(a.work, "dataset")
    os.makedirs(out, exist_ok=True)
    for name in ("visible_ids.txt", "hidden_ids.txt"):
        with open(os.path.join(a.dataset, name)) as f:
            lines = [mapping[line.strip()] for line in f if line.strip()]
        with open(os.path.join(out, name), "w") as f:
            f.write("\n".join(lines) + "\n")
    with open(os.path.join(a.dataset, "expected_list.json")) as f:
        expected = [mapping[i] for i in json.load(f)]
    with open(os.path.join(out, "expected_list.json"), "w") as f:
        json.dump(expected, f)
    with open(os.path.join(a.work, "users.json"), "w") as f:
        json.dump(ids, f)
    bl.log(f"[ferrobase] seeded {len(posts)} posts ({'PostgreSQL' if PG_URL else 'SQLite'})")


def users(a):
    with open(os.path.join(a.work, "users.json")) as f:
        return json.load(f)


def start(a):
    proc = serve(a)
    version = subprocess.run([EXE, "--version"], capture_output=True, text=True).stdout.strip()
    kit_users = bl.load_users(a.dataset)
    return {
        "pid": proc.pid,
        "base_url": f"http://127.0.0.1:{a.port}",
        "version": f"{version} ({'PostgreSQL' if PG_URL else 'SQLite'}, production defaults)",
        "paths": PATHS,
        "dataset_dir": os.path.join(a.work, "dataset"),
        "record_key": "data",
        "list_key": "data",
        "other_user_id": users(a)[kit_users[1]["id"]],
    }


def token(a):
    u = bl.load_users(a.dataset)[0]
    status, body = bl.http("POST", f"http://127.0.0.1:{a.port}/api/v1/auth/login",
                           {"email": u["email"], "password": u["password"]})
    if status != 200:
        raise SystemExit(f"login: {status} {body}")
    return {"token": body["data"]["accessToken"], "user_id": body["data"]["user"]["id"]}


def stop(a):
    bl.stop_pid(a.pid, timeout=10)


if __name__ == "__main__":
    bl.hook_main(setup, start, token, stop)
