"""Flow model `CausalMaskedDiffWithXvec`: tokens -> mel, offline and chunked (docs/TOKEN2WAV.md §3.2, §4).

State-dict keys equal the released `flow.pt` (`input_embedding`, `spk_embed_affine_layer`, `encoder.*`,
`encoder_proj`, `decoder.estimator.*`); `load_flow_state_dict` loads with `strict=True`.

Streaming state never lives on the module: `prime` builds an immutable `PrimedFlow` for a voice, and
`PrimedFlow.new_stream` makes a `FlowStreamState` over it that one stream owns and `inference_chunk` updates:
the stream reads the voice's prompt caches in place (DiT keys shared, encoder caches copied on first write),
so starting a stream copies only the small conv contexts. `inference_chunks` runs several streams' windows
as one batched DiT pass per Euler step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from token2wav.cfm import CausalConditionalCFM, SolveItem, StepTrace
from token2wav.config import FlowConfig, SamplerConfig
from token2wav.dit_cache import DitCache
from token2wav.encoder import EncoderCache, UpsampleConformerEncoderV2
from token2wav.errors import ModelLoadError, VoiceError

DIT_KEEP_TAIL = 100  # the reference trims the DiT cache to P + 100 frames
CFG_BATCH = 2


@dataclass(frozen=True)
class PrimedFlow:
    """A voice's flow caches after the prompt pass (`setup_cache`). Never mutated; streams clone it.

    Attributes:
        spk: `[1, 80]` projected speaker embedding.
        prompt_frames: P, the prompt mel length (= 2 x prompt tokens).
        encoder: encoder caches over the prompt tokens.
        dit: DiT caches over the P prompt frames, one per ODE step.
        setup_mu: `[1, 80, P]` encoder output over the prompt (kept for tests and inspection).
    """

    spk: torch.Tensor
    prompt_frames: int
    encoder: EncoderCache
    dit: DitCache
    setup_mu: torch.Tensor

    def new_stream(self, max_chunk_frames: int) -> FlowStreamState:
        """A fresh per-stream state for chunks of up to `max_chunk_frames` frames, sharing this voice's caches.

        Costs a copy of the DiT conv contexts only (2 frames per step and block); the stream's own key
        buffers are allocated by its first chunk and grow to at most `prompt_frames + max_chunk_frames`.
        """
        return FlowStreamState(
            spk=self.spk, encoder=self.encoder.share(), dit=self.dit.share(max_chunk_frames)
        )

    def nbytes(self) -> int:
        """Approximate bytes held (DiT caches dominate)."""
        return self.dit.nbytes()


@dataclass
class FlowStreamState:
    """Flow caches owned by one stream (encoder KV/conv caches and the per-step DiT caches)."""

    spk: torch.Tensor
    encoder: EncoderCache
    dit: DitCache

    @property
    def noise_offset(self) -> int:
        """Noise frame index of the next chunk (= DiT cache length, as in the reference)."""
        return self.dit.length

    def nbytes(self) -> int:
        """Bytes this stream owns now (the DiT caches dominate; the encoder caches grow with length).

        Buffers still shared with the voice (not yet written by this stream) are not counted.
        """
        encoder = self.encoder
        tensors = [encoder.lookahead, encoder.upsample]
        for kv in [*encoder.layers, *encoder.up_layers]:
            if kv.owned:
                tensors.extend((kv.k, kv.v))
        return self.dit.nbytes() + sum(t.numel() * t.element_size() for t in tensors)


class CausalMaskedDiffWithXvec(nn.Module):
    """Token embedding + speaker projection + encoder + encoder_proj + CFM decoder with DiT estimator."""

    def __init__(
        self, config: FlowConfig, sampler: SamplerConfig | None = None, noise: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.sampler = sampler or SamplerConfig()
        self.input_embedding = nn.Embedding(config.vocab_size, config.input_size)
        self.spk_embed_affine_layer = nn.Linear(config.spk_embed_dim, config.output_size)
        self.encoder = UpsampleConformerEncoderV2(config.encoder)
        self.encoder_proj = nn.Linear(config.encoder.output_size, config.output_size)
        self.decoder = CausalConditionalCFM(config.decoder, self.sampler, noise)

    @property
    def lookahead(self) -> int:
        """Look-ahead tokens of the encoder (3)."""
        return self.config.encoder.pre_lookahead_len

    @property
    def up_rate(self) -> int:
        """Mel frames per token (2)."""
        return self.config.encoder.up_stride

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        # A device/dtype change invalidates the precomputed modulations (they are recomputed lazily).
        self.decoder.invalidate()
        self.encoder.invalidate()
        return super()._apply(fn, recurse)

    def project_speaker(self, spk_emb: torch.Tensor) -> torch.Tensor:
        """L2-normalise `[1, 192]` and project to `[1, 80]`."""
        return self.spk_embed_affine_layer(F.normalize(spk_emb, dim=1))

    def _tensor(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        param = self.encoder_proj.weight
        return x.to(device=param.device, dtype=dtype or param.dtype)

    @torch.inference_mode()
    def inference(
        self,
        tokens: torch.Tensor,
        prompt_tokens: torch.Tensor,
        prompt_mel: torch.Tensor,
        spk_emb: torch.Tensor,
        *,
        trace: StepTrace | None = None,
        mu_out: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Offline: mel for `tokens` given a voice prompt (golden tests and the offline decode).

        Args:
            tokens: `[1, N]` generated codes.
            prompt_tokens: `[1, Tp]` prompt codes.
            prompt_mel: `[1, 2*Tp, 80]` prompt mel.
            spk_emb: `[1, 192]` raw speaker embedding.
            trace: optional per-Euler-step observer.
            mu_out: if given, the encoder output `[1, 80, 2(Tp+N)]` is appended to it.

        Returns:
            mel `[1, 80, 2N]`.
        """
        spk = self.project_speaker(self._tensor(spk_emb))
        all_tokens = torch.cat([prompt_tokens, tokens], dim=1).to(self.encoder_proj.weight.device)
        h = self.encoder(self.input_embedding(all_tokens.clamp(min=0)))
        mu = self.encoder_proj(h).transpose(1, 2).contiguous()
        if mu_out is not None:
            mu_out.append(mu)
        prompt_frames = prompt_mel.shape[1]
        cond = torch.zeros_like(mu)
        cond[:, :, :prompt_frames] = self._tensor(prompt_mel).transpose(1, 2)
        cache = DitCache(self.config.decoder.estimator, 1, CFG_BATCH, mu.shape[2], mu)
        mel = self.decoder.solve(mu, spk, cond, cache, reuse_step_cache=True, trace=trace)
        return mel[:, :, prompt_frames:]

    @torch.inference_mode()
    def prime(
        self, prompt_tokens: torch.Tensor, prompt_mel: torch.Tensor, spk_emb: torch.Tensor
    ) -> PrimedFlow:
        """The reference `setup_cache` over `prompt_tokens ++ prompt_tokens[:, :3]` (dummy look-ahead).

        Args:
            prompt_tokens: `[1, Tp]` prompt codes, Tp >= 3.
            prompt_mel: `[1, 2*Tp, 80]` prompt mel (exactly 2 x Tp frames).
            spk_emb: `[1, 192]` raw speaker embedding.
        """
        num_tokens = prompt_tokens.shape[1]
        if num_tokens < self.lookahead:
            raise VoiceError(f"voice prompt too short: {num_tokens} tokens, need at least {self.lookahead}")
        if prompt_mel.shape[1] != self.up_rate * num_tokens:
            raise VoiceError(
                f"prompt mel has {prompt_mel.shape[1]} frames, expected exactly {self.up_rate * num_tokens}"
            )
        spk = self.project_speaker(self._tensor(spk_emb))
        tokens = torch.cat([prompt_tokens, prompt_tokens[:, : self.lookahead]], dim=1)
        tokens = tokens.to(self.encoder_proj.weight.device)
        h, encoder_cache = self.encoder.forward_chunk(self.input_embedding(tokens), False, None)
        mu = self.encoder_proj(h).transpose(1, 2).contiguous()
        cond = self._tensor(prompt_mel).transpose(1, 2).contiguous()
        frames = mu.shape[2]
        dit = DitCache(
            self.config.decoder.estimator, self.sampler.n_timesteps, CFG_BATCH, frames, mu, DIT_KEEP_TAIL
        )
        self.decoder.solve(mu, spk, cond, dit)  # the ODE output over the prompt is discarded
        dit.prompt_frames = frames
        return PrimedFlow(spk=spk, prompt_frames=frames, encoder=encoder_cache, dit=dit, setup_mu=mu)

    @torch.inference_mode()
    def inference_chunk(
        self,
        tokens: torch.Tensor,
        state: FlowStreamState,
        last: bool,
        *,
        trace: StepTrace | None = None,
        mu_out: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One streaming window -> its mel; updates and trims `state` in place.

        Args:
            tokens: `[1, W]` codes; a non-last window ends with 3 look-ahead codes.
            state: the stream's flow caches.
            last: the final window (3 zero look-ahead frames are appended inside the encoder).
            trace: optional per-Euler-step observer.
            mu_out: if given, the chunk's encoder output `[1, 80, F]` is appended to it.

        Returns:
            mel `[1, 80, F]`, F = 2 (W - 3) or 2 W when last.
        """
        return self.inference_chunks([ChunkInput(tokens, state, last)], trace=trace, mu_out=mu_out)[0]

    @torch.inference_mode()
    def inference_chunks(
        self,
        chunks: list[ChunkInput],
        *,
        trace: StepTrace | None = None,
        mu_out: list[torch.Tensor] | None = None,
    ) -> list[torch.Tensor]:
        """Several streams' windows at once: the encoder per stream, then ONE batched CFM solve for all.

        The streams must be distinct (each state is updated in place). Each mel equals that stream's
        `inference_chunk` alone up to floating-point summation order.

        Args:
            chunks: one window per stream.
            trace: per-Euler-step observer (single-stream calls only).
            mu_out: if given, each chunk's encoder output is appended to it, in order.

        Returns:
            mel `[1, 80, F_i]` per chunk, in order.
        """
        if len({id(chunk.state) for chunk in chunks}) != len(chunks):
            raise ValueError("a stream appears twice in one batch")
        items: list[SolveItem] = []
        for chunk in chunks:
            tokens = chunk.tokens.to(self.encoder_proj.weight.device)
            embedded = self.input_embedding(tokens.clamp(min=0))
            h, _ = self.encoder.forward_chunk(embedded, chunk.last, chunk.state.encoder)
            mu = self.encoder_proj(h).transpose(1, 2).contiguous()
            if mu_out is not None:
                mu_out.append(mu)
            items.append(SolveItem(mu, chunk.state.spk, torch.zeros_like(mu), chunk.state.dit))
        mels = self.decoder.solve_batch(items, trace=trace)
        for chunk in chunks:
            chunk.state.dit.trim()
        return mels


@dataclass(frozen=True)
class ChunkInput:
    """One stream's window for `inference_chunks`: `[1, W]` codes, its flow state, and whether it is the last."""

    tokens: torch.Tensor
    state: FlowStreamState
    last: bool


def load_flow_state_dict(module: CausalMaskedDiffWithXvec, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Strict load with the released key names; any missing/unexpected key or shape mismatch raises."""
    try:
        module.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"flow state dict does not match the model: {exc}") from None
    module.decoder.invalidate()
    module.encoder.invalidate()
