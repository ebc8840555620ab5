"""Write .env from .env.example with a fresh random value for every *PASSWORD*/*SECRET*.

Run by ``make env`` with the system Python (standard library only). An existing .env is left
alone: remove it first to start over.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path


def render(example: str) -> str:
    """The example's lines with each secret replaced by 32 random URL-safe bytes."""
    lines = []
    for line in example.splitlines():
        name, sep, _ = line.partition("=")
        if sep and not line.startswith("#") and ("PASSWORD" in name or "SECRET" in name):
            line = f"{name}={secrets.token_urlsafe(32)}"
        elif sep and name == "HOST_UID" and hasattr(os, "getuid"):
            line = f"HOST_UID={os.getuid()}"
        elif sep and name == "HOST_GID" and hasattr(os, "getgid"):
            line = f"HOST_GID={os.getgid()}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(root: Path) -> int:
    target = root / ".env"
    if target.exists():
        print(f"{target} exists; remove it to generate a new one", file=sys.stderr)
        return 1
    target.write_text(render((root / ".env.example").read_text()))
    target.chmod(0o600)
    print(f"wrote {target} with fresh secrets")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()))
