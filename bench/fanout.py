"""Fan-out throughput: a call.notification to N members x 2 devices (an APNs alert token and an
FCM token each), members paged from the fake Stream API, through `callpush web` and
`callpush worker --queues bulk` (PostgreSQL, Redis).  Pushes/s = pushes / (last push received -
webhook POST).  Reference: aioapns (gather) and pyfcm (16 threads) alone, both at once in one
process, against the same fakes in the same run (bench.raw_clients ceiling).

Scaling: 10,000 devices (5,000 members) and 100,000 devices (50,000 members), with the peak RSS
of the bulk worker's processes sampled every 0.25 s.
"""

from __future__ import annotations

import time
from typing import Any

from bench.fakes_process import Fakes, running_fakes
from bench.measures import log, metric
from bench.process_stats import RssSampler
from bench.profiling import PySpy, describe
from bench.ring import event_status, fanout_devices, post, raw_reference
from bench.stack import Stack, bench_env, wait_worker_ready, workdir
from bench.stores import flush_redis, fresh_database, insert_devices, sql
from bench.webhooks import notification_event
from tests.e2e.processes import free_port, poll_until


def fanout_run(
    fakes: Fakes, db_url: str, port: int, members: int, roots: dict[str, int], timeout: float
) -> dict[str, Any]:
    event = notification_event("alice", [f"fan{i}" for i in range(100)])
    cid = event["call_cid"]
    fakes.set_members(cid, "fan", members)
    expected = 2 * members
    with RssSampler(roots) as rss:
        start = time.monotonic()
        event_id = post(port, event)["event_id"]
        poll_until(lambda: event_status(db_url, event_id) in ("processed", "failed"), timeout, 0.25)
        finished = time.monotonic()

        def counted() -> int:
            fakes.fetch()
            return sum(1 for r in fakes.apns_records + fakes.fcm_records if r[3] == cid)

        poll_until(lambda: counted() >= expected, 30, 0.5)
    times = [r[0] for r in fakes.apns_records + fakes.fcm_records if r[3] == cid]
    tokens = [r[1] for r in fakes.apns_records + fakes.fcm_records if r[3] == cid]
    last = max(times, default=finished)
    first = min(times, default=finished)
    status = event_status(db_url, event_id)
    summary = sql(db_url, "select status_reason from webhook_events where id=%s", [event_id])
    return {
        "members": members,
        "expected_pushes": expected,
        "received_pushes": len(times),
        "distinct_tokens": len(set(tokens)),
        "event_status": status,
        "event_summary": summary[0][0] if summary else None,
        "seconds": last - start,
        "first_push_after_s": first - start,
        "pushes_per_s": len(times) / (last - start) if times else 0.0,
        "peak_rss_max_process_mb": round(rss.peak("bulk", "max"), 1),
        "peak_rss_total_mb": round(rss.peak("bulk", "total"), 1),
    }


def run(quick: bool) -> dict[str, Any]:
    members = 1000 if quick else 10_000
    small, large = (500, 5_000) if quick else (5_000, 50_000)
    details: dict[str, Any] = {}
    with workdir("fanout") as work, running_fakes(work) as fakes:
        db_url = fresh_database()
        flush_redis()
        env = bench_env(fakes, db_url)
        with Stack(work, env) as stack:
            stack.cli("db", "upgrade")
            insert_devices(db_url, fanout_devices(max(members, large)))
            port = free_port()
            stack.web(port)
            worker = stack.worker("bulk")
            wait_worker_ready(work, "worker-bulk")
            roots = {"bulk": worker.pid}

            log("fanout: warm-up (200 members)")
            fanout_run(fakes, db_url, port, 200, roots, 120)
            log("fanout: reference ceiling (aioapns + pyfcm alone)")
            one = raw_reference(work, fakes, "ceiling", members)
            # The bulk worker runs one process per core: the same libraries in as many
            # processes at once (n/2 per platform each) are the other candidate ceiling.
            two = raw_reference(work, fakes, "ceiling", members // 2, processes=2)["processes"]
            two_rate = (
                2 * sum(p["n_per_platform"] for p in two) / max(p["both_seconds"] for p in two)
            )
            details["ceiling"] = one | {
                "one_process_per_s": one["both_per_s"],
                "two_processes_per_s": two_rate,
                "both_per_s": max(one["both_per_s"], two_rate),
            }
            log(f"fanout: {members} members x 2 devices")
            spy = None if quick else PySpy([worker.pid], 15, work).start()
            details["main"] = fanout_run(fakes, db_url, port, members, roots, 600)
            if spy:
                details["profile"] = spy.join()
            log(f"fanout: scaling, {2 * small} devices")
            details["small"] = fanout_run(fakes, db_url, port, small, roots, 600)
            log(f"fanout: scaling, {2 * large} devices")
            details["large"] = fanout_run(fakes, db_url, port, large, roots, 1800)
        flush_redis()

    main, ceiling = details["main"], details["ceiling"]
    small_run, large_run = details["small"], details["large"]
    ratio = main["pushes_per_s"] / ceiling["both_per_s"]
    scale = large_run["seconds"] / small_run["seconds"]
    lost = sum(r["expected_pushes"] - r["distinct_tokens"] for r in (main, small_run, large_run))
    dupes = sum(r["received_pushes"] - r["distinct_tokens"] for r in (main, small_run, large_run))
    metrics = [
        metric(
            f"throughput, {members} members x 2",
            main["pushes_per_s"],
            "pushes/s",
            reference=ceiling["both_per_s"],
            reference_name="aioapns gather + pyfcm threads alone, best of 1 or 2 processes",
            target="ratio >= 0.8",
            met=ratio >= 0.8,
            note=f"{main['received_pushes']} of {main['expected_pushes']} pushes in "
            f"{main['seconds']:.1f} s; ceiling alone: APNs {ceiling['apns_alone_per_s']:.0f}/s, "
            f"FCM {ceiling['fcm_alone_per_s']:.0f}/s; both in 1 process "
            f"{ceiling['one_process_per_s']:.0f}/s, in 2 processes "
            f"{ceiling['two_processes_per_s']:.0f}/s; stock aioapns in the reference needed "
            f"retries: {ceiling.get('apns_errors_retried')}",
        ),
        metric(
            f"peak worker RSS, {2 * large} devices",
            large_run["peak_rss_max_process_mb"],
            "MB",
            target="< 250 MB",
            met=large_run["peak_rss_max_process_mb"] < 250,
            note=f"largest single process; all bulk worker processes together peaked at "
            f"{large_run['peak_rss_total_mb']} MB",
        ),
        metric(
            f"time {2 * large} / {2 * small} devices",
            large_run["seconds"],
            "s",
            reference=small_run["seconds"],
            reference_name=f"{2 * small} devices",
            target="ratio <= 11",
            met=scale <= 11,
        ),
        metric(
            "pushes lost / duplicated (all runs)",
            lost,
            "pushes",
            reference=dupes,
            reference_name="duplicates",
            target="0 / 0",
            met=lost == 0 and dupes == 0,
        ),
    ]
    findings = []
    if ratio < 0.8:
        findings.append(
            f"fan-out throughput is {ratio:.2f} of the raw ceiling (target 0.8; "
            f"{main['pushes_per_s']:.0f} vs {ceiling['both_per_s']:.0f} pushes/s). "
            + (
                "Bulk worker: "
                + describe(
                    details["profile"],
                    ("deliver_chunk", "send_batch", "claim", "record_push", "plan_fanout", "json"),
                )
                if details.get("profile")
                else ""
            )
        )
    return {"metrics": metrics, "details": details, "findings": findings}
