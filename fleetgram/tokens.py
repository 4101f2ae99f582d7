"""Worker bot tokens added at run time (/addworker), encrypted at rest.

A token created through Bot API 9.6 managed bots
(https://core.telegram.org/bots/api#getmanagedbottoken) is stored in the `managed_tokens`
table encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from the `cryptography` package)
under TOKEN_ENCRYPTION_KEY. At start-up the stored tokens join WORKER_TOKEN_POOL's, after
them, in the order they were added; their slots are numbered on.
"""

from __future__ import annotations

import binascii
import logging
from base64 import urlsafe_b64decode
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken

from fleetgram.config import Settings
from fleetgram.domain import slot_name

log = logging.getLogger(__name__)

KEY_SETTING = "TOKEN_ENCRYPTION_KEY"
GENERATE_KEY = ('python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"')


class WrongKey(Exception):
    """A stored token does not decrypt under the configured key."""


def key_problem(raw: str) -> str | None:
    """Why `raw` is not a Fernet key (None if it is): 32 bytes, url-safe base64."""
    try:
        decoded = urlsafe_b64decode(raw.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        decoded = b""
    if len(decoded) != 32:
        return ("is not a Fernet key (32 url-safe base64-encoded bytes); generate one with "
                f"{GENERATE_KEY}")
    return None


class TokenCipher:
    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode("ascii"))

    def encrypt(self, token: str) -> bytes:
        return self._fernet.encrypt(token.encode())

    def decrypt(self, blob: bytes) -> str:
        try:
            return self._fernet.decrypt(bytes(blob)).decode()
        except InvalidToken:
            raise WrongKey(f"a stored worker token does not decrypt with {KEY_SETTING}") from None


def next_slot(settings: Settings) -> str:
    """The slot a token added now gets: numbered on after every token in the pool."""
    return slot_name(len(settings.worker_token_pool))


def join_pool(settings: Settings, tokens: Sequence[str]) -> list[str]:
    """Add `tokens` (those not in it yet) to the pool; returns their slot names.

    Settings is frozen because nothing may change a setting by accident; the pool is the one
    deliberate exception: the master, the orchestrator, the runtime and the wake-up watcher
    share this one object, so a token added here is seen by all of them at once (slot_names,
    token_for) without re-wiring each of them."""
    added = [t for t in dict.fromkeys(tokens) if t not in settings.worker_token_pool]
    if not added:
        return []
    first = len(settings.worker_token_pool)
    object.__setattr__(settings, "worker_token_pool", (*settings.worker_token_pool, *added))
    return [slot_name(first + i) for i in range(len(added))]


async def load_into_pool(settings: Settings, store: object) -> list[str]:
    """Start-up: the stored tokens join the pool. Raises StartupError naming
    TOKEN_ENCRYPTION_KEY when tokens are stored but the key is unset or wrong."""
    from fleetgram.checks import StartupError

    rows = await store.managed_tokens()  # type: ignore[attr-defined]
    if not rows:
        return []
    if not settings.token_encryption_key:
        raise StartupError(KEY_SETTING, f"is not set, but {len(rows)} worker token(s) added with "
                                        "/addworker are stored encrypted; set the key they "
                                        "were stored with")
    cipher = TokenCipher(settings.token_encryption_key)
    try:
        plain = [cipher.decrypt(row.token_encrypted) for row in rows]
    except WrongKey:
        raise StartupError(KEY_SETTING, "does not decrypt the worker tokens added with "
                                        "/addworker; set the key they were stored with") from None
    slots = join_pool(settings, plain)
    if slots:
        log.info("worker tokens added with /addworker joined the pool", extra={"slots": slots})
    return slots
