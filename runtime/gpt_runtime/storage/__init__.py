"""Persistent users, conversations and messages behind one Store interface."""

from gpt_runtime.storage.base import (
    AlreadyExists,
    ApiKey,
    Conversation,
    Job,
    JobStatus,
    Message,
    NewMessage,
    Page,
    Store,
    User,
)
from gpt_runtime.storage.factory import open_store

__all__ = [
    "AlreadyExists",
    "ApiKey",
    "Conversation",
    "Job",
    "JobStatus",
    "Message",
    "NewMessage",
    "Page",
    "Store",
    "User",
    "open_store",
]
