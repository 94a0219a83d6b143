"""Run a command-line tool on bytes: input on stdin, output from stdout, bounded in time and size."""

from __future__ import annotations

import asyncio
import contextlib
import os

from gpt_runtime.voice.base import EngineFailed

_CHUNK = 64 * 1024


def tool_env() -> dict[str, str]:
    """What a tool gets of our environment: PATH, a UTF-8 locale and espeak's data path; no GPT_* secrets."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    if "ESPEAK_DATA_PATH" in os.environ:
        env["ESPEAK_DATA_PATH"] = os.environ["ESPEAK_DATA_PATH"]
    return env


async def run_tool(argv: list[str], stdin: bytes | None, *, timeout_s: float, max_output: int) -> bytes:
    """The tool's stdout; EngineFailed when it fails, runs past `timeout_s` or writes more than `max_output`.

    `argv` is executed directly (no shell); user data travels only on stdin (None: no input).
    """
    name = os.path.basename(argv[0])
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=tool_env(),
    )

    async def feed() -> None:
        if process.stdin is None or stdin is None:
            return
        # a tool that exits early closes the pipe (uvloop says so with a RuntimeError): its exit status tells
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            process.stdin.write(stdin)
            await process.stdin.drain()
            process.stdin.close()

    async def collect() -> bytes:
        assert process.stdout is not None
        out = bytearray()
        while chunk := await process.stdout.read(_CHUNK):
            out += chunk
            if len(out) > max_output:
                raise EngineFailed(f"{name} wrote more than {max_output} bytes")
        return bytes(out)

    try:
        async with asyncio.timeout(timeout_s):
            _, output = await asyncio.gather(feed(), collect())
            code = await process.wait()
    except TimeoutError:
        raise EngineFailed(f"{name} took longer than {timeout_s:g} s", code="voice_timeout") from None
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    if code != 0:
        raise EngineFailed(f"{name} failed (exit status {code})")
    return output
