"""Drive our in-process ``sglang-engine`` backend on the tiny checkpoint and report what it streamed.

Runs as its own process (``python -m tests.support.sglang.engine_probe MODEL_DIR``) with the CPU rig's environment
(`tests.support.sglang.worker.sglang_env`): an ``sglang.Engine`` owns scheduler/detokenizer subprocesses and binds
process-wide state (docs/SGLANG.md §6.5), so it must not live inside the pytest process. The backend builds its Engine
with ``skip_tokenizer_init`` and ``incremental_streaming_output``, so this also covers SGLang's incremental (delta)
``output_ids`` mode, which the session HTTP server (cumulative mode) does not.

Prints one JSON object per case on stdout:
``{"case", "ids", "finish", "prompt_tokens", "completion_tokens", "chunks", "stream_mode", ...}``.

When the checkpoint folder holds ``model.safetensors`` (`tests.support.sglang.tiny_checkpoint.write_tiny_weights`), the
Engine loads it through the plugin's ``load_weights`` instead of using dummy weights, so the greedy ids can be
compared with a transformers reference on the same weights.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from realtime.backends.base import FinishReason, GenerationInput, PromptTurn, SamplingParams, TokenChunk
from realtime.backends.sglang.engine import SGLangEngineBackend, SGLangEngineConfig
from realtime.backends.sglang.prompt import PromptBuilder
from step_audio2_sglang import audio
from tests.support.sglang.tiny_checkpoint import WEIGHTS_FILE

MAX_TOTAL_TOKENS = 8192
SHORT = 6
LONG = 4000
ABORT_AFTER_CHUNKS = 3
INPUT_RATE = 24_000  # the Realtime input rate: the prompt builder resamples to 16 kHz
SPEECH_SAMPLES = 36_000  # 1.5 s
TONE_AMPLITUDE = 3000.0
TONE_STEP = 5.0
ENGINE_ARGS: dict[str, object] = {
    "device": "cpu",
    "max_total_tokens": MAX_TOTAL_TOKENS,
    "random_seed": 0,
    "mm_processor_worker_num": 1,
    "log_level": "error",
    "sleep_on_idle": True,  # an idle scheduler otherwise spins a whole core while the HTTP workers start
}


def _report(
    case: str, chunks: list[TokenChunk], backend: SGLangEngineBackend, request: GenerationInput
) -> None:
    final = chunks[-1]
    ids = [token_id for chunk in chunks for token_id in chunk.ids]
    finish = final.finish_reason.value if final.finish_reason else None
    record: dict[str, Any] = {
        "case": case,
        "ids": ids,
        "finish": finish,
        "prompt_tokens": final.prompt_tokens,
        "completion_tokens": final.completion_tokens,
        "chunks": len(chunks),
        "stream_mode": backend.last_stream_mode.value,
    }
    # The expected prompt length, computed by the plugin's own formula from the prompt our builder sends.
    prompt = PromptBuilder(backend.vocab, backend.text_codec).build(request)
    clips = [block.num_samples for block in prompt.audio]
    record["sent_prompt_ids"] = len(prompt.input_ids)
    record["expected_prompt_tokens"] = audio.expected_prompt_tokens(len(prompt.input_ids), clips)
    print(json.dumps(record), flush=True)


def greedy_requests() -> dict[str, GenerationInput]:
    """The greedy probe requests by case (the test rebuilds their prompts for its reference)."""
    greedy = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=SHORT, repetition_penalty=1.0)
    tone = np.sin(np.arange(SPEECH_SAMPLES) / TONE_STEP) * TONE_AMPLITUDE
    speech = PromptTurn(role="user", audio_pcm16=tone.astype("<i2").tobytes(), audio_sample_rate=INPUT_RATE)
    text = PromptTurn(role="user", text="Hello there")
    return {
        "text": GenerationInput(rid="engine-text", turns=[text], sampling=greedy),
        "audio": GenerationInput(rid="engine-audio", turns=[speech], sampling=greedy),
    }


async def _probe(model_dir: str) -> None:
    args = dict(ENGINE_ARGS)
    if not (Path(model_dir) / WEIGHTS_FILE).is_file():
        args["load_format"] = "dummy"
    backend = SGLangEngineBackend(SGLangEngineConfig(model_path=model_dir, engine_args=args))
    await backend.start()
    try:
        for case, request in greedy_requests().items():
            _report(case, [chunk async for chunk in backend.generate(request)], backend, request)

        long = SamplingParams(max_new_tokens=LONG)
        cancel = GenerationInput(
            rid="engine-abort", turns=[PromptTurn(role="user", text="talk")], sampling=long
        )
        chunks: list[TokenChunk] = []
        async for chunk in backend.generate(cancel):
            chunks.append(chunk)
            if len(chunks) == ABORT_AFTER_CHUNKS:
                await backend.abort("engine-abort")
        _report("abort", chunks, backend, cancel)
        assert chunks[-1].finish_reason is FinishReason.ABORT
    finally:
        await backend.aclose()


def main(model_dir: str) -> int:
    """Run the probe cases; a failure exits non-zero with the traceback on stderr."""
    asyncio.run(_probe(str(Path(model_dir))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
