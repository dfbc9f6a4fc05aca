#!/usr/bin/env python3
"""The ferrobase target on PostgreSQL: the same hooks, schema, settings and workloads as
bench/ferrobase_target.py, with `DATABASE_URL` pointing at a fresh database
(`FERROBASE_BENCH_DATABASE_URL`, default postgres://postgres@127.0.0.1/ferrobase_bench;
it is dropped and created again by `setup`)."""

import os
import sys

os.environ.setdefault(
    "FERROBASE_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1/ferrobase_bench"
)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ferrobase_target as t  # noqa: E402

if __name__ == "__main__":
    t.bl.hook_main(t.setup, t.start, t.token, t.stop)
