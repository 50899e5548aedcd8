"""Entry point of the ``sglang.srt.plugins`` group: make SGLang serve Step-Audio-2.

SGLang calls `register` early in every one of its processes (``load_plugins`` in the engine, scheduler and
detokenizer). It registers

1. `StepAudio2Config` with transformers' AutoConfig for ``model_type`` ``step_audio_2`` (no ``--trust-remote-code``);
2. `StepAudio2ForCausalLM` in SGLang's ``ModelRegistry`` under that architecture name, and marks the
   architecture multimodal;
3. `StepAudio2MultimodalProcessor` in SGLang's multimodal ``PROCESSOR_MAPPING``.

Failure is loud on purpose. SGLang logs and swallows exceptions raised by plugins, and an unregistered
architecture silently falls back to ``TransformersForCausalLM`` (which would run without audio input). So any
failure here raises `StepAudio2PluginError`, a ``BaseException`` that SGLang's ``except Exception`` does not
catch: the process stops with the cause. To run SGLang without this plugin, set ``SGLANG_PLUGINS`` to a list
that omits ``step_audio_2``.
"""

from __future__ import annotations

import logging

from step_audio2_sglang.config import ARCHITECTURE, MODEL_TYPE, StepAudio2Config

logger = logging.getLogger(__name__)


class StepAudio2PluginError(BaseException):
    """The plugin could not register; deliberately not an ``Exception`` so SGLang cannot swallow it."""


def _register_config() -> None:
    from transformers import AutoConfig

    AutoConfig.register(MODEL_TYPE, StepAudio2Config, exist_ok=True)


def _register_model() -> None:
    from sglang.srt.configs import model_config
    from sglang.srt.models.registry import ModelRegistry

    from step_audio2_sglang.model import StepAudio2ForCausalLM

    existing = ModelRegistry.models.get(ARCHITECTURE)
    if existing is not None and existing is not StepAudio2ForCausalLM:
        logger.warning("replacing SGLang's %s (%r) with streamvoice's implementation", ARCHITECTURE, existing)
    ModelRegistry.models[ARCHITECTURE] = StepAudio2ForCausalLM
    if ARCHITECTURE not in model_config.multimodal_model_archs:
        model_config.multimodal_model_archs.append(ARCHITECTURE)


def _register_processor() -> None:
    from sglang.srt.managers.multimodal_processor import PROCESSOR_MAPPING

    from step_audio2_sglang.model import StepAudio2ForCausalLM
    from step_audio2_sglang.processor import StepAudio2MultimodalProcessor

    for model_cls in [cls for cls in PROCESSOR_MAPPING if cls.__name__ == ARCHITECTURE]:
        del PROCESSOR_MAPPING[model_cls]
    PROCESSOR_MAPPING[StepAudio2ForCausalLM] = StepAudio2MultimodalProcessor


def register() -> None:
    """Register config, model and processor (idempotent). Raises `StepAudio2PluginError` on any failure."""
    try:
        _register_config()
        _register_model()
        _register_processor()
    except Exception as exc:
        logger.critical("streamvoice Step-Audio-2 SGLang plugin failed to register: %s", exc, exc_info=True)
        raise StepAudio2PluginError(
            f"streamvoice's Step-Audio-2 plugin for SGLang failed to register ({type(exc).__name__}: {exc}). "
            "Refusing to continue: SGLang would otherwise fall back to TransformersForCausalLM without audio "
            "input. Fix the installation, or set SGLANG_PLUGINS to exclude 'step_audio_2'."
        ) from exc
    logger.info("streamvoice Step-Audio-2 plugin registered %s (model_type %s)", ARCHITECTURE, MODEL_TYPE)
