"""Operator settings from the environment (GPT_OPERATOR_*), built once in main and passed in."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GPT_OPERATOR_", env_file=None, extra="ignore")

    # Where to watch: a comma-separated list of namespaces; empty = every namespace.
    namespaces: str = ""
    # How often the timer re-evaluates every GPTDeployment (schedules, rollout steps, child status).
    resync_seconds: float = Field(default=10.0, gt=0)
    # The API server: empty = in-cluster service account, else kubeconfig; a URL (e.g. `kubectl proxy`'s
    # http://127.0.0.1:8001) is used as is, without credentials.
    server: str = ""
    field_manager: str = "gpt-operator"
    # The watch request asks the server to end it after this long; the client gives up a bit later.
    watch_server_timeout_s: int = Field(default=300, gt=0)
    watch_client_timeout_s: int = Field(default=330, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0)
    liveness_endpoint: str = "http://0.0.0.0:8080/healthz"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "text"

    @property
    def namespace_list(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]
