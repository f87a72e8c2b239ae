"""SMS segment counting: GSM-7 (160/153, extension characters count twice) versus UCS-2
(70/67, characters outside the BMP count twice)."""

from __future__ import annotations

import pytest

from orchestrator.segments import sms_size


@pytest.mark.parametrize(
    "length, segments",
    [(1, 1), (159, 1), (160, 1), (161, 2), (305, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm7_boundaries(length: int, segments: int) -> None:
    size = sms_size("a" * length)
    assert size.encoding == "GSM-7"
    assert size.units == length
    assert size.segments == segments


def test_empty_text_has_no_segment() -> None:
    assert sms_size("").segments == 0


def test_gsm_basic_accented_letters_and_symbols_stay_gsm7() -> None:
    text = "Chloé à Zürich: 5£ @ 10:00 Ñoño Ça va? ¡Hola! ¿Qué tal? Δ_Φ§"
    size = sms_size(text)
    assert size.encoding == "GSM-7"
    assert size.units == len(text)


@pytest.mark.parametrize("char", list("€[]{}^~|\\"))
def test_extension_characters_count_double(char: str) -> None:
    assert sms_size(char).units == 2
    assert sms_size("a" + char).units == 3
    assert sms_size(char).encoding == "GSM-7"


def test_euro_signs_fill_a_segment_at_80() -> None:
    assert sms_size("€" * 80) == type(sms_size(""))("GSM-7", 160, 1)
    eighty_one = sms_size("€" * 81)
    assert (eighty_one.units, eighty_one.segments) == (162, 2)


def test_one_extension_character_tips_160_into_two_segments() -> None:
    assert sms_size("a" * 158 + "€").segments == 1  # 160 septets
    assert sms_size("a" * 159 + "€").segments == 2  # 161 septets


@pytest.mark.parametrize(
    "length, segments",
    [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)],
)
def test_ucs2_boundaries(length: int, segments: int) -> None:
    size = sms_size("ж" * length)
    assert size.encoding == "UCS-2"
    assert size.units == length
    assert size.segments == segments


def test_one_non_gsm_character_switches_the_whole_message_to_ucs2() -> None:
    text = "a" * 100 + "ж"
    size = sms_size(text)
    assert size.encoding == "UCS-2"
    assert size.units == 101
    assert size.segments == 2  # would be 1 segment in GSM-7


def test_extension_characters_count_once_in_ucs2() -> None:
    assert sms_size("€ж").units == 2


def test_emoji_counts_two_units() -> None:
    assert sms_size("😀").units == 2
    assert sms_size("😀").encoding == "UCS-2"
    assert sms_size("😀" * 35).segments == 1  # 70 units
    assert sms_size("😀" * 36).segments == 2  # 72 units
    assert sms_size("a" * 68 + "😀").segments == 1  # 70 units
    assert sms_size("a" * 69 + "😀").segments == 2  # 71 units


def test_bmp_symbol_counts_one_unit() -> None:
    # ✓ (U+2713) is in the Basic Multilingual Plane: one UTF-16 unit.
    assert sms_size("✓" * 70).segments == 1
