"""The Realtime side of context fitting: a cut is remembered in the conversation and reused by the next response."""

from __future__ import annotations

from typing import Any

import pytest

from realtime.backends.base import GenerationInput
from realtime.backends.context import ContextLengthExceeded, TruncationPolicy
from realtime.backends.synthetic import SyntheticBackend
from realtime.session.context_fit import ConversationFit
from realtime.session.conversation import Conversation
from realtime.session.items import prompt_turns_with_ids
from realtime.speech.reply import UsageMeter
from realtime.wire.records import ContentPart, Item
from realtime.wire.session_config import Truncation

LONG = "hello there " * 30  # 60 word ids + 3 per turn in the synthetic count


def add(conversation: Conversation, role: str, text: str) -> None:
    kind = "input_text" if role == "user" else "output_text"
    item = Item(
        id=f"item_{len(conversation)}", kind="message", role=role, content=[ContentPart(kind, text=text)]
    )  # type: ignore[arg-type]
    conversation.insert(item)


def fitter_for(
    conversation: Conversation, backend: SyntheticBackend, policy: TruncationPolicy
) -> tuple[ConversationFit, GenerationInput]:
    pairs = prompt_turns_with_ids(conversation)
    request = GenerationInput(rid="resp_x", turns=[turn for turn, _ in pairs])
    fitter = ConversationFit(backend, policy, 64, tuple(item_id for _, item_id in pairs), conversation)
    return fitter, request


def respond(conversation: Conversation, backend: SyntheticBackend, policy: TruncationPolicy) -> int:
    """Fit the conversation as a response would; return how many turns were dropped."""
    fitter, request = fitter_for(conversation, backend, policy)
    result = fitter.fit(request, fitter.floor(request))
    fitter.remember(request, result)
    return result.dropped_turns


def test_a_cut_is_remembered_and_reused_until_the_context_fills_again() -> None:
    backend = SyntheticBackend(context_length=400)
    policy = TruncationPolicy("retention_ratio", 0.5)
    conversation = Conversation()
    add(conversation, "user", LONG)
    assert respond(conversation, backend, policy) == 0
    assert conversation.prompt_start is None
    for _ in range(3):
        add(conversation, "assistant", LONG)
        add(conversation, "user", LONG)
    dropped = respond(conversation, backend, policy)
    assert dropped > 0
    start = conversation.prompt_start
    assert start == f"item_{dropped}"  # the first item still in the prompt
    add(conversation, "assistant", "ok")
    add(conversation, "user", "ok")
    assert respond(conversation, backend, policy) == dropped  # fits from the same start: same prefix
    assert conversation.prompt_start == start


def test_a_deleted_start_item_measures_from_the_beginning_again() -> None:
    backend = SyntheticBackend(context_length=400)
    conversation = Conversation()
    for _ in range(4):
        add(conversation, "user", LONG)
        add(conversation, "assistant", LONG)
    add(conversation, "user", "ok")
    assert respond(conversation, backend, TruncationPolicy()) > 0
    start = conversation.prompt_start
    assert start is not None
    conversation.delete(start)
    fitter, request = fitter_for(conversation, backend, TruncationPolicy())
    assert fitter.floor(request) == 0


def test_out_of_band_fits_are_not_remembered() -> None:
    backend = SyntheticBackend(context_length=300)
    conversation = Conversation()
    for _ in range(4):
        add(conversation, "user", LONG)
    pairs = prompt_turns_with_ids(conversation)
    request = GenerationInput(rid="resp_oob", turns=[turn for turn, _ in pairs])
    fitter = ConversationFit(backend, TruncationPolicy(), 64, tuple(i for _, i in pairs), None)
    result = fitter.fit(request, fitter.floor(request))
    fitter.remember(request, result)
    assert result.dropped_turns > 0 and conversation.prompt_start is None


@pytest.mark.parametrize(
    ("wire", "policy"),
    [
        ("auto", TruncationPolicy()),
        ("disabled", TruncationPolicy(mode="disabled")),
        ({"type": "retention_ratio", "retention_ratio": 0.8}, TruncationPolicy("retention_ratio", 0.8)),
        (
            {"type": "retention_ratio", "retention_ratio": 0.5, "token_limits": {"post_instructions": 900}},
            TruncationPolicy("retention_ratio", 0.5, 900),
        ),
    ],
)
def test_the_session_truncation_becomes_the_policy(wire: Any, policy: TruncationPolicy) -> None:
    """The wire layer reads the shape once (`Truncation.from_wire`); the fit maps it onto the policy."""
    setting = Truncation.from_wire(wire)
    fitter = ConversationFit.for_response(SyntheticBackend(), setting, 64, (), None)
    assert fitter.policy == policy


async def test_apply_reports_the_prompt_length_also_when_it_cannot_fit() -> None:
    conversation = Conversation()
    for _ in range(3):
        add(conversation, "user", LONG)
    backend = SyntheticBackend(context_length=150)
    fitter, request = fitter_for(conversation, backend, TruncationPolicy(mode="disabled"))
    meter = UsageMeter()
    with pytest.raises(ContextLengthExceeded):
        await fitter.apply(request, meter)
    assert meter.input_tokens > 150
    fitter, request = fitter_for(conversation, backend, TruncationPolicy())
    fitted = await fitter.apply(request, meter)
    assert len(fitted.turns) == 1 and 0 < meter.input_tokens <= 150 - 64  # room left for the answer
    assert conversation.prompt_start == "item_2"  # the cut is remembered for the next response
