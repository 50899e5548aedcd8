"""`torch.compile` (inductor) of the DiT estimator pass (docs/TOKEN2WAV.md §8.3).

The pass (`DiT.dense_pass`: input projection, every block, final layer) is compiled as ONE graph. Its
attention is the custom op ``token2wav::dit_attention`` (token2wav/dit_attention.py), which the compiler
treats as an opaque call, so the caches' Python bookkeeping never enters the graph and never breaks it; the
conv contexts come out of the graph as outputs, so it mutates none of its inputs.

Shapes: the rows of the batch and the frames of the window are marked dynamic, everything else is static.
One graph serves them all: a pass always has at least 2 rows (a CFG pair, so never the size 1 the compiler
specialises), and in compiled mode it always receives the padded-row gather index (`ends`).

The HiFT vocoder is not compiled: its convolution kernels guard their input lengths to ranges, so it needs
several graphs (one per range of window lengths, alone and batched), each of which took minutes to build on
the 2-core development machine, for about a tenth of a full-size step (docs/TOKEN2WAV.md §8.3).

Compiling never happens inside a response: `Token2Wav.warmup` builds the graph at start-up (`building`);
afterwards the graph runs under the ``eager_on_recompile`` stance, so an input the graph does not cover runs
eagerly, with the same numbers, instead of stopping a response for a compile. Inductor keeps its kernels in
its on-disk cache (TORCHINDUCTOR_CACHE_DIR), so a restarted process compiles faster. Threading: compile and
run on the model's one worker thread, like everything else.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager
from typing import Literal

import torch

from token2wav.dit import DiT
from token2wav.dit_attention import dit_attention

# `freezing` folds the weights into the graph as constants, which lets inductor prepack them for oneDNN and
# fuse bias and elementwise epilogues into the linear calls on the CPU; the graph is therefore tied to the
# weights it saw (`DiT.weights_version`).
INDUCTOR_OPTIONS = {"freezing": True}


def _attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int) -> torch.Tensor:
    return dit_attention(q, k, v, block)


class CompiledDecoder:
    """The compiled DiT pass of one model (module docstring).

    Args:
        dit: the estimator; the graph is tied to its current weights (`weights_version`).
        mode: `torch.compile` mode (None: the default; "reduce-overhead" adds CUDA graphs on a GPU).
    """

    def __init__(self, dit: DiT, mode: str | None = None) -> None:
        self.weights_version = dit.weights_version
        self.mode = mode
        # `options` and `mode` are exclusive in torch.compile: CUDA graphs are the GPU arm of gpu-check only.
        self._dit = torch.compile(
            functools.partial(dit.dense_pass, attention=_attention_op),
            **({"mode": mode} if mode is not None else {"options": INDUCTOR_OPTIONS}),
        )
        self.building = False  # True while `Token2Wav.warmup` may build the graph
        # After the warm-up: a missing graph runs eagerly (tests make it "fail_on_recompile" to prove none is).
        self.serving_stance: Literal["eager_on_recompile", "fail_on_recompile"] = "eager_on_recompile"

    def _stance(self) -> AbstractContextManager[None]:
        return torch.compiler.set_stance("default" if self.building else self.serving_stance)

    def dense_pass(
        self,
        x: torch.Tensor,
        blocks: torch.Tensor,
        final: torch.Tensor,
        conv1: torch.Tensor,
        conv2: torch.Tensor,
        ends: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`DiT.dense_pass` through the graph (inside `AttentionPass.active`)."""
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # the previous pass's outputs have been consumed
        # Rows and frames vary; nothing else does (and must not be unified with them by equal sizes).
        for tensor, dims in ((x, (0, 2)), (conv1, (1,)), (conv2, (1,)), (ends, (0,))):
            if tensor is not None:
                for dim in dims:
                    torch._dynamo.mark_dynamic(tensor, dim)
        with self._stance():
            v, context1, context2 = self._dit(x, blocks, final, conv1, conv2, ends)
        return v, context1, context2


def install(dit: DiT, graphs: CompiledDecoder) -> None:
    """Route the DiT pass through `graphs`."""
    dit.compiled_pass = graphs.dense_pass


def uninstall(dit: DiT) -> None:
    """Back to eager execution (the graph stays with whoever made it)."""
    dit.compiled_pass = None
