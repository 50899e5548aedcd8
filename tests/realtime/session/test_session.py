"""`Session` and `serve_connection` in process, over the in-memory transport: the ordering rules of the core.

No socket anywhere: the same code that serves WebSockets runs over `FakeTransport`, which is the proof that a
transport is a plug-in (realtime/session/transport.py). Replies are scripted (tests/support/session_harness.py)
so each test decides when audio and text appear.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

from realtime.backends.base import GenerationInput, TokenChunk
from realtime.backends.synthetic import SyntheticBackend
from realtime.errors import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_POLICY_VIOLATION
from realtime.session.connection import Drain
from realtime.session.transport import OutputAudio
from realtime.speech.runtime import Runtime
from tests.support.fake_transport import FakeTransport
from tests.support.session_harness import USER_TEXT, Script, light_runtime, running, scripted, spoken

MS_PER_SECOND = 1000
BYTES_PER_MS = 48  # 24 kHz PCM16


def _of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == kind]


async def test_a_spoken_turn_over_the_fake_transport(runtime: Runtime) -> None:
    script = Script(spoken("Hello ", 300, "there.", 200))
    transport = FakeTransport()
    async with running(scripted(runtime, script), transport) as (session, task):
        assert (await transport.recv())["type"] == "session.created"
        await transport.send(USER_TEXT)
        await transport.send({"type": "response.create"})
        events = await transport.until("response.done")
        await transport.leave()
        ending = await task
    kinds = [event["type"] for event in events]
    deltas = _of(events, "response.output_audio.delta")
    assert kinds.index("response.created") < kinds.index("response.output_audio.delta")
    audio = b"".join(base64.b64decode(delta["delta"]) for delta in deltas)
    assert len(audio) == 500 * BYTES_PER_MS and max(len(base64.b64decode(d["delta"])) for d in deltas) <= 4800
    assert _of(events, "response.output_audio_transcript.done")[0]["transcript"] == "Hello there."
    assert events[-1]["response"]["status"] == "completed"
    assert ending.code == CLOSE_NORMAL and transport.ending == ending  # the core closed the transport
    assert session.voice_locked  # the response produced audio


async def test_cancel_queues_response_done_before_the_next_event_is_read(runtime: Runtime) -> None:
    gate = asyncio.Event()
    transport = FakeTransport()
    async with running(scripted(runtime, Script(spoken("Once ", 200, gate, 200))), transport):
        await transport.send(USER_TEXT)
        await transport.send({"type": "response.create"})
        await transport.until("response.output_audio.delta")
        # sent back to back: the cancel is processed before the clear is read
        await transport.send({"type": "response.cancel"})
        await transport.send({"type": "input_audio_buffer.clear"})
        events = await transport.until("input_audio_buffer.cleared")
    kinds = [event["type"] for event in events]
    assert kinds.count("response.done") == 1 and kinds.index("response.done") < kinds.index(
        "input_audio_buffer.cleared"
    )
    done = _of(events, "response.done")[0]["response"]
    assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"
    assert "response.output_audio.delta" not in kinds[kinds.index("response.done") :]


class _Logging(FakeTransport):
    """Records, in order, each piece of audio handed over and each event type."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []

    async def send_audio(self, audio: OutputAudio) -> None:
        self.log.append("audio")
        await super().send_audio(audio)

    async def send_event(self, text: str) -> None:
        await super().send_event(text)
        self.log.append(self.received[-1]["type"])


async def test_response_done_goes_out_after_all_of_its_audio(runtime: Runtime) -> None:
    transport = _Logging()
    async with running(scripted(runtime, Script(spoken("a ", 1000, "b ", 700, 300))), transport):
        await transport.send(USER_TEXT)
        await transport.send({"type": "response.create"})
        done = (await transport.until("response.done"))[-1]["response"]
        item_id = done["output"][0]["id"]
        await transport.send({"type": "conversation.item.retrieve", "item_id": item_id})
        retrieved = (await transport.until("conversation.item.retrieved"))[-1]["item"]
    audio_sent = [i for i, entry in enumerate(transport.log) if entry == "audio"]
    assert len(audio_sent) == 20  # 2000 ms in 100 ms pieces
    assert max(audio_sent) < transport.log.index("response.done")
    stored = base64.b64decode(retrieved["content"][0]["audio"])
    assert len(stored) == 2000 * BYTES_PER_MS  # counted as delivered before response.done went out


async def test_a_truncate_while_the_response_runs_is_applied_again_when_it_closes(runtime: Runtime) -> None:
    gate = asyncio.Event()
    transport = FakeTransport()
    async with running(
        scripted(runtime, Script(spoken("first part ", 500, gate, "second part", 500))), transport
    ):
        await transport.send(USER_TEXT)
        await transport.send({"type": "response.create"})
        events = await transport.until("response.output_audio.delta")
        item_id = _of(events, "response.output_item.added")[0]["item"]["id"]
        while len(_of(transport.received, "response.output_audio.delta")) < 5:  # all 500 ms delivered
            await transport.recv()
        await transport.send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 300,
            }
        )
        truncated = (await transport.until("conversation.item.truncated"))[-1]
        gate.set()  # the response goes on (OpenAI: a truncate cancels nothing) and delivers 500 ms more
        done = (await transport.until("response.done"))[-1]["response"]
        await transport.send({"type": "conversation.item.retrieve", "item_id": item_id})
        item = (await transport.until("conversation.item.retrieved"))[-1]["item"]
    assert truncated["audio_end_ms"] == 300 and done["status"] == "completed"
    assert len(base64.b64decode(item["content"][0]["audio"])) == 300 * BYTES_PER_MS  # cut again at the close
    assert "second" not in item["content"][0]["transcript"]


class _RecordingBackend(SyntheticBackend):
    """Logs each transcription request it gets into the script's shared log."""

    def __init__(self, log: list[str]) -> None:
        super().__init__(tokens_per_second=50_000.0, prefill_seconds=0)
        self._log = log

    async def generate(self, request: GenerationInput) -> AsyncIterator[TokenChunk]:
        self._log.append(f"transcribe {request.rid}")
        async for chunk in super().generate(request):
            yield chunk


async def test_idle_timeout_starts_after_playback_and_responds_before_it_transcribes() -> None:
    """The idle timer starts when the last response's audio has played; its turn starts a response first,
    and the input transcription is held until that response has output (so it never delays first audio)."""
    script = Script(spoken("Hi ", 400))
    async with light_runtime(_RecordingBackend(script.log)) as base:
        transport = FakeTransport()
        async with running(scripted(base, script), transport):
            turn = {"type": "server_vad", "idle_timeout_ms": 200}
            audio = {"input": {"turn_detection": turn, "transcription": {"model": "whisper-1"}}}
            await transport.send({"type": "session.update", "session": {"type": "realtime", "audio": audio}})
            await transport.until("session.updated")
            silence = base64.b64encode(bytes(200 * BYTES_PER_MS)).decode()
            await transport.send({"type": "input_audio_buffer.append", "audio": silence})
            await transport.send(USER_TEXT)
            started = time.perf_counter()
            await transport.send({"type": "response.create"})
            await transport.until("response.done")
            await transport.until("input_audio_buffer.timeout_triggered")
            fired = time.perf_counter()
            events = await transport.until("conversation.item.input_audio_transcription.completed")
    assert fired - started >= (400 + 200) / MS_PER_SECOND  # its 400 ms of audio played, then 200 ms idle
    kinds = [event["type"] for event in events]
    assert kinds.index("input_audio_buffer.committed") < kinds.index("response.created")
    second = [entry.split()[1] for entry in script.log if entry.startswith("reply")][1]
    transcribe = next(i for i, entry in enumerate(script.log) if entry.startswith("transcribe"))
    assert script.log.index(f"output {second}") < transcribe  # the response's output came first


async def test_out_of_band_responses_run_beside_the_default_one(runtime: Runtime) -> None:
    gate = asyncio.Event()
    transport = FakeTransport()
    script = Script(spoken("in band ", 100, gate), spoken("aside ", 100))
    async with running(scripted(runtime, script), transport) as (session, _):
        await transport.send(USER_TEXT)
        await transport.send({"type": "response.create"})
        await transport.until("response.output_audio.delta")
        out_of_band = {
            "conversation": "none",
            "output_modalities": ["audio"],
            "metadata": {"kind": "summary"},
        }
        await transport.send({"type": "response.create", "response": out_of_band})
        done = (await transport.until("response.done"))[-1]["response"]
        assert done["conversation_id"] is None and done["metadata"] == {"kind": "summary"}
        assert session.responses.default is not None  # the in-band one still runs
        assert [item.id for item in session.conversation][-1] != done["output"][0]["id"]
        gate.set()
        default = (await transport.until("response.done"))[-1]["response"]
    assert default["status"] == "completed" and default["conversation_id"] is not None


async def test_drain_lets_the_response_finish_then_closes_1001(runtime: Runtime) -> None:
    gate = asyncio.Event()
    drain = Drain(asyncio.Event())
    transport = FakeTransport()
    async with running(scripted(runtime, Script(spoken("bye ", 100, gate, 100))), transport, drain=drain) as (
        _,
        task,
    ):
        await transport.send(USER_TEXT)
        await transport.send({"type": "response.create"})
        await transport.until("response.output_audio.delta")
        drain.deadline = asyncio.get_running_loop().time() + 10
        drain.started.set()
        await asyncio.sleep(0)
        assert not task.done()  # the response may finish
        gate.set()
        await transport.until("response.done")
        ending = await task
    assert (ending.code, ending.reason) == (CLOSE_GOING_AWAY, "server shutting down")
    assert transport.received[-1]["type"] == "response.done"


class _Stalled(FakeTransport):
    """A peer that never takes audio."""

    async def send_audio(self, audio: OutputAudio) -> None:
        await asyncio.Event().wait()


async def test_a_peer_that_stops_taking_audio_ends_the_session_with_send_timeout(runtime: Runtime) -> None:
    transport = _Stalled()
    view = scripted(runtime, Script(spoken("x ", 500)), send_timeout=0.3)
    async with running(view, transport) as (_, task):
        await transport.send(USER_TEXT)
        await transport.send({"type": "response.create"})
        ending = await task
    assert (ending.code, ending.reason) == (CLOSE_POLICY_VIOLATION, "send_timeout")
    assert runtime.decoder_streams.live == 0  # the response's decoder stream was given back


async def test_an_undecodable_frame_is_reported_and_the_session_goes_on(runtime: Runtime) -> None:
    transport = FakeTransport()
    async with running(runtime, transport):
        await transport.send({"type": "no.such.event", "event_id": "evt_1"})
        error = (await transport.until("error"))[-1]["error"]
        await transport.send({"type": "input_audio_buffer.clear"})
        await transport.until("input_audio_buffer.cleared")
    assert (error["code"], error["event_id"], error["param"]) == ("invalid_value", "evt_1", "type")
