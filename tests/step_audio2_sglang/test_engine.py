"""Our ``sglang-engine`` backend on a real in-process ``sglang.Engine`` (plugin model, CPU, dummy weights).

The Engine runs in its own process (`tests.support.sglang.engine_probe`, see there why); the backend configures it with
``skip_tokenizer_init`` and ``incremental_streaming_output``, so this is also the test of SGLang's incremental
(delta) ``output_ids`` mode. The session HTTP server covers the default cumulative mode.
"""

from __future__ import annotations

import pytest

from tests.step_audio2_sglang.conftest import EngineProbe
from tests.support.sglang.engine_probe import LONG, SHORT, greedy_requests
from tests.support.sglang.reference import reference_greedy

# Generous per-test limit: the first test of a session also pays for the SGLang start-up (minutes on a busy CI box).
pytestmark = [pytest.mark.sglang, pytest.mark.slow, pytest.mark.timeout(900)]


def test_engine_backend_streams_incremental_ids_audio_and_abort(engine_probe: EngineProbe) -> None:
    records, wall_s = engine_probe.records()
    print(f"\nEngine probe (start + 3 requests + shutdown): {wall_s:.1f} s")

    text = records["text"]
    assert text["finish"] == "length"
    assert text["completion_tokens"] == SHORT and len(text["ids"]) == SHORT  # type: ignore[arg-type]
    assert text["chunks"] == SHORT, "incremental mode: one new id per chunk"
    assert text["stream_mode"] == "incremental"
    assert text["prompt_tokens"] == text["sent_prompt_ids"] == text["expected_prompt_tokens"]

    spoken = records["audio"]
    print(
        f"Engine prompt_tokens check: sent {spoken['sent_prompt_ids']}, expected "
        f"{spoken['expected_prompt_tokens']}, got {spoken['prompt_tokens']}"
    )
    assert spoken["prompt_tokens"] == spoken["expected_prompt_tokens"]
    assert spoken["prompt_tokens"] > spoken["sent_prompt_ids"]  # type: ignore[operator]
    assert spoken["finish"] == "length"

    # Real (seeded random) weights under the released key names went through the plugin's load_weights:
    # SGLang's greedy ids equal a transformers reference on the same weights, with and without audio.
    for case, request in greedy_requests().items():
        expected = reference_greedy(engine_probe.checkpoint, request, SHORT)
        print(f"greedy ids {case}: SGLang {records[case]['ids']} reference {expected}")
        assert records[case]["ids"] == expected, case

    aborted = records["abort"]
    assert aborted["finish"] == "abort"
    assert aborted["completion_tokens"] < LONG  # type: ignore[operator]
