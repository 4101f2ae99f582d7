"""The Claude emulator takes image and document blocks within the documented limits and refuses
the rest with the real API's 400 messages; tests can see what a request carried."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest

from fleetgram.emulators.claude_api import ClaudeEmulator
from tests.unit.test_media import pdf, png

MODEL = "claude-sonnet-5-5"


@pytest.fixture
async def emulator() -> AsyncIterator[ClaudeEmulator]:
    async with ClaudeEmulator(tokens_per_second=float("inf")) as emulator:
        yield emulator


@pytest.fixture
async def client(emulator: ClaudeEmulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(api_key="test-key", base_url=emulator.url, max_retries=0)
    yield client
    await client.close()


def image(data: bytes, media_type: str = "image/png") -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                        "data": base64.b64encode(data).decode()}}


def document(data: bytes) -> dict[str, Any]:
    return {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                           "data": base64.b64encode(data).decode()}}


async def ask(client: anthropic.AsyncAnthropic, *blocks: dict[str, Any]) -> str:
    content = [*blocks, {"type": "text", "text": "describe"}]
    message = await client.messages.create(model=MODEL, max_tokens=50,
                                           messages=[{"role": "user", "content": content}])  # type: ignore[list-item,typeddict-item]
    return message.content[0].text  # type: ignore[union-attr]


async def refusal(client: anthropic.AsyncAnthropic, *blocks: dict[str, Any]) -> str:
    with pytest.raises(anthropic.BadRequestError) as refused:
        await ask(client, *blocks)
    body = refused.value.body
    assert isinstance(body, dict) and body["error"]["type"] == "invalid_request_error"
    return str(body["error"]["message"])


async def test_an_image_and_a_pdf_are_accepted_and_visible_to_tests(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    picture, report = png(640, 480), pdf(2)
    await ask(client, image(picture), document(report))
    seen = emulator.media_blocks()
    assert [(b["type"], b["bytes"]) for b in seen] == [("image", picture), ("document", report)]
    assert emulator.user_blocks()[-1] == {"type": "text", "text": "describe"}


async def test_an_image_over_5_mb_of_base64_is_refused_with_the_apis_message(
    client: anthropic.AsyncAnthropic,
) -> None:
    big = png(100, 100) + bytes(4 * 1024 * 1024)  # 5.3 MB once base64-encoded
    message = await refusal(client, image(big))
    encoded = len(base64.b64encode(big))
    assert message == (f"messages.0.content.0.image.source.base64: image exceeds 5 MB maximum: "
                       f"{encoded} bytes > 5242880 bytes")


async def test_an_image_over_8000_pixels_is_refused(client: anthropic.AsyncAnthropic) -> None:
    message = await refusal(client, image(png(8001, 10)))
    assert message == ("messages.0.content.0.image.source.base64.data: At least one of the "
                       "image dimensions exceed max allowed size: 8000 pixels")


async def test_with_more_than_20_images_each_may_be_2000_pixels(
    client: anthropic.AsyncAnthropic,
) -> None:
    await ask(client, *[image(png(2000, 2000))] * 21)
    message = await refusal(client, *[image(png(2001, 10))] * 21)
    assert message.endswith("exceed max allowed size for many-image requests: 2000 pixels")


async def test_more_than_100_images_and_documents_are_refused(
    client: anthropic.AsyncAnthropic,
) -> None:
    message = await refusal(client, *[image(png(10, 10))] * 100, document(pdf(1)))
    assert message == "too many images and documents: 100 + 1 > 100"


async def test_more_than_100_pdf_pages_are_refused(client: anthropic.AsyncAnthropic) -> None:
    assert await refusal(client, document(pdf(101))) == (
        "A maximum of 100 PDF pages may be provided.")


async def test_a_media_type_the_bytes_contradict_is_refused(
    client: anthropic.AsyncAnthropic,
) -> None:
    message = await refusal(client, image(png(10, 10), "image/jpeg"))
    assert message.endswith("specified using the image/jpeg media type, but the image appears "
                            "to be a image/png image")


async def test_a_pdf_counts_tokens_by_page_not_by_base64_length(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    padded = pdf(2) + b"%" + bytes(1024 * 1024)  # 1 MB of padding: ~350k tokens as base64
    message = await client.messages.create(
        model=MODEL, max_tokens=20,
        messages=[{"role": "user", "content": [document(padded),  # type: ignore[list-item]
                                               {"type": "text", "text": "hi"}]}])
    assert message.usage.input_tokens < 10_000
