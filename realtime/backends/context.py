"""Every request fits the model's context: the answer budget, and dropping the oldest turns when it is short.

The one rule every front door applies before a `GenerationInput` reaches a backend (`fit`):

- ``max_new_tokens = min(client cap, context_length - prompt_tokens)``; a cap of None (the Realtime ``"inf"``)
  means "whatever is left".
- When less than ``min_answer_tokens`` would be left (or less than the client's cap, when that is smaller),
  the prompt is shortened by dropping its oldest turns as the `TruncationPolicy` says. System turns (session
  instructions, tool schemas, system messages) are never dropped, nor the newest user turn and what follows it.
  A function result whose call was dropped goes with it.
- When it still does not fit, or truncation is ``disabled``, `ContextLengthExceeded` is raised: the response
  fails with ``context_length_exceeded`` and nothing is sent to the backend.

The truncation mechanism is this module alone, so the conversation caps of other front doors reuse it:
`droppable_turns` says which turns may go, `TruncationPolicy.target` how far to cut. Truncation is stateful
across the responses of one conversation through ``drop_at_least``: a caller that stores the returned
``dropped_turns`` and passes it back next time keeps the prompt's prefix stable until the context fills up
again, so SGLang's prefix cache is reused (the point of ``retention_ratio``).

Pure: the only outside call is `PromptCounter.count_prompt_tokens`, which backends implement without I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from realtime.backends.base import BackendError, GenerationInput, PromptTurn
from realtime.errors import INVALID_REQUEST

CODE_CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
DEFAULT_MIN_ANSWER_TOKENS = 64  # below this a spoken answer is cut after ~1.5 s: drop history instead
TruncationMode = Literal["auto", "retention_ratio", "disabled"]


class PromptCounter(Protocol):
    """What `fit` needs from a backend (every `LLMBackend` is one)."""

    @property
    def context_length(self) -> int:
        """Most tokens (prompt + completion) one request may use."""
        ...

    def count_prompt_tokens(self, request: GenerationInput) -> int:
        """Prompt tokens of ``request`` as the LLM will count them (audio placeholders expanded)."""
        ...


class ContextLengthExceeded(BackendError):
    """The prompt leaves no room for an answer, and truncation is disabled or cannot free enough.

    A client-side condition (``invalid_request_error``), raised before anything is sent, or mapped from the
    LLM server's own refusal.

    Attributes:
        prompt_tokens: prompt tokens of the request (for ``usage.input_tokens``); None when unknown.
    """

    error_type = INVALID_REQUEST

    def __init__(self, message: str, prompt_tokens: int | None = None) -> None:
        super().__init__(CODE_CONTEXT_LENGTH_EXCEEDED, message)
        self.prompt_tokens = prompt_tokens


@dataclass(frozen=True)
class TruncationPolicy:
    """How a prompt that does not fit is shortened (the Realtime session's ``truncation``).

    Attributes:
        mode: ``auto``: drop the oldest turns until the prompt fits; ``retention_ratio``: when it does not fit,
            drop at once down to ``retention_ratio`` of the room left after the fixed part (instructions,
            tools), so the next turns fit without another cut and reuse the cached prefix; ``disabled``: never
            drop, fail instead.
        retention_ratio: fraction in [0, 1] of the post-instruction room kept (``retention_ratio`` mode).
        post_instructions_tokens: optional cap on the tokens after the fixed part (OpenAI's
            ``token_limits.post_instructions``); truncation also happens when the history exceeds it.
    """

    mode: TruncationMode = "auto"
    retention_ratio: float = 1.0
    post_instructions_tokens: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.retention_ratio <= 1.0:
            raise ValueError(f"retention_ratio must be within 0..1, got {self.retention_ratio}")
        if self.post_instructions_tokens is not None and self.post_instructions_tokens < 0:
            raise ValueError("post_instructions_tokens must be >= 0")

    def needs_cut(self, history: int, room: int) -> bool:
        """Whether ``history`` post-instruction tokens must shrink, given ``room`` for them."""
        limit = room if self.post_instructions_tokens is None else min(room, self.post_instructions_tokens)
        return history > limit

    def target(self, room: int) -> int:
        """Post-instruction tokens to cut down to once a cut is needed."""
        limit = room if self.post_instructions_tokens is None else min(room, self.post_instructions_tokens)
        if self.mode == "retention_ratio":
            return int(limit * self.retention_ratio)
        return limit


@dataclass(frozen=True)
class FitResult:
    """A request that fits.

    Attributes:
        request: the input with the kept turns and ``max_new_tokens`` set (always an int).
        prompt_tokens: prompt tokens of ``request``.
        dropped_turns: how many of the oldest droppable turns are not in ``request`` (pass it back as
            ``drop_at_least`` next time to keep the prefix stable).
    """

    request: GenerationInput
    prompt_tokens: int
    dropped_turns: int

    @property
    def max_new_tokens(self) -> int:
        """The answer budget sent to the backend."""
        cap = self.request.sampling.max_new_tokens
        assert cap is not None
        return cap


def droppable_turns(turns: Sequence[PromptTurn]) -> list[int]:
    """Indices of the turns truncation may drop, oldest first.

    Never: system turns (instructions, tool schemas, system messages), the newest user turn and everything
    after it (the question being answered and its tool round trips). Without a user turn, the newest
    non-system turn is kept.
    """
    last_user = max((i for i, turn in enumerate(turns) if turn.role == "user"), default=None)
    if last_user is None:
        last_user = max((i for i, turn in enumerate(turns) if turn.role != "system"), default=0)
    return [i for i in range(last_user) if turns[i].role != "system"]


def fit(
    request: GenerationInput,
    counter: PromptCounter,
    policy: TruncationPolicy,
    *,
    min_answer_tokens: int = DEFAULT_MIN_ANSWER_TOKENS,
    drop_at_least: int = 0,
) -> FitResult:
    """Fit ``request`` into ``counter``'s context (the rule in the module docstring).

    Args:
        request: the request as the front door built it; ``sampling.max_new_tokens`` is the client's cap, None
            for no cap (``"inf"``).
        counter: the backend that will serve it.
        policy: how to shorten a prompt that does not fit.
        min_answer_tokens: the smallest answer budget worth generating (the client's cap when smaller).
        drop_at_least: droppable turns to leave out even if the prompt would fit (an earlier cut of the same
            conversation); clamped to the droppable turns there are; ignored when truncation is disabled.

    Returns:
        The fitted request, its prompt length and the number of dropped turns.

    Raises:
        ContextLengthExceeded: nothing fits, or truncation is disabled and the prompt is too long.
    """
    context = counter.context_length
    cap = request.sampling.max_new_tokens
    need = max(1, min_answer_tokens if cap is None else min(cap, min_answer_tokens))
    room = context - need  # most prompt tokens that still leave the answer its budget
    droppable = droppable_turns(request.turns)
    # "disabled" sends the whole conversation, even after an earlier cut made under another setting
    dropped = 0 if policy.mode == "disabled" else min(max(drop_at_least, 0), len(droppable))
    dropped = _without_orphans(request.turns, droppable, dropped)
    prompt = counter.count_prompt_tokens(_keep(request, droppable, dropped))
    if policy.mode != "disabled" and dropped < len(droppable):
        system = [turn for turn in request.turns if turn.role == "system"]
        fixed = counter.count_prompt_tokens(dataclasses.replace(request, turns=system))
        if prompt > room or policy.needs_cut(prompt - fixed, room - fixed):
            dropped, prompt = _cut(request, counter, droppable, dropped, prompt, fixed, policy, room)
    if prompt > room:
        raise ContextLengthExceeded(_too_long(prompt, context, need, policy, dropped, len(droppable)), prompt)
    kept = _keep(request, droppable, dropped)
    left = context - prompt
    sampling = dataclasses.replace(kept.sampling, max_new_tokens=left if cap is None else min(cap, left))
    return FitResult(dataclasses.replace(kept, sampling=sampling), prompt, dropped)


def _cut(
    request: GenerationInput,
    counter: PromptCounter,
    droppable: list[int],
    dropped: int,
    prompt: int,
    fixed: int,
    policy: TruncationPolicy,
    room: int,
) -> tuple[int, int]:
    """Drop more of the oldest droppable turns until the history (every non-system turn) is within the
    policy's target, or nothing droppable is left.

    Turn costs are measured one turn at a time (a turn's prompt tokens do not depend on its neighbours: each
    starts and ends with a special id), then the result is counted whole and cut further if that disagrees.
    """
    target = min(policy.target(room - fixed), room - fixed)
    bare = dataclasses.replace(request, instructions="", turns=[])  # so long instructions are counted once
    empty = counter.count_prompt_tokens(bare)
    history = prompt - fixed
    while dropped < len(droppable) and history > target:
        after = _without_orphans(request.turns, droppable, dropped + 1)
        for index in droppable[dropped:after]:
            turn = request.turns[index]
            history -= counter.count_prompt_tokens(dataclasses.replace(bare, turns=[turn])) - empty
        dropped = after
    prompt = counter.count_prompt_tokens(_keep(request, droppable, dropped))
    while dropped < len(droppable) and prompt - fixed > target:  # the per-turn estimate was short
        dropped = _without_orphans(request.turns, droppable, dropped + 1)
        prompt = counter.count_prompt_tokens(_keep(request, droppable, dropped))
    return dropped, prompt


def _without_orphans(turns: Sequence[PromptTurn], droppable: list[int], dropped: int) -> int:
    """Also drop function results left at the front without the call that asked for them."""
    if dropped == 0:
        return 0
    while dropped < len(droppable) and turns[droppable[dropped]].role == "tool":
        dropped += 1
    return dropped


def _keep(request: GenerationInput, droppable: list[int], dropped: int) -> GenerationInput:
    gone = set(droppable[:dropped])
    return dataclasses.replace(request, turns=[t for i, t in enumerate(request.turns) if i not in gone])


def _too_long(
    prompt: int, context: int, need: int, policy: TruncationPolicy, dropped: int, droppable: int
) -> str:
    if policy.mode == "disabled":
        how = "truncation is disabled"
    elif droppable == 0:
        how = "no older turn could be dropped"
    else:
        how = f"after dropping all {dropped} older turns"
    return (
        f"The input is too long for the model's context: {prompt} prompt tokens ({how}) plus at least "
        f"{need} tokens for the answer exceed the maximum context length of {context} tokens. Shorten the "
        "instructions or the input" + (", or enable truncation." if policy.mode == "disabled" else ".")
    )
