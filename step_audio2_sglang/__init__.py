"""Step-Audio-2 for upstream SGLang, shipped as a plugin (entry point group ``sglang.srt.plugins``).

Upstream SGLang has no Step-Audio-2 model. Installing this package with the ``sglang`` extra registers, in every
SGLang process, our config class (model_type ``step_audio_2``), the model class ``StepAudio2ForCausalLM`` and its
multimodal (audio input) processor; see `step_audio2_sglang.register`.

Layout: `audio` (log-mel front end, 25 s blocks, placeholder counts and expansion), `encoder` (Whisper-like audio
encoder and adapter), `weights` (checkpoint key mapping) and `config` are pure torch/transformers and import
nothing from SGLang, so they are unit-tested without it; `model` and `processor` are the SGLang-facing classes and
are imported only by `register`.
"""

from __future__ import annotations
