"""Open-loop HTTP load generator (asyncio + aiohttp), run in a process of its own.

    python -m bench.loadgen --url URL --requests in.jsonl --rate 500 --out out.jsonl

Each input line is {"body", "headers", "tag"?}.  Request i is due at start + i / rate whatever
happened to the earlier ones (open loop), so a slow server shows up as latency instead of a
lower offered rate: latency is measured from the due time ("coordinated omission" corrected)
and from the moment the request was handed to the client.  Like Stream, a 408/429/5xx or a
connection error is retried with the same X-Webhook-Id (``--retries``), with 0.5, 1, 2 s ... waits.

Why not wrk: it has no constant-rate mode (wrk2 is not packaged in Debian); wrk is used for the
closed-loop throughput runs when it is installed, and ``--closed-loop-seconds`` stands in for it
when it is not (a Python client costs the 2-core box more CPU than wrk, so its absolute rates are
lower; a ratio to the bare endpoint under the same tool stays comparable).

Each output line of the open loop: {"tag", "sched", "sent", "done", "status", "attempts",
"error"}, times on the system-wide monotonic clock (the fakes use the same one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp

RETRY_STATUSES = {408, 429, 500, 502, 503, 504}


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    item: dict[str, Any],
    sched: float,
    retries: int,
    timeout: float,
) -> dict[str, Any]:
    headers = dict(item["headers"])
    body = item["body"].encode() if isinstance(item["body"], str) else item["body"]
    sent = time.monotonic()
    status, error, attempts = 0, None, 0
    for attempt in range(retries + 1):
        attempts = attempt + 1
        headers["X-Webhook-Attempt"] = str(attempts)
        try:
            async with session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                await response.read()
                status, error = response.status, None
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, error = 0, type(exc).__name__
        if status and status not in RETRY_STATUSES:
            break
        if attempt < retries:
            await asyncio.sleep(min(0.5 * 2**attempt, 4))
    return {
        "tag": item.get("tag"),
        "sched": sched,
        "sent": sent,
        "done": time.monotonic(),
        "status": status,
        "attempts": attempts,
        "error": error,
    }


async def run(
    url: str,
    items: list[dict[str, Any]],
    rate: float,
    *,
    retries: int = 0,
    connections: int = 128,
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Open a few connections first, so the first due requests do not pay the handshake.
        health = url.split("/webhooks")[0] + "/healthz"
        await asyncio.gather(
            *(session.get(health) for _ in range(min(8, connections))), return_exceptions=True
        )
        start = time.monotonic() + 0.1
        tasks = []
        for i, item in enumerate(items):
            sched = start + i / rate
            delay = sched - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(session, url, item, sched, retries, timeout)))
        return list(await asyncio.gather(*tasks))


async def closed_loop(
    url: str, items: list[dict[str, Any]], seconds: float, connections: int, timeout: float = 10.0
) -> dict[str, Any]:
    """wrk's measure without wrk: ``connections`` clients, each sending the next request as soon
    as its last one was answered, for ``seconds``; the items are taken in turn (and reused,
    as wrk reuses its file, when there are fewer than requests sent).  The result has wrk's
    keys (bench/wrk_signed.lua's WRKJSON), so either tool's numbers read the same."""
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    latencies: list[float] = []
    counts = {"non2xx": 0, "connect": 0, "read": 0, "timeout": 0}
    next_item = 0
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.monotonic() + seconds

        async def client() -> None:
            nonlocal next_item
            while time.monotonic() < deadline:
                item = items[next_item % len(items)]
                next_item += 1
                started = time.monotonic()
                try:
                    async with session.post(
                        url,
                        data=item["body"].encode(),
                        headers=item["headers"],
                        timeout=aiohttp.ClientTimeout(total=timeout),
                    ) as response:
                        await response.read()
                        if not 200 <= response.status < 300:
                            counts["non2xx"] += 1
                except aiohttp.ClientConnectionError:
                    counts["connect"] += 1
                    continue
                except TimeoutError:
                    counts["timeout"] += 1
                    continue
                except aiohttp.ClientError:
                    counts["read"] += 1
                    continue
                latencies.append(time.monotonic() - started)

        began = time.monotonic()
        await asyncio.gather(*(client() for _ in range(connections)))
        elapsed = time.monotonic() - began
    latencies.sort()

    def quantile_us(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6 if latencies else 0

    return {
        "requests": len(latencies) + counts["connect"] + counts["read"] + counts["timeout"],
        "duration_us": elapsed * 1e6,
        **counts,
        "p50_us": quantile_us(0.50),
        "p99_us": quantile_us(0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", required=True)
    parser.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument("--out", help="open loop: one JSON line per request")
    parser.add_argument(
        "--closed-loop-seconds",
        type=float,
        help="closed loop instead (wrk's measure): print one JSON summary after this long",
    )
    parser.add_argument("--retries", type=int, default=0)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    with open(args.requests) as source:
        items = [json.loads(line) for line in source if line.strip()]
    if args.closed_loop_seconds:
        summary = asyncio.run(
            closed_loop(args.url, items, args.closed_loop_seconds, args.connections, args.timeout)
        )
        print("WRKJSON " + json.dumps(summary))
        return
    if args.rate is None or args.out is None:
        parser.error("--rate and --out are needed for the open loop")
    results = asyncio.run(
        run(
            args.url,
            items,
            args.rate,
            retries=args.retries,
            connections=args.connections,
            timeout=args.timeout,
        )
    )
    with open(args.out, "w") as out:
        for record in results:
            out.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
