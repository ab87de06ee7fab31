"""The errors a user can cause and the two checks every config schema uses. A leaf module (no torch, no other
eat import), so the config schemas of eat.config and of each mechanism plug-in can share it without a cycle."""
from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A config value is invalid. The message names the key, the value and what is allowed."""


class CheckpointError(RuntimeError):
    """A model checkpoint cannot be used (missing, unsupported, wrong weights); the message names the file."""


def choice(key: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not valid; allowed values: {', '.join(map(str, allowed))}")


def check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not valid: {rule}")
