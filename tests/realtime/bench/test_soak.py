"""`realtime bench soak --arm http/both` against a real server: every kind of HTTP request, slow bodies and
disconnects run, and nothing is left held once the clients leave."""

from __future__ import annotations

import argparse

from realtime.bench import soak
from tests.support.server_harness import ServerHandle


def _args(server: ServerHandle, arm: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    soak.add_arguments(parser)
    return parser.parse_args(
        [
            "--url",
            server.ws_url() + "?model=x",
            "--arm",
            arm,
            "--clients",
            "1",
            "--responses",
            "3",
            "--http-clients",
            "2",
            "--http-requests",
            "6",
            "--disconnect-every",
            "4",
            "--slow-body-every",
            "2",
            "--warmup",
            "3",
        ]
    )


async def test_the_http_arm_runs_every_kind_and_leaves_nothing_held(server: ServerHandle) -> None:
    report = await soak._soak(_args(server, "both"))
    http = report["http"]
    kinds = {key.split(":")[0] for key in http["requests_by_kind_and_status"]}
    assert kinds == set(soak.soak_http.KINDS), http
    assert http["client_failures"] == [] and http["abandoned"] >= 1 and http["slow_bodies"] >= 1
    assert report["client_failures"] == [] and report["unexpected_closes"] == 0
    held = report["held_after_clients_left"]
    assert held["sessions"] == held["decoder_streams"] == held["transcriptions"] == 0, held
    assert held["http_requests"] == held["body_memory_bytes"] == 0, held
    assert report["server"]["end"]["rss_mb"] > 0
