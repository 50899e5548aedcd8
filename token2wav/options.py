"""How the decoder computes, as opposed to what: every choice here gives the same audio within the parity
tolerances of docs/TOKEN2WAV.md §7.2 (tests/token2wav/test_options.py holds each one to it), and differs
only in speed (docs/TOKEN2WAV.md §8.1-§8.3, measured by `realtime bench token2wav --arms`).
"""

from __future__ import annotations

from dataclasses import dataclass

from token2wav.dit_attention import ATTENTION_MODES, AttentionMode

__all__ = ["ATTENTION_MODES", "AttentionMode", "DecodeOptions"]
from token2wav.errors import Token2WavError


@dataclass(frozen=True)
class DecodeOptions:
    """Execution choices of a `Token2Wav` (set with `Token2Wav.set_options`).

    Attributes:
        attention: the DiT's attention over a batch's caches: ``per-stream`` kernels (the default: on the CPU
            the copies of ``ragged`` cost more than its saved calls) or one ``ragged`` call
            (token2wav/dit_attention.py).
        batched_source: the NSF excitation of a batch in one pass, computed per frame where the reference
            computes per sample (token2wav/nsf.py); False runs the reference's per-stream path.
        compile: run the DiT pass through `torch.compile` (token2wav/compiled.py). The graph is built by
            `Token2Wav.warmup` (a minute or more, once per process), never inside a response.
        compile_mode: `torch.compile` mode of that graph: None (inductor with frozen weights) or
            "reduce-overhead" (adds CUDA graphs on a GPU; `realtime bench gpu-check` measures it).
    """

    attention: AttentionMode = "per-stream"
    batched_source: bool = True
    compile: bool = False
    compile_mode: str | None = None

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_MODES:
            raise Token2WavError(f"attention must be one of {ATTENTION_MODES}, got {self.attention!r}")

    @classmethod
    def before(cls) -> DecodeOptions:
        """The implementation as it was before these options existed: the benchmark's yardstick."""
        return cls(attention="per-stream", batched_source=False, compile=False)
