"""Server VAD on real speech (the shipped espeak-ng voice prompt): detector unit tests and full turns."""

from __future__ import annotations

import base64

import pytest
import soundfile as sf

from realtime.audio import AudioFormat
from realtime.session.vad import SharedEngine, TurnDetector, VadEngine, VadEvent
from realtime.speech.voices import default_voice_path
from realtime.wire.session_config import TurnDetection
from tests.support.server_harness import ServerHandle
from tests.support.wire_check import RawClient

PCM_RATE = 24_000
CHUNK_MS = 100


def _speech_pcm() -> bytes:
    samples, rate = sf.read(default_voice_path(), dtype="int16")
    assert rate == PCM_RATE
    return bytes(samples.astype("<i2").tobytes())


def _silence(ms: int) -> bytes:
    return b"\x00\x00" * (PCM_RATE * ms // 1000)


def _chunks(pcm: bytes) -> list[bytes]:
    size = PCM_RATE * CHUNK_MS // 1000 * 2
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


async def _detect(detector: TurnDetector, pcm: bytes) -> list[VadEvent]:
    events: list[VadEvent] = []
    for chunk in _chunks(pcm):
        events.extend(await detector.feed(chunk))
    return events


async def test_silence_has_no_turns() -> None:
    detector = TurnDetector(TurnDetection(), AudioFormat.PCM16)
    assert await _detect(detector, _silence(2000)) == []


async def test_speech_starts_and_stops_once() -> None:
    detector = TurnDetector(TurnDetection(silence_duration_ms=800), AudioFormat.PCM16)
    speech = _speech_pcm()
    events = await _detect(detector, _silence(500) + speech + _silence(1500))
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "stop"
    assert kinds.count("start") == kinds.count("stop")  # every start is closed
    assert 300 <= events[0].ms <= 500 + 300  # speech begins after the leading silence
    speech_end_ms = 500 + len(speech) // 2 * 1000 // PCM_RATE
    assert events[-1].ms <= speech_end_ms + 200


async def test_semantic_vad_waits_longer() -> None:
    eager = TurnDetector(TurnDetection(kind="semantic_vad", eagerness="high"), AudioFormat.PCM16)
    patient = TurnDetector(TurnDetection(kind="semantic_vad", eagerness="low"), AudioFormat.PCM16)
    audio = _silence(300) + _speech_pcm() + _silence(2000)
    assert len(await _detect(eager, audio)) >= len(await _detect(patient, audio))


async def test_g711_input_is_detected() -> None:
    from realtime.audio import pcm16_to_ulaw, resample_pcm16

    ulaw = pcm16_to_ulaw(resample_pcm16(_silence(300) + _speech_pcm() + _silence(1500), PCM_RATE, 8000))
    detector = TurnDetector(TurnDetection(), AudioFormat.G711_ULAW)
    events = []
    for i in range(0, len(ulaw), 800):
        events.extend(await detector.feed(ulaw[i : i + 800]))
    assert [e.kind for e in events][:1] == ["start"] and events[-1].kind == "stop"


async def _append_all(client: RawClient, pcm: bytes) -> None:
    for chunk in _chunks(pcm):
        await client.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})


async def test_server_vad_turn_creates_item_and_response(ga: RawClient) -> None:
    await _append_all(ga, _silence(400) + _speech_pcm() + _silence(1200))
    events = await ga.until("response.done")
    kinds = [e["type"] for e in events]
    started = events[kinds.index("input_audio_buffer.speech_started")]
    stopped = events[kinds.index("input_audio_buffer.speech_stopped")]
    committed = events[kinds.index("input_audio_buffer.committed")]
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    assert started["audio_start_ms"] < stopped["audio_end_ms"]
    assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("input_audio_buffer.committed")
    user = events[kinds.index("conversation.item.added")]["item"]
    assert user["id"] == committed["item_id"] and user["content"][0]["type"] == "input_audio"
    assert kinds.index("conversation.item.done") < kinds.index("response.created")
    assert events[-1]["response"]["status"] == "completed"


async def test_barge_in_cancels_the_response(slow_server: ServerHandle) -> None:
    client = await RawClient.connect(slow_server.ws_url())
    try:
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "a long story"}],
        }
        await client.send({"type": "conversation.item.create", "item": item})
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        await _append_all(client, _silence(200) + _speech_pcm()[: PCM_RATE * 2])
        events = await client.until("response.done")
        done = events[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        kinds = [e["type"] for e in events]
        assert kinds.count("response.done") == 1
        # OpenAI's order (docs/PROTOCOL.md §6.2): speech_started first, then the cancelled response closes
        assert "input_audio_buffer.speech_started" in kinds
        started = kinds.index("input_audio_buffer.speech_started")
        assert "response.output_item.done" not in kinds[:started]
    finally:
        await client.close()


async def test_manual_commit_during_speech_then_vad_stop(ga: RawClient) -> None:
    settings = {"type": "server_vad", "create_response": False}
    await ga.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": settings}}},
        }
    )
    await ga.recv()
    speech = _speech_pcm()
    await _append_all(ga, _silence(300) + speech[: len(speech) // 2])
    started = (await ga.until("input_audio_buffer.speech_started"))[-1]
    await ga.send({"type": "input_audio_buffer.commit"})
    committed = (await ga.until("input_audio_buffer.committed"))[-1]
    assert committed["item_id"] == started["item_id"]
    await _append_all(ga, speech[len(speech) // 2 :] + _silence(1500))
    events = await ga.until("input_audio_buffer.speech_stopped")
    # the speech after the manual commit becomes its own item, under a new id
    events += await ga.until("conversation.item.done")
    assert not any(e["type"] == "error" for e in events)
    second = next(e for e in events if e["type"] == "input_audio_buffer.committed")
    assert second["item_id"] != committed["item_id"] and second["previous_item_id"] == committed["item_id"]
    await ga.alive()


async def test_one_huge_append_is_fed_in_slices_with_the_same_events() -> None:
    from realtime.session.vad import SLICE_MS, load_shared_engine

    engine = await load_shared_engine()
    jobs: list[int] = []
    run = engine.run

    async def counting_run(fn: object, *args: object) -> object:
        jobs.append(len(args[-1]))  # type: ignore[arg-type]
        return await run(fn, *args)

    audio = _silence(500) + _speech_pcm() + _silence(1500)
    sliced = TurnDetector(TurnDetection(silence_duration_ms=800), AudioFormat.PCM16, engine)
    engine.run = counting_run  # type: ignore[method-assign]
    try:
        whole = await sliced.feed(audio)  # one append of several seconds
    finally:
        del engine.run
    slice_bytes = PCM_RATE * SLICE_MS // 1000 * 2
    assert (
        len(jobs) == -(-len(audio) // slice_bytes) and max(jobs) <= slice_bytes
    )  # others' slices interleave
    chunked = await _detect(TurnDetector(TurnDetection(silence_duration_ms=800), AudioFormat.PCM16), audio)
    assert [e.kind for e in whole] == [e.kind for e in chunked]


async def test_servers_share_one_engine_and_the_last_to_stop_closes_it() -> None:
    loads: list[VadEngine] = []

    def load() -> VadEngine:
        loads.append(VadEngine())
        return loads[-1]

    shared = SharedEngine(load)
    async with shared.held() as first:
        async with shared.held() as second:
            assert first is second
        assert await shared.load() is first  # still held by one server
    assert len(loads) == 1
    with pytest.raises(RuntimeError):  # VadEngine.close stopped its thread
        await first.run(first.warm_up)
    fresh = await shared.load()  # a later session loads a fresh one
    assert fresh is not first
    fresh.close()
