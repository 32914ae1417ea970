"""References measured in the same run: the client libraries alone against the same fakes.

    python -m bench.raw_clients apns-seq  --fakes INFO.json --n 500
    python -m bench.raw_clients fcm-seq   --fakes INFO.json --n 300
    python -m bench.raw_clients ceiling   --fakes INFO.json --n 10000

``apns-seq``: aioapns 4.0 alone, one VoIP push at a time on a warm connection (latency).
``fcm-seq``: pyfcm 2.1.1 alone, one ``notify`` at a time (latency).
``ceiling``: the most the libraries push per second: aioapns ``gather`` of n alerts (1000 in
flight, one connection's stream slots) and pyfcm ``notify`` of n data messages on 16 threads,
first each alone, then both at once in one process (as a worker sends a chunk).  Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aioapns import APNs, NotificationRequest, PushType
from aioapns.connection import APNsDevelopmentClientProtocol
from pyfcm import FCMNotification
from requests.adapters import HTTPAdapter

BUNDLE = "com.example.callpush"


def _stream(i: int, kind: str) -> dict[str, str]:
    return {
        "sender": "stream.video",
        "type": kind,
        "version": "v2",
        "call_cid": f"default:raw-{i}",
        "call_display_name": "",
        "created_by_id": "alice",
        "created_by_display_name": "Alice",
        "receiver_id": f"user-{i}",
    }


def apns_client(info: dict[str, Any]) -> APNs:
    context = ssl.create_default_context(cafile=info["ca_file"])
    context.set_alpn_protocols(["h2"])
    client = APNs(
        key=Path(info["key_file"]).read_text(),
        key_id="ABC123DEFG",
        team_id="TEAM123456",
        topic=BUNDLE,
        use_sandbox=True,
        ssl_context=context,
        max_connections=10,
    )
    client.pool.protocol_class = type(
        "BenchProtocol",
        (APNsDevelopmentClientProtocol,),
        {"APNS_SERVER": "localhost", "APNS_PORT": info["apns_port"]},
    )
    return client


def voip_request(i: int) -> NotificationRequest:
    return NotificationRequest(
        device_token=f"{i:064x}",
        message={"aps": {}, "stream": _stream(i, "call.ring") | {"video": "true"}},
        notification_id=str(uuid.uuid4()),
        time_to_live=30,
        priority=10,
        push_type=PushType.VOIP,
        apns_topic=f"{BUNDLE}.voip",
    )


def alert_request(i: int) -> NotificationRequest:
    return NotificationRequest(
        device_token=f"{i:064x}",
        message={
            "aps": {"alert": {"title": "Alice", "body": "is calling"}, "sound": "default"},
            "stream": _stream(i, "call.notification"),
        },
        notification_id=str(uuid.uuid4()),
        time_to_live=600,
        priority=10,
        push_type=PushType.ALERT,
        apns_topic=BUNDLE,
    )


class _LockedTokenFCM(FCMNotification):
    """Stock pyfcm, except that threads do not refresh the shared credentials at the same time:
    stock 2.1.1 races there (a thread reads ``credentials.token`` while another refreshes it and
    gets None -> TypeError), which worker/push/fcm.py fixes the same way."""

    _token_lock = threading.Lock()

    def _get_access_token(self) -> str:
        with self._token_lock:
            return str(super()._get_access_token())


def fcm_client(info: dict[str, Any]) -> FCMNotification:
    fcm = _LockedTokenFCM(
        service_account_file=info["service_account_file"],
        adapter=HTTPAdapter(max_retries=0, pool_connections=1, pool_maxsize=16),
    )
    fcm.FCM_END_POINT_BASE = info["fcm_endpoint"].rstrip("/")
    return fcm


def fcm_send(fcm: FCMNotification, i: int, kind: str = "call.notification") -> None:
    fcm.notify(
        fcm_token=f"fcm-raw-{i}",
        data_payload=_stream(i, kind) | {"title": "Alice", "body": "is calling"},
        android_config={"priority": "high", "ttl": "600s"},
        timeout=10,
    )


def _pcts(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(-(-q * len(ordered) // 100)) - 1))]

    return {"p50_ms": at(50) * 1000, "p99_ms": at(99) * 1000, "n": len(ordered)}


async def apns_seq(info: dict[str, Any], n: int) -> dict[str, Any]:
    client = apns_client(info)
    for i in range(20):
        await client.send_notification(voip_request(i))
    latencies = []
    for i in range(n):
        start = time.monotonic()
        result = await client.send_notification(voip_request(i))
        latencies.append(time.monotonic() - start)
        assert result.is_successful, result.status
    return _pcts(latencies)


def fcm_seq(info: dict[str, Any], n: int) -> dict[str, Any]:
    fcm = fcm_client(info)
    for i in range(10):
        fcm_send(fcm, i, "call.ring")
    latencies = []
    for i in range(n):
        start = time.monotonic()
        fcm_send(fcm, i, "call.ring")
        latencies.append(time.monotonic() - start)
    return _pcts(latencies)


APNS_ERRORS: list[str] = []


async def _apns_gather(client: APNs, n: int) -> float:
    """n alerts, 1000 in flight.  Stock aioapns sometimes breaks a connection under this load
    (push-libraries.md P1/P4: InvalidStateError, ProtocolError after the connection closed):
    such a send is retried (up to 3 times, 5 s timeout each) and the error recorded."""
    limit = asyncio.Semaphore(1000)

    async def one(i: int) -> None:
        async with limit:
            for _attempt in range(3):
                try:
                    result = await asyncio.wait_for(client.send_notification(alert_request(i)), 5)
                except Exception as error:
                    APNS_ERRORS.append(type(error).__name__)
                    continue
                if result.is_successful:
                    return
                APNS_ERRORS.append(f"status {result.status}")

    start = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.monotonic() - start


def _fcm_threads(fcm: FCMNotification, n: int, pool: ThreadPoolExecutor) -> float:
    start = time.monotonic()
    list(pool.map(lambda i: fcm_send(fcm, i), range(n)))
    return time.monotonic() - start


async def ceiling(info: dict[str, Any], n: int) -> dict[str, Any]:
    client = apns_client(info)
    fcm = fcm_client(info)
    pool = ThreadPoolExecutor(16)
    await _apns_gather(client, 200)  # warm: connections, JWT, TLS
    _fcm_threads(fcm, 100, pool)
    apns_alone = await _apns_gather(client, n)
    fcm_alone = _fcm_threads(fcm, n, pool)
    # Both at once, as a worker sends one chunk: FCM on the pool, APNs on this loop.
    fcm_elapsed: list[float] = []
    thread = threading.Thread(target=lambda: fcm_elapsed.append(_fcm_threads(fcm, n, pool)))
    start = time.monotonic()
    thread.start()
    apns_both = await _apns_gather(client, n)
    await asyncio.get_running_loop().run_in_executor(None, thread.join)
    both = time.monotonic() - start
    pool.shutdown()
    return {
        "n_per_platform": n,
        "apns_alone_per_s": n / apns_alone,
        "fcm_alone_per_s": n / fcm_alone,
        "both_per_s": 2 * n / both,
        "both_seconds": both,
        "apns_in_both_seconds": apns_both,
        "fcm_in_both_seconds": fcm_elapsed[0],
        "apns_errors_retried": dict(Counter(APNS_ERRORS)),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["apns-seq", "fcm-seq", "ceiling"])
    parser.add_argument("--fakes", required=True)
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    info = json.loads(Path(args.fakes).read_text())
    if args.mode == "apns-seq":
        result = asyncio.run(apns_seq(info, args.n))
    elif args.mode == "fcm-seq":
        result = fcm_seq(info, args.n)
    else:
        result = asyncio.run(ceiling(info, args.n))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
