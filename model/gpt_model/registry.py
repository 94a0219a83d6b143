"""Pick an engine from a model source string; torch is imported only for real models."""

from __future__ import annotations

from gpt_model.engine_config import EngineConfig
from gpt_model.protocol import EngineClient


def open_engine(source: str, **options: object) -> EngineClient:
    """Return an unstarted engine for `source` (see DESIGN.md's model sources).

    `fake:echo` is the deterministic test engine; `openai+http://HOST:PORT/v1?model=NAME` a separate
    OpenAI-compatible server (vLLM, llama-server; gpt_model.upstream, option `api_key`, which other sources do not
    use); everything else is a real model served by gpt_model.engine. The other options are EngineConfig's, checked
    for every source (None: the default): an unknown one is a TypeError, a bad value a ValueError, naming it.
    """
    api_key = options.pop("api_key", None)
    config = EngineConfig.from_options(**options)
    if source.startswith("fake:"):
        from gpt_model.fake import FakeEngine

        return FakeEngine.from_source(source)
    from gpt_model.upstream import is_upstream_source

    if is_upstream_source(source):
        from gpt_model.upstream import UpstreamEngine

        return UpstreamEngine.from_source(source, api_key=str(api_key) if api_key else None, cache_dir=config.cache_dir)
    from gpt_model.engine import ModelEngine

    return ModelEngine(source, config)
