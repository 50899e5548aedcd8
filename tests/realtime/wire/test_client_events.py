"""Unit tests of the wire edge: negotiation, client-frame parsing, server-event building, errors, truncation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from realtime.audio import AudioFormat
from realtime.backends.base import GenerationInput, PromptTurn
from realtime.backends.synthetic import SyntheticBackend
from realtime.errors import ErrorReport, ProtocolViolation, SessionClosing, describe_exception
from realtime.session.items import truncate_item
from realtime.wire.client_events import (
    AudioAppend,
    ItemReference,
    ResponseCreate,
    SessionUpdate,
    decode_client_frame,
)
from realtime.wire.handshake import Dialect, negotiate
from realtime.wire.records import ContentPart, Item, ResponseRecord, TokenUsage
from realtime.wire.server_events import EventBuilder, PartIds, encode
from realtime.wire.session_config import SessionConfig, TurnDetection, apply_session_update
from realtime.wire.session_extensions import TranscriptionSettings
from streaming_parser import AudioTokenParser, TextTokens
from tests.support.wire_check import validate_frame


def _decode(event: dict[str, Any], dialect: Dialect = Dialect.GA) -> Any:
    return decode_client_frame(json.dumps(event), dialect)


@pytest.mark.parametrize(
    ("headers", "offered", "dialect", "chosen", "key"),
    [
        ({}, [], Dialect.GA, None, None),
        ({"openai-beta": "realtime=v1", "authorization": "Bearer sk-1"}, [], Dialect.BETA, None, "sk-1"),
        ({}, ["realtime", "openai-insecure-api-key.k2"], Dialect.GA, "realtime", "k2"),
        ({}, ["openai-beta.realtime-v1"], Dialect.BETA, "openai-beta.realtime-v1", None),
        ({"api-key": "k3"}, ["openai-insecure-api-key.k4"], Dialect.GA, None, "k3"),
    ],
)
def test_negotiate(
    headers: dict[str, str], offered: list[str], dialect: Dialect, chosen: str | None, key: str | None
) -> None:
    handshake = negotiate(headers, offered)
    assert (handshake.dialect, handshake.subprotocol, handshake.api_key) == (dialect, chosen, key)


def test_beta_flat_session_is_read_as_ga() -> None:
    flat = {
        "modalities": ["text"],
        "voice": "ash",
        "input_audio_format": "g711_ulaw",
        "output_audio_format": "g711_alaw",
        "turn_detection": {"silence_duration_ms": 700},
        "max_response_output_tokens": 100,
        "temperature": 0.9,
    }
    for dialect in (Dialect.BETA, Dialect.GA):
        event = _decode({"type": "session.update", "session": {**flat, "type": "realtime"}}, dialect)
        assert isinstance(event, SessionUpdate)
        session = event.session
        assert session.output_modalities == ["text"] and session.max_output_tokens == 100
        assert (
            session.audio is not None and session.audio.output is not None and session.audio.input is not None
        )
        assert session.audio.output.voice == "ash"
        assert session.audio.input.turn_detection is not None
        assert session.audio.input.turn_detection.type == "server_vad"
        assert session.model_extra == {"temperature": 0.9}


def test_beta_session_without_type_is_fine() -> None:
    assert isinstance(_decode({"type": "session.update", "session": {}}, Dialect.BETA), SessionUpdate)


def test_bad_beta_format() -> None:
    with pytest.raises(ProtocolViolation) as caught:
        _decode({"type": "session.update", "session": {"output_audio_format": "mp3"}}, Dialect.BETA)
    assert (caught.value.code, caught.value.param) == ("invalid_value", "session.output_audio_format")


def test_append_is_decoded_at_the_edge() -> None:
    event = _decode({"type": "input_audio_buffer.append", "audio": "AAEC", "event_id": "e"})
    assert event == AudioAppend("e", b"\x00\x01\x02")


def test_response_create_beta_overrides_and_references() -> None:
    response = {
        "modalities": ["text", "audio"],
        "voice": "default",
        "output_audio_format": "g711_ulaw",
        "temperature": 0.7,
        "max_response_output_tokens": "inf",
        "input": [{"type": "item_reference", "id": "item_1"}],
    }
    event = _decode({"type": "response.create", "response": response}, Dialect.BETA)
    assert isinstance(event, ResponseCreate) and event.params is not None
    assert event.params.output_modalities == ["audio"]
    assert event.params.audio is not None and event.params.audio.output is not None
    assert (
        event.params.audio.output.format is not None and event.params.audio.output.format.type == "audio/pcmu"
    )
    assert event.temperature == 0.7 and event.input == (ItemReference("item_1"),)


def test_unknown_nested_parameter() -> None:
    with pytest.raises(ProtocolViolation) as caught:
        _decode({"type": "response.create", "response": {"audio": {"output": {"volume": 3}}}})
    assert (caught.value.code, caught.value.param) == ("unknown_parameter", "response.audio.output.volume")


def test_oversized_frame_is_refused_before_parsing() -> None:
    with pytest.raises(ProtocolViolation) as caught:
        decode_client_frame(" " * (16 * 1024 * 1024), Dialect.GA)
    assert caught.value.code == "string_above_max_length"


@pytest.mark.parametrize(
    ("frame", "param"),
    [
        (
            '{"type": "conversation.item.create", "event_id": "e1", "item": {"type": "message", "role": "user",'
            ' "content": [{"type": "input_text", "text": "hi \\ud800 there"}]}}',
            "item.content[0].text",
        ),
        (
            '{"type": "session.update", "session": {"type": "realtime", "instructions": "\\uDFFF"}}',
            "session.instructions",
        ),
        ('{"type": "response.create", "\\ud83d": 1}', None),  # in a key: the object holding it
    ],
)
def test_unpaired_surrogate_escapes_are_refused_with_their_field(frame: str, param: str | None) -> None:
    """A lone surrogate decodes to a string UTF-8 cannot encode: refused here, not an internal error later."""
    with pytest.raises(ProtocolViolation) as caught:
        decode_client_frame(frame, Dialect.GA)
    assert (caught.value.code, caught.value.param) == ("invalid_value", param)
    assert "surrogate" in caught.value.message


def test_an_event_id_with_an_unpaired_surrogate_is_not_echoed() -> None:
    """The error event echoes event_id; one UTF-8 cannot encode would break the error itself."""
    with pytest.raises(ProtocolViolation) as caught:
        decode_client_frame('{"type": "response.cancel", "event_id": "e\\ud800"}', Dialect.GA)
    assert (caught.value.code, caught.value.param, caught.value.event_id) == (
        "invalid_value",
        "event_id",
        None,
    )
    with pytest.raises(ProtocolViolation) as caught:
        decode_client_frame('{"event_id": "e\\ud800", "type": "no.such"}', Dialect.GA)
    assert caught.value.event_id is None


def test_escaped_surrogate_pairs_and_backslashes_are_fine() -> None:
    text = {"type": "input_text", "text": "smile \U0001f600, and a literal \\ud800"}
    item = {"type": "message", "role": "user", "content": [text]}
    frame = json.dumps({"type": "conversation.item.create", "item": item})  # ensure_ascii: an escaped pair
    assert "\\ud83d\\ude00" in frame
    assert decode_client_frame(frame, Dialect.GA) is not None


def _sample_item(kind: str = "output_audio") -> Item:
    part = (
        ContentPart(kind, transcript="hi", audio=b"\x00\x00")
        if kind == "output_audio"
        else ContentPart(kind, text="t")
    )  # type: ignore[arg-type]
    return Item(id="item_1", kind="message", role="assistant", content=[part])


def _all_events(builder: EventBuilder) -> list[BaseModel]:
    config = SessionConfig(model="m", voice="default", turn_detection=TurnDetection(idle_timeout_ms=5000))
    record = ResponseRecord(
        id="resp_1",
        conversation_id=None,
        modalities=("audio",),
        voice="default",
        output_format=AudioFormat.G711_ULAW,
        max_output_tokens=20,
        status="failed",
        error=("server_error", "stream_cut", "The LLM stream ended early."),
        output=[_sample_item()],
        usage=TokenUsage(3, 5, 1, 4, cached_tokens=2),
    )
    ids = PartIds("resp_1", "item_1", 0, 0)
    call = Item(id="item_2", kind="function_call", call_id="call_1", name="f", arguments="{}")
    result = Item(id="item_3", kind="function_call_output", call_id="call_1", output="ok")
    user = Item(
        id="item_4", kind="message", role="user", content=[ContentPart("input_audio", audio=b"\x01\x00")]
    )
    transcribing = SessionConfig(
        model="m",
        voice="default",
        type="transcription",
        transcription=TranscriptionSettings(model="gpt-4o-transcribe", language="en"),
        noise_reduction="near_field",
        include=(),
    )
    events = [
        *builder.session_created(config, "sess_1"),
        *builder.conversation_created(config, "conv_1"),
        builder.session_updated(replace_config(config), "sess_1"),
        *builder.session_created(SessionConfig(model="m", voice="default", type="transcription"), "sess_2"),
        builder.session_updated(transcribing, "sess_2"),
        builder.session_updated(replace_config(transcribing), "sess_2"),
        builder.error(ErrorReport("invalid_request_error", "c", "m", "p", "e")),
        builder.item_added(call, None),
        builder.item_added(result, "item_2"),
        *builder.item_done(user),
        builder.item_retrieved(user),
        builder.item_truncated("item_1", 0, 10),
        builder.item_deleted("item_1"),
        builder.committed("item_4", None),
        builder.cleared(),
        builder.speech_started("item_4", 0),
        builder.speech_stopped("item_4", 100),
        builder.response_created(record),
        builder.response_done(record),
        builder.output_item_added("resp_1", 0, _sample_item()),
        builder.output_item_done("resp_1", 0, _sample_item("output_text")),
        builder.content_part(False, ids, ContentPart("output_audio", transcript="")),
        builder.content_part(True, ids, ContentPart("output_text", text="x")),
        builder.audio_delta(ids, "AAAA"),
        builder.audio_done(ids),
        builder.transcript_delta(ids, "h"),
        builder.transcript_done(ids, "hi"),
        builder.text_delta(ids, "t"),
        builder.text_done(ids, "t"),
    ]
    return events


def replace_config(config: SessionConfig) -> SessionConfig:
    from dataclasses import replace

    return replace(
        config, turn_detection=TurnDetection(kind="semantic_vad", eagerness="high"), temperature=0.9
    )


@pytest.mark.parametrize("dialect", [Dialect.GA, Dialect.BETA])
def test_every_server_event_validates_in_its_dialect(dialect: Dialect) -> None:
    for event in _all_events(EventBuilder(dialect)):
        validate_frame(encode(event), dialect.value)


@pytest.mark.parametrize("dialect", [Dialect.GA, Dialect.BETA])
def test_usage_reports_cached_prompt_tokens_only_when_known(dialect: Dialect) -> None:
    record = ResponseRecord(
        id="resp_1", conversation_id=None, modalities=("audio",), voice="default",
        output_format=AudioFormat.PCM16, max_output_tokens=20, status="completed",
    )  # fmt: skip
    builder = EventBuilder(dialect)
    record.usage = TokenUsage(30, 5, 1, 4, cached_tokens=24)
    usage = json.loads(builder.response_done(record).model_dump_json(exclude_none=True))["response"]["usage"]
    assert usage["input_token_details"] == {"cached_tokens": 24}
    assert usage["input_tokens"] == 30 and usage["total_tokens"] == 35
    record.usage = TokenUsage(30, 5, 1, 4)  # a backend that does not say: no claim of zero
    usage = json.loads(builder.response_done(record).model_dump_json(exclude_none=True))["response"]["usage"]
    assert "input_token_details" not in usage


def test_retrieved_item_omits_audio_over_the_frame_limit() -> None:
    builder = EventBuilder(Dialect.GA)
    big = Item(
        id="i", kind="message", role="user", content=[ContentPart("input_audio", audio=b"\x00" * 800_000)]
    )
    frame = encode(builder.item_retrieved(big))
    assert len(frame) < 1024 * 1024 and "audio" not in json.loads(frame)["item"]["content"][0]


def test_describe_exception_unwraps_groups_and_hides_bugs() -> None:
    group = ExceptionGroup(
        "tasks", [ValueError("x"), SessionClosing("session_expired", "bye", close_code=1000)]
    )
    report = describe_exception(group)
    assert (report.code, report.close_code) == ("session_expired", 1000)
    bug = describe_exception(KeyError("secret internal detail"))
    assert bug.code == "internal_error" and "secret" not in bug.message and bug.close_code == 1011


def test_voice_lock_and_aliases() -> None:
    from realtime.wire.client_events import SessionUpdate as Update

    config = SessionConfig(model="m", voice="default")

    def resolve(name: str) -> str:
        return {"default": "default", "other": "other", "ash": "default"}[name]

    def update(voice: str) -> Any:
        event = _decode(
            {"type": "session.update", "session": {"type": "realtime", "audio": {"output": {"voice": voice}}}}
        )
        assert isinstance(event, Update)
        return event.session

    assert (
        apply_session_update(config, update("ash"), voice_locked=True, resolve=resolve, beta=False).voice
        == "default"
    )
    assert (
        apply_session_update(config, update("other"), voice_locked=False, resolve=resolve, beta=False).voice
        == "other"
    )
    with pytest.raises(ProtocolViolation) as caught:
        apply_session_update(config, update("other"), voice_locked=True, resolve=resolve, beta=False)
    assert caught.value.code == "cannot_update_voice"


def test_truncate_keeps_the_transcript_heard_before_the_first_unheard_code() -> None:
    backend = SyntheticBackend()
    ids = tuple(backend.reply_ids(GenerationInput(rid="r", turns=[PromptTurn(role="user", text="hello")])))
    vocab, codec = backend.vocab, backend.text_codec
    heard_ms = 400  # 10 codes of 40 ms
    item = _sample_item()
    item.output_ids, item.audio_samples = ids, 24_000 * 10
    item.content[0].audio = b"\x00\x00" * 24_000 * 10
    truncate_item(item, heard_ms, AudioFormat.PCM16, vocab, codec)
    assert item.output_ids is not None
    kept_codes = [i for i in item.output_ids if vocab.audio_code(i) is not None]
    assert len(kept_codes) == 10
    parser = AudioTokenParser(vocab, starts_in_speech=True)
    spoken = [
        i
        for e in parser.feed(item.output_ids) + parser.flush()
        if isinstance(e, TextTokens) and e.spoken
        for i in e.ids
    ]
    assert item.content[0].transcript == codec.decode(spoken)
    assert item.content[0].audio is not None and len(item.content[0].audio) == heard_ms * 24 * 2
    assert item.audio_samples == heard_ms * 24


def _truncation_update(truncation: Any) -> Any:
    return _decode(
        {"type": "session.update", "session": {"type": "realtime", "truncation": truncation}}
    ).session


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("disabled", "disabled"),
        (None, "auto"),
        (
            {"type": "retention_ratio", "retention_ratio": 0.8},
            {"type": "retention_ratio", "retention_ratio": 0.8},
        ),
    ],
)
def test_truncation_is_validated_stored_and_echoed_in_ga_only(sent: Any, stored: Any) -> None:
    config = SessionConfig(model="m", voice="default")
    updated = apply_session_update(
        config, _truncation_update(sent), voice_locked=False, resolve=lambda n: n, beta=False
    )
    assert updated.truncation == stored
    ga = json.loads(encode(EventBuilder(Dialect.GA).session_updated(updated, "sess_1")))
    assert ga["session"]["truncation"] == stored
    beta = json.loads(encode(EventBuilder(Dialect.BETA).session_updated(updated, "sess_1")))
    assert "truncation" not in beta["session"]


@pytest.mark.parametrize(
    ("truncation", "code", "param"),
    [
        (
            {"type": "retention_ratio", "retention_ratio": 1.5},
            "decimal_above_max_value",
            "session.truncation.retention_ratio",
        ),
        (
            {"type": "retention_ratio", "retention_ratio": -0.1},
            "decimal_below_min_value",
            "session.truncation.retention_ratio",
        ),
        (
            {"type": "retention_ratio", "retention_ratio": 0.5, "token_limits": {"post_instructions": -1}},
            "integer_below_min_value",
            "session.truncation.token_limits.post_instructions",
        ),
    ],
)
def test_truncation_out_of_range_is_refused_with_openai_bound_codes(
    truncation: Any, code: str, param: str
) -> None:
    config = SessionConfig(model="m", voice="default")
    with pytest.raises(ProtocolViolation) as caught:
        apply_session_update(
            config, _truncation_update(truncation), voice_locked=False, resolve=lambda n: n, beta=False
        )
    assert (caught.value.code, caught.value.param) == (code, param)
