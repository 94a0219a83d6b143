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
    # How many GPTDeployments one resync reconciles at once.
    resync_concurrency: int = Field(default=16, gt=0)
    # How often the resync looks again for each generated Secret (`<name>-jwt`, `<name>-engine-key`: a GET by
    # name); a change of the GPTDeployment looks at once.
    secret_check_interval_s: float = Field(default=300.0, gt=0)
    # How long startup waits for the first LIST of every child kind.
    cache_sync_timeout_s: float = Field(default=120.0, gt=0)
    # Where GET /healthz answers (liveness and readiness): loopback by default, so a laptop run opens no
    # port to the network; the operator's Deployment sets http://0.0.0.0:8080/healthz. Empty: no endpoint.
    liveness_endpoint: str = "http://127.0.0.1:8080/healthz"
    # Leader election on a Lease (several replicas, one active). Off: this process acts at once, alone.
    leader_election: bool = True
    lease_name: str = "gpt-operator"
    lease_namespace: str = ""  # empty: the pod's namespace (POD_NAMESPACE or the service account's), or default
    lease_duration_s: float = Field(default=15.0, gt=0)
    lease_renew_deadline_s: float = Field(default=10.0, gt=0)
    lease_retry_period_s: float = Field(default=2.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "text"

    @property
    def namespace_list(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]
