"""`Token2Wav`: the public decoder (Contract 2): load a model directory, prime voices, decode codes to PCM.

`from_dir` reads the released layout unchanged: `flow.yaml` (safe tagged reader), `flow.pt` and `hift.pt`
(strict), and `campplus.onnx` + `speech_tokenizer_v2_25hz.onnx` for voice prompts. A directory holding the
oracle's plain `config.yaml` instead of `flow.yaml` also loads (tests).

Threading: all methods are meant for ONE worker thread. The model holds weights and constants only; each
`Token2WavStream` holds its own state, so streams interleave freely. A `Voice` is immutable and shared.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from token2wav import compiled
from token2wav.batch import StreamStep, Window, decode_steps, run_windows
from token2wav.cfm import make_noise
from token2wav.config import (
    F0PredictorConfig,
    FlowConfig,
    HiftConfig,
    SamplerConfig,
    read_flow_yaml,
    read_reference_config,
)
from token2wav.errors import InvalidCodes, ModelLoadError, StreamError, VoiceError
from token2wav.flow import CausalMaskedDiffWithXvec, PrimedFlow, load_flow_state_dict
from token2wav.hift import HiFTGenerator, load_hift_state_dict
from token2wav.options import DecodeOptions
from token2wav.stream import ChunkSchedule, Token2WavStream

FLOW_YAML = "flow.yaml"
REFERENCE_CONFIG = "config.yaml"
FLOW_WEIGHTS = "flow.pt"
HIFT_WEIGHTS = "hift.pt"
SAMPLE_RATE = 24000
VOICE_CACHE_SIZE = 4
DEFAULT_STREAM_SEED = 0


@dataclass(frozen=True, eq=False)
class Voice:
    """A primed voice: prompt features plus the flow caches after the prompt pass. Immutable, shareable.

    Attributes:
        key: content hash of the prompt (or a caller-given name).
        prompt_tokens: `[1, Tp]` int64 prompt codes.
        prompt_mel: `[1, 2*Tp, 80]` prompt mel.
        spk_emb: `[1, 192]` raw speaker embedding.
        primed: flow caches over the prompt; every stream starts from a deep copy.
    """

    key: str
    prompt_tokens: torch.Tensor
    prompt_mel: torch.Tensor
    spk_emb: torch.Tensor
    primed: PrimedFlow


def check_codes(
    codes: Sequence[int] | np.ndarray | torch.Tensor, vocab_size: int, *, allow_empty: bool = False
) -> list[int]:
    """Validate audio codes (0 .. vocab_size-1) and return them as a list of ints.

    Raises:
        InvalidCodes: empty (unless allowed), not integers, or out of range.
    """
    values = codes.tolist() if isinstance(codes, np.ndarray | torch.Tensor) else list(codes)
    if not values and not allow_empty:
        raise InvalidCodes("no audio codes given")
    out: list[int] = []
    for i, c in enumerate(values):
        if isinstance(c, bool) or not isinstance(c, int | np.integer):
            raise InvalidCodes(f"audio code #{i} is {c!r}, not an integer")
        if not 0 <= int(c) < vocab_size:
            raise InvalidCodes(f"audio code #{i} = {int(c)} is outside 0..{vocab_size - 1}")
        out.append(int(c))
    return out


def _hift_config_from_weights(state: dict[str, torch.Tensor]) -> HiftConfig:
    """hift.pt has no config: read the two widths that differ between sizes from the weight shapes."""

    def first(*names: str) -> torch.Tensor:
        for name in names:
            for prefix in ("generator.", ""):
                if prefix + name in state:
                    return state[prefix + name]
        raise ModelLoadError(f"{HIFT_WEIGHTS}: none of {names} found (not a HiFT checkpoint?)")

    pre = first("conv_pre.weight_v", "conv_pre.parametrizations.weight.original1", "conv_pre.weight")
    cond = first(
        "f0_predictor.condnet.0.weight_v",
        "f0_predictor.condnet.0.parametrizations.weight.original1",
        "f0_predictor.condnet.0.weight",
    )
    return HiftConfig(
        base_channels=int(pre.shape[0]), f0_predictor=F0PredictorConfig(cond_channels=int(cond.shape[0]))
    )


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ModelLoadError(f"{path.parent}: missing {path.name}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt or non-tensor file
        raise ModelLoadError(f"{path}: cannot load ({exc})") from None
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path}: expected a state dict")
    return state


class Token2Wav:
    """Codes -> 24 kHz speech for Step-Audio-2, offline and streaming. See the module docstring."""

    sample_rate: int = SAMPLE_RATE

    def __init__(
        self,
        flow: CausalMaskedDiffWithXvec,
        hift: HiFTGenerator,
        *,
        frontend: object | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        options: DecodeOptions | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.flow = flow.to(device=self.device, dtype=dtype).eval()
        # The noise buffer stays float32 (it is cast per slice) but lives on the device.
        self.flow.decoder.noise = self.flow.decoder.noise.to(self.device)
        self.hift = hift.to(device=self.device).eval()  # the vocoder runs in float32
        self.frontend = frontend
        self._voices: OrderedDict[str, Voice] = OrderedDict()
        self.window_batches: Counter[int] = Counter()  # batched chunk calls by number of windows
        self.options = DecodeOptions()
        self._graphs: dict[
            str | None, compiled.CompiledDecoder
        ] = {}  # by compile mode, made when first asked
        self.set_options(options or DecodeOptions())

    @classmethod
    def from_dir(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        noise: torch.Tensor | None = None,
        deterministic_source: bool = False,
        load_frontend: bool = True,
        options: DecodeOptions | None = None,
    ) -> Token2Wav:
        """Load a token2wav model directory.

        Args:
            path: directory with flow.yaml (or the oracle's config.yaml), flow.pt, hift.pt and, for
                `load_voice`, campplus.onnx and speech_tokenizer_v2_25hz.onnx.
            device: torch device for the flow and the vocoder.
            dtype: flow dtype (float32, bfloat16, float16); the vocoder stays float32.
            noise: CFM noise buffer `[1, 80, N]` to use instead of `randn` seeded 0.
            deterministic_source: zero NSF phases and noise (oracle parity).
            load_frontend: load the prompt models (skip for array-only voices).
            options: how to compute (token2wav.options); the default is `DecodeOptions()`.

        Raises:
            ModelLoadError / ConfigError: missing files, malformed config, keys or shapes that do not match.
        """
        root = Path(path)
        sampler = SamplerConfig()
        config: FlowConfig
        if (root / FLOW_YAML).is_file():
            config = read_flow_yaml(root / FLOW_YAML)
        elif (root / REFERENCE_CONFIG).is_file():
            reference = read_reference_config(root / REFERENCE_CONFIG)
            config, sampler = reference.flow, replace(reference.sampler, noise_seed=sampler.noise_seed)
        else:
            raise ModelLoadError(f"{root}: missing {FLOW_YAML} (not a token2wav model directory?)")
        flow = CausalMaskedDiffWithXvec(
            config,
            sampler,
            noise if noise is not None else make_noise(sampler.noise_frames, sampler.noise_seed),
        )
        load_flow_state_dict(flow, _load_weights(root / FLOW_WEIGHTS))
        hift_state = _load_weights(root / HIFT_WEIGHTS)
        hift = HiFTGenerator(_hift_config_from_weights(hift_state), deterministic_source=deterministic_source)
        load_hift_state_dict(hift, hift_state)
        frontend = None
        if load_frontend and (root / "campplus.onnx").is_file():
            from token2wav.frontend import PromptFrontend

            frontend = PromptFrontend.from_dir(root, device)
        return cls(flow, hift, frontend=frontend, device=device, dtype=dtype, options=options)

    # ------------------------------------------------------------------ voices

    @torch.inference_mode()
    def voice_from_features(
        self, prompt_tokens: torch.Tensor, prompt_mel: torch.Tensor, spk_emb: torch.Tensor, key: str
    ) -> Voice:
        """Prime a voice from its features (`[1, Tp]` codes, `[1, 2*Tp, 80]` mel, `[1, 192]` embedding).

        Raises:
            VoiceError: shapes that do not fit, or fewer than 3 prompt tokens.
        """
        tokens = torch.as_tensor(prompt_tokens).to(torch.int64)
        mel = torch.as_tensor(prompt_mel, dtype=torch.float32)
        spk = torch.as_tensor(spk_emb, dtype=torch.float32)
        if tokens.dim() != 2 or tokens.shape[0] != 1:
            raise VoiceError(f"prompt tokens must be [1, Tp], got {tuple(tokens.shape)}")
        if mel.dim() != 3 or mel.shape[0] != 1 or mel.shape[2] != self.flow.config.output_size:
            raise VoiceError(f"prompt mel must be [1, 2*Tp, 80], got {tuple(mel.shape)}")
        if tuple(spk.shape) != (1, self.flow.config.spk_embed_dim):
            raise VoiceError(f"speaker embedding must be [1, 192], got {tuple(spk.shape)}")
        check_codes(tokens[0].tolist(), self.flow.config.vocab_size)
        primed = self.flow.prime(tokens, mel, spk)
        return Voice(key=key, prompt_tokens=tokens, prompt_mel=mel, spk_emb=spk, primed=primed)

    def load_voice(self, wav: str | Path | tuple[np.ndarray, int]) -> Voice:
        """Voice from a prompt wav (file or (samples, rate)); features and primed caches are cached (LRU).

        Raises:
            VoiceError: unusable prompt, or a model directory without the prompt models.
        """
        if self.frontend is None:
            raise VoiceError("this model was loaded without the prompt models (campplus/speech tokenizer)")
        from token2wav.frontend import PromptFrontend

        assert isinstance(self.frontend, PromptFrontend)
        features = self.frontend.extract(wav)
        voice = self._voices.get(features.content_hash)
        if voice is not None:
            self._voices.move_to_end(features.content_hash)
            return voice
        voice = self.voice_from_features(
            features.prompt_tokens, features.prompt_mel, features.spk_emb, features.content_hash
        )
        self._voices[voice.key] = voice
        while len(self._voices) > VOICE_CACHE_SIZE:
            self._voices.popitem(last=False)
        return voice

    # ------------------------------------------------------------------ offline

    @torch.inference_mode()
    def decode_mel(self, codes: Sequence[int], voice: Voice) -> torch.Tensor:
        """Offline flow only: mel `[1, 80, 2N]` (float32) for all codes at once."""
        values = check_codes(codes, self.flow.config.vocab_size)
        tokens = torch.tensor([values], dtype=torch.int64)
        mel = self.flow.inference(tokens, voice.prompt_tokens, voice.prompt_mel, voice.spk_emb)
        return mel.float()

    @torch.inference_mode()
    def decode(self, codes: Sequence[int], voice: Voice) -> np.ndarray:
        """Offline decode: float32 PCM at 24 kHz, 960 samples per code, one vocoder pass."""
        mel = self.decode_mel(codes, voice)
        speech, _ = self.hift.inference(mel)
        return speech[0].to(device="cpu", dtype=torch.float32).numpy()

    # ------------------------------------------------------------------ streaming

    @torch.inference_mode()  # its caches are updated under inference mode: make them inference tensors too
    def start(
        self, voice: Voice, schedule: ChunkSchedule | None = None, *, seed: int = DEFAULT_STREAM_SEED
    ) -> Token2WavStream:
        """A new stream for one response over the voice's primed caches (shared read-only; nothing large is
        copied: the stream's own key buffers are allocated by its first chunk)."""
        sched = schedule or ChunkSchedule()
        max_frames = self.flow.up_rate * sched.max_window_tokens()
        generator = None
        if not self.hift.deterministic_source:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        return Token2WavStream(
            voice_key=voice.key,
            schedule=sched,
            flow=voice.primed.new_stream(max_frames),
            generator=generator,
        )

    def check(self, codes: Sequence[int] | np.ndarray | torch.Tensor) -> list[int]:
        """Validate audio codes for this model (an empty list is allowed). Raises InvalidCodes."""
        return check_codes(codes, self.flow.config.vocab_size, allow_empty=True)

    def push(self, stream: Token2WavStream, codes: Sequence[int]) -> list[np.ndarray]:
        """Add codes; run every chunk that is ready. Returns int16 PCM chunks (possibly none)."""
        if stream.finished:
            raise StreamError("push on a finished stream")
        step = StreamStep(stream, codes)
        decode_steps(self, [step])
        return step.out

    def finish(self, stream: Token2WavStream) -> list[np.ndarray]:
        """End of the response: decode the rest (all pending codes as the final window), int16 PCM."""
        if stream.finished:
            raise StreamError("finish called twice")
        step = StreamStep(stream, finish=True)
        decode_steps(self, [step])
        return step.out

    def step_many(self, steps: Sequence[StreamStep], max_batch: int | None = None) -> None:
        """Several streams' pushes (and ends) in one turn, their ready windows batched; see token2wav/batch.py."""
        decode_steps(self, steps, max_batch)

    @torch.inference_mode()
    def run_chunk(self, stream: Token2WavStream, window: Sequence[int], last: bool) -> np.ndarray:
        """One chunk call (flow + vocoder) on an explicit code window; float32 PCM that is final now."""
        return run_windows(self, [Window(stream, list(window), last)])[0]

    def set_options(self, options: DecodeOptions) -> None:
        """Change how the model computes (not what: token2wav/options.py). Call between chunk calls only.

        The compiled graphs are made once per model and kept when compile is switched off and on again (a
        benchmark alternates between arms); `warmup` builds them.
        """
        self.options = options
        dit = self.flow.decoder.estimator
        dit.attention_mode = options.attention
        self.hift.batched_source = options.batched_source
        if not options.compile:
            compiled.uninstall(dit)
            return
        graphs = self._graphs.get(options.compile_mode)
        if graphs is None or graphs.weights_version != dit.weights_version:
            graphs = self._graphs[options.compile_mode] = compiled.CompiledDecoder(dit, options.compile_mode)
        compiled.install(dit, graphs)

    @property
    def graphs(self) -> compiled.CompiledDecoder | None:
        """The compiled DiT pass in use (None when the options do not compile)."""
        return self._graphs.get(self.options.compile_mode) if self.options.compile else None

    def warmup(self, voice: Voice, codes: Sequence[int] | None = None) -> float:
        """Run throwaway streams (kernels, allocator, compiled graphs); they share nothing with later streams.

        One stream on the reference schedule; with `compile` also two streams batched together with windows
        of different lengths, so that the graph a response needs is built here and not inside a response
        (token2wav/compiled.py).

        Returns:
            Wall seconds spent (with `compile`, mostly compiling, the first time in a process).
        """
        start = time.perf_counter()
        graphs = self.graphs
        if graphs is not None:
            graphs.building = True
        try:
            window = ChunkSchedule.reference().max_window_tokens()
            stream = self.start(voice, ChunkSchedule.reference())
            self.push(stream, codes if codes is not None else [0] * window)
            self.finish(stream)
            if graphs is not None:
                pair = [self.start(voice, ChunkSchedule.reference(), seed=seed) for seed in range(2)]
                self.step_many(
                    [StreamStep(s, [0] * (window - 2 * i), finish=True) for i, s in enumerate(pair)]
                )
        finally:
            if graphs is not None:
                graphs.building = False
        return time.perf_counter() - start
