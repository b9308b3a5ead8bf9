"""The one error every reference source raises, so callers catch a single type."""

from __future__ import annotations

from core.errors import UserError


class ReferenceSourceError(UserError):
    """A reference source is missing, unreadable or not the format claimed.

    The message names the problem and the fix; the CLIs print it as one line.
    """
