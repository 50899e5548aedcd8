"""The reference-style baseline decoder does the reference's work: it reproduces the oracle and our streams."""

from __future__ import annotations

import numpy as np

from tests.token2wav.flow_oracle import (
    PCM_ATOL,
    arrays,
    gen_tokens,
    model,
    one_torch_thread,  # noqa: F401 - autouse fixture
    voice,
)
from token2wav.baseline import ReferenceStyleDecoder
from token2wav.flow import DIT_KEEP_TAIL
from token2wav.stream import ChunkSchedule


def test_reference_style_decoder_reproduces_oracle_chunks() -> None:
    ref = arrays("stream")
    decoder = ReferenceStyleDecoder(model())
    stream = decoder.start(voice())
    codes = gen_tokens()
    lengths = []
    for i, (start, end, last) in enumerate(ChunkSchedule.reference().plan(len(codes))):
        pcm = decoder.run_chunk(stream, codes[start:end], last)
        lengths.append(len(pcm))
        assert float(np.abs(pcm - ref[f"chunk{i}_pcm_f32"]).max()) <= PCM_ATOL
    assert lengths == [20160, 24000, 24000, 15360]
    assert len(stream.timings) == 4


def test_reference_style_decoder_matches_our_stream_over_many_trims() -> None:
    t2w = model()
    rng = np.random.default_rng(7)
    codes = [int(c) for c in rng.integers(0, t2w.flow.config.vocab_size, 180)]
    schedule = ChunkSchedule.reference()
    ours = t2w.start(voice(), schedule)
    decoder = ReferenceStyleDecoder(t2w)
    theirs = decoder.start(voice())
    prompt_frames = theirs.prompt_frames
    for start, end, last in schedule.plan(len(codes)):
        a = t2w.run_chunk(ours, codes[start:end], last)
        b = decoder.run_chunk(theirs, codes[start:end], last)
        assert a.shape == b.shape
        assert float(np.abs(a - b).max()) <= 1e-3  # float rounding only (a wrong key set differs ~0.1)
        # The reference cache is trimmed back to P + 100 frames; ours keeps the same number of keys.
        assert theirs.att.shape[4] == ours.flow.dit.length <= prompt_frames + DIT_KEEP_TAIL
