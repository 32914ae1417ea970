#!/usr/bin/env python3
"""Container health checks used by docker/compose.yaml (installed in the image as
``callpush-healthcheck``).

    callpush-healthcheck web [PORT]        GET /healthz on this container (default port 8080)
    callpush-healthcheck worker QUEUES     this container's Celery worker answers a ping
    callpush-healthcheck beat              the broker beat publishes to is reachable

Exit 0 = healthy.  Each check answers within a few seconds so Docker's timeout never fires first.
"""

from __future__ import annotations

import socket
import sys
import urllib.request


def web(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
        return bool(response.status == 200)


def worker(queues: str) -> bool:
    from worker.foundation.settings import load_settings
    from worker.runtime.celery_app import create_celery

    # `callpush worker` names its node "<queues with - for ,>@<hostname>".
    node = f"{queues.replace(',', '-')}@{socket.gethostname()}"
    app = create_celery(load_settings())
    try:
        return bool(app.control.ping(destination=[node], timeout=5))
    finally:
        app.close()


def beat() -> bool:
    from kombu import Connection

    from worker.foundation.settings import load_settings

    settings = load_settings()
    if not settings.broker_url:
        return False
    with Connection(settings.broker_url, connect_timeout=3) as connection:
        connection.ensure_connection(max_retries=1, timeout=3)
    return True


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["web"]:
            healthy = web(int(argv[1]) if len(argv) > 1 else 8080)
        elif argv[:1] == ["worker"] and len(argv) == 2:
            healthy = worker(argv[1])
        elif argv[:1] == ["beat"]:
            healthy = beat()
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except Exception as error:
        print(f"unhealthy: {error.__class__.__name__}: {error}", file=sys.stderr)
        return 1
    print("healthy" if healthy else "unhealthy")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
