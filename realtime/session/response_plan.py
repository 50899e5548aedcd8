"""What a ``response.create`` asks for: session defaults with the per-response overrides applied.

`plan_response` is pure: it validates the overrides (GA names; beta ones were normalised by
realtime/wire/client_events.py), resolves the voice, picks the items the model sees (the conversation, or the
response's own ``input``), and returns the wire record and the backend request of the new response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from realtime.audio import AudioFormat
from realtime.backends.base import GenerationInput, SamplingParams
from realtime.errors import CODE_INVALID_VALUE, ProtocolViolation
from realtime.session.conversation import Conversation
from realtime.session.items import item_from_client, prompt_turns_with_ids
from realtime.session.tool_calls import realtime_tool_choice, tools_prompt
from realtime.wire.client_events import ConversationItemModel, ItemReference, ResponseCreate
from realtime.wire.records import Item, ResponseRecord, new_id
from realtime.wire.session_config import (
    SessionConfig,
    check_max_output_tokens,
    check_temperature,
    check_tools,
    parse_modalities,
    render_instructions,
)

MAX_METADATA_PAIRS = 16  # OpenAI: metadata holds at most 16 key-value pairs


@dataclass(frozen=True)
class ResponsePlan:
    """A validated response request.

    Attributes:
        record: what ``response.created`` / ``response.done`` will describe.
        request: the backend generation request (``rid`` = response id); ``max_new_tokens`` is the client's
            cap (None for ``"inf"``) until `realtime.backends.context.fit` sets the budget.
        in_band: True when the response writes to the default conversation (``conversation: "auto"``).
        turn_items: the conversation item id of each of ``request.turns`` (None for the tools turn).
        from_conversation: True when the turns are the default conversation (no ``input`` override), so a
            context cut can be remembered there for the next response.
        max_calls: most function calls the response may emit (1 with ``parallel_tool_calls: false``).
    """

    record: ResponseRecord
    request: GenerationInput
    in_band: bool
    turn_items: tuple[str | None, ...] = ()
    from_conversation: bool = False
    max_calls: int | None = None


def plan_response(
    event: ResponseCreate,
    config: SessionConfig,
    conversation: Conversation,
    *,
    resolve_voice: Callable[[str], str],
    beta: bool,
) -> ResponsePlan:
    """Apply ``event``'s overrides to the session defaults.

    Args:
        event: the parsed ``response.create``.
        config: the session's configuration (defaults for every override).
        conversation: the default conversation (the model's input unless ``input`` is given).
        resolve_voice: maps a requested voice to a registered one or raises `ProtocolViolation`.
        beta: the connection speaks beta (temperature is clamped rather than rejected).

    Raises:
        ProtocolViolation: an invalid override or an unknown item reference.
    """
    params = event.params
    fields = params.model_fields_set if params is not None else set()
    mode = (params.conversation if params is not None else None) or "auto"
    if mode not in ("auto", "none"):
        raise ProtocolViolation(
            CODE_INVALID_VALUE, f"Invalid value: '{mode}'. Use 'auto' or 'none'.", "response.conversation"
        )
    modalities, voice, fmt = config.output_modalities, config.voice, config.output_format
    instructions, max_tokens = config.instructions, config.max_output_tokens
    prompt = config.prompt
    metadata: dict[str, str] | None = None
    if params is not None:
        if "output_modalities" in fields:
            modalities = parse_modalities(params.output_modalities, "response.output_modalities")
        if "instructions" in fields:
            instructions = params.instructions or ""
        if "prompt" in fields:
            prompt = params.prompt.model_dump(exclude_unset=True) if params.prompt is not None else None
            render_instructions("", prompt, "response.prompt")  # names the response's field in errors
        if "max_output_tokens" in fields:
            max_tokens = check_max_output_tokens(params.max_output_tokens, "response.max_output_tokens")
        if params.metadata is not None:
            if len(params.metadata) > MAX_METADATA_PAIRS:
                raise ProtocolViolation(
                    CODE_INVALID_VALUE, "metadata has more than 16 key-value pairs.", "response.metadata"
                )
            metadata = dict(params.metadata)
        output = params.audio.output if params.audio is not None else None
        if output is not None and output.voice is not None:
            voice = resolve_voice(str(output.voice))
        if output is not None and output.format is not None:
            fmt = AudioFormat.from_ga_type(output.format.type)
    tools, tool_choice, choice_param = config.tools, config.tool_choice, "session.tool_choice"
    if params is not None and "tools" in fields:
        tools = check_tools(list(params.tools or []), "response.tools")
    if params is not None and "tool_choice" in fields and params.tool_choice is not None:
        choice = params.tool_choice
        tool_choice = choice.model_dump(exclude_unset=True) if isinstance(choice, BaseModel) else choice
        choice_param = "response.tool_choice"
    tools_part = tools_prompt(
        tools,
        realtime_tool_choice(tool_choice),
        param=choice_param,
        single_call=config.parallel_tool_calls is False,
    )
    temperature = config.temperature
    if event.temperature is not None:
        temperature = check_temperature(event.temperature, beta=beta, param="response.temperature")
    items = _input_items(event.input, conversation, config.input_format)
    in_band = mode == "auto"
    record = ResponseRecord(
        id=new_id("resp"),
        conversation_id=conversation.id if in_band else None,
        modalities=modalities,
        voice=voice,
        output_format=fmt,
        max_output_tokens=max_tokens,
        temperature=temperature,
        metadata=metadata,
    )
    sampling = SamplingParams(
        max_new_tokens=None if max_tokens == "inf" else max_tokens,  # "inf": what the context leaves
        **({"temperature": temperature} if temperature is not None else {}),
    )
    history = prompt_turns_with_ids(items)
    request = GenerationInput(
        rid=record.id,
        turns=[*tools_part.turns, *(turn for turn, _ in history)],
        instructions="\n".join([render_instructions(instructions, prompt), *tools_part.directives]).strip(),
        speak="audio" in modalities,
        sampling=sampling,
        affinity_key=conversation.id,  # out-of-band replies share the session's instructions prefix too
    )
    turn_items = (*(None for _ in tools_part.turns), *(item_id for _, item_id in history))
    from_conversation = in_band and event.input is None
    max_calls = 1 if config.parallel_tool_calls is False else None
    return ResponsePlan(record, request, in_band, turn_items, from_conversation, max_calls)


def _input_items(
    entries: tuple[ConversationItemModel | ItemReference, ...] | None,
    conversation: Conversation,
    input_format: AudioFormat,
) -> list[Item]:
    if entries is None:
        return list(conversation)
    items: list[Item] = []
    for index, entry in enumerate(entries):
        if isinstance(entry, ItemReference):
            if entry.id not in conversation:
                raise ProtocolViolation(
                    CODE_INVALID_VALUE,
                    f"Invalid value: '{entry.id}'. No such item.",
                    f"response.input[{index}].id",
                )
            items.append(conversation.get(entry.id))
        else:
            items.append(item_from_client(entry, input_format))
    return items
