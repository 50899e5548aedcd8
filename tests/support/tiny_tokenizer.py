"""A tiny word-level ``tokenizer.json`` whose special tokens sit at Step-Audio-2's ids.

Text ids come from the short `WORDS` table (everything else is ``[UNK]`` = 0), so prompt tests can state
expected id sequences by hand. Ids 151688.. are the control block and ``<audio_N>`` tokens at the documented
default layout (`VocabLayout.default()`), and decode round-trips ``<audio_start><audio_patch><audio_end>``
(SGLang re-tokenises ``input_ids`` and looks for that placeholder). Unused rows up to 151687 are filler.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from streaming_parser import VocabLayout

# id -> word; the prompt tests refer to these ids literally.
WORDS: tuple[str, ...] = (
    "[UNK]",  # 0
    "system",  # 1
    "\n",  # 2
    "human",  # 3
    "assistant",  # 4
    " ",  # 5
    "hi",  # 6
    "there",  # 7
    "!",  # 8
    "Be",  # 9
    "brief",  # 10
    ".",  # 11
    "input",  # 12
    "sunny",  # 13
    "weather",  # 14
    "ok",  # 15
)
TEXT_LIMIT = 151_688
VOCAB_SIZE = 158_720


def _special_tokens(layout: VocabLayout) -> dict[int, str]:
    names = {
        layout.audio_start: "<audio_start>",
        layout.audio_end: "<audio_end>",
        layout.audio_patch: "<audio_patch>",
        layout.tts_start: "<tts_start>",
        layout.tts_end: "<tts_end>",
        layout.tts_pad: "<tts_pad>",
        layout.bot: "<|BOT|>",
        layout.eot: "<|EOT|>",
    }
    for code in range(layout.audio_codes + 1):  # includes the pad <audio_6561>
        names[layout.audio_first + code] = f"<audio_{code}>"
    for token_id in range(layout.audio_pad + 1, VOCAB_SIZE):
        names[token_id] = f"<reserved_{token_id}>"
    return names


def write_tiny_tokenizer(folder: Path, layout: VocabLayout | None = None) -> Path:
    """Write ``tokenizer.json`` and a minimal ``config.json`` into ``folder``; return ``folder``."""
    layout = layout or VocabLayout.default()
    vocab = {word: index for index, word in enumerate(WORDS)}
    for index in range(len(WORDS), TEXT_LIMIT):
        vocab[f"<filler_{index}>"] = index
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|\s|[^\w\s]"), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    spec = json.loads(tokenizer.to_str())
    spec["added_tokens"] = [
        {
            "id": token_id,
            "content": content,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for token_id, content in sorted(_special_tokens(layout).items())
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps({"vocab_size": VOCAB_SIZE}), encoding="utf-8")
    return folder
