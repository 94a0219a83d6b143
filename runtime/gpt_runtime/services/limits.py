"""Request rate limits and token quotas per user tier; policy is pure, counting goes to a WindowCounter."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpt_runtime.backends import WindowCounter, WindowState
from gpt_runtime.domain_errors import QuotaExceeded, RateLimited, RateWindow, TooManyRequests, TooManyTokens
from gpt_runtime.metrics import Metrics
from gpt_runtime.settings import RuntimeSettings
from gpt_runtime.storage import User

MINUTE, DAY = 60, 86_400
PRIORITY_BY_ROLE = {"admin": "critical", "premium": "high", "free": "medium"}


@dataclass(frozen=True)
class Quota:
    """Per-user generation limits; 0 means unlimited."""

    rpm: int
    rpd: int
    tpm: int
    tpd: int

    @classmethod
    def parse(cls, text: str) -> Quota:
        """From "RPM,RPD,TPM,TPD"."""
        parts = [int(p) for p in text.split(",")]
        if len(parts) != 4 or any(p < 0 for p in parts):
            raise ValueError(f"a quota is four non-negative integers RPM,RPD,TPM,TPD, not {text!r}")
        return cls(*parts)


def request_limit(settings: RuntimeSettings, role: str) -> int:
    """Requests per window for a role (0 = unlimited)."""
    return {
        "free": settings.rate_limit_free,
        "premium": settings.rate_limit_premium,
        "admin": settings.rate_limit_admin,
    }.get(role, settings.rate_limit_free)


def quota_for(settings: RuntimeSettings, role: str) -> Quota:
    text = {"premium": settings.quota_premium, "admin": settings.quota_admin}.get(role, settings.quota_free)
    return Quota.parse(text)


def rate_headers(state: RateWindow) -> dict[str, str]:
    """X-RateLimit-* headers of a request window."""
    return {
        "X-RateLimit-Limit": str(state.limit),
        "X-RateLimit-Remaining": str(state.remaining),
        "X-RateLimit-Reset": str(max(1, math.ceil(state.reset_s))),
    }


def token_headers(state: WindowState) -> dict[str, str]:
    """x-ratelimit-*-tokens headers of the per-minute token window."""
    return {
        "x-ratelimit-limit-tokens": str(state.limit),
        "x-ratelimit-remaining-tokens": str(state.remaining),
        "x-ratelimit-reset-tokens": f"{max(1, math.ceil(state.reset_s))}s",
    }


# the rate_limited metric's label of each denial (the error type a client sees)
_METRIC_LABELS: dict[type[RateLimited], str] = {
    TooManyRequests: "requests",
    TooManyTokens: "tokens",
    QuotaExceeded: "insufficient_quota",
}


def _retry_after(state: WindowState) -> int:
    """Whole seconds until the window frees, at least 1."""
    return max(1, math.ceil(state.reset_s))


class Limits:
    """Checks and charges every limit a request meets."""

    def __init__(self, counter: WindowCounter, settings: RuntimeSettings, metrics: Metrics):
        self.counter = counter
        self.settings = settings
        self.metrics = metrics

    async def check_request(self, key: str, limit: int) -> WindowState | None:
        """One request against a per-minute limit; raises TooManyRequests; None when unlimited."""
        if limit <= 0:
            return None
        state = await self.counter.hit(f"req:{key}", limit, self.settings.rate_limit_window_s)
        if not state.allowed:
            self.metrics.rate_limited.labels("requests").inc()
            raise TooManyRequests(
                f"rate limit of {limit} requests per {self.settings.rate_limit_window_s}s exceeded; "
                f"retry in {math.ceil(state.reset_s)}s",
                retry_after=_retry_after(state),
                window=state,
            )
        return state

    async def check_user(self, user: User) -> WindowState | None:
        return await self.check_request(f"user:{user.id}", request_limit(self.settings, user.role))

    async def check_ip(self, ip: str) -> WindowState | None:
        return await self.check_request(f"ip:{ip}", self.settings.rate_limit_anonymous)

    async def check_quota(self, user: User) -> dict[str, str]:
        """Before a generation: count it (RPM, RPD) and check tokens (TPM, TPD). Returns token headers."""
        quota = quota_for(self.settings, user.role)
        key = f"quota:{user.id}"
        denials: tuple[tuple[str, int, int, type[RateLimited]], ...] = (
            ("requests per day", quota.rpd, DAY, QuotaExceeded),
            ("requests per minute", quota.rpm, MINUTE, TooManyRequests),
        )
        for name, limit, window, denial in denials:
            if limit:
                state = await self.counter.hit(f"{key}:req:{window}", limit, window)
                if not state.allowed:
                    self._deny(denial, f"quota of {limit} {name} exhausted", state)
        headers: dict[str, str] = {}
        denials = (
            ("tokens per day", quota.tpd, DAY, QuotaExceeded),
            ("tokens per minute", quota.tpm, MINUTE, TooManyTokens),
        )
        for name, limit, window, denial in denials:
            if limit:
                state = await self.counter.peek(f"{key}:tok:{window}", limit, window)
                if not state.allowed:
                    self._deny(denial, f"quota of {limit} {name} exhausted", state)
                if window == MINUTE:
                    headers = token_headers(state)
        return headers

    def _deny(self, denial: type[RateLimited], message: str, state: WindowState) -> None:
        self.metrics.rate_limited.labels(_METRIC_LABELS[denial]).inc()
        raise denial(f"{message}; retry in {math.ceil(state.reset_s)}s", retry_after=_retry_after(state))

    async def charge(self, user: User, prompt_tokens: int, completion_tokens: int) -> None:
        """After a generation: charge its tokens to the user's windows and daily usage."""
        key = f"quota:{user.id}"
        total = prompt_tokens + completion_tokens
        if total:
            await self.counter.add(f"{key}:tok:{MINUTE}", MINUTE, total)
            await self.counter.add(f"{key}:tok:{DAY}", DAY, total)
        await self.counter.add(f"usage:{user.id}:prompt", DAY, prompt_tokens)
        await self.counter.add(f"usage:{user.id}:completion", DAY, completion_tokens)
        await self.counter.add(f"usage:{user.id}:requests", DAY, 1)

    async def usage(self, user: User) -> dict:
        """The user's last 24 hours and their limits, for GET /usage."""

        async def used(name: str) -> int:
            return (await self.counter.peek(f"usage:{user.id}:{name}", 1, DAY)).used

        prompt, completion, requests = await used("prompt"), await used("completion"), await used("requests")
        cost = (
            prompt / 1000 * self.settings.cost_per_1k_prompt_tokens
            + completion / 1000 * self.settings.cost_per_1k_completion_tokens
        )
        quota = quota_for(self.settings, user.role)
        return {
            "period": "last_24h",
            "requests": requests,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "estimated_cost_usd": round(cost, 6),
            "limits": {
                "requests_per_minute": request_limit(self.settings, user.role),
                "quota": {"rpm": quota.rpm, "rpd": quota.rpd, "tpm": quota.tpm, "tpd": quota.tpd},
            },
            "tier": user.role,
        }
