"""Compaction of a worker's conversation: where it cuts, what it keeps, how it falls back."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from fleetgram.claude.compaction import (
    SUMMARY_ACK,
    SUMMARY_INTRO,
    compact,
    estimate_tokens,
    exchange_starts,
    needs_compaction,
    split_old_recent,
    summary_turns,
    trim,
)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def tool_call(tool_id: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [
        {"type": "tool_use", "id": tool_id, "name": "search", "input": {"q": "x"}}]}


def tool_result(tool_id: str) -> dict[str, Any]:
    return {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": tool_id, "content": "found"}]}


def exchanges(n: int, size: int = 300) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    for i in range(n):
        turns += [user(f"q{i} " + "x" * size), assistant(f"a{i} " + "y" * size)]
    return turns


def test_compaction_starts_at_the_share_of_the_window():
    assert not needs_compaction(799, 1000, 0.8)
    assert needs_compaction(800, 1000, 0.8)


def test_a_cut_is_never_made_between_a_tool_use_and_its_result():
    turns = [user("q0"), tool_call("t1"), tool_result("t1"), assistant("a0"), user("q1"),
             assistant("a1")]
    assert exchange_starts(turns) == [0, 4]
    for keep in range(0, 200, 5):
        old, recent = split_old_recent(turns, keep)
        assert old + recent == turns
        assert not recent or recent[0] == user("q1")


def test_the_recent_part_is_the_longest_tail_of_whole_exchanges_that_fits():
    turns = exchanges(6)
    per_exchange = estimate_tokens(turns[:2])
    old, recent = split_old_recent(turns, per_exchange * 2)
    assert recent == turns[-4:] and old == turns[:-4]


def test_trimming_drops_the_oldest_exchanges():
    turns = exchanges(5)
    kept = trim(turns, estimate_tokens(turns[:2]))
    assert kept == turns[-2:]


def test_trimming_an_exchange_too_big_to_keep_leaves_nothing():
    assert trim(exchanges(2, size=3000), 10) == []


def test_the_summary_replaces_the_older_turns_and_roles_keep_alternating():
    turns = exchanges(8, size=100)
    seen: list[list[dict[str, Any]]] = []

    async def summarise(old: list[dict[str, Any]]) -> str:
        seen.append(old)
        return "the user asked eight questions"

    async def run() -> None:
        result = await compact(turns, window=1000, summarise=summarise)
        assert result.turns[:2] == summary_turns("the user asked eight questions")
        assert result.turns[0]["content"][0]["text"].startswith(SUMMARY_INTRO)
        assert result.turns[1]["content"][0]["text"] == SUMMARY_ACK
        kept = result.turns[2:]
        assert kept == turns[len(turns) - len(kept):]
        assert seen == [turns[: len(turns) - len(kept)]]
        assert result.summarised == len(seen[0]) and result.dropped == 0
        roles = [t["role"] for t in result.turns]
        assert all(a != b for a, b in itertools.pairwise(roles))
        assert estimate_tokens(result.turns) < estimate_tokens(turns)
        assert result.note.startswith("🗜") and "\n" not in result.note

    asyncio.run(run())


def test_a_failing_summary_falls_back_to_trimming():
    turns = exchanges(8, size=100)

    async def summarise(old: list[dict[str, Any]]) -> str:
        raise RuntimeError("overloaded")

    result = asyncio.run(compact(turns, window=1000, summarise=summarise))
    assert result.summarised == 0 and result.dropped > 0
    assert result.turns == turns[result.dropped:]
    assert "let go of the oldest part" in result.note


def test_an_old_part_too_big_to_summarise_is_trimmed_without_a_call():
    turns = exchanges(4, size=3000)
    calls: list[int] = []

    async def summarise(old: list[dict[str, Any]]) -> str:
        calls.append(1)
        return "summary"

    result = asyncio.run(compact(turns, window=1000, summarise=summarise))
    assert calls == []
    assert result.turns == [] and result.dropped == len(turns)
