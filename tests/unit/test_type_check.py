"""The type checker (mypy, run by hack/test.sh's lint stage) checks the Protocols structurally: a class that has
every method of Store, one with the wrong signature, is refused where a Store is wanted (a positive control)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from gpt_runtime.storage.base import Store

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
RIGHT_SIGNATURE = "async def get_user(self, user_id: str) -> User | None: ..."
WRONG_SIGNATURE = "async def get_user(self, user_id: int) -> User | None: ..."


def _claimed_store(name: str, signature: str) -> str:
    """Store's own body as a plain class `name` (no Protocol base), with get_user declared as `signature`."""
    source = textwrap.dedent(inspect.getsource(Store))
    assert source.startswith("class Store(Protocol):") and RIGHT_SIGNATURE in source
    return source.replace("class Store(Protocol):", f"class {name}:", 1).replace(RIGHT_SIGNATURE, signature, 1)


def test_a_store_with_a_wrong_method_signature_is_refused(tmp_path: Path) -> None:
    module = tmp_path / "claims.py"
    module.write_text(
        "from gpt_runtime.storage.base import *  # Store and the types its methods name\n\n"
        + _claimed_store("RightStore", RIGHT_SIGNATURE)
        + "\n\n"
        + _claimed_store("WrongStore", WRONG_SIGNATURE)
        + "\n\nright: Store = RightStore()\nwrong: Store = WrongStore()\n"
    )
    lines = module.read_text().splitlines()
    right_line = lines.index("right: Store = RightStore()") + 1
    wrong_line = lines.index("wrong: Store = WrongStore()") + 1
    # no project config (the file is outside its `files`), a cache of its own; stub bodies (`...`) are fine here
    command = [sys.executable, "-m", "mypy", "--config-file=", "--cache-dir", str(tmp_path / "cache")]
    command += ["--disable-error-code=empty-body", "--show-error-codes", "--no-error-summary", str(module)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(ROOT / "runtime")},
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert f'claims.py:{wrong_line}: error: Incompatible types in assignment (expression has type "WrongStore",' in out
    assert 'variable has type "Store")  [assignment]' in out
    assert "get_user" in out and 'Following member(s) of "WrongStore" have conflicts' in out, out
    assert f"claims.py:{right_line}:" not in out, out  # the same methods with Store's signatures pass
    assert sum(": error:" in line for line in out.splitlines()) == 1, out
