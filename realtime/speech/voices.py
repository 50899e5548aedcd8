"""Voice registry: voice name -> prompt wav, and the loaded Token2Wav voice state for each.

Voices are prompt recordings; Token2Wav turns each into prompt tokens, speaker embedding, prompt mel and
primed caches (`Token2Wav.load_voice`). The registry only stores names, paths and the loaded handles; loading
runs on the inference worker (`realtime.speech.runtime.Runtime.create` primes every voice at start-up).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Generic, TypeVar

from realtime.errors import SpeechError

DEFAULT_VOICE_NAME = "default"
# OpenAI's voice names: a client may ask for any of them (the Agents SDK sends "ash", newer SDKs "marin"); the
# session echoes the name it was given and the default voice speaks it, unless a voice of that name is
# registered (docs/PROTOCOL.md §4.3).
OPENAI_VOICE_NAMES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)
_ASSET_PACKAGE = "realtime"
_DEFAULT_VOICE_ASSET = ("assets", "voices", "default.wav")

VoiceT = TypeVar("VoiceT")


def default_voice_path() -> Path:
    """Path of the voice shipped with the package (synthesised by us with espeak-ng)."""
    ref = resources.files(_ASSET_PACKAGE).joinpath(*_DEFAULT_VOICE_ASSET)
    return Path(str(ref))


class UnknownVoice(SpeechError):
    """A session asked for a voice the server does not have."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(
            "unknown_voice", f"Unknown voice {name!r}; available voices: {', '.join(sorted(known))}."
        )
        self.name = name


class VoiceRegistry(Generic[VoiceT]):
    """Names to prompt wavs, plus each voice's loaded Token2Wav state once primed.

    Event-loop only: `add`, `set_loaded` and `remove` run at start-up or from the voices API (which registers a
    voice only once it is primed, in one step with no await in between); lookups happen from any task.

    Attributes:
        default: name of the voice used when a session does not pick one.
    """

    def __init__(self, default: str = DEFAULT_VOICE_NAME) -> None:
        self.default = default
        self._paths: dict[str, Path] = {}
        self._loaded: dict[str, VoiceT] = {}

    @classmethod
    def from_specs(
        cls, specs: Iterable[tuple[str, Path]], *, default: str = DEFAULT_VOICE_NAME
    ) -> VoiceRegistry[VoiceT]:
        """The shipped ``default`` voice plus ``specs`` (later names override earlier ones).

        Raises:
            SpeechError: a wav file does not exist (code ``voice_not_found``) or ``default`` is unknown.
        """
        registry: VoiceRegistry[VoiceT] = cls(default=default)
        registry.add(DEFAULT_VOICE_NAME, default_voice_path())
        for name, path in specs:
            registry.add(name, path)
        if default not in registry:
            raise UnknownVoice(default, registry.names())
        return registry

    def add(self, name: str, path: Path) -> None:
        """Register (or replace) a voice by its prompt wav.

        Raises:
            SpeechError: the file does not exist (code ``voice_not_found``).
        """
        if not path.is_file():
            raise SpeechError("voice_not_found", f"Voice {name!r}: no such file {str(path)!r}.")
        self._paths[name] = path
        self._loaded.pop(name, None)

    def remove(self, name: str) -> None:
        """Unregister a voice (responses already running keep their primed state).

        Raises:
            UnknownVoice: ``name`` is not registered.
            SpeechError: ``name`` is the default voice (code ``voice_in_use``).
        """
        self.check(name)
        if name == self.default:
            raise SpeechError("voice_in_use", f"Voice {name!r} is the server's default voice.")
        del self._paths[name]
        self._loaded.pop(name, None)

    def names(self) -> list[str]:
        """Registered voice names, sorted, the default first."""
        rest = sorted(n for n in self._paths if n != self.default)
        return [self.default, *rest] if self.default in self._paths else rest

    def __contains__(self, name: object) -> bool:
        return name in self._paths

    def accepted_names(self) -> frozenset[str]:
        """Every name a client may ask for: the registered voices and OpenAI's names."""
        return frozenset(self._paths) | OPENAI_VOICE_NAMES

    def speaker(self, name: str) -> str:
        """The registered voice that speaks for ``name``: itself, or the default for an OpenAI name."""
        if name not in self._paths and name in OPENAI_VOICE_NAMES:
            return self.default
        return name

    def __len__(self) -> int:
        return len(self._paths)

    def path(self, name: str) -> Path:
        """Prompt wav of ``name``.

        Raises:
            UnknownVoice: ``name`` is not registered (code ``unknown_voice``).
        """
        self.check(name)
        return self._paths[name]

    def check(self, name: str) -> None:
        """Raise `UnknownVoice` (a `SpeechError` with code ``unknown_voice``) if ``name`` is not registered."""
        if name not in self._paths:
            raise UnknownVoice(name, self._paths)

    def set_loaded(self, name: str, voice: VoiceT) -> None:
        """Store the primed Token2Wav voice state of ``name``."""
        self.check(name)
        self._loaded[name] = voice

    def loaded(self, name: str) -> VoiceT | None:
        """The primed voice state of ``name``, or None if not loaded yet."""
        self.check(name)
        return self._loaded.get(name)
