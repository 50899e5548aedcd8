"""The reference's streaming decoder re-enacted on our weights: the same-run baseline of the speed benchmark.

`realtime bench token2wav --baseline reference` times this decoder next to ours, in the same process and on
the same weights, so that the speed-up is a ratio measured on one machine in one run (the machine's absolute
speed drifts too much to compare against figures measured elsewhere). It follows the reference algorithm of
docs/TOKEN2WAV.md §4 in the way that decides its cost:

* every response primes the voice again (`setup_cache` over the prompt) instead of cloning a primed state;
* each DiT block concatenates the new keys in front of its cached keys, the new values in front of its cached
  values, then keys | values into its new cache `[B, H, T, 2d]`, which is copied into the estimator's scratch
  buffer; after each ODE step that buffer is copied into the sampler's `[steps, depth, B, H, T, 2d]` buffer,
  whose view is the next cache; when it outgrows P + 100 frames it is trimmed by concatenating its `[:P]` and
  `[-100:]` parts (a full copy). Like the reference's, the scratch buffers belong to the decoder (allocated
  once per model, sized for the steady state, by `warmup`), so it serves one stream at a time;
* the adaLN modulations of every block are recomputed for every step of every chunk;
* each block runs op by op: three q/k/v GEMMs, LayerNorm then modulate, gate multiply then add, and the
  causal convs as `nn.Conv1d` on channel-major input with their 2 cached frames prepended.

The encoder and the vocoder are ours (same code and cost in both), so the ratio isolates the DiT and cache
design. Its audio equals ours within float rounding (tests/token2wav/test_baseline.py checks it against the
oracle), so the comparison is at identical numbers. It exists for benchmarks and tests only: it never serves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from token2wav.cfm import CFG_BATCH, MEL_BINS, time_grid
from token2wav.dit import BLOCK_LN_EPS, N_MODULATIONS, DiT, DiTBlock, modulate
from token2wav.dit_cache import CONV_CONTEXT
from token2wav.encoder import EncoderCache
from token2wav.flow import DIT_KEEP_TAIL
from token2wav.model import Token2Wav, Voice, check_codes
from token2wav.stream import ChunkSchedule, ChunkTiming
from token2wav.vocoder_stream import VocoderState, vocode_chunk

REFERENCE = ChunkSchedule.reference()


@dataclass
class ReferenceStyleStream:
    """One response's caches, laid out as the reference keeps them."""

    spk: torch.Tensor
    prompt_frames: int
    encoder: EncoderCache
    att: torch.Tensor  # [steps, depth, B, H, T, 2d], newest chunk first, prompt last
    cnn: torch.Tensor  # [steps, depth, B, 2h, 2]: conv1 input context | conv2 input context
    generator: torch.Generator | None = None
    vocoder: VocoderState = field(default_factory=VocoderState)
    timings: list[ChunkTiming] = field(default_factory=list)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, t, _ = x.shape
    return x.view(b, t, heads, -1).transpose(1, 2)


def _block(
    block: DiTBlock, x: torch.Tensor, c: torch.Tensor, kv_cache: torch.Tensor, cnn_cache: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One block op by op; returns (x, this block's new K|V cache, its new conv context)."""
    hidden = block.hidden
    width = (hidden,)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp, shift_conv, scale_conv, gate_conv = (
        block.adaLN_modulation(c).chunk(N_MODULATIONS, dim=-1)
    )
    attn = block.attn
    h = modulate(F.layer_norm(x, width, eps=BLOCK_LN_EPS), shift_msa, scale_msa)
    q = attn.q_norm(_split_heads(attn.to_q(h), attn.heads))
    k = attn.k_norm(_split_heads(attn.to_k(h), attn.heads))
    v = _split_heads(attn.to_v(h), attn.heads)
    k_cache, v_cache = kv_cache.chunk(2, dim=3)
    keys = torch.cat([k, k_cache], dim=2)  # new keys in front
    values = torch.cat([v, v_cache], dim=2)
    kv = torch.cat([keys, values], dim=3)
    out = F.scaled_dot_product_attention(q, keys, values)
    b, _, frames, _ = out.shape
    x = x + gate_msa * attn.proj(out.transpose(1, 2).reshape(b, frames, -1))

    h = modulate(F.layer_norm(x, width, eps=BLOCK_LN_EPS), shift_conv, scale_conv)
    conv = block.conv
    first_in = torch.cat([cnn_cache[:, :hidden], h.transpose(1, 2)], dim=-1)
    y = conv.conv1(first_in)
    y = F.mish(conv.norm(y.transpose(1, 2))).transpose(1, 2)
    second_in = torch.cat([cnn_cache[:, hidden:], y], dim=-1)
    y = conv.conv2(second_in)
    new_cnn = torch.cat([first_in[:, :, -CONV_CONTEXT:], second_in[:, :, -CONV_CONTEXT:]], dim=1)
    x = x + gate_conv * y.transpose(1, 2)

    h = modulate(F.layer_norm(x, width, eps=BLOCK_LN_EPS), shift_mlp, scale_mlp)
    return x + gate_mlp * block.mlp(h), kv, new_cnn


def _estimator(
    dit: DiT,
    x: torch.Tensor,
    t: torch.Tensor,
    att: torch.Tensor,
    cnn: torch.Tensor,
    att_buffer: torch.Tensor,
    cnn_buffer: torch.Tensor,
) -> torch.Tensor:
    """One estimator pass (`[B, 320, F]` -> velocity `[B, 80, F]`) against one step's caches; the new caches
    are left in `att_buffer[:, :, :, :T]` and `cnn_buffer`."""
    c = dit.t_embedder(t).unsqueeze(1)
    h = dit.in_proj(x.transpose(1, 2))
    for i, block in enumerate(dit.typed_blocks):
        h, kv, conv = _block(block, h, c, att[i], cnn[i])
        cnn_buffer[i] = conv
        att_buffer[i, :, :, : kv.shape[2]] = kv
    shift, scale = dit.final_layer.adaLN_modulation(c).chunk(2, dim=-1)
    return dit.final_layer.forward_modulated(h, shift, scale).transpose(1, 2)


class ReferenceStyleDecoder:
    """Streams decoded the reference's way, with the weights of a loaded `Token2Wav`."""

    def __init__(self, t2w: Token2Wav) -> None:
        self.t2w = t2w
        self._att_buffers: tuple[torch.Tensor, torch.Tensor] | None = None  # estimator's, sampler's

    def warmup(self, voice: Voice) -> None:
        """Run one throwaway stream of one steady window: allocates the scratch buffers (the reference
        allocates its own once, at model load) and warms the kernels, as `Token2Wav.warmup` does for ours."""
        stream = self.start(voice)
        self.run_chunk(stream, [0] * REFERENCE.max_window_tokens(), False)

    def _buffers(self, like: torch.Tensor, frames: int) -> tuple[torch.Tensor, ...]:
        """The scratch buffers, grown to hold `frames` keys (the reference's are fixed at 1000)."""
        if self._att_buffers is None or self._att_buffers[0].shape[3] < frames:
            steps, depth, batch, heads, _, width = like.shape
            self._att_buffers = (
                like.new_zeros((depth, batch, heads, frames, width)),
                like.new_zeros((steps, depth, batch, heads, frames, width)),
            )
        return self._att_buffers

    @torch.inference_mode()
    def start(self, voice: Voice, *, seed: int = 0) -> ReferenceStyleStream:
        """Prime the voice for this response (the reference's per-response `setup_cache`)."""
        flow = self.t2w.flow
        primed = flow.prime(voice.prompt_tokens, voice.prompt_mel, voice.spk_emb)
        generator = None
        if not self.t2w.hift.deterministic_source:
            generator = torch.Generator(device=self.t2w.device).manual_seed(seed)
        return ReferenceStyleStream(
            spk=primed.spk,
            prompt_frames=primed.prompt_frames,
            encoder=primed.encoder,
            att=primed.dit.packed_attention(),
            cnn=primed.dit.packed_conv(),
            generator=generator,
        )

    @torch.inference_mode()
    def run_chunk(self, stream: ReferenceStyleStream, window: list[int], last: bool) -> np.ndarray:
        """One chunk (encoder, 10 CFG Euler steps, trim, vocoder); float32 PCM that is final now."""
        started = _now(self.t2w.device)
        flow = self.t2w.flow
        values = check_codes(window, flow.config.vocab_size)
        tokens = torch.tensor([values], dtype=torch.int64, device=self.t2w.device)
        h, _ = flow.encoder.forward_chunk(flow.input_embedding(tokens), last, stream.encoder)
        mu = flow.encoder_proj(h).transpose(1, 2).contiguous()
        mel = self._solve(stream, mu)
        flow_done = _now(self.t2w.device)
        pcm, stream.vocoder = vocode_chunk(
            self.t2w.hift, stream.vocoder, mel.float(), last, generator=stream.generator
        )
        stream.timings.append(
            ChunkTiming(
                len(window), int(pcm.shape[0]), flow_done - started, _now(self.t2w.device) - flow_done
            )
        )
        return pcm

    def _solve(self, stream: ReferenceStyleStream, mu: torch.Tensor) -> torch.Tensor:
        decoder = self.t2w.flow.decoder
        frames = mu.shape[2]
        keys = int(stream.att.shape[4]) + frames
        x = decoder.initial_noise(keys - frames, frames, mu)
        rate = decoder.config.inference_cfg_rate
        # Sized once for the steady state (prompt + tail + the longest window), as the reference's are fixed.
        steady = stream.prompt_frames + DIT_KEEP_TAIL + self.t2w.flow.up_rate * REFERENCE.max_window_tokens()
        dit_att, cfm_att = self._buffers(stream.att, max(keys, steady))
        dit_cnn = torch.empty_like(stream.cnn[0])
        cfm_cnn = torch.empty_like(stream.cnn)
        for step, (t, dt) in enumerate(time_grid(decoder.sampler.n_timesteps, mu.device, mu.dtype)):
            packed = mu.new_zeros(CFG_BATCH, 4 * MEL_BINS, frames)
            packed[:, :MEL_BINS] = x
            packed[0, MEL_BINS : 2 * MEL_BINS] = mu[0]
            packed[0, 2 * MEL_BINS : 3 * MEL_BINS] = stream.spk[0].unsqueeze(-1)
            # cond (the last 80 channels) is zero for generated frames
            v = _estimator(
                decoder.estimator,
                packed,
                t.reshape(1).repeat(CFG_BATCH),
                stream.att[step],
                stream.cnn[step],
                dit_att,
                dit_cnn,
            )
            x = x + dt * ((1.0 + rate) * v[0:1] - rate * v[1:2])
            cfm_cnn[step] = dit_cnn
            cfm_att[step, :, :, :, :keys] = dit_att[:, :, :, :keys]
        stream.cnn = cfm_cnn
        stream.att = cfm_att[:, :, :, :, :keys]
        keep = stream.prompt_frames
        if keys > keep + DIT_KEEP_TAIL:
            stream.att = torch.cat(
                [stream.att[:, :, :, :, :keep], stream.att[:, :, :, :, -DIT_KEEP_TAIL:]], 4
            )
        return x


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
