"""Pick an engine from a model source string; torch is imported only for real models."""

from __future__ import annotations

from gpt_model.protocol import EngineClient


def open_engine(source: str, **options: object) -> EngineClient:
    """Return an unstarted engine for `source` (see DESIGN.md's model sources).

    `fake:echo` is the deterministic test engine; everything else is a real model
    served by gpt_model.engine.
    """
    if source.startswith("fake:"):
        from gpt_model.fake import FakeEngine

        return FakeEngine.from_source(source)
    from gpt_model.engine import open_model_engine

    return open_model_engine(source, **options)
