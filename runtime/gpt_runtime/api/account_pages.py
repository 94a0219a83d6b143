"""The pages the account mails link to: GET /auth/verify-email and GET /auth/reset-password.

Opening a link changes nothing by itself (mail scanners open links too): the page asks for a click (and
for reset, the new password) and POSTs the token from its own address to the JSON route of the same path.
The pages echo nothing from the request, load nothing from elsewhere, refuse framing (no clickjacking) and
send no Referer (the token stays out of other sites' logs).
"""

from __future__ import annotations

import base64
import hashlib

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(prefix="/auth", tags=["auth"])

_SCRIPT = """
const token = new URLSearchParams(location.search).get("token") || "";
const form = document.querySelector("form"), out = document.querySelector("output");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = {token};
  const password = form.querySelector("input[type=password]");
  if (password) body.new_password = password.value;
  const response = await fetch(location.pathname, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const data = await response.json().catch(() => ({}));
  out.textContent = response.ok ? form.dataset.done : ((data.error || {}).message || "failed");
  if (response.ok) form.querySelector("button").disabled = true;
});
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; connect-src 'self'; form-action 'none';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _page(title: str, fields: str, button: str, done: str) -> HTMLResponse:
    html = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1"></head>'
        f'<body><h1>{title}</h1><form data-done="{done}">{fields}<button type="submit">{button}</button></form>'
        f"<p><output></output></p><script>{_SCRIPT}</script></body></html>"
    )
    return HTMLResponse(html, headers=_HEADERS)


@router.get("/verify-email", response_class=HTMLResponse)
async def verify_email_page() -> HTMLResponse:
    """The page a verification mail links to: one click confirms the address."""
    return _page("Confirm your email address", "", "Confirm", "Your email address is confirmed.")


@router.get("/reset-password", response_class=HTMLResponse)
async def reset_password_page() -> HTMLResponse:
    """The page a reset mail links to: choose a new password."""
    fields = (
        '<label>New password <input type="password" name="new_password" autocomplete="new-password"'
        ' minlength="8" required></label> '
    )
    return _page("Choose a new password", fields, "Set password", "Your password is changed; sign in with it.")
