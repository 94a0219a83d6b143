"""The binaries that hack/tools.sh builds from their Go modules (helm, prometheus, argocd, mailpit, ...), as the
tests find them: $GPT_<NAME> when hack/test.sh exported it, else the cached build (built on first use)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tool_binary(name: str, env_var: str | None = None) -> str:
    """The path of `hack/tools.sh name`'s binary; `env_var` (default GPT_<NAME>) overrides it."""
    given = os.environ.get(env_var or "GPT_" + name.upper().replace("-", "_"))
    if given:
        return given
    built = subprocess.run(
        ["bash", str(ROOT / "hack" / "tools.sh"), name], capture_output=True, text=True, timeout=3600
    )
    assert built.returncode == 0, f"hack/tools.sh {name} failed:\n{built.stderr[-3000:]}"
    return built.stdout.strip().splitlines()[-1]
