"""`python -m pipeline.jobs submit|status|logs`: the Ray Job CLI behind `make submit|status|logs`.

`ray job ...` answers a missing or unreachable cluster with 50-117 lines of traceback. This wrapper
checks the dashboard address first (one `error:` line, exit 2), then runs the Ray CLI with its
output passed through; a failure of the Ray CLI itself ends in one `error:` line with its last line.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from core.errors import UserError

RAY = Path(sys.executable).with_name("ray")


class JobCommandError(UserError):
    """No reachable cluster, or the Ray Job CLI refused the request."""


def check_dashboard(address: str) -> str:
    """`http://host:8265`, reachable, or JobCommandError naming the fix."""
    if not address:
        raise JobCommandError(
            "no cluster given: set RAY_ADDRESS=http://<head-ip>:8265 (the head's dashboard address; "
            "README, 'Running on a cluster')"
        )
    url = urlparse(address if "://" in address else f"http://{address}")
    if url.scheme not in ("http", "https") or not url.hostname:
        raise JobCommandError(f"RAY_ADDRESS {address!r} is not a dashboard address such as http://<head-ip>:8265")
    port = url.port or 8265
    try:
        socket.create_connection((url.hostname, port), timeout=5).close()
    except OSError as error:
        raise JobCommandError(
            f"cannot reach the Ray dashboard at {url.hostname}:{port} ({error.strerror or error}); start the head "
            "(`ray start --head`) or fix RAY_ADDRESS"
        ) from None
    return f"{url.scheme}://{url.hostname}:{port}"


def run(argv: list[str]) -> int:
    """`submit|status|logs ARGS...`: the address check, then `ray job <command> --address ... ARGS`."""
    if not argv or argv[0] not in ("submit", "status", "logs"):
        raise JobCommandError("usage: python -m pipeline.jobs submit|status|logs [ray job arguments]")
    address = check_dashboard(os.environ.get("RAY_ADDRESS", ""))
    command = [str(RAY), "job", argv[0], "--address", address, *argv[1:]]
    result = subprocess.run(command, stderr=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
        raise JobCommandError(f"ray job {argv[0]} failed: {lines[-1] if lines else f'exit {result.returncode}'}")
    sys.stderr.write(result.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
