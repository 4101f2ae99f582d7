"""Versioned migrations: `migrations/NNNN_name.sql`, each applied once, in its own transaction,
and recorded in `schema_migrations(version, applied_at)`. The same files serve both engines."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources

from fleetgram.store.dialect import Dialect

_NAME = re.compile(r"^(\d+)_[A-Za-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str

    def statements(self, dialect: Dialect) -> list[str]:
        """The file's statements in `dialect`'s spelling, one per item, comments dropped."""
        text = self.text
        for marker, replacement in dialect.ddl.items():
            text = text.replace(marker, replacement)
        statements: list[str] = []
        pending = ""
        for line in text.splitlines():
            if line.lstrip().startswith("--"):
                continue
            pending += line + "\n"
            if sqlite3.complete_statement(pending):
                statements.append(pending.strip().removesuffix(";").strip())
                pending = ""
        if pending.strip():
            raise ValueError(f"migration {self.name}: statement without a closing ';'")
        return statements


def load_migrations() -> list[Migration]:
    """The migrations shipped with the package, in version order."""
    folder = resources.files("fleetgram.store") / "migrations"
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise ValueError(f"two migrations have version {version}: {entry.name}")
        found[version] = Migration(version, entry.name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]
