"""transformers config for Step-Audio-2 (``model_type`` ``step_audio_2``), registered with AutoConfig by the plugin.

The checkpoint's ``config.json`` holds ``architectures: ["StepAudio2ForCausalLM"]``, a Qwen2 ``text_config``
(Step-Audio-2-mini: hidden 3584, 28 layers, 28/4 heads, vocab 158720) and an ``audio_encoder_config`` (128 mels,
n_audio_ctx 1500, state 1280, 20 heads, 32 layers, llm_dim 3584, adapter kernel 3 stride 2). The upstream repo
ships these classes as remote code; ours lets SGLang read the config without ``--trust-remote-code``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import PretrainedConfig, Qwen2Config

MODEL_TYPE = "step_audio_2"
ENCODER_MODEL_TYPE = "step_audio_2_encoder"
ARCHITECTURE = "StepAudio2ForCausalLM"


class StepAudio2EncoderConfig(PretrainedConfig):
    """Audio encoder + adapter sizes (the checkpoint's ``audio_encoder_config``).

    ``adapter_hidden_size`` is not in the released config: it defaults to the reference's fixed 2048 and exists
    so tiny test checkpoints can shrink it.
    """

    model_type = ENCODER_MODEL_TYPE

    def __init__(
        self,
        n_mels: int = 128,
        n_audio_ctx: int = 1500,
        n_audio_state: int = 1280,
        n_audio_head: int = 20,
        n_audio_layer: int = 32,
        llm_dim: int = 3584,
        kernel_size: int = 3,
        adapter_stride: int = 2,
        adapter_hidden_size: int = 2048,
        **kwargs: Any,
    ) -> None:
        self.n_mels = n_mels
        self.n_audio_ctx = n_audio_ctx
        self.n_audio_state = n_audio_state
        self.n_audio_head = n_audio_head
        self.n_audio_layer = n_audio_layer
        self.llm_dim = llm_dim
        self.kernel_size = kernel_size
        self.adapter_stride = adapter_stride
        self.adapter_hidden_size = adapter_hidden_size
        super().__init__(**kwargs)


class StepAudio2Config(PretrainedConfig):
    """Top-level Step-Audio-2 config: a Qwen2 ``text_config`` plus an ``audio_encoder_config``."""

    model_type = MODEL_TYPE
    sub_configs: ClassVar[dict[str, type[PretrainedConfig]]] = {
        "text_config": Qwen2Config,
        "audio_encoder_config": StepAudio2EncoderConfig,
    }

    def __init__(
        self,
        text_config: dict[str, Any] | Qwen2Config | None = None,
        audio_encoder_config: dict[str, Any] | StepAudio2EncoderConfig | None = None,
        **kwargs: Any,
    ) -> None:
        text: Qwen2Config
        if text_config is None:
            text = Qwen2Config()
        elif isinstance(text_config, dict):
            text = Qwen2Config(**{key: value for key, value in text_config.items() if key != "model_type"})
        else:
            text = text_config
        encoder: StepAudio2EncoderConfig
        if audio_encoder_config is None:
            encoder = StepAudio2EncoderConfig()
        elif isinstance(audio_encoder_config, dict):
            fields = {key: value for key, value in audio_encoder_config.items() if key != "model_type"}
            encoder = StepAudio2EncoderConfig(**fields)
        else:
            encoder = audio_encoder_config
        self.text_config = text
        self.audio_encoder_config = encoder
        kwargs.setdefault("architectures", [ARCHITECTURE])
        super().__init__(**kwargs)
        if text.dtype is None and self.dtype is not None:
            # Sub-configs inherit the checkpoint dtype (SGLang reads it from the text config).
            text.dtype = self.dtype
