"""Frame patterns and frame ranges, as Nuke, Houdini and Deadline users write them."""
from __future__ import annotations

import doctest
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mattekit.inference import sequence
from mattekit.inference.errors import FramePatternError, MissingFramesError
from mattekit.inference.sequence import (
    FramePattern,
    format_frame_list,
    frames_for,
    parse_frame_range,
    parse_pattern,
    require_frames,
)

# pattern, padding, name of frame 7, name of frame 1001
TOKEN_STYLES = [
    ("plate.####.exr", 4, "plate.0007.exr", "plate.1001.exr"),
    ("plate.#.exr", 1, "plate.7.exr", "plate.1001.exr"),
    ("plate.######.exr", 6, "plate.000007.exr", "plate.001001.exr"),
    ("plate.%04d.exr", 4, "plate.0007.exr", "plate.1001.exr"),
    ("plate.%d.exr", 1, "plate.7.exr", "plate.1001.exr"),
    ("plate.%06d.exr", 6, "plate.000007.exr", "plate.001001.exr"),
    ("plate.$F4.exr", 4, "plate.0007.exr", "plate.1001.exr"),
    ("plate.$F.exr", 1, "plate.7.exr", "plate.1001.exr"),
    ("plate.${F4}.exr", 4, "plate.0007.exr", "plate.1001.exr"),
    ("plate.@@@@.exr", 4, "plate.0007.exr", "plate.1001.exr"),
    ("plate.@.exr", 1, "plate.7.exr", "plate.1001.exr"),
    ("plate_####", 4, "plate_0007", "plate_1001"),
    ("####.exr", 4, "0007.exr", "1001.exr"),
]


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


# --- patterns -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, padding, name_7, name_1001", TOKEN_STYLES)
def test_when_a_token_style_is_used_then_frames_7_and_1001_get_the_right_names(
        text, padding, name_7, name_1001):
    pattern = parse_pattern(f"shots/sh010/{text}")
    assert pattern.is_sequence
    assert pattern.padding == padding
    assert pattern.path_for(7) == Path("shots/sh010") / name_7
    assert pattern.path_for(1001) == Path("shots/sh010") / name_1001


@pytest.mark.parametrize("text", [
    "plate.##.exr", "plate.%02d.exr", "plate.$F2.exr", "plate.@@.exr",
])
def test_when_a_frame_is_wider_than_the_padding_then_it_is_written_in_full(text):
    assert parse_pattern(text).path_for(123456).name == "plate.123456.exr"


@pytest.mark.parametrize("text, expected", [
    ("plate.####.exr", "plate.-0005.exr"),
    ("plate.%04d.exr", "plate.-0005.exr"),
    ("plate.$F.exr", "plate.-5.exr"),
    ("plate.##.exr", "plate.-05.exr"),
])
def test_when_a_frame_is_negative_then_the_sign_comes_before_the_padded_digits(text, expected):
    assert parse_pattern(text).path_for(-5).name == expected


def test_when_a_pattern_has_no_token_then_it_is_a_single_file_for_every_frame():
    pattern = parse_pattern("shots/still.exr")
    assert not pattern.is_sequence
    assert pattern.padding == 0
    assert pattern.path_for(1) == pattern.path_for(1001) == Path("shots/still.exr")


@pytest.mark.parametrize("text", [
    "plate.####.####.exr", "plate.####.%04d.exr", "plate.$F4.@.exr", "plate.%d.%d.exr",
    "plate.#.#.exr",
])
def test_when_a_pattern_has_two_frame_tokens_then_it_is_rejected(text):
    with pytest.raises(FramePatternError, match="2 frame tokens"):
        parse_pattern(text)


def test_when_a_printf_token_pads_with_spaces_then_it_is_rejected_with_the_zero_form():
    with pytest.raises(FramePatternError, match="%04d"):
        parse_pattern("plate.%4d.exr")


@pytest.mark.parametrize("text", ["plate.$FF.exr", "plate.$Fend.exr", "plate.$F4_v2.exr"])
def test_when_dollar_f_is_part_of_a_longer_houdini_variable_then_it_is_not_a_token(text):
    assert not parse_pattern(text).is_sequence


def test_when_a_folder_name_holds_hash_or_at_then_only_the_file_name_token_counts():
    pattern = parse_pattern("/jobs/show#2/user@host/plate.####.exr")
    assert pattern.padding == 4
    assert pattern.path_for(7) == Path("/jobs/show#2/user@host/plate.0007.exr")


def test_when_a_windows_drive_path_is_given_then_the_drive_and_folders_are_kept():
    pattern = parse_pattern("C:\\shots\\sh#010\\plate.%04d.exr")
    assert pattern.padding == 4
    assert str(pattern.path_for(1001)) == "C:\\shots\\sh#010\\plate.1001.exr"
    assert parse_pattern("C:plate.####.exr").path_for(7) == Path("C:plate.0007.exr")


def test_when_a_path_object_is_given_then_it_is_accepted_and_text_kept():
    pattern = parse_pattern(Path("shots") / "plate.####.exr")
    assert pattern.text == str(Path("shots") / "plate.####.exr")
    assert pattern == FramePattern(pattern.text)


def test_when_a_pattern_is_empty_then_it_is_rejected():
    with pytest.raises(FramePatternError, match="empty"):
        parse_pattern("  ")


# --- frame ranges ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("1001", [1001]),
    ("1001-1005", [1001, 1002, 1003, 1004, 1005]),
    ("1001-1010x3", [1001, 1004, 1007, 1010]),
    ("1001-1009x3", [1001, 1004, 1007]),
    ("1,3,5-7,10-20x5", [1, 3, 5, 6, 7, 10, 15, 20]),
    (" 1001 - 1003 x 2 , 1 ", [1, 1001, 1003]),
    ("5-7,1-6,6", [1, 2, 3, 4, 5, 6, 7]),
    ("-5--1", [-5, -4, -3, -2, -1]),
    ("-3-2", [-3, -2, -1, 0, 1, 2]),
    ("-10--1x3", [-10, -7, -4, -1]),
    ("-7", [-7]),
    ("0", [0]),
    ("10-10", [10]),
    ("1-5X2", [1, 3, 5]),
])
def test_when_a_range_is_parsed_then_frames_are_sorted_and_unique(text, expected):
    assert parse_frame_range(text) == expected


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("   ", "empty"),
    ("abc", "not a frame or a range"),
    ("1001-", "not a frame or a range"),
    ("1001-1100x", "not a frame or a range"),
    ("1001x2", "not a frame or a range"),
    ("1.5", "not a frame or a range"),
    ("1,,3", "empty item"),
    ("1,3,", "empty item"),
    ("1100-1001", "backwards"),
    ("-1--5", "backwards"),
    ("1001-1100x0", "step"),
    ("1001-1100x-2", "step"),
    ("1 3 5", "not a frame or a range"),
    ("1-2000000000", "more than"),
])
def test_when_a_range_is_bad_then_the_error_quotes_it_and_shows_the_expected_form(text, reason):
    with pytest.raises(FramePatternError) as caught:
        parse_frame_range(text)
    message = str(caught.value)
    assert repr(text) in message
    assert reason in message
    assert "1001-1100x2" in message
    assert "\n" not in message


def test_when_a_range_holds_a_newline_then_the_error_stays_on_one_line():
    with pytest.raises(FramePatternError) as caught:
        parse_frame_range("1-3\n5-x")
    assert "\n" not in str(caught.value)


# --- frame lists ----------------------------------------------------------------------------

@pytest.mark.parametrize("frames, expected", [
    ([1003, 1007, 1008, 1009], "1003, 1007-1009"),
    ([1009, 1003, 1008, 1007, 1003], "1003, 1007-1009"),
    ([5], "5"),
    ([], ""),
    ([-3, -2, -1, 1], "-3--1, 1"),
    ([1, 2], "1-2"),
])
def test_when_frames_are_formatted_then_runs_are_compacted(frames, expected):
    assert format_frame_list(frames) == expected


def test_when_a_frame_list_is_long_then_it_is_shortened_with_the_count_left_out():
    text = format_frame_list(range(0, 100, 2))  # 50 separate frames
    shown = sequence.FRAME_LIST_LIMIT
    assert text.endswith(f"... and {50 - shown} more frames")
    assert text.startswith("0, 2, 4")
    assert len(text) < 120


def test_when_the_limit_is_none_then_the_list_is_never_shortened():
    assert "more" not in format_frame_list(range(0, 100, 2), limit=None)


@given(st.sets(st.integers(min_value=-2000, max_value=2000), min_size=1, max_size=40))
def test_when_a_short_frame_list_is_formatted_then_it_parses_back_to_the_same_frames(frames):
    text = format_frame_list(frames)
    assume("more" not in text)
    assert parse_frame_range(text) == sorted(frames)


@given(st.lists(st.integers(min_value=-10**6, max_value=10**6), min_size=1, max_size=200))
def test_when_any_frame_list_is_formatted_unshortened_then_it_round_trips(frames):
    assert parse_frame_range(format_frame_list(frames, limit=None)) == sorted(set(frames))


# --- frames on disk -------------------------------------------------------------------------

def test_when_globbing_then_exactly_the_existing_frames_are_found(tmp_path):
    touch(tmp_path, "plate.1001.exr", "plate.1002.exr", "plate.1010.exr", "plate.12345.exr",
          "plate.-0003.exr",
          # decoys
          "plate.1003.exr.tmp", "plate.10a1.exr", "plate.001004.exr", "plate.105.exr",
          "plate.-003.exr", "plate.-0000.exr", "plate..exr", "plate.1005.EXR", "plate.1006.exr.",
          "xplate.1007.exr", "other.1008.exr", "plate_1009.exr", "plate.1011.exr.bak")
    (tmp_path / "plate.1012.exr").mkdir()
    assert parse_pattern(str(tmp_path / "plate.####.exr")).glob() == [-3, 1001, 1002, 1010, 12345]


def test_when_globbing_an_unpadded_pattern_then_zero_padded_names_are_not_frames(tmp_path):
    touch(tmp_path, "matte.7.exr", "matte.1001.exr", "matte.07.exr", "matte.0.exr")
    assert parse_pattern(str(tmp_path / "matte.$F.exr")).glob() == [0, 7, 1001]


def test_when_the_pattern_has_regex_characters_then_they_match_literally(tmp_path):
    touch(tmp_path, "pl(a)te+[1].0007.exr", "plate+1.0007.exr")
    assert parse_pattern(str(tmp_path / "pl(a)te+[1].####.exr")).glob() == [7]


def test_when_the_folder_does_not_exist_then_glob_finds_nothing(tmp_path):
    assert parse_pattern(str(tmp_path / "nope" / "plate.####.exr")).glob() == []


def test_when_a_single_file_is_globbed_then_it_is_frame_1_if_it_exists(tmp_path):
    touch(tmp_path, "still.exr")
    assert parse_pattern(str(tmp_path / "still.exr")).glob() == [1]
    assert parse_pattern(str(tmp_path / "gone.exr")).glob() == []


def test_when_frames_are_missing_then_one_error_lists_all_of_them(tmp_path):
    present = [f for f in range(1001, 1021) if f not in (1003, 1007, 1008, 1009)]
    touch(tmp_path, *(f"plate.{f}.exr" for f in present))
    pattern = parse_pattern(str(tmp_path / "plate.####.exr"))
    with pytest.raises(MissingFramesError) as caught:
        require_frames(pattern, parse_frame_range("1001-1020"))
    message = str(caught.value)
    assert "plate.####.exr" in message
    assert "4 of 20 frames missing" in message
    assert "1003, 1007-1009" in message
    assert "\n" not in message
    assert caught.value.path == pattern.text and caught.value.frame is None


def test_when_all_frames_exist_then_their_paths_are_returned_in_order(tmp_path):
    touch(tmp_path, "plate.1001.exr", "plate.1002.exr", "plate.1003.exr")
    pattern = parse_pattern(str(tmp_path / "plate.####.exr"))
    assert require_frames(pattern, [1003, 1001]) == [tmp_path / "plate.1003.exr",
                                                    tmp_path / "plate.1001.exr"]


def test_when_many_frames_are_missing_then_the_message_stays_one_short_line(tmp_path):
    touch(tmp_path, *(f"plate.{f:04d}.exr" for f in range(1, 200, 2)))
    with pytest.raises(MissingFramesError) as caught:
        require_frames(parse_pattern(str(tmp_path / "plate.####.exr")), range(1, 200))
    message = str(caught.value)
    assert "99 of 199 frames missing" in message and "more frames" in message
    assert len(message) < len(str(tmp_path)) + 160


def test_when_the_folder_does_not_exist_then_require_frames_says_so(tmp_path):
    pattern = parse_pattern(str(tmp_path / "nope" / "plate.####.exr"))
    with pytest.raises(MissingFramesError, match="folder .*nope does not exist"):
        require_frames(pattern, [1, 2])


def test_when_a_single_file_is_missing_then_require_frames_names_it(tmp_path):
    with pytest.raises(MissingFramesError, match="gone.exr: file does not exist"):
        require_frames(parse_pattern(str(tmp_path / "gone.exr")), [1])


def test_when_a_single_file_exists_then_every_frame_maps_to_it(tmp_path):
    touch(tmp_path, "still.exr")
    pattern = parse_pattern(str(tmp_path / "still.exr"))
    assert require_frames(pattern, [1, 2]) == [tmp_path / "still.exr"] * 2


def test_when_no_range_is_given_then_frames_for_returns_every_frame_on_disk(tmp_path):
    touch(tmp_path, "plate.1005.exr", "plate.1001.exr", "plate.1002.exr")
    pattern = parse_pattern(str(tmp_path / "plate.####.exr"))
    assert frames_for(pattern, None) == [1001, 1002, 1005]


def test_when_a_range_is_given_then_frames_for_parses_it_without_touching_disk(tmp_path):
    pattern = parse_pattern(str(tmp_path / "nope" / "plate.####.exr"))
    assert frames_for(pattern, "1-5x2") == [1, 3, 5]


def test_when_no_frame_matches_then_frames_for_raises_naming_the_pattern(tmp_path):
    touch(tmp_path, "plate.1001.exr.tmp", "plate.01001.exr")
    pattern = parse_pattern(str(tmp_path / "plate.####.exr"))
    with pytest.raises(MissingFramesError, match="no frames found matching") as caught:
        frames_for(pattern, None)
    assert "plate.####.exr" in str(caught.value) and "plate.1001.exr" in str(caught.value)


def test_when_the_folder_of_a_sequence_is_missing_then_frames_for_says_so(tmp_path):
    with pytest.raises(MissingFramesError, match="does not exist"):
        frames_for(parse_pattern(str(tmp_path / "nope" / "plate.####.exr")), None)


def test_when_a_single_file_has_no_range_then_it_is_frame_1():
    assert frames_for(parse_pattern("still.exr"), None) == [1]


def test_when_the_module_examples_run_then_they_hold():
    assert doctest.testmod(sequence).failed == 0
