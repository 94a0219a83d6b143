"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gpt_runtime.storage import ApiKey, Conversation, Job, Message, User


def iso(us: int) -> str:
    """Microseconds since the epoch as an ISO 8601 UTC timestamp."""
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat().replace("+00:00", "Z")


class Strict(BaseModel):
    """Request bodies reject unknown fields and wrong types instead of guessing."""

    model_config = ConfigDict(extra="forbid", strict=True)


# auth


class SignupIn(Strict):
    email: str = Field(max_length=254, json_schema_extra={"format": "email"})
    password: str = Field(max_length=256)


class LoginIn(Strict):
    email: str = Field(max_length=254, json_schema_extra={"format": "email"})
    password: str = Field(max_length=256)


class RefreshIn(Strict):
    refresh_token: str = Field(max_length=4096)


class TokenIn(Strict):
    token: str = Field(max_length=4096)


class EmailIn(Strict):
    email: str = Field(max_length=254, json_schema_extra={"format": "email"})


class ResetPasswordIn(Strict):
    token: str = Field(max_length=4096)
    new_password: str = Field(max_length=256)


class RoleIn(Strict):
    role: Literal["free", "premium", "admin"]


class TokenOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class UserOut(BaseModel):
    id: str
    email: str
    role: str
    email_verified: bool
    created_at: str

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            role=user.role,
            email_verified=user.email_verified,
            created_at=iso(user.created_at),
        )


class SignupOut(BaseModel):
    """The new account; its verification link goes only by mail."""

    user: UserOut


class AcceptedOut(BaseModel):
    status: str


class ApiKeyIn(Strict):
    name: str = Field(default="api key", min_length=1, max_length=100)


class ApiKeyOut(BaseModel):
    """An API key as listed: never the key itself, only its first characters."""

    id: str
    name: str
    prefix: str
    created_at: str
    last_used_at: str | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        last_used = iso(key.last_used_at) if key.last_used_at is not None else None
        return cls(id=key.id, name=key.name, prefix=key.prefix, created_at=iso(key.created_at), last_used_at=last_used)


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The full key (`sk-gpt-…`), shown this once: the server keeps only a hash.")


class ApiKeyListOut(BaseModel):
    data: list[ApiKeyOut]


# conversations


class ConversationIn(Strict):
    title: str = Field(default="New conversation", min_length=1, max_length=200)


class TitleIn(Strict):
    title: str = Field(min_length=1, max_length=200)


class MessageOut(BaseModel):
    id: str
    role: str
    content: str
    tokens: int | None
    finish_reason: str | None
    created_at: str

    @classmethod
    def of(cls, message: Message) -> MessageOut:
        return cls(
            id=message.id,
            role=message.role,
            content=message.content,
            tokens=message.tokens,
            finish_reason=message.finish_reason,
            created_at=iso(message.created_at),
        )


class ConversationOut(BaseModel):
    id: str
    title: str
    created_at: str
    updated_at: str
    message_count: int

    @classmethod
    def of(cls, conversation: Conversation) -> ConversationOut:
        return cls(
            id=conversation.id,
            title=conversation.title,
            created_at=iso(conversation.created_at),
            updated_at=iso(conversation.updated_at),
            message_count=conversation.message_count,
        )


class ConversationDetailOut(ConversationOut):
    messages: list[MessageOut]


class ConversationPageOut(BaseModel):
    items: list[ConversationOut]
    next_cursor: str | None


# generation


class GenerationParamsIn(Strict):
    """Sampling parameters; the server caps max_tokens."""

    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)
    repetition_penalty: float = Field(default=1.0, ge=0.5, le=2.0)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: list[str] = Field(default_factory=list, max_length=4)


class StreamOptions(Strict):
    include_usage: bool = True


class GenerateIn(GenerationParamsIn):
    """POST /generate: a prompt, optionally continuing a conversation; `async` queues it as a job.

    `async` and `stream` exclude each other (400 async_stream)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        populate_by_name=True,
        json_schema_extra={
            "not": {
                "required": ["async", "stream"],
                "properties": {"async": {"const": True}, "stream": {"const": True}},
            }
        },
    )

    prompt: str = Field(min_length=1)
    conversation_id: str | None = Field(default=None, max_length=64)
    system: str | None = Field(default=None, max_length=8000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    run_async: bool = Field(
        default=False, alias="async", description="Queue as a job: 202 with the job id. Not with `stream`."
    )


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GenerateOut(BaseModel):
    id: str
    object: Literal["generation"] = "generation"
    model: str
    conversation_id: str
    message: MessageOut | None = Field(description="The stored reply; null if the conversation was deleted meanwhile.")
    content: str
    finish_reason: str
    usage: UsageOut


class JobAcceptedOut(BaseModel):
    job_id: str
    status: str
    conversation_id: str | None
    location: str


class JobOut(BaseModel):
    id: str
    status: str
    conversation_id: str | None
    result: dict | None
    error: str | None
    attempts: int
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            id=job.id,
            status=job.status,
            conversation_id=job.conversation_id,
            result=job.result,
            error=job.error,
            attempts=job.attempts,
            created_at=iso(job.created_at),
            updated_at=iso(job.updated_at),
        )
