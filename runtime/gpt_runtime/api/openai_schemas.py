"""Request bodies of the OpenAI-compatible routes, and what this server does with each of OpenAI's fields.

Honoured: model, messages/prompt, max_tokens (max_completion_tokens), temperature, top_p, n=1, stop,
seed, stream (+ stream_options.include_usage), presence_penalty, frequency_penalty, logit_bias,
logprobs (+ top_logprobs), response_format (text, json_object, json_schema: see gpt_model.json_prefix).
Accepted and without effect here: user, metadata, store, service_tier, prompt_cache_key,
safety_identifier, parallel_tool_calls. Everything else is refused with a 400 that names the field:
tool calls (the served model's chat template has no tools), audio and images, and unknown fields.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from gpt_model.json_prefix import UnsupportedSchema, compile_schema
from gpt_model.protocol import ChatMessage, ResponseFormat
from pydantic import BaseModel, ConfigDict, Field

from gpt_runtime.domain_errors import InvalidInput

# extra="allow" keeps unknown fields for a 400 that names them; the document still says they are not allowed
CLOSED = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": False})
NO_TOOLS = "the served model's chat template has no tools"
UNSUPPORTED = {  # field -> why it is refused
    "tools": NO_TOOLS,
    "tool_choice": NO_TOOLS,
    "functions": NO_TOOLS,
    "function_call": NO_TOOLS,
    "audio": "only text output is supported",
    "modalities": "only text output is supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "there is no web search here",
    "reasoning_effort": "the served model does not reason",
    "verbosity": "verbosity cannot be set",
    "echo": "the prompt is never echoed",
    "suffix": "insertion is not supported",
    "best_of": "only one completion is generated",
}
DEFAULTS = {"modalities": ["text"], "echo": False, "best_of": 1}  # values that ask for nothing unsupported
MAX_LOGIT_BIAS = 300
MAX_PROMPTS = 16


class StreamOptionsIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ContentPartIn(BaseModel):
    """A part of a message's content; only "text" parts are supported (others answer 400)."""

    model_config = CLOSED
    type: str = Field(max_length=64, json_schema_extra={"enum": ["text"]})
    text: str | None = Field(default=None, description="required")


class ChatMessageIn(BaseModel):
    model_config = CLOSED
    role: str = Field(
        max_length=64,
        description="no tool or function messages (400)",
        json_schema_extra={"enum": ["system", "developer", "user", "assistant"]},
    )
    content: str | list[ContentPartIn] | None = Field(default=None, description="null only for assistant messages")
    name: str | None = Field(default=None, description="accepted, without effect")
    refusal: str | None = Field(default=None, description="accepted, without effect")


class JSONSchemaIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormatIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaIn | None = None


class SamplingIn(BaseModel):
    """Fields both /v1/chat/completions and /v1/completions take."""

    model_config = CLOSED
    model: str = Field(min_length=1, max_length=200)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = Field(default=None, description="up to 4 sequences")
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stream: bool = False
    stream_options: StreamOptionsIn | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = Field(
        default=None,
        description=f"token id -> bias in [-100, 100]; -100 bans the token; at most {MAX_LOGIT_BIAS} entries",
        json_schema_extra={
            "propertyNames": {"pattern": "^[0-9]{1,9}$"},
            "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
            "maxProperties": MAX_LOGIT_BIAS,
        },
    )
    # accepted, without effect here
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    parallel_tool_calls: bool | None = None

    def check_fields(self) -> None:
        """400 for a field this server does not honour (named in `param`)."""
        for name, value in (self.model_extra or {}).items():
            if value is None:
                continue
            if name in UNSUPPORTED:
                if value == DEFAULTS.get(name, ...):
                    continue
                raise InvalidInput(
                    f"{name} is not supported: {UNSUPPORTED[name]}", param=name, code="unsupported_parameter"
                )
            raise InvalidInput(f"unrecognized request argument: {name}", param=name, code="unknown_parameter")
        if self.n != 1:
            raise InvalidInput("only n=1 is supported", param="n", code="unsupported_parameter")

    def sampling(self) -> dict[str, Any]:
        """The engine's sampling settings from this request (max_tokens and logprobs added by the route)."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > 4:
            raise InvalidInput("at most 4 stop sequences", param="stop", code="too_many_stop_sequences")
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop": stop,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "logit_bias": self._logit_bias(),
        }

    def _logit_bias(self) -> tuple[tuple[int, float], ...]:
        bias = self.logit_bias or {}
        if len(bias) > MAX_LOGIT_BIAS:
            raise _bad_bias(f"logit_bias takes at most {MAX_LOGIT_BIAS} tokens")
        out = []
        for key, value in bias.items():
            if not key.isascii() or not key.isdigit() or len(key) > 9:
                raise _bad_bias(f"logit_bias: {key!r} is not a token id")
            if not -100 <= value <= 100:
                raise _bad_bias("logit_bias values must be between -100 and 100")
            out.append((int(key), float(value)))
        return tuple(sorted(out))


def _bad_bias(message: str) -> InvalidInput:
    return InvalidInput(message, param="logit_bias", code="invalid_value")


class ChatCompletionIn(SamplingIn):
    """POST /v1/chat/completions (see the module's docstring for the fields honoured)."""

    messages: list[ChatMessageIn] = Field(min_length=1, max_length=1000)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormatIn | None = None

    def chat_messages(self) -> list[ChatMessage]:
        """The conversation; 400 naming the first message or part this server cannot read."""
        out = []
        for i, message in enumerate(self.messages):
            where = f"messages[{i}]"
            if message.role not in ("system", "developer", "user", "assistant"):
                raise InvalidInput(
                    f"{where}.role: {message.role!r} messages are not supported (no tool calls here)",
                    param=f"{where}.role",
                    code="unsupported_value",
                )
            for name, value in (message.model_extra or {}).items():
                if value is not None:
                    raise InvalidInput(
                        f"{where}.{name} is not supported (no tool calls here)",
                        param=f"{where}.{name}",
                        code="unsupported_parameter",
                    )
            if isinstance(message.content, list):
                for j, part in enumerate(message.content):
                    if part.type != "text" or part.text is None:
                        raise InvalidInput(
                            f"{where}.content[{j}]: {part.type!r} parts are not supported; only text is",
                            param=f"{where}.content[{j}].type",
                            code="unsupported_content_type",
                        )
                text = "".join(part.text or "" for part in message.content)
            elif message.content is None:
                if message.role != "assistant":
                    raise InvalidInput(f"{where}.content is required", param=f"{where}.content", code="missing_content")
                text = ""
            else:
                text = message.content
            out.append(ChatMessage("system" if message.role == "developer" else message.role, text))  # type: ignore[arg-type]
        return out

    def sampling(self) -> dict[str, Any]:
        params = super().sampling()
        if self.top_logprobs is not None and not self.logprobs:
            raise InvalidInput("top_logprobs needs logprobs: true", param="top_logprobs", code="invalid_value")
        params["logprobs"] = (self.top_logprobs or 0) if self.logprobs else None
        params["max_tokens"] = self.max_completion_tokens or self.max_tokens
        params["response_format"] = response_format(self.response_format)
        return params


class CompletionIn(SamplingIn):
    """POST /v1/completions, OpenAI's legacy text completions: one prompt, no chat template."""

    prompt: str | list[str] = Field(
        description=f"the text to continue, or up to {MAX_PROMPTS} texts (one choice each); not token ids"
    )
    max_tokens: int | None = Field(default=16, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=5, description="the k most likely alternatives per token")

    def prompt_texts(self) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if not 1 <= len(prompts) <= MAX_PROMPTS:
            raise InvalidInput(f"give 1 to {MAX_PROMPTS} prompts", param="prompt", code="invalid_value")
        return prompts

    def sampling(self) -> dict[str, Any]:
        return super().sampling() | {"logprobs": self.logprobs, "max_tokens": self.max_tokens}


def response_format(body: ResponseFormatIn | None) -> ResponseFormat | None:
    """The engine's ResponseFormat; 400 when the JSON Schema uses what is not supported."""
    if body is None or body.type == "text":
        return None
    schema = body.json_schema.schema_ if body.json_schema is not None else None
    if body.type == "json_object" or schema is None:
        if body.type == "json_schema" and body.json_schema is None:
            raise InvalidInput("response_format.json_schema is required", param="response_format", code="invalid_value")
        return ResponseFormat("json_object")
    try:
        compile_schema(schema)
    except UnsupportedSchema as exc:
        raise InvalidInput(f"response_format: {exc}", param="response_format", code="unsupported_schema") from exc
    return ResponseFormat("json_schema", json.dumps(schema, separators=(",", ":")))
