"""Input audio transcription over a raw socket, both dialects: events, the stored transcript, cancellation.

The synthetic backend's stand-in transcript is deterministic (realtime/backends/synthetic.py), so the tests
compute the expected text from the audio they send.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import soundfile as sf

from realtime.backends.synthetic import SyntheticBackend
from realtime.speech.voices import default_voice_path
from tests.support.server_harness import ServerHandle
from tests.support.wire_check import RawClient

PCM_RATE = 24_000
TRANSCRIPTION_EVENTS = "conversation.item.input_audio_transcription."


def speech_pcm(seconds: float = 2.0) -> bytes:
    """The first ``seconds`` of the shipped voice prompt (real speech), PCM16 at 24 kHz."""
    samples, rate = sf.read(default_voice_path(), dtype="int16")
    assert rate == PCM_RATE
    return bytes(samples[: int(seconds * PCM_RATE)].astype("<i2").tobytes())


def expected_transcript(pcm: bytes) -> str:
    """What the server's synthetic backend (seed 0) transcribes ``pcm`` to."""
    backend = SyntheticBackend()
    codec = backend.text_codec
    return codec.decode(codec.encode(" ".join(backend.transcript_words(pcm, PCM_RATE)))).strip()


def ga_session(**audio_input: Any) -> dict[str, Any]:
    return {"type": "realtime", "audio": {"input": {"turn_detection": None, **audio_input}}}


async def commit(client: RawClient, pcm: bytes) -> str:
    """Append and commit ``pcm``; return the new item's id."""
    await client.send({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})
    await client.send({"type": "input_audio_buffer.commit"})
    committed = await client.until("input_audio_buffer.committed")
    return str(committed[-1]["item_id"])


async def until_transcribed(client: RawClient, item_id: str) -> list[dict[str, Any]]:
    """Events up to the ``completed`` or ``failed`` event of ``item_id``."""
    events = []
    while True:
        event = await client.recv()
        events.append(event)
        if event["type"] in (TRANSCRIPTION_EVENTS + "completed", TRANSCRIPTION_EVENTS + "failed"):
            assert event["item_id"] == item_id
            return events


async def until_all(client: RawClient, kinds: set[str]) -> list[dict[str, Any]]:
    """Events until one of each type in ``kinds`` has arrived."""
    events: list[dict[str, Any]] = []
    missing = set(kinds)
    while missing:
        event = await client.recv()
        events.append(event)
        missing.discard(event["type"])
    return events


async def test_committed_audio_is_transcribed_ga(ga: RawClient) -> None:
    await ga.send(
        {
            "type": "session.update",
            "session": ga_session(transcription={"model": "gpt-4o-mini-transcribe", "language": "en"}),
        }
    )
    echoed = (await ga.recv())["session"]
    assert echoed["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe", "language": "en"}
    pcm = speech_pcm()
    item_id = await commit(ga, pcm)
    events = await until_transcribed(ga, item_id)
    deltas = [e for e in events if e["type"] == TRANSCRIPTION_EVENTS + "delta"]
    completed = events[-1]
    want = expected_transcript(pcm)
    assert want and completed["type"] == TRANSCRIPTION_EVENTS + "completed"
    assert completed["transcript"] == want == "".join(d["delta"] for d in deltas).strip()
    assert len(deltas) >= 1 and all(d["item_id"] == item_id and d["content_index"] == 0 for d in deltas)
    usage = completed["usage"]
    assert usage["type"] == "tokens" and usage["output_tokens"] > 0 and usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    await ga.send({"type": "conversation.item.retrieve", "item_id": item_id})
    retrieved = (await ga.until("conversation.item.retrieved"))[-1]["item"]
    assert retrieved["content"][0]["transcript"] == want


async def test_committed_audio_is_transcribed_beta(beta: RawClient) -> None:
    session = {"turn_detection": None, "input_audio_transcription": {"model": "whisper-1"}}
    await beta.send({"type": "session.update", "session": session})
    echoed = (await beta.recv())["session"]
    assert echoed["input_audio_transcription"] == {"model": "whisper-1"}
    pcm = speech_pcm(1.0)
    item_id = await commit(beta, pcm)
    await beta.send({"type": "response.create"})
    events = await until_all(beta, {"response.done", TRANSCRIPTION_EVENTS + "completed"})
    completed = next(e for e in events if e["type"] == TRANSCRIPTION_EVENTS + "completed")
    assert completed["item_id"] == item_id and completed["transcript"] == expected_transcript(pcm)
    assert not any(e["type"] == "error" for e in events)


async def test_silence_transcribes_to_an_empty_transcript(ga: RawClient) -> None:
    await ga.send({"type": "session.update", "session": ga_session(transcription={})})
    await ga.recv()
    item_id = await commit(ga, b"\x00\x00" * (PCM_RATE // 2))
    events = await until_transcribed(ga, item_id)
    assert events[-1]["type"] == TRANSCRIPTION_EVENTS + "completed" and events[-1]["transcript"] == ""


async def test_transcription_off_sends_no_transcription_events(ga: RawClient) -> None:
    await ga.send({"type": "session.update", "session": ga_session(transcription=None)})
    await ga.recv()
    await commit(ga, speech_pcm(0.5))
    await ga.send({"type": "response.create"})
    events = await ga.until("response.done")
    assert not any(e["type"].startswith(TRANSCRIPTION_EVENTS) for e in events)


async def test_server_vad_turn_transcribes_after_the_response_starts(ga: RawClient) -> None:
    await ga.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"transcription": {"model": "whisper-1"}}}},
        }
    )
    await ga.recv()
    speech = speech_pcm(4.0)
    audio = b"\x00\x00" * (PCM_RATE * 2 // 5) + speech + b"\x00\x00" * (PCM_RATE * 6 // 5)
    chunk = PCM_RATE // 10 * 2
    for i in range(0, len(audio), chunk):
        await ga.send(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio[i : i + chunk]).decode()}
        )
    events = await until_all(ga, {"response.done", TRANSCRIPTION_EVENTS + "completed"})
    assert not any(e["type"] == "error" for e in events)
    kinds = [e["type"] for e in events]
    committed = events[kinds.index("input_audio_buffer.committed")]
    completed = events[kinds.index(TRANSCRIPTION_EVENTS + "completed")]
    assert completed["item_id"] == committed["item_id"] and completed["transcript"]
    assert events[kinds.index("response.done")]["response"]["status"] == "completed"
    # the transcription request waits for the response's first audio: it never delays it
    assert kinds.index("response.output_audio.delta") < kinds.index(TRANSCRIPTION_EVENTS + "delta")
    # the committed turn holds the speech (not just the padding left after the turn ended)
    await ga.send({"type": "conversation.item.retrieve", "item_id": committed["item_id"]})
    item = (await ga.until("conversation.item.retrieved"))[-1]["item"]
    assert len(base64.b64decode(item["content"][0]["audio"])) >= len(speech)
    assert item["content"][0]["transcript"] == completed["transcript"]


async def test_logprobs_are_refused_clearly(ga: RawClient) -> None:
    session = {
        **ga_session(transcription={"model": "whisper-1"}),
        "include": ["item.input_audio_transcription.logprobs"],
    }
    await ga.send({"type": "session.update", "session": session, "event_id": "evt_lp"})
    error = await ga.error("invalid_value", event_id="evt_lp")
    assert error["param"] == "session.include" and "log probabilities" in error["message"]
    await ga.alive()


async def test_any_transcription_model_name_is_accepted_and_echoed(server: ServerHandle) -> None:
    # the pinned openai 2.8 models list OpenAI's names only, so this frame is read without their validation
    import websockets

    async with websockets.connect(server.ws_url() + "?model=step-audio-2-mini") as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        transcription = {"model": "step-audio-2-mini", "languages": ["en", "de"], "keywords": ["Step"]}
        await ws.send(
            json.dumps({"type": "session.update", "session": ga_session(transcription=transcription)})
        )
        updated = json.loads(await ws.recv())
        assert updated["type"] == "session.updated", updated
        assert updated["session"]["audio"]["input"]["transcription"] == transcription


async def test_bad_transcription_settings_are_refused(ga: RawClient) -> None:
    await ga.send({"type": "session.update", "session": ga_session(transcription={"model": 7})})
    assert (await ga.error("invalid_type"))["param"] == "session.audio.input.transcription.model"
    await ga.send({"type": "session.update", "session": ga_session(transcription={"dialect": "x"})})
    assert (await ga.error("unknown_parameter"))["param"] == "session.audio.input.transcription.dialect"
    await ga.send({"type": "session.update", "session": ga_session(transcription={"language": "x" * 33})})
    assert (await ga.error("string_above_max_length"))[
        "param"
    ] == "session.audio.input.transcription.language"
    await ga.send({"type": "session.update", "session": ga_session(transcription={"prompt": "p" * 5000})})
    assert (await ga.error("string_above_max_length"))["param"] == "session.audio.input.transcription.prompt"
    await ga.alive()


async def test_deleting_the_item_cancels_its_transcription(slow_server: ServerHandle) -> None:
    client = await RawClient.connect(slow_server.ws_url())
    try:
        await client.send({"type": "session.update", "session": ga_session(transcription={})})
        await client.recv()
        item_id = await commit(client, speech_pcm(8.0))  # ~20 words: a few hundred ms at 100 tokens/s
        await client.until("conversation.item.done")
        await client.send({"type": "conversation.item.delete", "item_id": item_id})
        events = await client.until("conversation.item.deleted")
        await asyncio.sleep(0.6)  # longer than the whole transcription would take
        await client.alive()
        events += client.received
        assert not any(e["type"] == TRANSCRIPTION_EVENTS + "completed" for e in events)
    finally:
        await client.close()
