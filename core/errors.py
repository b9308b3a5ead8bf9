"""One marker for mistakes the user can fix.

Every error type that means "change the request" (a bad config key, a missing data folder, an
unreachable cluster, ...) subclasses `UserError`; the CLIs print its message as one `error:` line
and exit 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
    """A request that cannot be served as given; the message names the problem and the fix."""
