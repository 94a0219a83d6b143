"""Downloading a conversation as JSON or PDF over HTTP."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader

pytestmark = pytest.mark.integration


def test_export_json_and_pdf(server, api):
    reply = api.post("/generate", json={"prompt": "Plan a day in Genève"}).json()
    conversation_id = reply["conversation_id"]

    as_json = api.get(f"/conversations/{conversation_id}/export")
    assert as_json.status_code == 200
    assert as_json.headers["content-disposition"] == f'attachment; filename="conversation-{conversation_id}.json"'
    document = as_json.json()
    assert document["conversation"]["id"] == conversation_id
    assert [m["content"] for m in document["messages"]] == ["Plan a day in Genève", "You said: Plan a day in Genève"]

    as_pdf = api.get(f"/conversations/{conversation_id}/export", params={"format": "pdf"})
    assert as_pdf.status_code == 200 and as_pdf.headers["content-type"] == "application/pdf"
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(as_pdf.content)).pages)
    assert "Plan a day in Genève" in text and "You said: Plan a day in Genève" in text

    bad = api.get(f"/conversations/{conversation_id}/export", params={"format": "docx"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "format"
    with server.client(server.signup_and_login()) as other:
        assert other.get(f"/conversations/{conversation_id}/export").status_code == 404
