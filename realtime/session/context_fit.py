"""The Realtime front door of `realtime.backends.context.fit`: the session's ``truncation`` and its memory.

The one route from a Realtime session to the context rule: the session builds a `ConversationFit` per response
(`ConversationFit.for_response`, which maps the session's typed ``truncation`` onto a `TruncationPolicy`), and
the response awaits `ConversationFit.apply` just before its request is sent (the fit runs on a worker thread:
counting tokenises the whole prompt). When the prompt had to be cut, the default conversation remembers the first item
still in the prompt (`Conversation.prompt_start`); the next response starts from there instead of from the
first item, so the prompt's prefix stays the same between cuts and SGLang's prefix cache is reused. Items
before that point stay in the conversation (the client still sees them) but no longer reach the model. The
Realtime protocol has no event that tells a client an item left the model's context, so none is sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from realtime.backends.base import GenerationInput, PromptTurn
from realtime.backends.context import ContextLengthExceeded, FitResult, PromptCounter, TruncationPolicy, fit
from realtime.session.conversation import Conversation
from realtime.speech.reply import UsageMeter
from realtime.wire.session_config import Truncation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConversationFit:
    """Fits one response's request; remembers a cut in ``conversation`` when there is one.

    Attributes:
        counter: the backend (context length and prompt counting).
        policy: the session's ``truncation`` at ``response.create`` time.
        min_answer_tokens: the smallest answer budget (server setting).
        turn_items: conversation item id of each request turn (None for turns of no item).
        conversation: the default conversation when the request's turns are exactly its items; None for
            out-of-band responses and responses with their own ``input`` (fitted, never remembered).
    """

    counter: PromptCounter
    policy: TruncationPolicy
    min_answer_tokens: int
    turn_items: tuple[str | None, ...]
    conversation: Conversation | None

    @classmethod
    def for_response(
        cls,
        counter: PromptCounter,
        truncation: Truncation,
        min_answer_tokens: int,
        turn_items: tuple[str | None, ...],
        conversation: Conversation | None,
    ) -> ConversationFit:
        """The fit of one response under the session's ``truncation`` (see the attributes)."""
        policy = TruncationPolicy(
            truncation.mode, truncation.retention_ratio, truncation.post_instructions_tokens
        )
        return cls(counter, policy, min_answer_tokens, turn_items, conversation)

    async def apply(self, request: GenerationInput, meter: UsageMeter) -> GenerationInput:
        """``request`` fitted to the context (off the event loop), its cut remembered; ``meter.input_tokens``
        is set to the prompt length, also when it cannot fit (a failed response still reports it).

        Raises:
            ContextLengthExceeded: the request cannot fit (the response fails with that code).
        """
        floor = self.floor(request)
        try:
            result = await asyncio.to_thread(self.fit, request, floor)
        except ContextLengthExceeded as exc:
            meter.input_tokens = exc.prompt_tokens or 0
            raise
        self.remember(request, result)
        meter.input_tokens = result.prompt_tokens
        return result.request

    def floor(self, request: GenerationInput) -> int:
        """Droppable turns an earlier cut already left out (event loop: reads the conversation)."""
        start = self.conversation.prompt_start if self.conversation is not None else None
        if start is None:
            return 0
        for position, index in enumerate(_non_system(request.turns)):
            if self.turn_items[index] == start:
                return position
        return 0  # the item was deleted: measure from the first item again

    def fit(self, request: GenerationInput, floor: int) -> FitResult:
        """`realtime.backends.context.fit` with this session's settings. Thread-safe (pure).

        Raises:
            ContextLengthExceeded: the request cannot fit.
        """
        return fit(
            request, self.counter, self.policy, min_answer_tokens=self.min_answer_tokens, drop_at_least=floor
        )

    def remember(self, request: GenerationInput, result: FitResult) -> None:
        """Store where the fitted prompt starts (event loop). A request that needed no cut clears it."""
        if self.conversation is None:
            return
        kept = _non_system(request.turns)
        start: str | None = None
        if 0 < result.dropped_turns < len(kept):
            start = self.turn_items[kept[result.dropped_turns]]
        if start != self.conversation.prompt_start and result.dropped_turns:
            log.info(
                "response %s: %d oldest turns left the prompt to fit the context (%d prompt tokens)",
                request.rid,
                result.dropped_turns,
                result.prompt_tokens,
            )
        self.conversation.prompt_start = start


def _non_system(turns: Sequence[PromptTurn]) -> list[int]:
    """Indices of the non-system turns: the droppable ones are a prefix of these."""
    return [index for index, turn in enumerate(turns) if turn.role != "system"]
