"""The Claude emulator takes a subscription's OAuth token only as the real API does: as a
Bearer token with the `oauth-2025-04-20` beta (what Claude Code sends)."""

from __future__ import annotations

import anthropic
import pytest

from fleetgram.emulators.claude_api import ClaudeEmulator

TOKEN = "sk-ant-oat01-test-token"


async def test_an_oauth_token_without_the_oauth_beta_is_refused_as_the_api_refuses_it() -> None:
    async with ClaudeEmulator(api_key=TOKEN) as emulator:
        client = anthropic.AsyncAnthropic(auth_token=TOKEN, base_url=emulator.url,
                                          max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await client.messages.create(model="claude-sonnet-5-5", max_tokens=10,
                                         messages=[{"role": "user", "content": "hi"}])
    assert "OAuth authentication is currently not supported." in str(caught.value)


async def test_an_oauth_token_with_the_oauth_beta_is_served() -> None:
    async with ClaudeEmulator(api_key=TOKEN) as emulator:
        client = anthropic.AsyncAnthropic(auth_token=TOKEN, base_url=emulator.url,
                                          max_retries=0,
                                          default_headers={"anthropic-beta": "oauth-2025-04-20"})
        message = await client.messages.create(
            model="claude-sonnet-5-5", max_tokens=10,
            messages=[{"role": "user", "content": "hi"}])
    assert message.content
