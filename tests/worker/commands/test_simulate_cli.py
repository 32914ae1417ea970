"""`callpush simulate …` against a real `callpush run` (embedded mode, console pushes): a
newcomer can ring, accept, reject, end, miss and notify, and see each in the event log."""

from __future__ import annotations

import json
import re

from tests.e2e.processes import free_port, run_cli, running, wait_until

VOIP_TOKEN = "ab" * 32


def test_simulate_each_event_of_a_call(tmp_path):
    port = free_port()
    env = {
        "CALLPUSH_DATABASE_URL": f"sqlite:///{tmp_path / 'callpush.db'}",
        "CALLPUSH_PUSH_PROVIDER": "console",
    }
    add = ["devices", "add", "--user", "bob", "--platform", "apns", "--voip"]
    run_cli([*add, "--token", VOIP_TOKEN], env, tmp_path)
    url = f"http://127.0.0.1:{port}/webhooks/stream"
    with running(["run", "--port", str(port)], env, tmp_path, "run", wait_port=port):
        rung = run_cli(["simulate", "ring", "--to", "bob", "--url", url], env, tmp_path).stdout
        assert rung.startswith("202 ")
        cid = re.search(r"^call_cid (\S+)$", rung, re.MULTILINE)
        assert cid is not None, rung
        call = cid.group(1)
        assert f"callpush simulate accept|reject --call {call} --user bob" in rung
        for args in (
            ["accept", "--call", call, "--user", "bob"],
            ["reject", "--call", call, "--user", "bob"],
            ["end", "--call", call],
            ["missed", "--call", call, "--to", "bob"],
            ["notification", "--to", "bob"],
        ):
            answer = run_cli(["simulate", *args, "--url", url], env, tmp_path).stdout
            # 202: queued; 200: settled at once (an accept "stops pending ring pushes").
            assert answer.split()[0] in ("200", "202"), (args, answer)
            assert f"call_cid {call}" in answer or args[0] == "notification"

        def listed() -> dict[str, str]:
            shown = run_cli(["events", "list", "--json"], env, tmp_path).stdout
            return {e["event_type"]: e["status"] for e in json.loads(shown)["events"]}

        wait_until(
            lambda: all(s in ("processed", "ignored", "failed") for s in listed().values()),
            30,
            message="every simulated event processed",
        )
        found = listed()
    assert set(found) == {
        "call.ring",
        "call.accepted",
        "call.rejected",
        "call.ended",
        "call.missed",
        "call.notification",
    }
    assert found["call.ring"] == "processed"
