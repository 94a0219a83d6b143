"""One contract for every Store: each test runs on SQLite and on DynamoDB (moto's server over HTTP)."""

from __future__ import annotations

import asyncio

import pytest
from gpt_runtime.storage import AlreadyExists, NewMessage, Store, open_store
from gpt_runtime.storage.base import ConversationGone, InvalidCursor, encode_cursor
from gpt_runtime.storage.dynamodb import DynamoDBStore

from .conftest import Backend

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def _user(store: Store, name: str = "ann"):
    return await store.create_user(f"{name}@example.com", f"hash-{name}")


async def _walk(store: Store, user_id: str, limit: int, updated_since: int | None = None) -> list[list[str]]:
    """Every page's ids, following next_cursor to the end."""
    pages, cursor = [], None
    while True:
        page = await store.list_conversations(user_id, limit=limit, cursor=cursor, updated_since=updated_since)
        pages.append([c.id for c in page.items])
        cursor = page.next_cursor
        if cursor is None:
            return pages
        assert len(pages) < 50, "pagination does not terminate"


# users


async def test_user_round_trip_and_lookup_by_email(backend: Backend):
    store = backend.store
    user = await store.create_user("ann@example.com", "argon2-hash", "premium")
    assert (user.email, user.password_hash, user.role, user.email_verified) == (
        "ann@example.com",
        "argon2-hash",
        "premium",
        False,
    )
    assert await store.get_user(user.id) == user
    assert await store.get_user_by_email("ann@example.com") == user
    assert await store.get_user("no-such-id") is None
    assert await store.get_user_by_email("nobody@example.com") is None


async def test_email_is_unique_and_the_first_account_is_kept(backend: Backend):
    store = backend.store
    first = await store.create_user("ann@example.com", "first")
    with pytest.raises(AlreadyExists):
        await store.create_user("ann@example.com", "second", "admin")
    assert await store.get_user_by_email("ann@example.com") == first


async def test_concurrent_signups_with_one_email_create_exactly_one_user(backend: Backend):
    results = await asyncio.gather(
        *(backend.store.create_user("race@example.com", f"hash-{i}") for i in range(6)), return_exceptions=True
    )
    created = [r for r in results if not isinstance(r, BaseException)]
    assert len(created) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if r not in created)
    assert await backend.store.get_user_by_email("race@example.com") == created[0]


async def test_update_user_changes_only_given_fields(backend: Backend):
    store = backend.store
    user = await _user(store)
    verified = await store.update_user(user.id, email_verified=True)
    assert verified is not None and verified.email_verified and verified.password_hash == "hash-ann"
    changed = await store.update_user(user.id, password_hash="new-hash", role="admin")
    assert changed is not None
    assert (changed.password_hash, changed.role, changed.email_verified) == ("new-hash", "admin", True)
    assert await store.get_user(user.id) == changed
    assert await store.update_user(user.id) == changed
    assert await store.update_user("no-such-id", role="admin") is None
    assert await store.get_user("no-such-id") is None


# api keys


async def test_api_keys_round_trip_by_hash_and_stay_with_their_owner(backend: Backend):
    store = backend.store
    ann, bob = await _user(store, "ann"), await _user(store, "bob")
    first = await store.create_api_key(ann.id, "laptop", "sk-gpt-abcd", "hash-1")
    second = await store.create_api_key(ann.id, "ci", "sk-gpt-efgh", "hash-2")
    bobs = await store.create_api_key(bob.id, "bob's", "sk-gpt-ijkl", "hash-3")
    assert (first.user_id, first.name, first.prefix, first.key_hash, first.last_used_at) == (
        ann.id,
        "laptop",
        "sk-gpt-abcd",
        "hash-1",
        None,
    )
    assert await store.list_api_keys(ann.id) == [first, second]  # oldest first
    assert await store.list_api_keys(bob.id) == [bobs]
    assert await store.get_api_key_by_hash("hash-2") == second
    assert await store.get_api_key_by_hash("no-such-hash") is None
    # another user's id addresses nothing
    assert await store.delete_api_key(bob.id, first.id) is False
    assert await store.get_api_key_by_hash("hash-1") == first
    assert await store.delete_api_key(ann.id, first.id) is True
    assert await store.delete_api_key(ann.id, first.id) is False
    assert await store.get_api_key_by_hash("hash-1") is None
    assert await store.list_api_keys(ann.id) == [second]


async def test_touching_an_api_key_records_its_latest_use(backend: Backend):
    store = backend.store
    ann = await _user(store)
    key = await store.create_api_key(ann.id, "k", "sk-gpt-abcd", "hash-1")
    await store.touch_api_key(ann.id, key.id, 2_000)
    await store.touch_api_key(ann.id, key.id, 1_000)  # an older use arriving late changes nothing
    touched = await store.get_api_key_by_hash("hash-1")
    assert touched is not None and touched.last_used_at == 2_000
    assert (await store.list_api_keys(ann.id))[0].last_used_at == 2_000
    await store.delete_api_key(ann.id, key.id)
    await store.touch_api_key(ann.id, key.id, 3_000)  # a revoked key: no error, nothing comes back
    assert await store.get_api_key_by_hash("hash-1") is None
    assert await store.list_api_keys(ann.id) == []


# conversations


async def test_conversation_is_scoped_to_its_owner(backend: Backend):
    store = backend.store
    ann, bob = await _user(store, "ann"), await _user(store, "bob")
    conversation = await store.create_conversation(ann.id, "ann's chat")
    assert conversation.title == "ann's chat" and conversation.message_count == 0
    assert conversation.created_at == conversation.updated_at
    assert await store.get_conversation(ann.id, conversation.id) == conversation

    assert await store.get_conversation(bob.id, conversation.id) is None
    assert await store.rename_conversation(bob.id, conversation.id, "stolen") is None
    assert await store.add_messages(bob.id, conversation.id, [NewMessage("user", "hi")]) is None
    assert await store.list_messages(bob.id, conversation.id) is None
    assert await store.delete_conversation(bob.id, conversation.id) is False
    assert (await store.list_conversations(bob.id, limit=10)).items == []

    assert await store.get_conversation(ann.id, conversation.id) == conversation
    assert await store.list_messages(ann.id, conversation.id) == []


async def test_rename_sets_title_and_bumps_updated_at(backend: Backend):
    store = backend.store
    ann = await _user(store)
    conversation = await store.create_conversation(ann.id, "old")
    renamed = await store.rename_conversation(ann.id, conversation.id, "new")
    assert renamed is not None
    assert renamed.title == "new"
    assert renamed.created_at == conversation.created_at
    assert renamed.updated_at > conversation.updated_at
    assert await store.get_conversation(ann.id, conversation.id) == renamed
    assert await store.rename_conversation(ann.id, "no-such-id", "x") is None


async def test_messages_keep_their_order_and_count(backend: Backend):
    store = backend.store
    ann = await _user(store)
    conversation = await store.create_conversation(ann.id, "chat")
    first = await store.add_messages(
        ann.id, conversation.id, [NewMessage("system", "be brief"), NewMessage("user", "hello")]
    )
    second = await store.add_messages(
        ann.id, conversation.id, [NewMessage("assistant", "hi there", tokens=3, finish_reason="stop")]
    )
    assert first is not None and second is not None
    listed = await store.list_messages(ann.id, conversation.id)
    assert listed == first + second
    assert [(m.role, m.content, m.tokens, m.finish_reason) for m in listed] == [
        ("system", "be brief", None, None),
        ("user", "hello", None, None),
        ("assistant", "hi there", 3, "stop"),
    ]
    assert {m.conversation_id for m in listed} == {conversation.id}
    assert len({m.id for m in listed}) == 3
    after = await store.get_conversation(ann.id, conversation.id)
    assert after is not None and after.message_count == 3
    assert after.updated_at > conversation.updated_at
    assert await store.add_messages(ann.id, "no-such-id", [NewMessage("user", "x")]) is None


async def test_concurrent_appends_lose_nothing(backend: Backend):
    store = backend.store
    ann = await _user(store)
    conversation = await store.create_conversation(ann.id, "busy")
    await asyncio.gather(
        *(store.add_messages(ann.id, conversation.id, [NewMessage("user", f"m{i}")]) for i in range(8))
    )
    listed = await store.list_messages(ann.id, conversation.id)
    assert listed is not None and sorted(m.content for m in listed) == sorted(f"m{i}" for i in range(8))
    after = await store.get_conversation(ann.id, conversation.id)
    assert after is not None and after.message_count == 8


async def test_delete_cascades_to_messages(backend: Backend):
    store = backend.store
    ann = await _user(store)
    keep = await store.create_conversation(ann.id, "keep")
    doomed = await store.create_conversation(ann.id, "doomed")
    await store.add_messages(ann.id, keep.id, [NewMessage("user", "stay")])
    await store.add_messages(ann.id, doomed.id, [NewMessage("user", f"m{i}") for i in range(30)])
    assert backend.raw_message_count(doomed.id) == 30

    assert await store.delete_conversation(ann.id, doomed.id) is True
    assert await store.get_conversation(ann.id, doomed.id) is None
    assert await store.list_messages(ann.id, doomed.id) is None
    assert backend.raw_message_count(doomed.id) == 0
    assert await store.delete_conversation(ann.id, doomed.id) is False
    assert [c.id for c in (await store.list_conversations(ann.id, limit=10)).items] == [keep.id]
    assert [m.content for m in await store.list_messages(ann.id, keep.id) or []] == ["stay"]


# pagination


async def test_list_is_newest_first_and_a_write_moves_a_conversation_to_the_top(backend: Backend):
    store = backend.store
    ann, bob = await _user(store, "ann"), await _user(store, "bob")
    a = await store.create_conversation(ann.id, "a")
    b = await store.create_conversation(ann.id, "b")
    c = await store.create_conversation(ann.id, "c")
    await store.create_conversation(bob.id, "bob's")
    assert [x.id for x in (await store.list_conversations(ann.id, limit=10)).items] == [c.id, b.id, a.id]
    await store.add_messages(ann.id, a.id, [NewMessage("user", "bump")])
    page = await store.list_conversations(ann.id, limit=10)
    assert [x.id for x in page.items] == [a.id, c.id, b.id]
    assert page.next_cursor is None
    assert page.items[0].message_count == 1


@pytest.mark.parametrize("step", [1, 0], ids=["distinct-times", "equal-times"])
async def test_pages_have_no_repeats_and_no_gaps(backend: Backend, step: int):
    store = backend.store
    ann = await _user(store)
    backend.clock.step = step
    created = [await store.create_conversation(ann.id, f"c{i}") for i in range(7)]
    expected = [c.id for c in sorted(created, key=lambda c: (c.updated_at, c.id), reverse=True)]
    pages = await _walk(store, ann.id, limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [cid for page in pages for cid in page] == expected
    assert await _walk(store, ann.id, limit=7) == [expected]
    assert await _walk(store, ann.id, limit=100) == [expected]


async def test_pages_with_mixed_ties(backend: Backend):
    store = backend.store
    ann = await _user(store)
    created = []
    for group in range(3):  # three groups of three conversations sharing one timestamp each
        backend.clock.step = 0
        created += [await store.create_conversation(ann.id, f"g{group}-{i}") for i in range(3)]
        backend.clock.now += 10
    expected = [c.id for c in sorted(created, key=lambda c: (c.updated_at, c.id), reverse=True)]
    for limit in (1, 2, 4, 5):
        assert [cid for page in await _walk(store, ann.id, limit=limit) for cid in page] == expected


async def test_updated_since_returns_only_newer_conversations(backend: Backend):
    store = backend.store
    ann = await _user(store)
    created = [await store.create_conversation(ann.id, f"c{i}") for i in range(6)]
    since = created[2].updated_at
    newer = [c.id for c in reversed(created[3:])]
    page = await store.list_conversations(ann.id, limit=10, updated_since=since)
    assert [c.id for c in page.items] == newer and page.next_cursor is None
    assert await _walk(store, ann.id, limit=2, updated_since=since) == [newer[:2], newer[2:]]

    await store.rename_conversation(ann.id, created[0].id, "renamed")  # an old one changes: it syncs again
    synced = await store.list_conversations(ann.id, limit=10, updated_since=since)
    assert [c.id for c in synced.items] == [created[0].id, *newer]
    latest = synced.items[0].updated_at
    assert (await store.list_conversations(ann.id, limit=10, updated_since=latest)).items == []


async def test_a_cursor_stays_valid_after_its_conversation_changes(backend: Backend):
    store = backend.store
    ann = await _user(store)
    created = [await store.create_conversation(ann.id, f"c{i}") for i in range(5)]
    first = await store.list_conversations(ann.id, limit=2)
    assert [c.id for c in first.items] == [created[4].id, created[3].id]
    await store.delete_conversation(ann.id, created[3].id)
    rest = await store.list_conversations(ann.id, limit=10, cursor=first.next_cursor)
    assert [c.id for c in rest.items] == [created[2].id, created[1].id, created[0].id]


@pytest.mark.parametrize("cursor", ["garbage!", "bm90IGpzb24", encode_cursor(1, "x")[:-3] + "@@", "WzEsMiwzXQ"])
async def test_garbage_cursor_is_rejected(backend: Backend, cursor: str):
    ann = await _user(backend.store)
    await backend.store.create_conversation(ann.id, "c")
    with pytest.raises(InvalidCursor):
        await backend.store.list_conversations(ann.id, limit=10, cursor=cursor)


# jobs


async def test_job_lifecycle_is_scoped_to_its_owner(backend: Backend):
    store = backend.store
    ann, bob = await _user(store, "ann"), await _user(store, "bob")
    request = {"prompt": "hello", "conversation_id": None, "params": {"temperature": 0.5, "max_tokens": 8}}
    job = await store.create_job(ann.id, request)
    assert (job.status, job.request, job.result, job.error, job.attempts) == ("queued", request, None, None, 0)
    assert await store.get_job(ann.id, job.id) == job
    assert await store.get_job(bob.id, job.id) is None
    assert await store.update_job(bob.id, job.id, status="failed", error="nope") is None
    assert await store.get_job(ann.id, job.id) == job

    running = await store.update_job(ann.id, job.id, status="running", attempts=1)
    assert running is not None and (running.status, running.attempts) == ("running", 1)
    assert running.updated_at > job.updated_at
    conversation = await store.create_conversation(ann.id, "from job")
    result = {"content": "hi", "finish_reason": "stop", "usage": {"total_tokens": 3}}
    done = await store.update_job(ann.id, job.id, status="succeeded", conversation_id=conversation.id, result=result)
    assert done is not None
    assert (done.status, done.conversation_id, done.result, done.attempts) == (
        "succeeded",
        conversation.id,
        result,
        1,
    )
    assert await store.get_job(ann.id, job.id) == done
    assert await store.update_job(ann.id, job.id, status="running", attempts=2) is None  # finished stays finished
    assert await store.get_job(ann.id, job.id) == done
    assert await store.update_job(ann.id, "no-such-job", status="running") is None


async def test_job_takes_conversation_from_request_and_records_errors(backend: Backend):
    store = backend.store
    ann = await _user(store)
    conversation = await store.create_conversation(ann.id, "c")
    job = await store.create_job(ann.id, {"prompt": "x", "conversation_id": conversation.id})
    assert job.conversation_id == conversation.id
    failed = await store.update_job(ann.id, job.id, status="failed", error="engine crashed", attempts=3)
    assert failed is not None and (failed.status, failed.error, failed.attempts) == ("failed", "engine crashed", 3)


async def test_a_job_finishes_once_with_its_messages(backend: Backend):
    """A second delivery's completion writes nothing: no duplicated user/assistant messages."""
    store = backend.store
    ann = await _user(store)
    conversation = await store.create_conversation(ann.id, "job")
    job = await store.create_job(ann.id, {"prompt": "hi", "conversation_id": conversation.id})
    messages = [NewMessage("user", "hi"), NewMessage("assistant", "hello", 1, "stop")]
    result = {"content": "hello", "finish_reason": "stop"}

    async def finish():
        return await store.finish_job(
            ann.id, job.id, status="succeeded", conversation_id=conversation.id, messages=messages, result=result
        )

    outcomes = await asyncio.gather(finish(), finish(), finish())
    done = [o for o in outcomes if o is not None]
    assert len(done) == 1 and done[0].status == "succeeded"
    stored = await store.list_messages(ann.id, conversation.id)
    assert [(m.role, m.content) for m in stored] == [("user", "hi"), ("assistant", "hello")]
    assert done[0].result == result | {"message_id": stored[-1].id}
    assert await finish() is None
    assert await store.finish_job(ann.id, job.id, status="failed", error="late") is None
    assert (await store.get_job(ann.id, job.id)).status == "succeeded"
    assert backend.raw_message_count(conversation.id) == 2


async def test_a_reader_never_sees_a_job_finished_without_its_result(backend: Backend):
    """What a client polling GET /jobs/{id} sees while the worker finishes the job: not done yet, or done with
    its result, never "succeeded" with no result (the CI failure of stop 21: a read on the writer's
    connection saw the status of a transaction that had not written the result yet)."""
    store = backend.store
    ann = await _user(store)
    conversation = await store.create_conversation(ann.id, "job")
    job = await store.create_job(ann.id, {"prompt": "hi", "conversation_id": conversation.id})
    messages = [NewMessage("user", "hi"), NewMessage("assistant", "hello", 1, "stop")]
    seen: list[tuple[str, bool]] = []
    first_read = asyncio.Event()

    async def poll():
        while not seen or seen[-1][0] == "queued":
            polled = await store.get_job(ann.id, job.id)
            seen.append((polled.status, polled.result is not None))
            first_read.set()

    poller = asyncio.create_task(poll())
    await first_read.wait()  # the first read lands before the finish starts; later ones race it
    await store.finish_job(
        ann.id,
        job.id,
        status="succeeded",
        conversation_id=conversation.id,
        messages=messages,
        result={"content": "hello", "finish_reason": "stop"},
    )
    await asyncio.wait_for(poller, 10)
    assert set(seen[:-1]) == {("queued", False)} and seen[-1] == ("succeeded", True), seen
    assert len(await store.list_messages(ann.id, conversation.id)) == 2


async def test_finishing_a_job_checks_owner_and_conversation(backend: Backend):
    store = backend.store
    ann, bob = await _user(store, "ann"), await _user(store, "bob")
    conversation = await store.create_conversation(ann.id, "job")
    job = await store.create_job(ann.id, {"prompt": "x"})
    assert await store.finish_job(bob.id, job.id, status="failed", error="not yours") is None
    assert await store.finish_job(ann.id, "no-such-job", status="failed", error="x") is None
    await store.delete_conversation(ann.id, conversation.id)
    with pytest.raises(ConversationGone):
        await store.finish_job(
            ann.id, job.id, status="succeeded", conversation_id=conversation.id, messages=[NewMessage("user", "x")]
        )
    assert (await store.get_job(ann.id, job.id)).status == "queued"  # nothing written
    failed = await store.finish_job(ann.id, job.id, status="failed", error="conversation deleted")
    assert failed is not None and (failed.status, failed.error) == ("failed", "conversation deleted")


async def test_delete_job_is_scoped_to_its_owner(backend: Backend):
    store = backend.store
    ann, bob = await _user(store, "ann"), await _user(store, "bob")
    job = await store.create_job(ann.id, {"prompt": "x"})
    assert await store.delete_job(bob.id, job.id) is False
    assert await store.delete_job(ann.id, job.id) is True
    assert await store.get_job(ann.id, job.id) is None
    assert await store.delete_job(ann.id, job.id) is False


async def test_user_versions_change_on_every_bump_and_per_user(backend: Backend):
    store = backend.store
    ann, bob = await _user(store, "ann"), await _user(store, "bob")
    first = await store.user_version(ann.id)
    await store.bump_user_version(ann.id)
    second = await store.user_version(ann.id)
    await asyncio.gather(*(store.bump_user_version(ann.id) for _ in range(3)))
    assert len({first, second, await store.user_version(ann.id)}) == 3
    assert await store.user_version(bob.id) == 0


async def test_ping(backend: Backend):
    assert await backend.store.ping() is True


# URL


async def test_open_store_picks_dynamodb_by_url(moto_url: str):
    store = open_store(f"dynamodb://by-url-table?region=us-east-1&endpoint_url={moto_url}")
    assert isinstance(store, DynamoDBStore) and store.table == "by-url-table"
    await store.open()
    try:
        user = await store.create_user("url@example.com", "h")
        assert await store.get_user_by_email("url@example.com") == user
    finally:
        await store.close()
    reopened = open_store(f"dynamodb://by-url-table?region=us-east-1&endpoint_url={moto_url}")
    await reopened.open()  # the table exists now: opening again keeps its data
    try:
        assert (await reopened.get_user_by_email("url@example.com")) == user
    finally:
        await reopened.close()


def test_bad_dynamodb_urls_are_refused():
    with pytest.raises(ValueError, match="unknown dynamodb URL options: tabel"):
        open_store("dynamodb://t?tabel=x")
    with pytest.raises(ValueError, match="unsupported database URL scheme"):
        open_store("postgres://db")


async def test_a_long_batch_of_messages_keeps_its_order(backend: Backend):
    store = backend.store
    ann = await _user(store)
    conversation = await store.create_conversation(ann.id, "long")
    batch = [NewMessage("user" if i % 2 == 0 else "assistant", f"m{i}") for i in range(150)]
    stored = await store.add_messages(ann.id, conversation.id, batch)
    assert stored is not None and [m.content for m in stored] == [f"m{i}" for i in range(150)]
    assert [m.content for m in await store.list_messages(ann.id, conversation.id) or []] == [
        f"m{i}" for i in range(150)
    ]
    after = await store.get_conversation(ann.id, conversation.id)
    assert after is not None and after.message_count == 150
