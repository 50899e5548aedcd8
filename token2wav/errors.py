"""Typed errors of the token2wav package.

Every bad input that reaches `token2wav` (codes out of range, unusable voice prompts, malformed model files)
raises one of these, with a message that says what was wrong and what is accepted, instead of failing deep
inside torch. They derive from `ValueError` so callers that only know "bad argument" still catch them.
"""

from __future__ import annotations


class Token2WavError(ValueError):
    """Base class of every error raised by `token2wav` for bad input or a bad model directory."""


class InvalidCodes(Token2WavError):
    """Audio codes outside 0..6560, or an empty code list where codes are required."""


class VoiceError(Token2WavError):
    """A voice prompt that cannot be used: unreadable, silent, too short or too long."""


class ConfigError(Token2WavError):
    """A model configuration file (flow.yaml, config.yaml) that is malformed or unsupported.

    The message names the file, the YAML path and the offending key.
    """


class ModelLoadError(Token2WavError):
    """A model directory or checkpoint that does not match the expected layout (missing file, bad keys)."""


class StreamError(Token2WavError):
    """A streaming call on a stream in the wrong state (for example a push after finish)."""
