"""Conversation export: a JSON document and a PDF transcript (pure: records in, bytes out)."""

from __future__ import annotations

import json
from pathlib import Path

from fpdf import FPDF

from gpt_runtime.schemas import ConversationOut, MessageOut, iso
from gpt_runtime.storage import Conversation, Message

# A Unicode font when the system has one (the runtime image installs DejaVu); otherwise Helvetica,
# which covers Latin-1 only, and other characters print as "?".
UNICODE_FONTS = (Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"),)
ROLE_TITLES = {"user": "You", "assistant": "Assistant", "system": "System"}


def export_json(conversation: Conversation, messages: list[Message]) -> bytes:
    """The conversation and every message, as the API shows them, with an export format version."""
    document = {
        "format": "gpt-operator.conversation.v1",
        "conversation": ConversationOut.of(conversation).model_dump(),
        "messages": [MessageOut.of(m).model_dump() for m in messages],
    }
    return json.dumps(document, ensure_ascii=False, indent=2).encode()


def export_pdf(conversation: Conversation, messages: list[Message], fonts: tuple[Path, ...] = UNICODE_FONTS) -> bytes:
    """A readable transcript: title, dates, then each message under its speaker."""
    pdf = FPDF(format="A4")
    pdf.set_title(conversation.title)
    pdf.set_creator("gpt-operator runtime")
    font = next((path for path in fonts if path.exists()), None)
    if font is not None:
        pdf.add_font("body", "", str(font))
        family = "body"
    else:
        family = "helvetica"

    def clean(text: str) -> str:
        if font is None:
            return text.encode("latin-1", "replace").decode("latin-1")
        return text

    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    pdf.set_font(family, size=16)
    pdf.multi_cell(0, 9, clean(conversation.title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, size=9)
    pdf.set_text_color(110)
    summary = (
        f"Created {iso(conversation.created_at)}, updated {iso(conversation.updated_at)}, {len(messages)} messages"
    )
    pdf.multi_cell(0, 5, summary, new_x="LMARGIN", new_y="NEXT")
    for message in messages:
        pdf.ln(4)
        pdf.set_font(family, size=10)
        pdf.set_text_color(40, 80, 160)
        speaker = ROLE_TITLES.get(message.role, message.role)
        pdf.cell(0, 6, f"{speaker} - {iso(message.created_at)}", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(family, size=11)
        pdf.set_text_color(0)
        pdf.multi_cell(0, 6, clean(message.content) or " ", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
