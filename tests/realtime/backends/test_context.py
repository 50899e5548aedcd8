"""Unit tests of `fit`: the answer budget, every truncation mode, and the edges of the context."""

from __future__ import annotations

import pytest

from realtime.backends.base import GenerationInput, PromptTurn, SamplingParams
from realtime.backends.context import (
    CODE_CONTEXT_LENGTH_EXCEEDED,
    ContextLengthExceeded,
    TruncationPolicy,
    droppable_turns,
    fit,
)
from realtime.backends.synthetic import SyntheticBackend
from realtime.errors import INVALID_REQUEST

TURN_OVERHEAD = 2  # <|BOT|> role ... <|EOT|> in the toy format
PREFILL = 3


class WordCounter:
    """A toy backend: one token per word, two per turn, three for the reply prefill."""

    def __init__(self, context_length: int) -> None:
        self.context_length = context_length
        self.calls = 0

    def count_prompt_tokens(self, request: GenerationInput) -> int:
        self.calls += 1
        words = len(request.instructions.split()) + (TURN_OVERHEAD if request.instructions else 0)
        for turn in request.turns:
            words += len((turn.text or "").split()) + TURN_OVERHEAD
        return words + PREFILL


def words(n: int) -> str:
    return " ".join(["w"] * n)


def turn(role: str, n: int, name: str | None = None) -> PromptTurn:
    return PromptTurn(role=role, text=words(n), name=name)  # type: ignore[arg-type]


def request(*turns: PromptTurn, cap: int | None = None, instructions: int = 8) -> GenerationInput:
    return GenerationInput(
        rid="resp_t",
        turns=list(turns),
        instructions=words(instructions),
        sampling=SamplingParams(max_new_tokens=cap),
    )


AUTO = TruncationPolicy()
DISABLED = TruncationPolicy(mode="disabled")
# instructions 8 + 2, prefill 3: a request with no turns costs 13 tokens
BASE = 13


def test_inf_gets_everything_the_context_leaves() -> None:
    result = fit(request(turn("user", 8)), WordCounter(1000), AUTO)
    assert result.prompt_tokens == BASE + 10
    assert result.max_new_tokens == 1000 - result.prompt_tokens
    assert result.dropped_turns == 0


def test_client_cap_wins_when_it_is_smaller() -> None:
    assert fit(request(turn("user", 8), cap=300), WordCounter(1000), AUTO).max_new_tokens == 300


def test_cap_larger_than_what_is_left_is_lowered() -> None:
    # 1000 - 23 = 977 left, more than the minimum: no turn dropped, the cap shrinks to what is left
    result = fit(request(turn("user", 8), cap=4096), WordCounter(1000), AUTO)
    assert (result.max_new_tokens, result.dropped_turns) == (977, 0)


def test_exactly_the_minimum_left_fits_one_more_token_cuts() -> None:
    history = [turn("user", 18), turn("assistant", 18)]  # 20 tokens each
    newest = turn("user", 8)  # 10 tokens
    prompt = BASE + 20 + 20 + 10
    fitted = fit(request(*history, newest), WordCounter(prompt + 64), AUTO, min_answer_tokens=64)
    assert (fitted.dropped_turns, fitted.max_new_tokens) == (0, 64)
    cut = fit(request(*history, newest), WordCounter(prompt + 63), AUTO, min_answer_tokens=64)
    assert cut.dropped_turns == 1
    assert cut.request.turns == [history[1], newest]
    assert cut.max_new_tokens == prompt + 63 - (prompt - 20)


def test_a_cap_below_the_minimum_only_needs_its_own_room() -> None:
    req = request(turn("user", 18), turn("assistant", 18), turn("user", 8), cap=10)
    prompt = BASE + 50
    result = fit(req, WordCounter(prompt + 10), AUTO, min_answer_tokens=64)
    assert (result.dropped_turns, result.max_new_tokens) == (0, 10)


def test_auto_drops_only_the_oldest_turns_it_must() -> None:
    old = [turn("user", 48), turn("assistant", 48), turn("user", 48), turn("assistant", 48)]  # 50 each
    newest = turn("user", 8)
    counter = WordCounter(BASE + 4 * 50 + 10 + 64 - 60)  # 60 tokens too many: two turns must go
    result = fit(request(*old, newest), counter, AUTO, min_answer_tokens=64)
    assert result.dropped_turns == 2
    assert result.request.turns == [old[2], old[3], newest]
    assert result.prompt_tokens == BASE + 2 * 50 + 10


def test_system_turns_and_the_newest_user_turn_and_its_tool_round_trip_stay() -> None:
    tools = turn("system", 30, name="tool_json_schemas")
    old_user, old_reply = turn("user", 40), turn("assistant", 40)
    system_note = turn("system", 5)
    newest, call, result_turn = turn("user", 8), turn("assistant", 6), turn("tool", 6)
    req = request(tools, old_user, old_reply, system_note, newest, call, result_turn)
    assert droppable_turns(req.turns) == [1, 2]
    fitted = fit(req, WordCounter(BASE + 32 + 7 + 10 + 8 + 8 + 64), AUTO, min_answer_tokens=64)
    assert fitted.request.turns == [tools, system_note, newest, call, result_turn]
    assert fitted.dropped_turns == 2


def test_a_function_result_goes_with_its_call() -> None:
    call, output, reply = turn("assistant", 4), turn("tool", 30), turn("assistant", 10)
    newest = turn("user", 8)
    # dropping the call alone would be enough, but its result must not lead the prompt without it
    counter = WordCounter(BASE + 6 + 32 + 12 + 10 + 64 - 5)
    result = fit(request(call, output, reply, newest), counter, AUTO, min_answer_tokens=64)
    assert result.request.turns == [reply, newest]
    assert result.dropped_turns == 2


def test_retention_ratio_cuts_down_to_its_fraction_at_once() -> None:
    old = [turn("user", 18) for _ in range(10)]  # 20 tokens each
    newest = turn("user", 8)
    context = BASE + 200 + 10 + 64 - 1  # one token short
    policy = TruncationPolicy("retention_ratio", 0.5)
    result = fit(request(*old, newest), WordCounter(context), policy, min_answer_tokens=64)
    room = context - 64 - BASE
    history = result.prompt_tokens - BASE
    assert history <= room // 2 < history + 20  # as few turns as needed to get to half
    assert fit(request(*old, newest), WordCounter(context), AUTO, min_answer_tokens=64).dropped_turns == 1


def test_retention_ratio_post_instructions_limit_cuts_before_the_context_is_full() -> None:
    old = [turn("user", 18) for _ in range(4)]
    newest = turn("user", 8)
    policy = TruncationPolicy("retention_ratio", 1.0, post_instructions_tokens=50)
    result = fit(request(*old, newest), WordCounter(100_000), policy)
    assert result.prompt_tokens - BASE <= 50
    assert result.request.turns == [old[2], old[3], newest]


def test_a_remembered_cut_keeps_the_prefix_stable() -> None:
    policy = TruncationPolicy("retention_ratio", 0.5)
    old = [turn("user", 18) for _ in range(10)]
    context = BASE + 200 + 10 + 64 - 1
    first = fit(request(*old, turn("user", 8)), WordCounter(context), policy, min_answer_tokens=64)
    assert first.dropped_turns > 1
    # the next response has two more turns: with the remembered cut it fits without another one
    grown = request(*old, turn("user", 8), turn("assistant", 8), turn("user", 8))
    second = fit(grown, WordCounter(context), policy, min_answer_tokens=64, drop_at_least=first.dropped_turns)
    assert second.dropped_turns == first.dropped_turns
    assert second.request.turns[0] is first.request.turns[0]


def test_drop_at_least_is_clamped_to_the_droppable_turns() -> None:
    req = request(turn("user", 4), turn("assistant", 4), turn("user", 4))
    result = fit(req, WordCounter(1000), AUTO, drop_at_least=99)
    assert result.dropped_turns == 2
    assert [t.role for t in result.request.turns] == ["user"]


def test_disabled_fails_with_the_numbers_and_drops_nothing() -> None:
    req = request(turn("user", 100), turn("assistant", 100), turn("user", 8))
    prompt = BASE + 102 + 102 + 10
    with pytest.raises(ContextLengthExceeded) as caught:
        fit(req, WordCounter(prompt + 10), DISABLED, min_answer_tokens=64)
    error = caught.value
    assert (error.code, error.error_type, error.prompt_tokens) == (
        CODE_CONTEXT_LENGTH_EXCEEDED,
        INVALID_REQUEST,
        prompt,
    )
    assert f"{prompt} prompt tokens" in error.message and str(prompt + 10) in error.message
    assert "truncation is disabled" in error.message


def test_auto_fails_when_even_the_shortest_prompt_does_not_fit() -> None:
    req = request(turn("user", 50), turn("assistant", 50), turn("user", 500))
    with pytest.raises(ContextLengthExceeded) as caught:
        fit(req, WordCounter(400), AUTO, min_answer_tokens=64)
    assert caught.value.prompt_tokens == BASE + 502  # what was left after dropping both older turns
    assert "after dropping all 2 older turns" in caught.value.message


def test_the_instructions_alone_can_be_too_long() -> None:
    with pytest.raises(ContextLengthExceeded, match="no older turn could be dropped"):
        fit(request(turn("user", 1), instructions=500), WordCounter(300), AUTO)


def test_a_conversation_without_a_user_turn_keeps_its_newest_turn() -> None:
    req = request(turn("assistant", 100), turn("assistant", 100))
    result = fit(req, WordCounter(BASE + 102 + 64), AUTO, min_answer_tokens=64)
    assert result.request.turns == [req.turns[1]]


def test_fit_over_the_synthetic_backend_matches_its_own_count() -> None:
    backend = SyntheticBackend(context_length=200)
    history = [
        PromptTurn(role="user", text="hello there " * 40),
        PromptTurn(role="assistant", text="ok " * 60),
    ]
    req = GenerationInput(rid="r", turns=[*history, PromptTurn(role="user", text="and now")])
    result = fit(req, backend, AUTO, min_answer_tokens=64)
    assert result.prompt_tokens == backend.count_prompt_tokens(result.request)
    assert result.prompt_tokens + result.max_new_tokens == 200
    assert result.dropped_turns >= 1


def test_policy_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        TruncationPolicy("retention_ratio", 1.5)
    with pytest.raises(ValueError):
        TruncationPolicy(post_instructions_tokens=-1)


def test_disabled_ignores_an_earlier_cut() -> None:
    req = request(turn("user", 4), turn("assistant", 4), turn("user", 4))
    result = fit(req, WordCounter(1000), DISABLED, drop_at_least=2)
    assert (result.dropped_turns, result.request.turns) == (0, req.turns)


def test_a_result_dropped_with_its_call_counts_towards_the_cut() -> None:
    call, output, reply, newest = (
        turn("assistant", 4),
        turn("tool", 30),
        turn("assistant", 10),
        turn("user", 8),
    )
    # 20 tokens too many: the call (6) and its result (32) free enough; the reply must stay
    counter = WordCounter(BASE + 6 + 32 + 12 + 10 + 64 - 20)
    result = fit(request(call, output, reply, newest), counter, AUTO, min_answer_tokens=64)
    assert result.request.turns == [reply, newest]
