#!/usr/bin/env python3
"""Costs of identity: login latency (Argon2id, OWASP parameters) and what access rules
plus token verification add to a get-one.

Runs the release binary on a scratch project whose `posts` resource has the blog's view
rule ("published or mine") and whose `pages` resource is public, then measures with wrk:

  G-public   GET /api/v1/pages/{id}, anonymous, view rule "true"
  G-rule     GET /api/v1/posts/{id}, Bearer token, view rule with @auth

and times sequential logins. Usage: python3 bench/auth.py [--duration 10] [--binary PATH]
"""

import argparse, contextlib, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = """
[resources.users.fields]
name = { type = "string" }
[resources.posts]
timestamps = true
[resources.posts.fields]
title  = { type = "string", required = true }
status = { type = "enum", values = ["draft", "published"], default = "draft" }
author = { type = "relation", resource = "users", required = true, default = "@auth.id" }
[resources.posts.rules]
view   = "status = 'published' || author = @auth.id"
create = "@auth.id != null"
[resources.pages.fields]
title = { type = "string", required = true }
[resources.pages.rules]
view = "true"
create = "true"
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None, token=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"{}")


def wrk(url, duration, connections, header=None):
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url]
    if header:
        cmd[1:1] = ["-H", header]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def ms(label):
        m = re.search(rf"\s{label}\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, ms("50%"), ms("99%"), int(non2xx.group(1)) if non2xx else 0


# Rate limits stay on (as by default) with quotas one wrk client never reaches.
HIGH_LIMITS = "[rate_limit]\ndefault = \"1000000000/1m\"\nauth = \"1000000/1m\"\n"


@contextlib.contextmanager
def scratch_server(binary, settings=""):
    """The scratch project served by `binary` with `settings` as ferrobase.toml: yields
    (base URL, access token, a draft post of the caller, a public page)."""
    work = tempfile.mkdtemp(prefix="ferrobase-bench-auth-")
    with open(os.path.join(work, "schema.toml"), "w") as f:
        f.write(SCHEMA)
    with open(os.path.join(work, "ferrobase.toml"), "w") as f:
        f.write(settings)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, FERROBASE_LOG__LEVEL="warn")
    server = subprocess.Popen([binary, "serve", "--dir", work, "--addr", f"127.0.0.1:{port}"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/ready")
                break
            except OSError:
                time.sleep(0.05)
        user = call(base, "POST", "/api/v1/auth/register",
                    {"email": "bench@bench.local", "password": "benchpass123"})["data"]
        token = user["accessToken"]
        post = call(base, "POST", "/api/v1/posts", {"title": "draft of mine"}, token)["data"]["id"]
        page = call(base, "POST", "/api/v1/pages", {"title": "public"})["data"]["id"]
        yield base, token, post, page
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--binary")
    args = ap.parse_args()
    binary = args.binary or os.path.join(ROOT, "target/release/ferrobase")
    if not args.binary:
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    with scratch_server(binary, HIGH_LIMITS) as (base, token, post, page):
        logins = []
        for _ in range(20):
            t = time.perf_counter()
            call(base, "POST", "/api/v1/auth/login", {"email": "bench@bench.local", "password": "benchpass123"})
            logins.append((time.perf_counter() - t) * 1000)
        logins.sort()
        print(f"login: median {logins[10]:.1f} ms, min {logins[0]:.1f} ms, max {logins[-1]:.1f} ms (20 sequential)")
        rows = [("G-public", wrk(f"{base}/api/v1/pages/{page}", args.duration, args.connections)),
                ("G-rule", wrk(f"{base}/api/v1/posts/{post}", args.duration, args.connections,
                               f"Authorization: Bearer {token}"))]
        print(f"{'workload':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        for name, (rps, p50, p99, bad) in rows:
            print(f"{name:10} {rps:9.0f} {p50:8.2f} {p99:8.2f} {bad:8d}")
        base_rps = rows[0][1][0]
        print(f"rules + token cost: {100 * (1 - rows[1][1][0] / base_rps):.1f}% of get-one throughput")


if __name__ == "__main__":
    sys.exit(main())
