"""``POST /v1/chat/completions``: text and spoken chat answers on the streaming reply pipeline.

The request (realtime/http/chat_request.py) becomes one `GenerationInput`: instructions, the tools turn, the
messages as prompt turns, a spoken prefill when ``modalities`` includes ``audio``. The answer is OpenAI's:

- ``stream: false``: one ``chat.completion``; a spoken answer is ``choices[0].message.audio`` = ``{id, data
  (base64 file in audio.format), transcript, expires_at}`` with ``content: null``; text the model wrote outside
  its speech (and every text-only answer) is ``content``; function calls are ``tool_calls`` with
  ``finish_reason: "tool_calls"``. ``usage`` carries ``prompt_tokens_details.audio_tokens`` (input audio at the
  audio encoder's 12.5 tokens/s) and ``completion_tokens_details.audio_tokens`` / ``text_tokens`` (counted from
  the output ids).
- ``stream: true``: ``chat.completion.chunk`` events as the model produces them: ``delta.audio.transcript``
  and ``delta.audio.data`` pieces (each data piece the next bytes of the same file), ``delta.content``,
  ``delta.tool_calls``; then the chunk with ``finish_reason``; with ``stream_options.include_usage`` a last
  chunk with empty ``choices`` and the usage; then ``data: [DONE]``.

A spoken answer's output ids are kept under its ``audio.id`` (realtime/http/audio_store.py) for the next turn.
A client that disconnects stops the reply at once, streaming or not.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from realtime.backends.base import FinishReason, GenerationInput
from realtime.codecs import SpeechFormat, StreamEncoder
from realtime.http.audio_store import AudioStore
from realtime.http.body import parse_request, read_json
from realtime.http.chat_request import (
    AudioOutFormat,
    ChatRequest,
    check_audio_options,
    clean_body,
    prompt_from_messages,
    tools_part,
)
from realtime.http.errors import as_http_error, error_body, error_response
from realtime.http.realtime_ws import SessionCount
from realtime.http.sampling import chat_sampling, fit_to_context
from realtime.http.streaming import (
    DONE,
    AnswerAdmission,
    ClientGone,
    DisconnectAwareStreamingResponse,
    ReplyStream,
    sse_data,
    until_disconnect,
)
from realtime.session.tool_calls import CallArguments, CallFinished, CallStarted, PlainText, ToolCallScanner
from realtime.session.unused_content import UnusedContent
from realtime.speech.reply import AudioChunk, GenerationDone, PipelineEvent, TextDelta, TranscriptDelta
from realtime.speech.runtime import Runtime
from realtime.wire.session_config import resolve_voice
from streaming_parser import VocabLayout

MAX_BODY_BYTES = 32 * 1024 * 1024  # room for several minutes of base64 input audio
AUDIO_INPUT_TOKENS_PER_SECOND = 12.5  # Step-Audio-2's audio encoder output rate
Handler = Callable[[Request], Awaitable[Response]]


class _Answer:
    """Turns one reply's events into chat deltas and the final message. One per request; event-loop only."""

    def __init__(self, speaks: bool, fmt: AudioOutFormat | None, store: AudioStore, sample_rate: int) -> None:
        self.speaks = speaks
        self.audio_id = store.new_id() if speaks else None
        self.expires_at = store.expiry()
        self._encoder = (
            StreamEncoder(SpeechFormat.PCM if fmt == "pcm16" else SpeechFormat(fmt), sample_rate=sample_rate)
            if speaks and fmt is not None
            else None
        )
        self._scanner = ToolCallScanner()
        self._sent_audio_header = False
        self.transcript: list[str] = []
        self.content: list[str] = []
        self.audio: list[bytes] = []
        self.calls: list[dict[str, Any]] = []
        self.done: GenerationDone | None = None

    async def deltas(self, event: PipelineEvent) -> list[dict[str, Any]]:
        """The chunk deltas for one pipeline event (possibly none)."""
        if isinstance(event, TranscriptDelta):
            self.transcript.append(event.text)
            return [{"audio": self._audio_delta(transcript=event.text)}]
        if isinstance(event, AudioChunk) and self._encoder is not None:
            data = await asyncio.to_thread(self._encoder.encode, event.pcm16)
            return self._data_delta(data)
        if isinstance(event, TextDelta):
            return self._scan(self._scanner.feed(event.text))
        if isinstance(event, GenerationDone):
            self.done = event
            out = self._scan(self._scanner.flush())
            if self._encoder is not None:
                out += self._data_delta(await asyncio.to_thread(self._encoder.finish))
            return out
        return []

    @property
    def finish_reason(self) -> str:
        """``tool_calls``, ``length`` or ``stop``."""
        if self.calls:
            return "tool_calls"
        if self.done is not None and self.done.finish is FinishReason.LENGTH:
            return "length"
        return "stop"

    def message(self) -> dict[str, Any]:
        """``choices[0].message`` of a non-streamed answer."""
        text = "".join(self.content)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if text or not self.speaks else None,
            "refusal": None,
            "annotations": [],
        }
        if self.speaks:
            message["audio"] = {
                "id": self.audio_id,
                "data": base64.b64encode(b"".join(self.audio)).decode("ascii"),
                "transcript": "".join(self.transcript),
                "expires_at": self.expires_at,
            }
        if self.calls:
            message["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in self.calls
            ]
        return message

    def _audio_delta(self, **fields: Any) -> dict[str, Any]:
        delta: dict[str, Any] = {"id": self.audio_id, **fields}
        if not self._sent_audio_header:
            delta["expires_at"] = self.expires_at
            self._sent_audio_header = True
        return delta

    def _data_delta(self, data: bytes) -> list[dict[str, Any]]:
        if not data:
            return []
        self.audio.append(data)
        return [{"audio": self._audio_delta(data=base64.b64encode(data).decode("ascii"))}]

    def _scan(self, events: list[Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for event in events:
            if isinstance(event, PlainText):
                self.content.append(event.text)
                out.append({"content": event.text})
            elif isinstance(event, CallStarted):
                call = {"id": f"call_{uuid.uuid4().hex[:24]}", "name": event.name, "arguments": ""}
                self.calls.append(call)
                function = {"name": event.name, "arguments": ""}
                out.append(
                    {
                        "tool_calls": [
                            {
                                "index": len(self.calls) - 1,
                                "id": call["id"],
                                "type": "function",
                                "function": function,
                            }
                        ]
                    }
                )
            elif isinstance(event, CallArguments) and self.calls:
                self.calls[-1]["arguments"] += event.delta
                out.append(
                    {"tool_calls": [{"index": len(self.calls) - 1, "function": {"arguments": event.delta}}]}
                )
            elif isinstance(event, CallFinished) and self.calls:
                self.calls[-1]["arguments"] = event.arguments
        return out


def usage_of(done: GenerationDone | None, vocab: VocabLayout, input_audio_seconds: float) -> dict[str, Any]:
    """OpenAI's chat ``usage`` with audio token details."""
    prompt = done.usage.input_tokens if done is not None else 0
    completion = done.usage.output_tokens if done is not None else 0
    ids = done.output_ids if done is not None else ()
    audio_out = sum(1 for i in ids if vocab.audio_code(i) is not None or i == vocab.audio_pad)
    audio_in = min(prompt, math.ceil(input_audio_seconds * AUDIO_INPUT_TOKENS_PER_SECOND))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": audio_in},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": audio_out,
            "text_tokens": max(0, completion - audio_out),
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_endpoint(
    runtime: Runtime, model: str, sessions: SessionCount, store: AudioStore | None = None
) -> Handler:
    """The ``POST /v1/chat/completions`` handler on ``runtime`` (``model``: the id reported back); each answer
    counts against ``sessions`` while it is generated."""
    audio_store = store if store is not None else AudioStore()

    async def chat(request: Request) -> Response:
        try:
            body = parse_request(ChatRequest, clean_body(await read_json(request, MAX_BODY_BYTES)))
            check_audio_options(body)
            rid = f"chatcmpl_{uuid.uuid4().hex}"
            voice = runtime.voices.default
            if body.audio is not None:
                voice = resolve_voice(body.audio.voice, runtime.voices.accepted_names(), "audio.voice")
            tools = tools_part(body)
            unused = UnusedContent(runtime.metrics, rid, door="chat")
            instructions, turns, audio_seconds = await prompt_from_messages(
                body.messages, audio_store, unused.note_kind
            )
            generation = GenerationInput(
                rid=rid,
                turns=[*tools.turns, *turns],
                instructions="\n".join([instructions, *tools.directives]).strip(),
                speak=body.speaks,
                sampling=chat_sampling(
                    body.max_completion_tokens or body.max_tokens, body.temperature, body.top_p
                ),
            )
            generation = await fit_to_context(runtime, generation)
            fmt = body.audio.format if body.audio else None
            answer = _Answer(body.speaks, fmt, audio_store, runtime.sample_rate)
            admission = await AnswerAdmission.take(
                sessions,
                runtime.decoder_streams,
                speaks=body.speaks,
                wait_s=runtime.config.decoder_wait_seconds,
                metrics=runtime.metrics,
            )
            stream = ReplyStream(runtime.reply(generation, voice=voice), admission)
        except Exception as exc:
            return error_response(exc)
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:29]}"
        created = int(time.time())
        try:
            first = await stream.next()  # a failure before any byte is still an HTTP error
        except Exception as exc:
            stream.close()
            return error_response(exc)
        vocab = runtime.backend.vocab

        def remember() -> None:
            if answer.speaks and answer.done is not None and answer.audio_id is not None:
                transcript = "".join(answer.transcript)
                audio_store.put(answer.audio_id, answer.done.output_ids, transcript, answer.expires_at)

        if not body.stream:
            try:
                await until_disconnect(request, _collect(stream, first, answer))
            except ClientGone:
                return Response(status_code=499)
            except Exception as exc:
                return error_response(exc)
            finally:
                stream.close()
            remember()
            return JSONResponse(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": answer.message(),
                            "finish_reason": answer.finish_reason,
                            "logprobs": None,
                        }
                    ],
                    "usage": usage_of(answer.done, vocab, audio_seconds),
                }
            )

        include_usage = body.stream_options is not None and body.stream_options.include_usage
        base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            payload: dict[str, Any] = {**base, "choices": [choice]}
            if include_usage:
                payload["usage"] = None
            return sse_data(payload)

        async def events() -> AsyncIterator[bytes]:
            try:
                yield chunk({"role": "assistant", "content": None if body.speaks else "", "refusal": None})
                event = first
                while event is not None:
                    for delta in await answer.deltas(event):
                        yield chunk(delta)
                    event = await stream.next()
                remember()
                yield chunk({}, answer.finish_reason)
                if include_usage:
                    yield sse_data(
                        {**base, "choices": [], "usage": usage_of(answer.done, vocab, audio_seconds)}
                    )
                yield DONE
            except Exception as exc:
                error = as_http_error(exc)
                yield sse_data(error_body(error.error_type, error.code, error.message, error.param))
                yield DONE
            finally:
                stream.close()

        return DisconnectAwareStreamingResponse(
            events(),
            send_timeout=runtime.config.send_timeout,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    return chat


async def _collect(stream: ReplyStream, first: PipelineEvent | None, answer: _Answer) -> None:
    event = first
    while event is not None:
        await answer.deltas(event)
        event = await stream.next()
