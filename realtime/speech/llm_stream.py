"""Reading one LLM generation: the chunks up to its finish reason, and its ids through the token parser.

Shared by the reply pipeline (realtime/speech/pipeline.py) and input transcription
(realtime/speech/transcribe.py), which both consume a backend's stream the same way: stop at the chunk that
carries the finish reason, always close the backend's stream (closing an unfinished one aborts the LLM request),
and treat a stream that ends without a reason, or an id the parser refuses, as a backend failure.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

from realtime.backends.base import BackendError, GenerationInput, LLMBackend, TokenChunk
from streaming_parser import AudioTokenParser, Event, ParserError


async def generation_chunks(
    backend: LLMBackend, request: GenerationInput
) -> AsyncGenerator[TokenChunk, None]:
    """The chunks of one generation, the last one carrying its finish reason.

    Iterate it inside ``contextlib.aclosing`` so an early exit (a cancel, a failure) closes the backend's
    stream at once.

    Raises:
        BackendError: ``stream_cut`` when the stream ends without a finish reason (plus the backend's own).
    """
    stream = backend.generate(request)
    try:
        async for chunk in stream:
            yield chunk
            if chunk.finish_reason is not None:
                return
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    raise BackendError("stream_cut", "The LLM stream ended without a finish reason.")


def parse_ids(parser: AudioTokenParser, ids: Sequence[int]) -> list[Event]:
    """``parser.feed(ids)``, with an id the parser refuses reported as the backend's failure.

    Raises:
        BackendError: ``protocol_error`` for an invalid token id.
    """
    try:
        return list(parser.feed(ids))
    except ParserError as exc:
        raise BackendError("protocol_error", f"The LLM produced an invalid token id: {exc}") from exc
