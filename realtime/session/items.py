"""Conversation items <-> what the model sees: client items to `Item`s, items to prompt turns, truncation.

Pure functions over realtime/session/conversation.py records; no I/O.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from collections.abc import Iterable

from realtime.audio import PCM_RATE, AudioFormat, wire_to_pcm16
from realtime.backends.base import PromptTurn, TextCodec
from realtime.errors import CODE_INVALID_VALUE, CODE_MISSING_PARAMETER, CODE_NULL, ProtocolViolation
from realtime.session.tool_calls import call_text
from realtime.wire.client_events import ConversationItemModel
from realtime.wire.records import UNUSED_CONTENT, ContentPart, Item, new_id
from streaming_parser import AudioTokenParser, TextTokens, VocabLayout

MS_PER_AUDIO_CODE = 40  # Step-Audio-2 audio codes run at 25 Hz
MS_PER_SECOND = 1000


def item_from_client(model: ConversationItemModel, input_format: AudioFormat) -> Item:
    """Turn a validated client item into our record (client ids kept, missing ids generated).

    ``input_image`` parts are kept as sent (OpenAI accepts them) but never reach the prompt (`prompt_turns`).

    Raises:
        ProtocolViolation: content of an unknown type, audio that is not valid base64, empty parts.
    """
    item_id = model.id or new_id("item")
    if model.type == "function_call":
        return Item(
            id=item_id,
            kind="function_call",
            call_id=model.call_id or new_id("call"),
            name=model.name,
            arguments=model.arguments,
        )
    if model.type == "function_call_output":
        return Item(id=item_id, kind="function_call_output", call_id=model.call_id, output=model.output)
    parts: list[ContentPart] = []
    for index, content in enumerate(model.content):
        param = f"item.content[{index}]"
        kind = getattr(content, "type", None)
        if kind == "input_text" or (kind is None and model.role == "system"):
            parts.append(
                ContentPart("input_text", text=_required(getattr(content, "text", None), f"{param}.text"))
            )
        elif kind == "output_text":
            parts.append(
                ContentPart("output_text", text=_required(getattr(content, "text", None), f"{param}.text"))
            )
        elif kind == "output_audio":
            transcript = getattr(content, "transcript", None)
            parts.append(ContentPart("output_audio", transcript=_required(transcript, f"{param}.transcript")))
        elif kind == "input_audio":
            parts.append(
                _input_audio(
                    getattr(content, "audio", None), getattr(content, "transcript", None), input_format, param
                )
            )
        elif kind == "input_image" and model.role == "user":  # kept for retrieve; the model cannot see it
            image_url = _required(getattr(content, "image_url", None), f"{param}.image_url")
            parts.append(
                ContentPart("input_image", image_url=image_url, detail=getattr(content, "detail", None))
            )
        else:
            raise ProtocolViolation(
                CODE_INVALID_VALUE,
                f"Invalid value: '{kind}'. This content type is not supported.",
                f"{param}.type",
            )
    spoken = model.role == "assistant" and any(p.kind == "output_audio" for p in parts)
    return Item(id=item_id, kind="message", role=model.role, content=parts, spoken=spoken)


def user_audio_item(wire: bytes, fmt: AudioFormat) -> Item:
    """The user item a commit creates from buffered wire audio."""
    wire_to_pcm16(wire, fmt, "audio")  # whole samples
    part = ContentPart("input_audio", audio=wire, audio_format=fmt)
    return Item(id=new_id("item"), kind="message", role="user", content=[part])


def _input_audio(audio: str | None, transcript: str | None, fmt: AudioFormat, param: str) -> ContentPart:
    if audio is None:
        return ContentPart("input_audio", transcript=_required(transcript, f"{param}.audio"))
    try:
        wire = b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolViolation(
            CODE_INVALID_VALUE, "Invalid value: audio is not valid base64.", f"{param}.audio"
        ) from None
    wire_to_pcm16(wire, fmt, f"{param}.audio")  # whole samples
    return ContentPart("input_audio", transcript=transcript, audio=wire, audio_format=fmt)


def _required(value: str | None, param: str) -> str:
    if value is None:
        raise ProtocolViolation(CODE_MISSING_PARAMETER, f"Missing required parameter: '{param}'.", param)
    return value


def prompt_turns(items: Iterable[Item]) -> list[PromptTurn]:
    """The conversation as the backend's prompt turns, oldest first (see `prompt_turns_with_ids`)."""
    return [turn for turn, _ in prompt_turns_with_ids(items)]


def prompt_turns_with_ids(items: Iterable[Item]) -> list[tuple[PromptTurn, str]]:
    """The conversation as the backend's prompt turns, oldest first, each with the id of its item.

    A function call the model wrote is already inside its reply's raw ``output_ids``; other calls (made by
    the client, or whose reply is gone) become an assistant turn in the model's ``<tool_call>`` format.
    Function outputs become ``tool`` turns. Every item gives at most one turn. User audio is carried as audio; a
    transcript is the text form of an audio part only when its samples are gone (`_text_form`). Content the
    model cannot use (`UNUSED_CONTENT`: images) is left out; a message holding nothing else gives no turn.
    """
    items = list(items)
    names = {item.call_id: item.name for item in items if item.kind == "function_call"}
    written = {call for item in items for call in item.calls_in_output_ids}
    turns: list[tuple[PromptTurn, str]] = []
    for item in items:
        if item.kind == "function_call":
            if item.id not in written:  # a client-made call, or its reply was deleted or cut before it
                text = call_text(item.name or "", item.arguments or "")
                turns.append((PromptTurn(role="assistant", text=text), item.id))
        elif item.kind == "function_call_output":
            turns.append((PromptTurn(role="tool", text=item.output, name=names.get(item.call_id)), item.id))
        elif item.role is not None:
            if item.content and all(p.kind in UNUSED_CONTENT for p in item.content):
                continue  # only content the model cannot use (an image): nothing to say
            text = "".join(_text_form(p) for p in item.content)
            audio = b"".join(chunk for chunk in (p.pcm16 for p in item.content) if chunk)
            rate = next((p.pcm_rate for p in item.content if p.kind == "input_audio" and p.audio), PCM_RATE)
            turn = PromptTurn(
                role=item.role,
                text=text or None,
                audio_pcm16=audio or None,
                audio_sample_rate=rate,
                output_ids=item.output_ids,
                spoken=item.spoken,
            )
            turns.append((turn, item.id))
    return turns


def _text_form(part: ContentPart) -> str:
    """What a part contributes as text: its text, or the transcript of audio the prompt does not carry.

    User audio whose samples are kept is heard by the model itself: its transcript (from the client or the
    input transcription) would only repeat it, and would change the prompt once a transcription lands.
    """
    if part.text is not None:
        return part.text
    if part.kind == "input_audio" and part.pcm16:
        return ""
    return part.transcript or ""


def sent_audio_ms(item: Item) -> int:
    """Milliseconds of assistant audio sent for ``item`` (rounded up, so a client's own count never exceeds it)."""
    return -(-item.audio_samples * MS_PER_SECOND // PCM_RATE)


def check_truncate(item: Item, content_index: int, audio_end_ms: int) -> None:
    """Refuse a ``conversation.item.truncate`` of ``item`` that OpenAI refuses.

    Raises:
        ProtocolViolation: not an assistant audio message, a content index other than 0, or an
            ``audio_end_ms`` outside the audio sent so far.
    """
    if item.role != "assistant" or not item.content or item.content[0].kind != "output_audio":
        raise ProtocolViolation(
            CODE_INVALID_VALUE, "Only assistant messages with audio can be truncated.", "item_id"
        )
    if content_index != 0:
        raise ProtocolViolation(
            CODE_INVALID_VALUE, "Invalid value: content_index must be 0.", "content_index"
        )
    sent = sent_audio_ms(item)
    if audio_end_ms < 0 or audio_end_ms > sent:  # OpenAI sends this one with code and param null
        raise ProtocolViolation(
            CODE_NULL, f"Audio content of {sent}ms is already shorter than {audio_end_ms}ms"
        )


def truncate_item(
    item: Item, audio_end_ms: int, fmt: AudioFormat, vocab: VocabLayout, codec: TextCodec
) -> None:
    """Cut an assistant audio item at ``audio_end_ms``: its audio, its transcript and its stored output ids.

    With the raw output ids known, the heard transcript is the spoken text emitted before the first unheard
    audio code (codes are 40 ms each, docs/PROTOCOL.md §6.3); otherwise the transcript is cut in
    proportion to the audio heard.
    """
    part = item.content[0]
    total_ms = sent_audio_ms(item)
    if item.output_ids is not None:
        kept = _ids_heard(item.output_ids, audio_end_ms // MS_PER_AUDIO_CODE, vocab)
        if len(kept) < len(item.output_ids):
            item.calls_in_output_ids = ()  # calls come after the speech: cut off with it
        item.output_ids = kept
        part.transcript = _spoken_text(kept, vocab, codec)
    elif part.transcript and audio_end_ms <= 0:
        part.transcript = ""
    elif part.transcript and total_ms > audio_end_ms:
        part.transcript = part.transcript[: len(part.transcript) * audio_end_ms // total_ms]
    if part.audio is not None:
        keep = audio_end_ms * fmt.sample_rate // MS_PER_SECOND * fmt.bytes_per_sample
        part.audio = part.audio[:keep]
    item.audio_samples = min(item.audio_samples, audio_end_ms * PCM_RATE // MS_PER_SECOND)


def _ids_heard(ids: tuple[int, ...], heard_codes: int, vocab: VocabLayout) -> tuple[int, ...]:
    codes = 0
    for index, token in enumerate(ids):
        if vocab.audio_code(token) is not None:
            if codes == heard_codes:
                return ids[:index]
            codes += 1
    return ids


def _spoken_text(ids: tuple[int, ...], vocab: VocabLayout, codec: TextCodec) -> str:
    parser = AudioTokenParser(vocab, starts_in_speech=True)
    spoken: list[int] = []
    for event in [*parser.feed(ids), *parser.flush()]:
        if isinstance(event, TextTokens) and event.spoken:
            spoken.extend(event.ids)
    return codec.decode(spoken)
