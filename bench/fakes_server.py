"""The fake APNs, FCM and Stream API of tests/fakes, in a process of their own.

    python -m bench.fakes_server --dir DIR [--no-fcm] [--no-stream] [--apns-option k=v ...]

Prints one JSON line (ports and credential files), then serves until stdin is closed or it gets
SIGTERM.  A small control endpoint (``control_port``) answers:

    GET  /stats                      {"apns": n, "fcm": n, "stream": {endpoint: n}}
    GET  /records?apns=I&fcm=J       compact records from those offsets on:
                                     [t, token, type, call_cid, receiver_id] (t = time.monotonic())
    POST /members {"cid", "prefix", "count"}   the call's members: prefix0 .. prefix{count-1}

CLOCK_MONOTONIC is system-wide on Linux, so ``t`` compares with the load generator's clock.
The fakes' own ``received`` lists are moved into compact records every 0.2 s, so a 100,000-push
run does not hold 100,000 full request dicts.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.fakes.credentials import make_push_credentials
from tests.fakes.fake_apns import running_fake_apns
from tests.fakes.fake_fcm import running_fake_fcm
from tests.fakes.fake_stream_api import member, running_fake_stream_api


def _option(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


class Recorder:
    """Moves the fakes' full records into compact tuples."""

    def __init__(self, apns: Any, fcm: Any) -> None:
        self.apns, self.fcm = apns, fcm
        self.apns_records: list[list[Any]] = []
        self.fcm_records: list[list[Any]] = []
        self.lock = threading.Lock()

    def compact(self) -> None:
        with self.lock:
            if self.apns is not None:
                received = self.apns.server.received
                n = len(received)
                batch = received[:n]
                del received[:n]
                for r in batch:
                    stream = (r.get("payload") or {}).get("stream") or {}
                    self.apns_records.append(
                        [
                            r["t"],
                            r["token"],
                            stream.get("type"),
                            stream.get("call_cid"),
                            stream.get("receiver_id"),
                        ]
                    )
            if self.fcm is not None:
                received = self.fcm.received
                n = len(received)
                batch = received[:n]
                del received[:n]
                for r in batch:
                    data = (r.get("message") or {}).get("data") or {}
                    self.fcm_records.append(
                        [
                            r["t"],
                            r["token"],
                            data.get("type"),
                            data.get("call_cid"),
                            data.get("receiver_id"),
                        ]
                    )


def _control_handler(recorder: Recorder, stream: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, body: Any, status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/stats":
                recorder.compact()
                self._answer(
                    {
                        "apns": recorder.apns.count if recorder.apns else 0,
                        "fcm": len(recorder.fcm_records),
                        "apns_connections": recorder.apns.connections if recorder.apns else 0,
                        "stream": dict(stream.calls) if stream is not None else {},
                    }
                )
            elif url.path == "/records":
                recorder.compact()
                a, f = int(query.get("apns", 0)), int(query.get("fcm", 0))
                self._answer({"apns": recorder.apns_records[a:], "fcm": recorder.fcm_records[f:]})
            else:
                self._answer({"error": "not found"}, 404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/members" and stream is not None:
                prefix, count = body["prefix"], int(body["count"])
                stream.set_members(body["cid"], [member(f"{prefix}{i}") for i in range(count)])
                self._answer({"members": count})
            else:
                self._answer({"error": "not found"}, 404)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--no-fcm", action="store_true")
    parser.add_argument("--no-stream", action="store_true")
    parser.add_argument("--stream-key", default="bench-key")
    parser.add_argument("--stream-secret", default="bench-secret")
    parser.add_argument("--apns-option", action="append", default=[], type=_option)
    parser.add_argument("--fcm-option", action="append", default=[], type=_option)
    args = parser.parse_args()

    credentials = make_push_credentials(args.dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with ExitStack() as stack:
        apns = stack.enter_context(
            running_fake_apns(
                credentials.server_ssl_context(),
                credentials.apns_public_key,
                **dict(args.apns_option),
            )
        )
        fcm = (
            None if args.no_fcm else stack.enter_context(running_fake_fcm(**dict(args.fcm_option)))
        )
        stream = (
            None
            if args.no_stream
            else stack.enter_context(running_fake_stream_api(args.stream_key, args.stream_secret))
        )
        recorder = Recorder(apns, fcm)
        control = ThreadingHTTPServer(("127.0.0.1", 0), _control_handler(recorder, stream))
        control.daemon_threads = True
        threading.Thread(target=control.serve_forever, daemon=True).start()

        def _compact_forever() -> None:
            while not stop.wait(0.2):
                recorder.compact()

        threading.Thread(target=_compact_forever, daemon=True).start()
        account = None
        if fcm is not None:
            account = credentials.write_service_account(
                args.dir / "service-account.json", token_uri=fcm.token_uri
            )
        info = {
            "apns_port": apns.port,
            "fcm_port": fcm.port if fcm else None,
            "fcm_endpoint": fcm.endpoint if fcm else None,
            "stream_url": stream.url if stream else None,
            "control_port": control.server_address[1],
            "ca_file": str(credentials.ca_file),
            "key_file": str(credentials.apns_key_file),
            "service_account_file": str(account) if account else None,
        }
        print(json.dumps(info), flush=True)

        def _watch_stdin() -> None:
            sys.stdin.read()
            stop.set()

        threading.Thread(target=_watch_stdin, daemon=True).start()
        stop.wait()
        control.shutdown()


if __name__ == "__main__":
    main()
