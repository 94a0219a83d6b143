from __future__ import annotations

import io
import json

import pytest
from gpt_runtime.services.export import export_json, export_pdf
from gpt_runtime.storage import Conversation, Message
from pypdf import PdfReader

pytestmark = pytest.mark.unit
CONVERSATION = Conversation("c1", "u1", "Trip to Zürich", 1_700_000_000_000_000, 1_700_000_100_000_000, 2)
MESSAGES = [
    Message("m1", "c1", "user", "Where should I eat? 🍽", None, None, 1_700_000_000_000_000),
    Message("m2", "c1", "assistant", "Try the Älplermagronen.\\nEnjoy!", 9, "stop", 1_700_000_050_000_000),
]


def pdf_text(data: bytes) -> str:
    return "\\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def test_json_export_holds_the_conversation_and_every_message():
    document = json.loads(export_json(CONVERSATION, MESSAGES))
    assert document["format"] == "gpt-operator.conversation.v1"
    assert document["conversation"]["title"] == "Trip to Zürich"
    assert [m["content"] for m in document["messages"]] == [m.content for m in MESSAGES]
    assert document["messages"][1]["finish_reason"] == "stop"


def test_pdf_transcript_reads_as_the_conversation():
    data = export_pdf(CONVERSATION, MESSAGES)
    assert data.startswith(b"%PDF-")
    text = pdf_text(data)
    for expected in ("Trip to Zürich", "You -", "Where should I eat?", "Assistant -", "Älplermagronen", "Enjoy!"):
        assert expected in text


def test_pdf_without_a_unicode_font_degrades_to_latin1():
    text = pdf_text(export_pdf(CONVERSATION, MESSAGES, fonts=()))
    assert "Trip to Zürich" in text and "Älplermagronen" in text  # Latin-1 survives
    assert "🍽" not in text and "eat? ?" in text  # the rest is replaced, not an error


def test_long_conversations_flow_onto_more_pages():
    many = [Message(f"m{i}", "c1", "user", "line " * 80, None, None, 1_700_000_000_000_000) for i in range(60)]
    assert len(PdfReader(io.BytesIO(export_pdf(CONVERSATION, many))).pages) > 3
