"""`realtime bench token2wav`: streaming Token2Wav speed on this machine, with random weights.

A model directory is made once with `make_dummy_model_dir` (tiny or full size) in a cache folder, or
`--model-dir` points at a real one. The voice is `--prompt-seconds` of random prompt features (tokens,
mel, speaker embedding), primed once; each utterance length in `--seconds` is decoded as one stream that
receives its codes window by window, as an LLM would deliver them.

Reported per length: time to first PCM (stream start plus the first window's decode), per-chunk time (median, flow/HiFT
split) for the steady hop, real-time factor, per-stream state size, process peak memory, and with
`--baseline` the same figures for baselines on the same weights in the same process, printed as ratios
(ours / baseline): `reference` re-enacts the reference's streaming decoder (token2wav/baseline.py: per-response
priming, concatenated and copied caches, hop 25; its windows run interleaved with ours), `naive` re-decodes
the whole utterance so far offline for every chunk, prompt included, then keeps only the new samples. Per-chunk
cost must not grow with the length of the past: compare the lengths.

With `--arms`, the cost per step by batch size of the decoder's execution arms instead
(realtime/bench/token2wav_steps.py).

Size: just over 400 lines: the utterance benchmark, its two same-run baselines and its table belong together.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from realtime.bench import token2wav_steps as steps_bench

HELP = "streaming Token2Wav speed: time to first PCM, per-chunk time, RTF, growth with length"
DESCRIPTION = __doc__ or HELP

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamvoice" / "bench"
SAMPLE_RATE = 24000
TOKENS_PER_SECOND = 25
MEL_FRAMES_PER_TOKEN = 2
MEL_BINS = 80
SPK_DIM = 192
VOCAB = 6561
SEED = 1234
PROMPT_MEL_MEAN, PROMPT_MEL_STD = -5.0, 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `realtime bench token2wav`."""
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny", help="random-weight model size")
    parser.add_argument("--model-dir", type=Path, default=None, help="a real token2wav directory instead")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where dummy models are kept")
    parser.add_argument("--first-chunk", type=int, default=10, help="first hop in codes")
    parser.add_argument("--chunk", type=int, default=25, help="steady hop in codes")
    parser.add_argument(
        "--seconds", type=float, nargs="+", default=[1, 10, 30, 60], help="utterance lengths to decode"
    )
    parser.add_argument("--prompt-seconds", type=float, default=9.0, help="voice prompt length")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="weights and activations dtype (half precision is for GPUs; fp32 is the parity reference)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    parser.add_argument(
        "--baseline",
        nargs="?",
        const="all",
        choices=("reference", "naive", "all"),
        default=None,
        help="also time, on the same weights in the same run: 'reference' = the reference's streaming "
        "algorithm (re-primes per response, concatenated caches, hop 25), interleaved with ours; 'naive' = "
        "recompute everything per chunk; 'all' (the default when no value is given) = both",
    )
    steps_bench.add_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _model_dir(args: argparse.Namespace) -> Path:
    if args.model_dir is not None:
        return Path(args.model_dir)
    from token2wav.dummy import make_dummy_model_dir

    target = Path(args.cache_dir) / f"token2wav-{args.size}"
    if not (target / "hift.pt").is_file():
        _log(f"writing a {args.size} random-weight model to {target} (once)")
        make_dummy_model_dir(target, args.size, seed=0)
    return target


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; print a table (or JSON) to stdout."""
    if "torch" not in sys.modules:
        # Idle OpenMP workers sleep instead of spinning: on a shared 2-core machine spinning threads make a
        # 2-thread chunk several times slower whenever another process runs. Must precede `import torch`.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import numpy as np
    import torch

    from token2wav import ChunkSchedule, Token2Wav

    torch.set_num_threads(max(1, args.threads))
    dtype = getattr(torch, args.dtype)
    root = _model_dir(args)
    t0 = time.perf_counter()
    t2w = Token2Wav.from_dir(root, args.device, dtype, load_frontend=False)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(SEED)
    prompt_tokens = max(3, round(args.prompt_seconds * TOKENS_PER_SECOND))
    tokens = torch.from_numpy(rng.integers(0, VOCAB, (1, prompt_tokens)))
    mel = torch.from_numpy(
        (rng.standard_normal((1, MEL_FRAMES_PER_TOKEN * prompt_tokens, MEL_BINS)) * PROMPT_MEL_STD)
        + PROMPT_MEL_MEAN
    ).float()
    spk = torch.from_numpy(rng.standard_normal((1, SPK_DIM))).float()
    t0 = time.perf_counter()
    voice = t2w.voice_from_features(tokens, mel, spk, "bench")
    _sync(t2w.device)
    prime_s = time.perf_counter() - t0
    _log(f"loaded in {load_s:.1f}s, voice primed in {prime_s:.1f}s ({prompt_tokens} prompt codes)")
    schedule = ChunkSchedule(first_hop_tokens=args.first_chunk, hop_tokens=args.chunk)
    if args.arms:
        return _run_steps(args, t2w, voice, prompt_tokens, rng, load_s, prime_s)
    t2w.warmup(voice)
    if t2w.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(t2w.device)

    reference = None
    if args.baseline in ("reference", "all"):
        from token2wav.baseline import ReferenceStyleDecoder

        reference = ReferenceStyleDecoder(t2w)  # one per model, warmed like ours: no allocation in timed runs
        reference.warmup(voice)
    rows: list[dict[str, Any]] = []
    for seconds in args.seconds:
        n_codes = max(1, round(seconds * TOKENS_PER_SECOND))
        codes = [int(c) for c in rng.integers(0, VOCAB, n_codes)]
        rows.append(_measure(t2w, voice, schedule, codes, seconds, args.baseline, reference))
        _log(json.dumps(rows[-1]))
    result: dict[str, Any] = {
        "benchmark": "token2wav",
        **_header(args, t2w),
        "first_chunk": args.first_chunk,
        "chunk": args.chunk,
        "load_s": round(load_s, 3),
        "voice_prime_s": round(prime_s, 3),
        "voice_state_mb": round(voice.primed.nbytes() / 1e6, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "rows": rows,
    }
    if t2w.device.type == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(t2w.device) / 1e6, 1)
    print(json.dumps(result, indent=2) if args.json else _table(result))
    return 0


def _header(args: argparse.Namespace, t2w: Any) -> dict[str, Any]:
    import torch

    return {
        "size": args.size if args.model_dir is None else str(args.model_dir),
        "device": str(t2w.device),
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "cpu": platform.processor() or platform.machine(),
        "prompt_seconds": args.prompt_seconds,
    }


def _run_steps(
    args: argparse.Namespace, t2w: Any, voice: Any, prompt_codes: int, rng: Any, load_s: float, prime_s: float
) -> int:
    """`--arms`: the per-step cost table (realtime/bench/token2wav_steps.py) instead of the utterance table."""

    def codes(n: int) -> list[int]:
        return [int(c) for c in rng.integers(0, VOCAB, n)]

    figures = {"load_s": round(load_s, 3), "voice_prime_s": round(prime_s, 3)}
    return steps_bench.run(args, t2w, voice, prompt_codes, codes, {**_header(args, t2w), **figures}, _log)


def _measure(
    t2w: Any,
    voice: Any,
    schedule: Any,
    codes: list[int],
    seconds: float,
    baseline: str | None,
    reference_decoder: Any = None,
) -> dict[str, Any]:
    """Decode `codes` as one stream fed window by window, with the requested baselines on the same codes.

    Time to first PCM counts the stream's start (`Token2Wav.start`) and the decode of every window until the
    first one that emits audio. With the reference-style baseline, its windows (hop 25) run interleaved with
    ours, one of each in turn, so that a drift in the machine's speed during the run weighs on both sides of
    each ratio.
    """
    t0 = time.perf_counter()
    stream = t2w.start(voice, schedule)
    _sync(t2w.device)
    start_s = time.perf_counter() - t0
    reference = (
        _ReferenceRun(reference_decoder, voice, codes, t2w.device) if reference_decoder is not None else None
    )
    first_pcm_s: float | None = None
    state_mb = 0.0
    busy_s = start_s
    fed = 0
    windows = schedule.plan(len(codes))
    cpu_per_window: list[float] = []
    for index, (_, end, last) in enumerate(windows):
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        if last:
            out = t2w.push(stream, codes[fed:]) + t2w.finish(stream)
            fed = len(codes)
        else:
            out = t2w.push(stream, codes[fed:end])
            fed = end
        _sync(t2w.device)
        busy_s += time.perf_counter() - t0
        if out and first_pcm_s is None:
            first_pcm_s = busy_s
        cpu_per_window.append(time.process_time() - cpu0)
        state_mb = max(state_mb, (stream.flow.dit.nbytes() + _encoder_bytes(stream)) / 1e6)
        if reference is not None:
            reference.step(index)
    if not stream.finished:
        t2w.finish(stream)
    if reference is not None:
        reference.step(None)
    total_s = busy_s
    if first_pcm_s is None:
        first_pcm_s = total_s
    timings = stream.timings
    steady = [t for t in timings[1:] if t.tokens == schedule.hop_tokens + schedule.lookahead_tokens]
    pick = steady or timings
    row: dict[str, Any] = {
        "seconds": seconds,
        "codes": len(codes),
        "chunks": len(timings),
        "start_ms": round(start_s * 1000, 3),
        "first_pcm_s": round(first_pcm_s, 3),
        "first_chunk_s": round(timings[0].flow_s + timings[0].hift_s, 3),
        "chunk_s_median": round(statistics.median(t.flow_s + t.hift_s for t in pick), 3),
        "chunk_s_last": round(pick[-1].flow_s + pick[-1].hift_s, 3),
        "flow_s_median": round(statistics.median(t.flow_s for t in pick), 3),
        "hift_s_median": round(statistics.median(t.hift_s for t in pick), 3),
        "rtf": round(total_s / (len(codes) / TOKENS_PER_SECOND), 3),
        # Process CPU seconds (all threads) per steady chunk: on a busy shared machine wall time inflates,
        # CPU time much less; on an idle one wall ~ cpu / threads.
        "chunk_cpu_s_median": round(statistics.median(cpu_per_window[1:-1] or cpu_per_window), 3),
        "first_chunk_cpu_s": round(cpu_per_window[0], 3),
        "stream_state_mb": round(state_mb, 1),
    }
    if schedule.first_hop_tokens != schedule.hop_tokens and len(codes) >= schedule.hop_tokens + 3:
        # Same-run comparison: time to first PCM when the first hop equals the steady hop.
        from token2wav import ChunkSchedule

        flat = ChunkSchedule(first_hop_tokens=schedule.hop_tokens, hop_tokens=schedule.hop_tokens)
        t0 = time.perf_counter()
        flat_stream = t2w.start(voice, flat)
        t2w.push(flat_stream, codes[: flat.hop(0) + flat.lookahead_tokens])
        _sync(t2w.device)
        row["first_pcm_flat_s"] = round(time.perf_counter() - t0, 3)
        row["first_pcm_speedup"] = round(row["first_pcm_flat_s"] / row["first_pcm_s"], 2)
    if reference is not None:
        row.update(reference.figures(row))
    if baseline in ("naive", "all"):
        row.update(_naive(t2w, voice, schedule, codes))
        row["first_pcm_ratio"] = round(row["first_pcm_s"] / row["naive_first_pcm_s"], 3)
        row["chunk_ratio_at_end"] = round(row["chunk_s_last"] / row["naive_chunk_s_at_end"], 3)
        # The naive decoder's last chunk is `Token2Wav.decode` of the whole utterance: the offline path.
        row["offline_rtf"] = round(row["naive_chunk_s_at_end"] / seconds, 3)
    return row


class _ReferenceRun:
    """The reference-style decoder on the same codes, one window per `step` (token2wav/baseline.py)."""

    def __init__(self, decoder: Any, voice: Any, codes: list[int], device: Any) -> None:
        from token2wav import ChunkSchedule

        self.decoder = decoder
        self.codes = codes
        self.schedule = ChunkSchedule.reference()
        self.windows = self.schedule.plan(len(codes))
        self.done = 0
        self.state_mb = 0.0
        self.cpu_s: list[float] = []  # process CPU seconds per window
        t0 = time.perf_counter()
        self.stream = self.decoder.start(voice)  # the reference primes the voice for every response
        _sync(device)
        self.prime_s = time.perf_counter() - t0

    def step(self, index: int | None) -> None:
        """Run windows up to `index` (all that remain when None)."""
        last_index = len(self.windows) - 1 if index is None else min(index, len(self.windows) - 1)
        while self.done <= last_index:
            start, end, last = self.windows[self.done]
            cpu0 = time.process_time()
            self.decoder.run_chunk(self.stream, self.codes[start:end], last)
            self.cpu_s.append(time.process_time() - cpu0)
            self.state_mb = max(self.state_mb, self.stream.att.numel() * self.stream.att.element_size() / 1e6)
            self.done += 1

    def figures(self, ours: dict[str, Any]) -> dict[str, Any]:
        """Its timings and our ratios to them (ours / reference: below 1 is faster)."""
        timings = self.stream.timings
        steady = [
            t for t in timings[1:] if t.tokens == self.schedule.hop_tokens + self.schedule.lookahead_tokens
        ] or timings
        first = timings[0].flow_s + timings[0].hift_s
        chunk = statistics.median(t.flow_s + t.hift_s for t in steady)
        return {
            "ref_prime_s": round(self.prime_s, 3),
            "ref_first_pcm_s": round(first, 3),
            "ref_chunk_s_median": round(chunk, 3),
            "ref_flow_s_median": round(statistics.median(t.flow_s for t in steady), 3),
            "ref_state_mb": round(self.state_mb, 1),
            "first_pcm_vs_ref": round(ours["first_pcm_s"] / first, 3),
            "first_pcm_vs_ref_primed": round(ours["first_pcm_s"] / (first + self.prime_s), 3),
            "chunk_vs_ref": round(ours["chunk_s_median"] / chunk, 3),
            # CPU seconds are far less disturbed by other processes than wall seconds on a shared machine.
            "ref_chunk_cpu_s_median": round(statistics.median(self.cpu_s[1:-1] or self.cpu_s), 3),
            "chunk_cpu_vs_ref": round(
                ours["chunk_cpu_s_median"] / statistics.median(self.cpu_s[1:-1] or self.cpu_s), 3
            ),
        }


def _encoder_bytes(stream: Any) -> int:
    enc = stream.flow.encoder
    return sum(kv.k.numel() * kv.k.element_size() * 2 for kv in [*enc.layers, *enc.up_layers])


def _naive(t2w: Any, voice: Any, schedule: Any, codes: list[int]) -> dict[str, Any]:
    """Recompute-everything decoder: each chunk re-runs the offline flow + HiFT over all codes so far.

    Only the first chunk and the chunk at the full length are timed (the cost of the others lies between);
    the latter is the offline decode of the whole utterance, reported as `offline_rtf` (seconds of compute
    per second of audio).
    """
    windows = schedule.plan(len(codes))
    first_end = windows[0][1]
    timed: dict[str, Any] = {}
    for name, end in (("naive_first_pcm_s", first_end), ("naive_chunk_s_at_end", len(codes))):
        start = time.perf_counter()
        t2w.decode(codes[:end], voice)
        _sync(t2w.device)
        timed[name] = round(time.perf_counter() - start, 3)
    return timed


def _table(result: dict[str, Any]) -> str:
    head = (
        f"token2wav bench: size={result['size']} device={result['device']} dtype={result['dtype']} "
        f"threads={result['threads']} prompt={result['prompt_seconds']}s first_chunk={result['first_chunk']} "
        f"chunk={result['chunk']}\n"
        f"load {result['load_s']}s, voice priming {result['voice_prime_s']}s (once per voice), "
        f"primed voice state {result['voice_state_mb']} MB, peak RSS {result['peak_rss_mb']} MB"
    )
    if "peak_cuda_mb" in result:
        head += f", peak CUDA {result['peak_cuda_mb']} MB"
    cols = [
        ("seconds", "len s"),
        ("chunks", "chunks"),
        ("start_ms", "start ms"),
        ("first_pcm_s", "1st PCM s"),
        ("first_pcm_flat_s", "1st PCM s (hop=chunk)"),
        ("first_pcm_speedup", "1st speedup"),
        ("chunk_s_median", "chunk s"),
        ("flow_s_median", "flow s"),
        ("hift_s_median", "hift s"),
        ("chunk_s_last", "last chunk s"),
        ("chunk_cpu_s_median", "chunk CPU s"),
        ("rtf", "RTF"),
        ("stream_state_mb", "state MB"),
        ("ref_prime_s", "ref prime s"),
        ("ref_first_pcm_s", "ref 1st s"),
        ("ref_chunk_s_median", "ref chunk s"),
        ("ref_state_mb", "ref state MB"),
        ("first_pcm_vs_ref", "1st vs ref"),
        ("first_pcm_vs_ref_primed", "1st vs ref+prime"),
        ("chunk_vs_ref", "chunk vs ref"),
        ("chunk_cpu_vs_ref", "chunk CPU vs ref"),
        ("naive_first_pcm_s", "naive 1st s"),
        ("naive_chunk_s_at_end", "naive chunk@end s"),
        ("first_pcm_ratio", "1st ratio"),
        ("chunk_ratio_at_end", "chunk ratio@end"),
        ("offline_rtf", "offline RTF"),
    ]
    present = [(k, label) for k, label in cols if any(k in row for row in result["rows"])]
    widths = [max(len(label), 8) for _, label in present]
    lines = [head, "  ".join(label.rjust(w) for (_, label), w in zip(present, widths, strict=True))]
    for row in result["rows"]:
        lines.append(
            "  ".join(str(row.get(k, "")).rjust(w) for (k, _), w in zip(present, widths, strict=True))
        )
    return "\n".join(lines)
