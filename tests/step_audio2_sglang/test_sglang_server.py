"""Integration tests against a REAL SGLang 0.5.23 server running our Step-Audio-2 plugin (CPU, dummy weights).

They check what the realtime backends rely on: ``/generate`` streaming of ids, the audio placeholder expansion
reported as ``meta_info.prompt_tokens``, loud errors for malformed audio prompts, and abort by ``rid``.
"""

from __future__ import annotations

import pytest

from step_audio2_sglang import audio
from tests.step_audio2_sglang.conftest import SGLangServer
from tests.support.sglang.sglang_client import abort, generate, stream_chunks, tone_wav_uri

# Generous per-test limit: the first test of a session also pays for the SGLang start-up (minutes on a busy CI box).
pytestmark = [pytest.mark.sglang, pytest.mark.slow, pytest.mark.timeout(900)]

GREEDY = {"temperature": 0.0}
SHORT = 6


def _human_turn(server: SGLangServer, body_ids: list[int]) -> list[int]:
    layout = server.checkpoint.layout
    return [layout.bot, *b"human\n", *body_ids, layout.eot, layout.bot, *b"assistant\n", layout.tts_start]


def _placeholder(server: SGLangServer) -> list[int]:
    layout = server.checkpoint.layout
    return [layout.audio_start, layout.audio_patch, layout.audio_end]


def test_the_plugin_model_serves_not_the_transformers_fallback(sglang_server: SGLangServer) -> None:
    log = sglang_server.log_path.read_text(errors="replace")
    assert "type=StepAudio2ForCausalLM" in log, sglang_server.log_tail()
    assert "TransformersForCausalLM" not in log
    print(f"\nSGLang start-up (spawn -> /model_info answered): {sglang_server.startup_s:.1f} s")


def test_text_prompt_streams_cumulative_output_ids(sglang_server: SGLangServer) -> None:
    prompt = _human_turn(sglang_server, list(b"Hello there"))
    body = {
        "rid": "text-stream-1",
        "input_ids": prompt,
        "sampling_params": {**GREEDY, "max_new_tokens": SHORT},
    }
    chunks = list(stream_chunks(sglang_server.url, body))
    assert chunks, "no chunk before [DONE]"
    previous: list[int] = []
    seen = 0
    new_ids: list[int] = []
    for chunk in chunks:
        ids, meta = chunk["output_ids"], chunk["meta_info"]
        assert meta["id"] == "text-stream-1"
        assert meta["prompt_tokens"] == len(prompt)
        assert ids[: len(previous)] == previous, "default mode must stream cumulative output_ids"
        fresh = meta["completion_tokens"] - seen
        assert 0 <= fresh <= len(ids)
        new_ids.extend(ids[len(ids) - fresh :])
        seen, previous = meta["completion_tokens"], ids
    final = chunks[-1]["meta_info"]
    assert final["finish_reason"] == {"type": "length", "length": SHORT}
    assert all(c["meta_info"]["finish_reason"] is None for c in chunks[:-1])
    assert new_ids == chunks[-1]["output_ids"] and len(new_ids) == SHORT
    # Greedy decoding is deterministic: the same prompt without streaming yields the same ids.
    again = generate(
        sglang_server.url, {"input_ids": prompt, "sampling_params": {**GREEDY, "max_new_tokens": SHORT}}
    )
    assert again.json()["output_ids"] == new_ids


def test_text_prompt_as_text_is_tokenised_with_the_tiny_tokenizer(sglang_server: SGLangServer) -> None:
    text = "<|BOT|>human\nhi<|EOT|><|BOT|>assistant\n"
    response = generate(sglang_server.url, {"text": text, "sampling_params": {**GREEDY, "max_new_tokens": 2}})
    assert response.status_code == 200, response.text
    assert response.json()["meta_info"]["prompt_tokens"] == 1 + len("human\nhi") + 2 + len("assistant\n")


@pytest.mark.parametrize(
    "clip_samples",
    [
        [1],  # one sample: one patch
        [16_000],  # 1 s
        [audio.BLOCK_SAMPLES],  # exactly one 25 s block: 313 patches
        [audio.BLOCK_SAMPLES + 1, 8_000],  # a clip the processor splits into two blocks, then a second clip
    ],
    ids=["1-sample", "1s", "25s", "25s+1-and-0.5s"],
)
def test_audio_prompt_tokens_equal_the_expected_expansion(
    sglang_server: SGLangServer, clip_samples: list[int]
) -> None:
    body_ids: list[int] = []
    for _ in clip_samples:
        body_ids += [*b"listen: ", *_placeholder(sglang_server)]
    prompt = _human_turn(sglang_server, body_ids)
    body = {
        "input_ids": prompt,
        "audio_data": [tone_wav_uri(n) for n in clip_samples],
        "sampling_params": {**GREEDY, "max_new_tokens": 2},
    }
    response = generate(sglang_server.url, body)
    assert response.status_code == 200, response.text
    meta = response.json()["meta_info"]
    expected = audio.expected_prompt_tokens(len(prompt), clip_samples)
    patches = sum(sum(audio.block_patch_counts(n)) for n in clip_samples)
    print(
        f"\nprompt_tokens check {clip_samples}: sent {len(prompt)}, expected {expected}, got {meta['prompt_tokens']}"
    )
    assert meta["prompt_tokens"] == expected
    assert meta.get("audio_tokens") == patches


def test_audio_clip_without_placeholder_is_a_clear_error(sglang_server: SGLangServer) -> None:
    prompt = _human_turn(sglang_server, list(b"no placeholder here"))
    body = {"input_ids": prompt, "audio_data": [tone_wav_uri(1600)], "sampling_params": {"max_new_tokens": 2}}
    response = generate(sglang_server.url, body)
    assert response.status_code == 400
    assert "0 audio placeholders" in response.text and "1 audio clips" in response.text


def test_abort_by_rid_mid_stream_finishes_with_abort(sglang_server: SGLangServer) -> None:
    rid = "abort-mid-stream-1"
    prompt = _human_turn(sglang_server, list(b"talk for a long time"))
    body = {
        "rid": rid,
        "input_ids": prompt,
        "sampling_params": {"temperature": 1.0, "max_new_tokens": 4000, "ignore_eos": True},
    }
    chunks = []
    for index, chunk in enumerate(stream_chunks(sglang_server.url, body)):
        chunks.append(chunk)
        if index == 2:
            assert abort(sglang_server.url, rid) == 200
    final = chunks[-1]["meta_info"]
    assert final["finish_reason"]["type"] == "abort", final
    assert final["completion_tokens"] < 4000
