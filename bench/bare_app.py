"""The reference for the ingest benchmark: a bare Flask endpoint under gunicorn with exactly the
options `callpush web` uses (worker/commands/serve.py), so the difference is callpush's work:
signature check, inbox write, enqueue.

    python -m bench.bare_app --bind 127.0.0.1:PORT --workers 2 --threads 8
"""

from __future__ import annotations

import argparse
from typing import Any

from flask import Flask, jsonify, request


def create_bare_app() -> Flask:
    app = Flask("bare")

    @app.post("/webhooks/stream")
    def receive() -> Any:
        request.get_data(cache=False)
        return jsonify(status="accepted", event_id=0), 202

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    return app


def main() -> None:
    from gunicorn.app.base import BaseApplication

    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    class Server(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": args.bind,
                "workers": args.workers,
                "threads": args.threads,
                "worker_class": "gthread",
                "timeout": 30,
                "graceful_timeout": 20,
                "accesslog": None,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return create_bare_app()

    Server().run()


if __name__ == "__main__":
    main()
