"""Where the benchmarks run: the repository, the interpreter, the Stream app they sign for, and
the PostgreSQL and Redis they use (overridable by environment variables, bench/README.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
API_KEY = "bench-key"
# 32+ bytes: PyJWT warns about shorter HMAC keys (the fake Stream API signs with it too).
SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
PG_ADMIN_URL = os.environ.get(
    "CALLPUSH_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# The test suite uses Redis databases 9..14 (tests/conftest.py): the benchmarks take 15.
REDIS_URL = os.environ.get("CALLPUSH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
DB_NAME = os.environ.get("CALLPUSH_BENCH_DATABASE", "callpush_bench")
