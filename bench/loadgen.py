"""Open-loop HTTP load generator (asyncio + aiohttp), run in a process of its own.

    python -m bench.loadgen --url URL --requests in.jsonl --rate 500 --out out.jsonl

Each input line is {"body", "headers", "tag"?}.  Request i is due at start + i / rate whatever
happened to the earlier ones (open loop), so a slow server shows up as latency instead of a
lower offered rate: latency is measured from the due time ("coordinated omission" corrected)
and from the moment the request was handed to the client.  Like Stream, a 408/429/5xx or a
connection error is retried with the same X-Webhook-Id (``--retries``), with 0.5, 1, 2 s ... waits.

Why not wrk: it has no constant-rate mode (wrk2 is not packaged in Debian); wrk is used for the
closed-loop throughput runs.  Each output line: {"tag", "sched", "sent", "done", "status",
"attempts", "error"}, times on the system-wide monotonic clock (the fakes use the same one).
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--retries", type=int, default=0)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    with open(args.requests) as source:
        items = [json.loads(line) for line in source if line.strip()]
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
