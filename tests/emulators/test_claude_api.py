"""The Claude API emulator, exercised through the real ``anthropic`` SDK."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
from anthropic.types import Message, MessageParam

from fleetgram.emulators.claude_api import ClaudeEmulator, count_tokens, tokenize

MODEL = "claude-sonnet-5-5"


@pytest.fixture
async def emulator() -> AsyncIterator[ClaudeEmulator]:
    emulator = ClaudeEmulator(tokens_per_second=2000.0)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def client(emulator: ClaudeEmulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(api_key="test-key", base_url=emulator.url, max_retries=2)
    yield client
    await client.close()


def user(text: str) -> list[MessageParam]:
    return [{"role": "user", "content": text}]


async def test_streamed_reply_arrives_in_several_text_deltas_and_final_usage_matches(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    prompt = "Tell me about the fleet."
    deltas: list[str] = []
    async with client.messages.stream(model=MODEL, max_tokens=1000, messages=user(prompt)) as s:
        async for text in s.text_stream:
            deltas.append(text)
        final = await s.get_final_message()

    text = "".join(deltas)
    assert len(deltas) > 3
    assert text.startswith(f"Answer to: {prompt}")
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.model == MODEL
    assert final.usage.input_tokens == count_tokens(prompt)
    assert final.usage.output_tokens == len(tokenize(text))
    assert final.usage.cache_read_input_tokens == 0
    assert final.usage.cache_creation_input_tokens == 0
    assert (emulator.completed_streams, emulator.cancelled_streams) == (1, 0)
    assert emulator.active_streams == 0


async def test_non_streaming_reply_is_a_complete_message(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    message = await client.messages.create(model=MODEL, max_tokens=1000, messages=user("Hi"))

    assert message.id.startswith("msg_")
    assert message.type == "message" and message.role == "assistant"
    assert message.model == MODEL
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith("Answer to: Hi")
    assert message.usage.input_tokens == 1
    assert message.usage.output_tokens == len(tokenize(message.content[0].text))
    assert emulator.requests[0]["messages"] == [{"role": "user", "content": "Hi"}]
    assert emulator.request_headers[0]["authorization"] == "Bearer test-key"
    assert "anthropic-version" in emulator.request_headers[0]
    assert emulator.completed_streams == 0  # only streams are counted


async def test_reply_longer_than_max_tokens_is_truncated_with_stop_reason_max_tokens(
    client: anthropic.AsyncAnthropic,
) -> None:
    message = await client.messages.create(model=MODEL, max_tokens=5, messages=user("Hi"))

    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5
    assert message.content[0].type == "text"
    assert message.content[0].text == "Answer to: Hi This"  # "Answ" "er" " to:" " Hi" " This"


async def test_scripted_answer_is_used_for_a_matching_prompt_only(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.script("Paris, of course.", when="capital of France")

    matching = await client.messages.create(
        model=MODEL, max_tokens=100, messages=user("What is the capital of France?")
    )
    other = await client.messages.create(model=MODEL, max_tokens=100, messages=user("Hello"))

    assert matching.content[0].type == "text" and matching.content[0].text == "Paris, of course."
    assert other.content[0].type == "text" and other.content[0].text.startswith("Answer to: Hello")


async def test_limited_scripts_answer_in_the_order_they_were_added(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.script("forever")
    emulator.script("first", times=1)
    emulator.script(lambda body: f"second after {len(body['messages'])} message(s)", times=1)

    replies: list[str] = []
    for _ in range(3):
        message = await client.messages.create(model=MODEL, max_tokens=100, messages=user("Go"))
        assert message.content[0].type == "text"
        replies.append(message.content[0].text)

    assert replies == ["first", "second after 1 message(s)", "forever"]


async def test_rate_limit_429_is_retried_by_the_sdk_and_the_user_sees_the_answer(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.inject(429, retry_after=0.05)

    async with client.messages.stream(model=MODEL, max_tokens=100, messages=user("Hi")) as s:
        text = await s.get_final_text()

    assert text.startswith("Answer to: Hi")
    assert len(emulator.requests) == 2
    assert [h["x-stainless-retry-count"] for h in emulator.request_headers] == ["0", "1"]


async def test_overloaded_529_exhausting_max_retries_raises_status_529(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.inject(529, count=3, retry_after=0.01)

    with pytest.raises(anthropic.InternalServerError) as caught:
        await client.messages.create(model=MODEL, max_tokens=100, messages=user("Hi"))

    assert isinstance(caught.value, anthropic.APIStatusError)
    assert caught.value.status_code == 529
    assert caught.value.type == "overloaded_error"
    assert caught.value.request_id is not None and caught.value.request_id.startswith("req_")
    assert len(emulator.requests) == 3  # the first attempt and max_retries=2 retries


async def test_internal_server_error_500_is_retried(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.inject(500, count=2, retry_after=0.01)

    message = await client.messages.create(model=MODEL, max_tokens=100, messages=user("Hi"))

    assert message.stop_reason == "end_turn"
    assert len(emulator.requests) == 3


async def test_wrong_api_key_raises_authentication_error(emulator: ClaudeEmulator) -> None:
    async with anthropic.AsyncAnthropic(api_key="wrong", base_url=emulator.url) as client:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await client.messages.create(model=MODEL, max_tokens=100, messages=user("Hi"))

    assert caught.value.status_code == 401
    assert caught.value.type == "authentication_error"
    assert len(emulator.requests) == 1  # not retried


async def test_missing_max_tokens_raises_bad_request_error(
    client: anthropic.AsyncAnthropic,
) -> None:
    body: dict[str, Any] = {"model": MODEL, "messages": user("Hi")}

    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.post("/v1/messages", cast_to=Message, body=body)

    assert caught.value.type == "invalid_request_error"
    assert caught.value.api_message == "max_tokens: Field required"


async def test_roles_that_do_not_alternate_raise_bad_request_error(
    client: anthropic.AsyncAnthropic,
) -> None:
    messages: list[MessageParam] = [
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"},
    ]

    with pytest.raises(anthropic.BadRequestError, match="roles must alternate"):
        await client.messages.create(model=MODEL, max_tokens=100, messages=messages)


async def test_more_than_four_cache_breakpoints_raise_bad_request_error(
    client: anthropic.AsyncAnthropic,
) -> None:
    messages: list[MessageParam] = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral"}}
                for i in range(5)
            ],
        }
    ]

    with pytest.raises(anthropic.BadRequestError, match="A maximum of 4 blocks"):
        await client.messages.create(model=MODEL, max_tokens=100, messages=messages)


async def test_second_turn_with_a_cache_breakpoint_reads_the_history_from_cache(
    client: anthropic.AsyncAnthropic,
) -> None:
    system = "You are a worker bot of the fleet. " * 20
    question = "Summarise the following report. " + "Lorem ipsum dolor sit amet. " * 40
    first = await client.messages.create(
        model=MODEL,
        max_tokens=200,
        system=system,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": question, "cache_control": {"type": "ephemeral"}}
                ],
            }
        ],
    )
    assert first.content[0].type == "text"
    answer = first.content[0].text
    follow_up = "And in one word?"

    second = await client.messages.create(
        model=MODEL,
        max_tokens=200,
        system=system,
        messages=[
            {"role": "user", "content": [{"type": "text", "text": question}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": answer, "cache_control": {"type": "ephemeral"}}
                ],
            },
            {"role": "user", "content": follow_up},
        ],
    )

    history = count_tokens(system) + count_tokens(question)
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation_input_tokens == history
    assert first.usage.input_tokens == 0
    assert second.usage.cache_read_input_tokens == history
    assert second.usage.cache_creation_input_tokens == count_tokens(answer)
    assert second.usage.input_tokens == count_tokens(follow_up)


async def test_closing_a_stream_early_counts_as_cancelled(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.tokens_per_second = 20.0

    async with client.messages.stream(model=MODEL, max_tokens=1000, messages=user("Hi")) as s:
        async for _text in s.text_stream:
            break

    await emulator.wait_cancelled(1, timeout=2.0)
    assert (emulator.completed_streams, emulator.cancelled_streams) == (0, 1)
    assert emulator.active_streams == 0


async def test_tokens_per_second_paces_the_stream(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.script("one two three four five six seven eight nine ten")  # 10 tokens
    emulator.tokens_per_second = 40.0

    started = time.monotonic()
    async with client.messages.stream(model=MODEL, max_tokens=100, messages=user("Hi")) as s:
        await s.get_final_text()

    assert 0.2 <= time.monotonic() - started < 1.0


async def test_hung_request_makes_the_client_time_out(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.hang_next()

    impatient = client.with_options(timeout=0.3, max_retries=0)

    with pytest.raises(anthropic.APITimeoutError):
        await impatient.messages.create(model=MODEL, max_tokens=100, messages=user("Hi"))

    message = await client.messages.create(model=MODEL, max_tokens=100, messages=user("Hi"))
    assert message.stop_reason == "end_turn"
    assert len(emulator.requests) == 2


async def test_scripted_tool_call_is_streamed_as_a_tool_use_block(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    tools: list[anthropic.types.ToolParam] = [
        {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    emulator.script({"tool_use": {"name": "get_weather", "input": {"city": "Paris"}}}, times=1)
    messages: list[MessageParam] = user("Weather in Paris?")

    async with client.messages.stream(
        model=MODEL, max_tokens=200, tools=tools, messages=messages
    ) as s:
        json_deltas = [
            event
            async for event in s
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta"
        ]
        final = await s.get_final_message()

    assert final.stop_reason == "tool_use"
    tool_use = final.content[0]
    assert tool_use.type == "tool_use"
    assert (tool_use.name, tool_use.input) == ("get_weather", {"city": "Paris"})
    assert len(json_deltas) > 1

    result: anthropic.types.ToolResultBlockParam = {
        "type": "tool_result",
        "tool_use_id": tool_use.id,
        "content": "Sunny",
    }
    reply = await client.messages.create(
        model=MODEL,
        max_tokens=200,
        tools=tools,
        messages=[
            *messages,
            {"role": "assistant", "content": [tool_use]},
            {"role": "user", "content": [result]},
        ],
    )
    assert reply.content[0].type == "text" and reply.content[0].text.startswith("Answer to: Sunny")


async def test_all_emulator_state_is_per_instance() -> None:
    async with ClaudeEmulator() as first, ClaudeEmulator() as second:
        assert first.url != second.url
        first.script("only in the first")
        async with anthropic.AsyncAnthropic(api_key="test-key", base_url=second.url) as client:
            message = await client.messages.create(model=MODEL, max_tokens=50, messages=user("x"))
        assert message.content[0].type == "text"
        assert message.content[0].text.startswith("Answer to: x")
        assert (len(first.requests), len(second.requests)) == (0, 1)
