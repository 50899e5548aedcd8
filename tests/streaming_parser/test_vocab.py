"""VocabLayout: defaults, classification, and start-up checks of tokenizer files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from streaming_parser import (
    ConflictingToken,
    MissingToken,
    TokenizerFilesMissing,
    VocabError,
    VocabLayout,
)

# Ids of a plausible real tokenizer that differ from our defaults in every unverified slot.
REAL_IDS = {
    "<audio_start>": 151688,
    "<audio_end>": 151691,
    "<audio_patch>": 151690,
    "<tts_start>": 151693,
    "<tts_end>": 151694,
    "<tts_pad>": 151689,
    "<|BOT|>": 151665,
    "<|EOT|>": 151666,
}


def token_map(**overrides: int) -> dict[str, int]:
    mapping = dict(REAL_IDS)
    mapping.update({f"<audio_{n}>": 151696 + n for n in range(6562)})
    for token, token_id in overrides.items():
        mapping[token] = token_id
    return mapping


def write_tokenizer_json(folder: Path, mapping: dict[str, int], extra: list[dict[str, Any]] = ()) -> Path:
    added = [{"id": i, "content": t, "special": True} for t, i in mapping.items()] + list(extra)
    body = {"version": "1.0", "added_tokens": added, "model": {"type": "BPE", "vocab": {"hello": 0}}}
    (folder / "tokenizer.json").write_text(json.dumps(body), encoding="utf-8")
    return folder / "tokenizer.json"


def write_tokenizer_config(folder: Path, mapping: dict[str, int]) -> Path:
    decoder = {str(i): {"content": t, "special": True} for t, i in mapping.items()}
    body = {"added_tokens_decoder": decoder, "eos_token": "<|EOT|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(body), encoding="utf-8")
    return folder / "tokenizer_config.json"


def test_defaults_are_the_documented_ids() -> None:
    layout = VocabLayout.default()
    assert (layout.text_limit, layout.audio_start, layout.audio_patch) == (151688, 151688, 151690)
    assert (layout.tts_start, layout.tts_end) == (151693, 151694)
    assert (layout.audio_first, layout.audio_codes, layout.audio_pad, layout.vocab_size) == (
        151696,
        6561,
        158257,
        158720,
    )
    assert VocabLayout.UNVERIFIED == ("<audio_end>", "<tts_pad>", "<|BOT|>", "<|EOT|>")


def test_classification() -> None:
    layout = VocabLayout.default()
    assert layout.audio_code(151696) == 0
    assert layout.audio_code(158256) == 6560
    assert layout.audio_code(158257) is None  # the pad
    assert layout.audio_code(158258) is None
    assert layout.audio_code(151695) is None
    assert layout.audio_token_id(6560) == 158256
    with pytest.raises(ValueError):
        layout.audio_token_id(6561)
    assert layout.is_text(0) and layout.is_text(151687)
    assert not layout.is_text(151688) and not layout.is_text(-1)
    assert layout.token_name(layout.eot) == "<|EOT|>"
    assert layout.token_name(158257) == "<audio_6561>"
    assert layout.token_name(100) is None


def test_from_token_map_reads_every_special() -> None:
    layout = VocabLayout.from_token_map(token_map())
    assert (layout.audio_end, layout.tts_pad, layout.bot, layout.eot) == (151691, 151689, 151665, 151666)
    assert not layout.is_text(151665)
    assert layout.pure_text_limit == 151665


def test_from_model_dir_with_tokenizer_json(tmp_path: Path) -> None:
    write_tokenizer_json(tmp_path, token_map())
    layout = VocabLayout.from_model_dir(tmp_path)
    assert layout == VocabLayout.from_token_map(token_map())
    assert layout.source.endswith("tokenizer.json")


def test_from_model_dir_with_tokenizer_config_only(tmp_path: Path) -> None:
    write_tokenizer_config(tmp_path, token_map())
    assert VocabLayout.from_model_dir(tmp_path).eot == 151666


def test_both_files_must_agree(tmp_path: Path) -> None:
    write_tokenizer_json(tmp_path, token_map())
    write_tokenizer_config(tmp_path, token_map())
    assert VocabLayout.from_model_dir(tmp_path).bot == 151665
    write_tokenizer_config(tmp_path, token_map(**{"<|EOT|>": 151667}))
    with pytest.raises(ConflictingToken) as info:
        VocabLayout.from_model_dir(tmp_path)
    assert info.value.token == "<|EOT|>"
    assert "tokenizer_config.json" in str(info.value) and "tokenizer.json" in str(info.value)


def test_config_json_vocab_size(tmp_path: Path) -> None:
    write_tokenizer_json(tmp_path, token_map())
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"vocab_size": 158976}}))
    assert VocabLayout.from_model_dir(tmp_path).vocab_size == 158976
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 151936}))
    with pytest.raises(ConflictingToken, match=r"config\.json"):
        VocabLayout.from_model_dir(tmp_path)


@pytest.mark.parametrize("token", ["<tts_pad>", "<|EOT|>", "<audio_end>", "<audio_0>", "<audio_6561>"])
def test_missing_token_names_file_and_token(tmp_path: Path, token: str) -> None:
    mapping = token_map()
    del mapping[token]
    write_tokenizer_json(tmp_path, mapping)
    with pytest.raises(MissingToken) as info:
        VocabLayout.from_model_dir(tmp_path)
    assert info.value.token == token
    assert str(tmp_path) in str(info.value) and token in str(info.value)


@pytest.mark.parametrize(
    ("token", "wrong"),
    [("<tts_start>", 151692), ("<audio_0>", 151695), ("<audio_6561>", 158256), ("<audio_start>", 151687)],
)
def test_confirmed_ids_are_asserted(tmp_path: Path, token: str, wrong: int) -> None:
    # the fork's test mock used <audio_0> = 151695 and <audio_6561> = 158256: must be rejected
    path = write_tokenizer_json(tmp_path, token_map(**{token: wrong}))
    with pytest.raises(ConflictingToken) as info:
        VocabLayout.from_model_dir(tmp_path)
    assert info.value.token == token and info.value.source == str(path)


def test_an_audio_token_off_the_offset_is_rejected() -> None:
    with pytest.raises(ConflictingToken, match="<audio_17>"):
        VocabLayout.from_token_map(token_map(**{"<audio_17>": 151696}))


def test_two_specials_on_one_id_are_rejected() -> None:
    with pytest.raises(ConflictingToken, match="151666"):
        VocabLayout.from_token_map(token_map(**{"<|BOT|>": 151666}))


def test_a_special_sharing_an_id_with_another_token_is_rejected(tmp_path: Path) -> None:
    write_tokenizer_json(tmp_path, token_map(), extra=[{"id": 151666, "content": "<|im_end|>"}])
    with pytest.raises(ConflictingToken, match="151666"):
        VocabLayout.from_model_dir(tmp_path)


def test_a_special_inside_the_audio_range_is_rejected() -> None:
    with pytest.raises(ConflictingToken, match="audio codes"):
        VocabLayout(tts_pad=151700)


def test_no_tokenizer_files(tmp_path: Path) -> None:
    with pytest.raises(TokenizerFilesMissing, match=re.escape(str(tmp_path))):
        VocabLayout.from_model_dir(tmp_path)


def test_unreadable_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(VocabError, match=r"tokenizer\.json"):
        VocabLayout.from_model_dir(tmp_path)


def test_non_integer_ids_are_rejected(tmp_path: Path) -> None:
    write_tokenizer_json(tmp_path, {}, extra=[{"id": "x", "content": "<tts_pad>"}])
    with pytest.raises(ConflictingToken, match="<tts_pad>"):
        VocabLayout.from_model_dir(tmp_path)


def test_layout_rejects_bool_and_negative_fields() -> None:
    with pytest.raises(VocabError):
        VocabLayout(eot=True)
    with pytest.raises(VocabError):
        VocabLayout(bot=-5)
