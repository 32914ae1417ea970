"""Ring latency: from the webhook POST (the load generator's clock) to the fake APNs receiving
the VoIP push and the fake FCM the data message, over >= 1,000 rings at 50/s on the production
stack (`callpush web` + `callpush worker --queues ring` + `callpush worker --queues bulk`,
PostgreSQL, Redis); first idle, then while 10,000-member call.notification fan-outs run back to
back on the bulk worker.  Reference: aioapns / pyfcm alone, one push at a time, against the same
fakes in the same run (bench.raw_clients).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from bench.environment import PYTHON, ROOT
from bench.fakes_process import Fakes, running_fakes
from bench.measures import log, metric, ms, pct
from bench.profiling import PySpy, describe
from bench.stack import Stack, bench_env, wait_worker_ready, workdir
from bench.stores import flush_redis, fresh_database, insert_devices, sql
from bench.webhooks import notification_event, read_jsonl, signed, write_jsonl
from tests.e2e.processes import free_port, poll_until
from worker.stream import samples as sample_events

RING_USERS = 200
RATE = 50.0


def voip_token(i: int) -> str:
    return f"0{i:063x}"


def alert_token(i: int, prefix: str = "1") -> str:
    return f"{prefix}{i:063x}"


def ring_devices(count: int, prefix: str = "rc") -> list[tuple[str, str, str, bool]]:
    rows = []
    for i in range(count):
        rows.append((f"{prefix}{i}", "apns", voip_token(i), True))
        rows.append((f"{prefix}{i}", "fcm", f"fcm-{prefix}-{i}", False))
    return rows


def fanout_devices(count: int, prefix: str = "fan") -> list[tuple[str, str, str, bool]]:
    rows = []
    for i in range(count):
        rows.append((f"{prefix}{i}", "apns", alert_token(i, "2"), False))
        rows.append((f"{prefix}{i}", "fcm", f"fcm-{prefix}-{i}", False))
    return rows


def post(port: int, event: dict[str, Any]) -> dict[str, Any]:
    item = signed(event)
    response = requests.post(
        f"http://127.0.0.1:{port}/webhooks/stream",
        data=item["body"].encode(),
        headers=item["headers"],
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def start_loadgen(
    work: Path, name: str, port: int, items: list[dict[str, Any]], rate: float, retries: int = 0
) -> tuple[subprocess.Popen[bytes], Path]:
    source = write_jsonl(work / f"{name}.jsonl", items)
    out = work / f"{name}-out.jsonl"
    args = [PYTHON, "-m", "bench.loadgen", "--url", f"http://127.0.0.1:{port}"]
    args[-1] += "/webhooks/stream"
    args += ["--requests", str(source), "--rate", str(rate), "--out", str(out)]
    args += ["--retries", str(retries), "--connections", "32"]
    return subprocess.Popen(args, cwd=ROOT), out


def ring_items(
    count: int, prefix: str = "rc", users: int = RING_USERS, rate: float = RATE
) -> list[dict[str, Any]]:
    """Signed rings, each stamped with the time it is due (the bodies are signed up front)."""
    items = []
    start_ns = time.time_ns() + 500_000_000
    for i in range(count):
        event = sample_events.ring_event("alice", [f"{prefix}{i % users}"])
        event["created_at"] = start_ns + int(i / rate * 1e9)
        items.append(signed(event) | {"tag": event["call_cid"]})
    return items


def ring_latencies(fakes: Fakes, sent: list[dict[str, Any]]) -> dict[str, Any]:
    """Join the load generator's records with the fakes' by call_cid."""
    fakes.fetch()
    first_apns: dict[str, float] = {}
    first_fcm: dict[str, float] = {}
    for t, _token, kind, cid, _r in fakes.apns_records:
        if kind == "call.ring" and cid not in first_apns:
            first_apns[cid] = t
    for t, _token, kind, cid, _r in fakes.fcm_records:
        if kind == "call.ring" and cid not in first_fcm:
            first_fcm[cid] = t
    apns = [first_apns[r["tag"]] - r["sent"] for r in sent if r["tag"] in first_apns]
    fcm = [first_fcm[r["tag"]] - r["sent"] for r in sent if r["tag"] in first_fcm]
    http = [r["done"] - r["sent"] for r in sent]
    statuses: dict[str, int] = {}
    for r in sent:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    return {
        "rings": len(sent),
        "statuses": statuses,
        "apns_received": len(apns),
        "fcm_received": len(fcm),
        "apns_p50_ms": ms(pct(apns, 50)),
        "apns_p99_ms": ms(pct(apns, 99)),
        "apns_max_ms": ms(max(apns, default=None)),
        "fcm_p50_ms": ms(pct(fcm, 50)),
        "fcm_p99_ms": ms(pct(fcm, 99)),
        "fcm_max_ms": ms(max(fcm, default=None)),
        "http_p50_ms": ms(pct(http, 50)),
        "http_p99_ms": ms(pct(http, 99)),
    }


def wait_for_rings(fakes: Fakes, tags: set[str], timeout: float) -> None:
    def arrived() -> bool:
        fakes.fetch()
        apns = {r[3] for r in fakes.apns_records if r[2] == "call.ring"}
        fcm = {r[3] for r in fakes.fcm_records if r[2] == "call.ring"}
        return tags <= apns and tags <= fcm

    poll_until(arrived, timeout, 0.5)


def raw_reference(
    work: Path, fakes: Fakes, mode: str, n: int, processes: int = 1
) -> dict[str, Any]:
    """bench.raw_clients in ``processes`` processes at once (n each); their JSON answers."""
    info = work / "fakes.json"
    info.write_text(json.dumps(fakes.info))
    args = [PYTHON, "-m", "bench.raw_clients", mode, "--fakes", str(info), "--n", str(n)]
    running = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(processes)
    ]
    answers = []
    for process in running:
        out, err = process.communicate(timeout=900)
        if process.returncode != 0:
            raise RuntimeError(f"raw_clients {mode} failed: {err[-3000:]}")
        answers.append(json.loads(out.strip().splitlines()[-1]))
    return answers[0] if processes == 1 else {"processes": answers}


def event_status(db_url: str, event_id: int) -> str:
    rows = sql(db_url, "select status from webhook_events where id = %s", [event_id])
    return rows[0][0] if rows else ""


def run(quick: bool) -> dict[str, Any]:
    result = measure(quick)
    import os

    if os.environ.get("BENCH_RING_BULK_NICE"):
        nice = int(os.environ["BENCH_RING_BULK_NICE"])
        result["details"]["what_if_bulk_nice"] = measure(quick, bulk_nice=nice)["details"]
    return result


def measure(quick: bool, bulk_nice: int = 0, shared_fakes: bool = False) -> dict[str, Any]:
    rings = 100 if quick else 1000
    members = 1000 if quick else 10_000
    details: dict[str, Any] = {"rate_per_s": RATE, "rings_per_phase": rings, "members": members}
    details["bulk_worker_nice"] = bulk_nice
    details["shared_fakes"] = shared_fakes
    with (
        workdir("ring") as work,
        running_fakes(work) as fakes,
        running_fakes(work / "bulk-fakes") as bulk_fakes,
    ):
        # By default the bulk worker pushes to fakes in another process: one fake process
        # saturated by the fan-out (GIL-bound, ~1.4k APNs/s) would queue the VoIP pushes
        # behind thousands of alerts, which measures the fake, not callpush or Apple.
        if shared_fakes:
            bulk_fakes = fakes
        db_url = fresh_database()
        flush_redis()
        env = bench_env(fakes, db_url)
        with Stack(work, env) as stack:
            stack.cli("db", "upgrade")
            insert_devices(db_url, ring_devices(RING_USERS) + fanout_devices(members))
            port = free_port()
            stack.web(port)
            stack.worker("ring")
            bulk_env = bench_env(bulk_fakes, db_url)
            stack.worker("bulk", nice=bulk_nice, extra_env=bulk_env)
            wait_worker_ready(work, "worker-ring")
            wait_worker_ready(work, "worker-bulk")

            log("ring: warm-up")
            warm = ring_items(40)
            process, out = start_loadgen(work, "warm", port, warm, 20)
            process.wait(120)
            wait_for_rings(fakes, {w["tag"] for w in warm}, 30)

            log(f"ring: idle, {rings} rings at {RATE:.0f}/s")
            items = ring_items(rings)
            process, out = start_loadgen(work, "idle", port, items, RATE)
            process.wait(600)
            wait_for_rings(fakes, {w["tag"] for w in items}, 60)
            details["idle"] = ring_latencies(fakes, read_jsonl(out))

            log("ring: references (aioapns / pyfcm alone, one at a time)")
            details["raw_apns"] = raw_reference(work, fakes, "apns-seq", 200 if quick else 1000)
            details["raw_fcm"] = raw_reference(work, fakes, "fcm-seq", 100 if quick else 500)

            log(f"ring: {rings} rings at {RATE:.0f}/s during {members}-member fan-outs")
            windows: list[list[float]] = []
            fanout_events: list[int] = []

            def start_fanout() -> None:
                event = notification_event("alice", [f"fan{i}" for i in range(100)])
                bulk_fakes.set_members(event["call_cid"], "fan", members)
                windows.append([time.monotonic(), 0.0])
                fanout_events.append(post(port, event)["event_id"])

            start_fanout()
            time.sleep(0.5)
            items = ring_items(rings)
            process, out = start_loadgen(work, "busy", port, items, RATE)
            spy = None if quick else PySpy([stack.processes["worker-ring"].pid], 10, work)
            if spy:
                time.sleep(2)
                spy.start()
            while process.poll() is None:
                if event_status(db_url, fanout_events[-1]) in ("processed", "failed"):
                    windows[-1][1] = time.monotonic()
                    start_fanout()
                time.sleep(0.2)
            sent = read_jsonl(out)
            wait_for_rings(fakes, {w["tag"] for w in items}, 60)
            if spy:
                details["ring_worker_profile"] = spy.join()
            poll_until(
                lambda: event_status(db_url, fanout_events[-1]) in ("processed", "failed"),
                120,
                0.1,
            )
            windows[-1][1] = time.monotonic()
            during = [r for r in sent if any(start <= r["sent"] <= end for start, end in windows)]
            details["fanout"] = ring_latencies(fakes, during)
            details["fanout_all_rings"] = ring_latencies(fakes, sent)
            details["fanouts_run"] = len(windows)
            bulk_fakes.fetch()
            alerts = sum(1 for r in bulk_fakes.apns_records if r[2] == "call.notification")
            details["fanout_pushes_received"] = alerts + sum(
                1 for r in bulk_fakes.fcm_records if r[2] == "call.notification"
            )
        flush_redis()
    return _report(details)


def _report(details: dict[str, Any]) -> dict[str, Any]:
    idle, busy = details["idle"], details["fanout"]
    raw_apns, raw_fcm = details["raw_apns"], details["raw_fcm"]

    def row(name: str, value: Any, reference: float, target: str, limit: float | None) -> Any:
        met = None if limit is None else (value is not None and value <= limit)
        return metric(
            name,
            value,
            "ms",
            reference=reference,
            reference_name="raw client, same fake",
            target=target,
            met=met,
        )

    lost_idle = idle["rings"] - min(idle["apns_received"], idle["fcm_received"])
    lost_busy = busy["rings"] - min(busy["apns_received"], busy["fcm_received"])
    metrics = [
        row("idle APNs p50", idle["apns_p50_ms"], raw_apns["p50_ms"], "<= 10 ms", 10),
        row("idle APNs p99", idle["apns_p99_ms"], raw_apns["p99_ms"], "<= 25 ms", 25),
        row("idle FCM p50", idle["fcm_p50_ms"], raw_fcm["p50_ms"], "<= 10 ms", 10),
        row("idle FCM p99", idle["fcm_p99_ms"], raw_fcm["p99_ms"], "<= 25 ms", 25),
        row("fan-out APNs p50", busy["apns_p50_ms"], raw_apns["p50_ms"], "", None),
        row("fan-out APNs p99", busy["apns_p99_ms"], raw_apns["p99_ms"], "<= 50 ms", 50),
        row("fan-out FCM p50", busy["fcm_p50_ms"], raw_fcm["p50_ms"], "", None),
        row("fan-out FCM p99", busy["fcm_p99_ms"], raw_fcm["p99_ms"], "<= 50 ms", 50),
        metric(
            "rings measured (idle / during fan-out)",
            busy["rings"],
            "rings",
            reference=idle["rings"],
            target="each >= 1000 (full run)",
            met=min(busy["rings"], idle["rings"]) >= 1000,
            note=f"rings without a push: idle {lost_idle}, during fan-out {lost_busy}; "
            f"{details['fanouts_run']} fan-outs ran back to back",
        ),
    ]
    findings = []
    missed = [m for m in metrics if m["met"] is False and m["unit"] == "ms"]
    if missed:
        text = "; ".join(f"{m['metric']} {m['value']} ms vs {m['target']}" for m in missed)
        profile = details.get("ring_worker_profile")
        findings.append(
            f"ring latency targets missed: {text}."
            + (
                " Ring worker during the fan-out: "
                + describe(profile, ("deliver_ring", "send", "claim", "record_push", "commit"))
                if profile
                else ""
            )
        )
    return {"metrics": metrics, "details": details, "findings": findings}
