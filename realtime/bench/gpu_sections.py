"""The sections of `realtime bench gpu-check` (see realtime/bench/gpu_check.py); each returns a JSON-able dict.

Every section loads what it needs itself (a model per dtype, a voice of random prompt features), so a failing
section cannot poison the next one. Times are wall seconds with the device synchronised around them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from token2wav.batch import StreamStep, Window, run_windows
from token2wav.model import Token2Wav, Voice
from token2wav.stream import ChunkSchedule, Token2WavStream

TOKENS_PER_SECOND = 25
SAMPLE_RATE = 24_000
VOCAB = 6561
SEED = 1234
PARITY_PCM_ATOL = 3e-3  # docs/TOKEN2WAV.md §7.2: end-to-end PCM tolerance of the oracle parity
PROMPT_MEL_MEAN, PROMPT_MEL_STD = -5.0, 2.0
MIN_STEADY_ROUNDS = 2


def dummy_dir(cache: Path, quick: bool) -> Path:
    """A random-weight model directory (tiny when `quick`, else full size), written once into `cache`."""
    from token2wav.dummy import make_dummy_model_dir

    target = cache / f"token2wav-{'tiny' if quick else 'full'}"
    if not (target / "hift.pt").is_file():
        make_dummy_model_dir(target, "tiny" if quick else "full", seed=0)
    return target


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _now(device: torch.device) -> float:
    _sync(device)
    return time.perf_counter()


def _load(root: Path, device: torch.device, dtype: torch.dtype = torch.float32) -> Token2Wav:
    # Deterministic NSF source: PCM depends only on the codes and weights, so devices and dtypes compare.
    return Token2Wav.from_dir(root, device, dtype, deterministic_source=True, load_frontend=False)


def _voice(t2w: Token2Wav, prompt_seconds: float, seed: int = SEED) -> Voice:
    rng = np.random.default_rng(seed)
    n = max(3, round(prompt_seconds * TOKENS_PER_SECOND))
    tokens = torch.from_numpy(rng.integers(0, VOCAB, (1, n)))
    mel = torch.from_numpy(rng.standard_normal((1, 2 * n, 80)) * PROMPT_MEL_STD + PROMPT_MEL_MEAN).float()
    spk = torch.from_numpy(rng.standard_normal((1, 192))).float()
    return t2w.voice_from_features(tokens, mel, spk, f"gpu-check-{seed}")


def _codes(seconds: float, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(c) for c in rng.integers(0, VOCAB, max(4, round(seconds * TOKENS_PER_SECOND)))]


def _decode_windows(t2w: Token2Wav, voice: Voice, codes: list[int]) -> list[np.ndarray]:
    """Float PCM per window of the reference schedule."""
    schedule = ChunkSchedule.reference()
    stream = t2w.start(voice, schedule)
    return [
        run_windows(t2w, [Window(stream, codes[a:b], last)])[0] for a, b, last in schedule.plan(len(codes))
    ]


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def _snr_db(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    r, g = np.concatenate(ref), np.concatenate(got)
    noise = float(np.sum((r - g) ** 2))
    return float("inf") if noise == 0 else round(10 * np.log10(float(np.sum(r**2)) / noise), 2)


def parity(root: Path, device: torch.device, prompt_seconds: float) -> dict[str, Any]:
    """Device fp32 against CPU fp32 (alone), and the device's batched path against its lone path."""
    codes = _codes(3.0, SEED + 1)
    cpu = _load(root, torch.device("cpu"))
    oracle = _decode_windows(cpu, _voice(cpu, prompt_seconds), codes)
    del cpu
    dev = _load(root, device)
    voice = _voice(dev, prompt_seconds)
    alone = _decode_windows(dev, voice, codes)
    # The same stream batched with a second one of another voice and other codes.
    schedule = ChunkSchedule.reference()
    other_voice = _voice(dev, prompt_seconds / 2, SEED + 7)
    mine, other = dev.start(voice, schedule), dev.start(other_voice, schedule)
    other_codes = _codes(3.0, SEED + 2)
    batched = []
    for a, b, last in schedule.plan(len(codes)):
        batched.append(
            run_windows(dev, [Window(mine, codes[a:b], last), Window(other, other_codes[a:b], last)])[0]
        )
    device_vs_cpu = _max_diff(alone, oracle)
    batched_vs_alone = _max_diff(batched, alone)
    return {
        "pcm_max_abs_device_vs_cpu": device_vs_cpu,
        "pcm_max_abs_batched_vs_alone": batched_vs_alone,
        "tolerance": PARITY_PCM_ATOL,
        "ok": device_vs_cpu <= PARITY_PCM_ATOL and batched_vs_alone <= PARITY_PCM_ATOL,
    }


def precision(root: Path, device: torch.device, prompt_seconds: float) -> dict[str, Any]:
    """bf16 and fp16 flows against fp32 on the same device (PCM max error and SNR)."""
    codes = _codes(3.0, SEED + 3)
    base = _load(root, device)
    reference = _decode_windows(base, _voice(base, prompt_seconds), codes)
    del base
    out: dict[str, Any] = {}
    for name in ("bfloat16", "float16"):
        try:
            low = _load(root, device, getattr(torch, name))
            got = _decode_windows(low, _voice(low, prompt_seconds), codes)
            out[name] = {
                "pcm_max_abs_vs_fp32": _max_diff(got, reference),
                "snr_db_vs_fp32": _snr_db(reference, got),
            }
        except Exception as exc:  # e.g. a dtype without kernels on this device
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def streaming(root: Path, device: torch.device, prompt_seconds: float, seconds: float) -> dict[str, Any]:
    """One stream, default schedule: first PCM (start included), steady chunk, RTF."""
    t2w = _load(root, device)
    voice = _voice(t2w, prompt_seconds)
    t2w.warmup(voice)
    codes = _codes(seconds, SEED + 4)
    schedule = ChunkSchedule()
    t0 = _now(device)
    stream = t2w.start(voice, schedule)
    start_s = _now(device) - t0
    first: float | None = None
    fed = 0
    for _, end, last in schedule.plan(len(codes)):
        out = t2w.push(stream, codes[fed:end]) + (t2w.finish(stream) if last else [])
        fed = end
        if out and first is None:
            first = _now(device) - t0
    total = _now(device) - t0
    steady = [t.flow_s + t.hift_s for t in stream.timings if t.tokens == schedule.max_window_tokens()]
    return {
        "seconds": seconds,
        "start_ms": round(start_s * 1000, 3),
        "first_pcm_s": round(first or total, 4),
        "steady_chunk_s": round(float(np.median(steady)), 4) if steady else None,
        "rtf": round(total / seconds, 4),
    }


def _round(
    t2w: Token2Wav, streams: list[Token2WavStream], feeds: list[list[int]]
) -> tuple[float, list[bool]]:
    steps = [StreamStep(s, f) for s, f in zip(streams, feeds, strict=True)]
    t0 = _now(t2w.device)
    t2w.step_many(steps)
    return _now(t2w.device) - t0, [bool(step.out) for step in steps]


def batched(
    root: Path,
    device: torch.device,
    prompt_seconds: float,
    counts: list[int],
    seconds: float,
    time_left: Callable[[], float],
) -> dict[str, Any]:
    """N streams decoded together, every round one window each: throughput, TTFA, a late joiner's first PCM."""
    t2w = _load(root, device)
    voice = _voice(t2w, prompt_seconds)
    t2w.warmup(voice)
    schedule = ChunkSchedule()
    out: dict[str, Any] = {}
    # A first window on an idle decoder (best of two), the yardstick for a first window inside a busy batch.
    idle_first = min(
        _round(t2w, [t2w.start(voice, schedule)], [_codes(1.0, SEED + 9)[: schedule.first_hop_tokens + 3]])[0]
        for _ in range(2)
    )
    out["idle_first_pcm_s"] = round(idle_first, 4)
    for n in counts:
        if time_left() <= 0:
            out[str(n)] = {"skipped": "time budget spent"}
            continue
        t0 = _now(device)
        streams = [t2w.start(voice, schedule) for _ in range(n)]
        codes = [_codes(seconds, SEED + 100 + i) for i in range(n)]
        fed = [0] * n
        rounds: list[float] = []
        first: float | None = None
        while fed[0] + streams[0].next_hop() + 3 <= len(codes[0]):
            feeds = []
            for i, s in enumerate(streams):
                need = s.next_hop() + 3 - len(s.pending)
                feeds.append(codes[i][fed[i] : fed[i] + need])
                fed[i] += need
            took, got = _round(t2w, streams, feeds)
            rounds.append(took)
            if first is None and all(got):
                first = _now(device) - t0
        wall = _now(device) - t0
        audio = sum(s.emitted_samples for s in streams) / SAMPLE_RATE
        # A new response joining the running batch: its first window decoded with the others' steady ones.
        joiner = t2w.start(voice, schedule)
        feeds = [codes[i][fed[i] : fed[i] + s.next_hop() + 3 - len(s.pending)] for i, s in enumerate(streams)]
        joined, _ = _round(
            t2w, [*streams, joiner], [*feeds, _codes(1.0, SEED + 9)[: schedule.first_hop_tokens + 3]]
        )
        out[str(n)] = {
            "audio_s_per_s": round(audio / wall, 3),
            "first_pcm_s_all_started_together": round(first or wall, 4),
            "steady_round_s": round(float(np.median(rounds[MIN_STEADY_ROUNDS:] or rounds)), 4),
            "new_stream_first_pcm_s_while_busy": round(joined, 4),
            "new_stream_vs_idle": round(joined / idle_first, 3),
        }
    return out


def memory(root: Path, device: torch.device, prompt_seconds: float) -> dict[str, Any]:
    """Bytes one stream owns after a few chunks and at its bound; CUDA allocator growth per stream."""
    t2w = _load(root, device)
    voice = _voice(t2w, prompt_seconds)
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    streams = [t2w.start(voice) for _ in range(4)]
    for s in streams:
        t2w.push(s, _codes(3.0, SEED + 5))
    after = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    return {
        "voice_shared_mb": round(voice.primed.nbytes() / 1e6, 2),
        "stream_owned_mb_after_3s": round(streams[0].flow.nbytes() / 1e6, 2),
        "stream_dit_mb_after_3s": round(streams[0].flow.dit.nbytes() / 1e6, 2),
        # The DiT part is bounded (prompt + one window of generated keys); the encoder's grows with length.
        "stream_dit_bound_mb": round(streams[0].flow.dit.bound_nbytes() / 1e6, 2),
        "cuda_allocated_mb_per_stream": round((after - before) / 4 / 1e6, 2)
        if device.type == "cuda"
        else None,
    }


def arms(
    root: Path,
    device: torch.device,
    prompt_seconds: float,
    counts: list[int],
    repeats: int,
    compile_arms: bool,
) -> dict[str, Any]:
    """The decoder's execution arms (token2wav.options): PCM parity against the eager arm, cost per step.

    Every arm decodes the same codes on the same weights (deterministic source), one stream batched with
    another voice's stream of other codes and lengths; an arm is `kept` only where its PCM stays within the
    oracle tolerance of the eager yardstick. Then the cost per step of each arm at
    each batch size, arms interleaved (realtime/bench/token2wav_steps.py). The CUDA-graph arm runs on CUDA
    only; the compile arms are skipped with `compile_arms` False.
    """
    from realtime.bench import token2wav_steps as steps_bench
    from token2wav.options import DecodeOptions

    names = ["before", "source", "ragged"]
    if compile_arms:
        names += ["compile", "compile-ragged"]
        if device.type == "cuda":
            names.append("compile-cudagraphs")
    t2w = _load(root, device)
    voice = _voice(t2w, prompt_seconds)
    other_voice = _voice(t2w, prompt_seconds / 2, SEED + 7)
    codes, other_codes = _codes(3.0, SEED + 6), _codes(2.0, SEED + 2)
    out: dict[str, Any] = {"parity": {}}
    yardstick: list[np.ndarray] | None = None
    for name in names:
        t2w.set_options(DecodeOptions(**steps_bench.ARMS[name]))
        warm_s = t2w.warmup(voice)
        pcm = _decode_batched(t2w, (voice, codes), (other_voice, other_codes))
        if yardstick is None:
            yardstick = pcm
        error = _max_diff(pcm, yardstick)
        out["parity"][name] = {
            "pcm_max_abs_vs_before": error,
            "kept": error <= PARITY_PCM_ATOL,
            "warmup_s": round(warm_s, 2),
        }
    kept = [name for name in names if out["parity"][name]["kept"]]
    rng = np.random.default_rng(SEED + 8)

    def random_codes(n: int) -> list[int]:
        return [int(c) for c in rng.integers(0, VOCAB, n)]

    prompt_codes = max(3, round(prompt_seconds * TOKENS_PER_SECOND))
    out["steps"] = steps_bench.measure_steps(
        t2w, voice, kept, counts, ChunkSchedule().hop_tokens, repeats, prompt_codes, random_codes, _quiet
    )
    if device.type != "cuda":
        out["compile-cudagraphs"] = "skipped: CUDA graphs need a CUDA device"
    return out


def _decode_batched(
    t2w: Token2Wav, mine: tuple[Voice, list[int]], other: tuple[Voice, list[int]]
) -> list[np.ndarray]:
    """Float PCM per window of `mine` (reference schedule), each window batched with one of `other`'s."""
    schedule = ChunkSchedule.reference()
    stream, partner = t2w.start(mine[0], schedule), t2w.start(other[0], ChunkSchedule())
    partner_plan = ChunkSchedule().plan(len(other[1]))
    pcm = []
    for i, (a, b, last) in enumerate(schedule.plan(len(mine[1]))):
        windows = [Window(stream, mine[1][a:b], last)]
        if i < len(partner_plan):
            pa, pb, partner_last = partner_plan[i]
            windows.append(Window(partner, other[1][pa:pb], partner_last))
        pcm.append(run_windows(t2w, windows)[0])
    return pcm


def _quiet(_message: str) -> None:
    return None
