"""A session's configuration from a GA ``session`` object: the one path for ``session.update`` and for the
configuration an ephemeral key carries into every session it opens (realtime/http/client_secrets.py).

Both validate the same way (field checks of realtime/wire/session_config.py, voice names, a forced tool that
must be among the tools), so a configuration accepted when a key is minted is exactly one a ``session.update``
would have produced.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from realtime.session.tool_calls import check_tool_choice, realtime_tool_choice
from realtime.wire.client_events import SessionUpdate
from realtime.wire.session_config import SessionConfig, apply_session_update, resolve_voice
from realtime.wire.transcription_session import TranscriptionSessionUpdate, apply_transcription_update

SESSION_VOICE_PARAM = "session.audio.output.voice"


def voice_resolver(accepted: Collection[str], param: str) -> Callable[[str], str]:
    """Check a requested voice name against ``accepted``; the name is kept and echoed as the client wrote it
    (the speech layer maps it to a registered voice).

    The returned function raises `ProtocolViolation` (``invalid_value`` on ``param``) for an unknown name.
    """

    def resolve(name: str) -> str:
        return resolve_voice(name, accepted, param)

    return resolve


def updated_config(
    config: SessionConfig,
    update: SessionUpdate | TranscriptionSessionUpdate,
    *,
    voices: Collection[str],
    voice_locked: bool = False,
    beta: bool = False,
) -> SessionConfig:
    """``config`` with ``update`` applied, or `ProtocolViolation` and ``config`` stays as it was.

    Args:
        config: the configuration in force.
        update: a decoded ``session.update`` (or a minted key's ``session``, decoded the same way); a
            transcription session's update applies only its fields (the caller checks the session's type).
        voices: the voice names a client may ask for.
        voice_locked: the session has produced audio, so its voice can no longer change.
        beta: the session speaks beta (temperature is clamped instead of refused).
    """
    if isinstance(update, TranscriptionSessionUpdate):
        return apply_transcription_update(config, update.session, update.extensions)
    updated = apply_session_update(
        config,
        update.session,
        voice_locked=voice_locked,
        resolve=voice_resolver(voices, SESSION_VOICE_PARAM),
        beta=beta,
        extensions=update.extensions,
    )
    check_tool_choice(updated.tools, realtime_tool_choice(updated.tool_choice), "session.tool_choice")
    return updated
