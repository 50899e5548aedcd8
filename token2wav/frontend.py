"""Voice-prompt frontend: wav -> prompt tokens, speaker embedding and prompt mel (docs/TOKEN2WAV.md §2).

`PromptFrontend.from_dir(model_dir)` loads the two front models of a token2wav directory:

* `speech_tokenizer_v2_25hz.onnx` through the `s3tokenizer` package: its ONNX-to-torch converter
  (`s3tokenizer.onnx2torch`) reads the initialisers and the weights go into a torch `S3TokenizerV2`, exactly
  what `s3tokenizer.load_model(path)` does. Unlike `load_model`, the model dimensions are read from the
  weight shapes instead of being the package defaults, so the same loader also accepts the small random
  tokenizer that `make-dummy --size tiny` writes; for the released file the inferred dimensions are the
  defaults (1280 wide, 20 heads, 6 blocks).
* `campplus.onnx` through onnxruntime on CPU (one intra-op thread, graph optimisation ALL), input name read
  from the session.

`extract(wav)` returns `VoiceFeatures`; results are kept in a small LRU keyed by the SHA-256 of the decoded
PCM and its sample rate, so the same voice (file or array) is computed once.

Thread-safety: one frontend may be shared; `extract` serialises on an internal lock (it runs once per voice,
never on the per-chunk path).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import s3tokenizer
import torch
import torchaudio.compliance.kaldi as kaldi
from s3tokenizer.model_v2 import ModelConfig, S3TokenizerV2

from token2wav.audio_io import (
    AudioSource,
    PromptAudio,
    channel_mean,
    check_usable,
    first_channel,
    read_prompt_audio,
)
from token2wav.errors import ModelLoadError, Token2WavError, VoiceError

CAMPPLUS_FILE = "campplus.onnx"
TOKENIZER_FILE = "speech_tokenizer_v2_25hz.onnx"
# s3tokenizer picks the model family from a substring of this name; "v2" selects S3TokenizerV2.
_TOKENIZER_NAME = "speech_tokenizer_v2_25hz"
_TOKENIZER_HEAD_DIM = 64  # fixed by S3TokenizerV2's rotary table (precompute_freqs_cis(64, ...))

TOKENIZER_SAMPLE_RATE = 16_000
SPEAKER_SAMPLE_RATE = 16_000
SPEAKER_FBANK_BINS = 80
SPEAKER_EMBED_DIM = 192
CODEBOOK_SIZE = 6561  # 3**8 FSQ codes

MEL_SAMPLE_RATE = 24_000
MEL_N_FFT = 1920
MEL_HOP = 480
MEL_BINS = 80
MEL_FMIN = 0.0
MEL_FMAX = 8000.0
MEL_MAG_EPS = 1e-9  # inside the sqrt of the STFT magnitude
MEL_LOG_FLOOR = 1e-5  # log(max(x, floor))
TOKEN_MEL_RATIO = 2  # mel frames per token: the prompt mel is forced to exactly 2 x prompt tokens

DEFAULT_CACHE_SIZE = 4  # voices are few and fixed per deployment; vllm-omni keeps 4 too


@dataclass(frozen=True, eq=False)
class VoiceFeatures:
    """Conditioning features of one voice prompt. All tensors are on CPU; treat them as read-only.

    Attributes:
        prompt_tokens: int64 `[1, Tp]`, S3 tokenizer v2 codes in 0..6560 (25 Hz).
        spk_emb: float32 `[1, 192]`, raw CAM++ embedding (the flow L2-normalises it).
        prompt_mel: float32 `[1, 2*Tp, 80]`, natural-log mel at 24 kHz, 50 frames per second.
        content_hash: SHA-256 hex of the decoded prompt PCM and its sample rate.
        duration_s: prompt length in seconds.
    """

    prompt_tokens: torch.Tensor
    spk_emb: torch.Tensor
    prompt_mel: torch.Tensor
    content_hash: str
    duration_s: float

    @property
    def num_tokens(self) -> int:
        """Tp, the number of prompt tokens."""
        return int(self.prompt_tokens.shape[1])


def slaney_mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """librosa-compatible Slaney mel filterbank (`htk=False`, `norm="slaney"`), float32 `[n_mels, n_fft//2+1]`.

    Computed in float64 like librosa and cast at the end, so the values match `librosa.filters.mel`.
    """
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_points = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)
    hz_points = _mel_to_hz(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, np.newaxis] - fft_freqs[np.newaxis, :]
    lower = -ramps[:-2] / widths[:-1, np.newaxis]
    upper = ramps[2:] / widths[1:, np.newaxis]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2 : n_mels + 2] - hz_points[:n_mels]))[:, np.newaxis]  # equal-area norm
    return torch.from_numpy(weights.astype(np.float32))


_SLANEY_F_SP = 200.0 / 3.0  # Hz per mel in the linear region
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    if hz < _SLANEY_MIN_LOG_HZ:
        return hz / _SLANEY_F_SP
    return _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP + float(np.log(hz / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    min_log_mel = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP
    linear = _SLANEY_F_SP * mels
    logarithmic = _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (mels - min_log_mel))
    return np.where(mels >= min_log_mel, logarithmic, linear)


_MEL_BASIS = slaney_mel_basis(MEL_SAMPLE_RATE, MEL_N_FFT, MEL_BINS, MEL_FMIN, MEL_FMAX)
_MEL_WINDOW = torch.hann_window(MEL_N_FFT)


def prompt_mel_spectrogram(wave_24k: torch.Tensor) -> torch.Tensor:
    """Matcha/HiFi-GAN log-mel of a 24 kHz mono wave (docs/TOKEN2WAV.md §2.2).

    Args:
        wave_24k: float32 `[frames]` at 24 kHz.

    Returns:
        float32 `[T, 80]` with `T = frames // 480` (reflect padding of (n_fft - hop) / 2 on both sides,
        `center=False`).
    """
    pad = (MEL_N_FFT - MEL_HOP) // 2
    padded = torch.nn.functional.pad(wave_24k[None, None, :], (pad, pad), mode="reflect")[0, 0]
    spec = torch.stft(
        padded,
        MEL_N_FFT,
        hop_length=MEL_HOP,
        win_length=MEL_N_FFT,
        window=_MEL_WINDOW,
        center=False,
        return_complex=True,
    )
    magnitude = torch.sqrt(spec.real.square() + spec.imag.square() + MEL_MAG_EPS)
    mel = torch.log(torch.clamp(_MEL_BASIS @ magnitude, min=MEL_LOG_FLOOR))
    return mel.T.contiguous()


def align_prompt_mel(mel: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Force `[T, 80]` to exactly `TOKEN_MEL_RATIO * num_tokens` frames (docs/TOKEN2WAV.md §2.3).

    Longer: truncate the end. Shorter: repeat the last frame.
    """
    target = TOKEN_MEL_RATIO * num_tokens
    if mel.shape[0] >= target:
        return mel[:target]
    repeats = mel[-1:].expand(target - mel.shape[0], mel.shape[1])
    return torch.cat([mel, repeats], dim=0)


def speaker_fbank(wave_16k: torch.Tensor) -> torch.Tensor:
    """Kaldi fbank with cepstral mean normalisation, the CAM++ input. `[frames]` -> `[T, 80]`.

    See docs/TOKEN2WAV.md §2.2.
    """
    feats = kaldi.fbank(
        wave_16k[None, :],
        num_mel_bins=SPEAKER_FBANK_BINS,
        dither=0.0,
        sample_frequency=SPEAKER_SAMPLE_RATE,
    )
    normalised: torch.Tensor = feats - feats.mean(dim=0, keepdim=True)
    return normalised


def load_speech_tokenizer(path: Path, device: str | torch.device = "cpu") -> S3TokenizerV2:
    """Build the S3 tokenizer v2 from its ONNX file, with dimensions inferred from the weights.

    Raises:
        ModelLoadError: the file is not an S3 tokenizer v2 export.
    """
    try:
        weights = s3tokenizer.onnx2torch(str(path), None, False)
    except Exception as exc:  # the converter asserts on unexpected graphs
        raise ModelLoadError(f"{path}: not a speech tokenizer v2 ONNX file ({exc!r})") from None
    try:
        width, n_mels, _ = weights["encoder.conv1.weight"].shape
        layers = 1 + max(int(key.split(".")[2]) for key in weights if key.startswith("encoder.blocks."))
    except (KeyError, ValueError, IndexError) as exc:
        raise ModelLoadError(f"{path}: speech tokenizer weights are incomplete ({exc!r})") from None
    config = ModelConfig(
        n_mels=int(n_mels),
        n_audio_state=int(width),
        n_audio_head=int(width) // _TOKENIZER_HEAD_DIM,
        n_audio_layer=layers,
        n_codebook_size=CODEBOOK_SIZE,
    )
    model = S3TokenizerV2(_TOKENIZER_NAME, config)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path}: speech tokenizer weights do not fit S3TokenizerV2: {exc}") from None
    return model.to(device).eval()


def _campplus_session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"{path}: cannot load the CAM++ speaker model ({exc})") from None


class PromptFrontend:
    """Computes and caches `VoiceFeatures` for voice prompts. See the module docstring."""

    def __init__(
        self,
        tokenizer: S3TokenizerV2,
        campplus: onnxruntime.InferenceSession,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._tokenizer = tokenizer
        self._campplus = campplus
        self._campplus_input = campplus.get_inputs()[0].name
        self._cache: OrderedDict[str, VoiceFeatures] = OrderedDict()
        self._cache_size = max(1, cache_size)
        self._lock = threading.Lock()

    @classmethod
    def from_dir(
        cls,
        model_dir: str | Path,
        device: str | torch.device = "cpu",
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> PromptFrontend:
        """Load the tokenizer (on `device`) and CAM++ (CPU) from a token2wav model directory."""
        root = Path(model_dir)
        for name in (TOKENIZER_FILE, CAMPPLUS_FILE):
            if not (root / name).is_file():
                raise ModelLoadError(f"{root}: missing {name} (not a token2wav model directory?)")
        tokenizer = load_speech_tokenizer(root / TOKENIZER_FILE, device)
        return cls(tokenizer, _campplus_session(root / CAMPPLUS_FILE), cache_size=cache_size)

    def extract(self, wav: AudioSource | PromptAudio) -> VoiceFeatures:
        """Features of a voice prompt, from the LRU cache when the same PCM was seen before.

        Args:
            wav: a file path, a `(samples, sample_rate)` pair (see `read_prompt_audio`) or decoded audio.

        Raises:
            VoiceError: unreadable, silent, < 1 s or > 30 s (wrong rates are resampled, channels reduced).
        """
        audio = wav if isinstance(wav, PromptAudio) else read_prompt_audio(wav)
        key = audio.content_hash()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            check_usable(audio)
            features = self._compute(audio, key)
            self._cache[key] = features
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            return features

    @torch.inference_mode()
    def _compute(self, audio: PromptAudio, key: str) -> VoiceFeatures:
        wave_16k = first_channel(audio, TOKENIZER_SAMPLE_RATE)
        tokens = self._tokens(wave_16k)
        if tokens.shape[1] == 0:
            raise VoiceError(f"voice prompt {audio.source}: the speech tokenizer produced no tokens")
        spk = self._speaker_embedding(wave_16k)
        mel = prompt_mel_spectrogram(channel_mean(audio, MEL_SAMPLE_RATE))
        mel = align_prompt_mel(mel, int(tokens.shape[1]))
        return VoiceFeatures(
            prompt_tokens=tokens,
            spk_emb=spk,
            prompt_mel=mel[None].contiguous(),
            content_hash=key,
            duration_s=audio.duration_s,
        )

    def _tokens(self, wave_16k: torch.Tensor) -> torch.Tensor:
        device = self._tokenizer.device
        mel = s3tokenizer.log_mel_spectrogram(wave_16k.to(device))
        mels, mel_lens = s3tokenizer.padding([mel])
        codes, code_lens = self._tokenizer.quantize(mels.to(device), mel_lens.to(device))
        tokens: torch.Tensor = codes[:, : int(code_lens[0])].to(device="cpu", dtype=torch.int64)
        return tokens.contiguous()

    def _speaker_embedding(self, wave_16k: torch.Tensor) -> torch.Tensor:
        feats = speaker_fbank(wave_16k)[None].numpy().astype(np.float32)
        (embedding,) = self._campplus.run(None, {self._campplus_input: feats})[:1]
        out = torch.from_numpy(np.asarray(embedding, dtype=np.float32).reshape(1, -1).copy())
        if out.shape[1] != SPEAKER_EMBED_DIM:
            raise Token2WavError(f"CAM++ returned {out.shape[1]} values, expected {SPEAKER_EMBED_DIM}")
        return out

    def cached_hashes(self) -> list[str]:
        """Content hashes currently cached, least recently used first (for tests and metrics)."""
        with self._lock:
            return list(self._cache)
