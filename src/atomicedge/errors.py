"""Typed errors shared by every subpackage.

The CLI maps these to one-line messages and exit codes; library code never exits.
"""

from __future__ import annotations


class AtomicEdgeError(Exception):
    """Base of every error the product raises on purpose.

    ``hint`` is an optional second sentence telling the user what to do next.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class UsageError(AtomicEdgeError):
    """The user asked for something malformed (bad flag value, bad ref syntax)."""

    exit_code = 2


class NotFoundError(AtomicEdgeError):
    """A repo, ref, commit, object or path does not exist."""


class CorruptionError(AtomicEdgeError):
    """Stored or received data does not match its checksum or format."""


class FormatError(CorruptionError):
    """Bytes that do not parse as the expected format (GVariant, keyfile, ...)."""


class ToolError(AtomicEdgeError):
    """An outside tool (mmdebstrap, gpg, systemd-nspawn, ...) failed."""

    def __init__(self, message: str, hint: str | None = None, *, stderr: str = "") -> None:
        super().__init__(message, hint)
        self.stderr = stderr
