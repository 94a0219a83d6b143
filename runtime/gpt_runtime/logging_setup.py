"""JSON structured logs carrying the request id of the request being served."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_SECRET_PARAMS = re.compile(r"(?i)\b(access_token|refresh_token|token|password)=[^&\s\"']+")
# scheme://user:password@host or scheme://token@host (redis://:pw@, https://user:pw@ ...)
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s\"'<>]+@")


def redact_url_credentials(text: str) -> str:
    """Hide the userinfo of every URL in `text`: redis://user:pass@host -> redis://[REDACTED]@host."""
    return _URL_CREDENTIALS.sub(r"\1[REDACTED]@", text)


def redact(text: str) -> str:
    """Hide credentials carried in URLs: userinfo (user:pass@) and token or password query parameters."""
    return _SECRET_PARAMS.sub(r"\1=[REDACTED]", redact_url_credentials(text))


class RedactFilter(logging.Filter):
    """Applies `redact` to every record's message, ours and uvicorn's alike."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class RedactingFormatter(logging.Formatter):
    """Hides URL credentials anywhere in the formatted line (extras and tracebacks too, not only the
    message, which RedactFilter cleans fully). Query parameters in extras are left alone: the dev mail
    log prints a link whose token a developer must be able to follow."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact_url_credentials(self.inner.format(record))


_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id and extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send all logs (ours and uvicorn's) to stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(RedactingFormatter(formatter))
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our middleware logs each request
