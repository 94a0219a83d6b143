"""Search latency at 1k and 100k vectors per user: the runtime's brute force against sqlite-vec, same run.

    .venv/bin/python hack/bench_search.py                 # SQLite brute force (read + rank), cached rank, DynamoDB
    PYTHONPATH=.venv/lib/python3.11/site-packages /usr/bin/python3 hack/bench_search.py   # + sqlite-vec

Random unit vectors (384 float32, what all-MiniLM-L6-v2 makes) under two users in one SQLite file, the
store's own tables (search_chunks) and code (Store.search_vectors + services.search.rank). Rows:

* brute force, SQLite: read the user's vectors from the database and rank them (a search whose cache is cold)
* brute force, cached: rank the matrix kept in the process (every later search while the user's index holds)
* sqlite-vec vec0: the same vectors in a `vec0` table, partitioned by user, KNN k=200 (exact, in C); only
  where this Python's sqlite3 can load extensions (pyenv builds often cannot; Debian's and python:3.11-slim's can)
* brute force, DynamoDB (moto): the user's VEC# items read by one paginated query, then ranked (1k only)

`ratio` is each row's p50 over the SQLite brute force p50 at the same size, measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "runtime"), str(ROOT / "model")]  # also when run by a Python outside .venv

from gpt_runtime.services.search import ConversationSearch, _blocks, _Vectors, rank  # noqa: E402
from gpt_runtime.storage.base import SearchChunk  # noqa: E402
from gpt_runtime.storage.sqlite import SQLiteStore  # noqa: E402

DIM = 384
PER_CONVERSATION = 100  # chunks per conversation: 10 conversations at 1k, 1000 at 100k
LIMIT = 20


def unit_vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype("<f4")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[max(0, round(0.95 * len(ordered)) - 1)] * 1000


async def fill(store, user_id: str, n: int, seed: int) -> dict[str, object]:
    """n vectors in n / PER_CONVERSATION conversations of the user's; the live conversations."""
    vectors = unit_vectors(n, seed)
    live = {}
    for start in range(0, n, PER_CONVERSATION):
        conversation = await store.create_conversation(user_id, f"c{start}")
        live[conversation.id] = conversation
        chunks = [
            SearchChunk(f"m{i}.0", f"snippet {i}", vectors[i].tobytes()) for i in range(start, start + PER_CONVERSATION)
        ]
        await store.put_search_chunks(user_id, conversation.id, chunks, title=conversation.title, messages=0)
    return live


def to_vectors(rows) -> _Vectors:
    return _Vectors.of(_blocks(rows, DIM), DIM)


async def time_incremental(store, user_id: str, queries: np.ndarray) -> list[float]:
    """ConversationSearch's cache: one conversation gets a new vector before each search."""

    async def no_embedding(texts: list[str]) -> np.ndarray:
        raise AssertionError("not used")

    search = ConversationSearch(store, no_embedding, dim=lambda: DIM, batch=1, cache_bytes=2**31)
    await search._vectors(user_id, await store.index_states(user_id))  # the first load
    samples = []
    for i, query in enumerate(queries):
        state = (await store.index_states(user_id))[i % 3]
        chunk = SearchChunk(f"extra{i}.0", "new", unit_vectors(1, 1000 + i)[0].tobytes())
        await store.put_search_chunks(
            user_id, state.conversation.id, [chunk], title=state.conversation.title, messages=i + 1
        )
        started = time.perf_counter()
        states = await store.index_states(user_id)
        vectors = await search._vectors(user_id, states)
        rank(vectors, query, {s.conversation.id for s in states}, LIMIT)
        samples.append(time.perf_counter() - started)
    return samples


async def time_brute_force(store, user_id: str, live: dict, queries: np.ndarray) -> tuple[list[float], list[float]]:
    cold, warm = [], []
    vectors = None
    for query in queries:
        started = time.perf_counter()
        vectors = to_vectors(await store.search_vectors(user_id))
        hits = rank(vectors, query, live, LIMIT)
        cold.append(time.perf_counter() - started)
        assert len(hits) == min(LIMIT, len(live))
    for query in queries:
        started = time.perf_counter()
        rank(vectors, query, live, LIMIT)
        warm.append(time.perf_counter() - started)
    return cold, warm


def vec0_connection(path: str) -> sqlite3.Connection | None:
    try:
        import sqlite_vec
    except ImportError:
        return None
    db = sqlite3.connect(path)
    if not hasattr(db, "enable_load_extension"):
        return None
    db.enable_load_extension(True)
    sqlite_vec.load(db)
    db.enable_load_extension(False)
    return db


def time_vec0(db: sqlite3.Connection, users: list[str], queries: dict[str, np.ndarray]) -> dict[str, list[float]]:
    db.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS search_vec USING vec0("
        f"user_id text partition key, embedding float[{DIM}] distance_metric=cosine, +conversation_id text)"
    )
    db.execute(
        "INSERT INTO search_vec(rowid, user_id, embedding, conversation_id)"
        " SELECT rowid, user_id, vector, conversation_id FROM search_chunks"
    )
    db.commit()
    timings = {}
    for user in users:
        samples = []
        for query in queries[user]:
            started = time.perf_counter()
            rows = db.execute(
                "SELECT conversation_id, distance FROM search_vec WHERE embedding MATCH ? AND k = 200 AND user_id = ?",
                (query.astype("<f4").tobytes(), user),
            ).fetchall()
            best: dict[str, float] = {}
            for conversation_id, distance in rows:
                best.setdefault(conversation_id, 1 - distance)
            samples.append(time.perf_counter() - started)
            assert rows
        timings[user] = samples
    return timings


def start_moto(log_path: Path) -> tuple[str, subprocess.Popen]:
    """moto's server on a free loopback port (what the storage tests use)."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with log_path.open("w") as log:
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(f"{url}/moto-api/", timeout=1)
            return url, moto
        except httpx.TransportError:
            time.sleep(0.2)
    moto.kill()
    raise RuntimeError("moto did not start")


async def dynamodb_brute_force(n: int, runs: int) -> list[float] | None:
    try:
        from gpt_runtime.storage.dynamodb import DynamoDBStore
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        url, moto = await asyncio.to_thread(start_moto, Path(tmp) / "moto.log")
        try:
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
            store = DynamoDBStore.from_url(f"dynamodb://bench?region=us-east-1&endpoint_url={url}")
            await store.open()
            user = await store.create_user("bench@example.com", "h")
            live = await fill(store, user.id, n, seed=3)
            cold, _ = await time_brute_force(store, user.id, live, unit_vectors(runs, 4))
            await store.close()
            return cold
        finally:
            moto.terminate()
            await asyncio.to_thread(moto.wait, 10)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="queries per measurement")
    parser.add_argument("--no-dynamodb", action="store_true")
    args = parser.parse_args()
    sizes = {"1k": 1_000, "100k": 100_000}
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "bench.db")
        store = SQLiteStore(path)
        await store.open()
        users, lives = {}, {}
        for seed, (label, n) in enumerate(sizes.items()):
            user = await store.create_user(f"{label}@example.com", "h")
            users[label] = user.id
            lives[label] = await fill(store, user.id, n, seed)
        queries = {label: unit_vectors(args.runs, 100 + i) for i, label in enumerate(sizes)}
        results: dict[tuple[str, str], tuple[float, float]] = {}
        for label in sizes:
            cold, warm = await time_brute_force(store, users[label], lives[label], queries[label])
            results[("brute force, SQLite (read + rank)", label)] = percentiles(cold)
            results[("brute force, cached in process", label)] = percentiles(warm)
            incremental = await time_incremental(store, users[label], queries[label])
            results[("cached, 1 conversation changed", label)] = percentiles(incremental)
        await store.close()
        vec = vec0_connection(path)
        vec_note = ""
        if vec is None:
            vec_note = "sqlite-vec: not measured, this Python's sqlite3 cannot load extensions (see the docstring)"
        else:
            timings = time_vec0(vec, [users[label] for label in sizes], {users[lb]: queries[lb] for lb in sizes})
            for label in sizes:
                results[("sqlite-vec vec0, k=200", label)] = percentiles(timings[users[label]])
            vec.close()
    if not args.no_dynamodb:
        cold = await dynamodb_brute_force(sizes["1k"], max(5, args.runs // 2))
        if cold:
            results[("brute force, DynamoDB on moto", "1k")] = percentiles(cold)

    print(f"search latency, {args.runs} queries, top {LIMIT} conversations, {DIM}-d vectors (ms)")
    print(f"{'method':36} {'vectors':>8} {'p50':>9} {'p95':>9} {'ratio':>7}")
    for (method, label), (p50, p95) in results.items():
        base = results[("brute force, SQLite (read + rank)", label)][0]
        print(f"{method:36} {label:>8} {p50:9.2f} {p95:9.2f} {p50 / base:7.2f}")
    if vec_note:
        print(vec_note)


if __name__ == "__main__":
    asyncio.run(main())
