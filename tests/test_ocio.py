"""mattekit.ocio: config choice, name resolution and conversions, checked against colour-science.

colour-science is an independent reference here only; mattekit.ocio never imports it.
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import PyOpenColorIO as OCIO
import pytest

from mattekit import ocio
from mattekit.inference.errors import ColourError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # colour warns that matplotlib is absent
    import colour

LIN = "Linear Rec.709 (sRGB)"
SRGB = "sRGB Encoded Rec.709 (sRGB)"
TOL = 1e-4

# A hand-written OCIO v2 config: ACES 1.x style names (no OCIO 2 aliases for sRGB / linear), a
# scene_linear role and a gamma 2.2 space whose transform is easy to check by hand.
SMALL_CONFIG = """\
ocio_profile_version: 2

search_path: ""
strictparsing: true
name: mattekit-test-config

roles:
  default: Utility - Linear - sRGB
  scene_linear: Utility - Linear - sRGB
  data: Utility - Raw

file_rules:
  - !<Rule> {name: Default, colorspace: default}

displays:
  sRGB:
    - !<View> {name: Raw, colorspace: Utility - Raw}

colorspaces:
  - !<ColorSpace>
    name: Utility - Linear - sRGB
    aliases: [small_linear]

  - !<ColorSpace>
    name: Utility - sRGB - Texture
    from_scene_reference: !<ExponentWithLinearTransform>
      {gamma: 2.4, offset: 0.055, direction: inverse}

  - !<ColorSpace>
    name: Gamma 2.2
    from_scene_reference: !<ExponentTransform> {value: 2.2, direction: inverse}

  - !<ColorSpace>
    name: Utility - Raw
    isdata: true
"""


@pytest.fixture
def no_ocio_env(monkeypatch):
    monkeypatch.delenv("OCIO", raising=False)


@pytest.fixture
def config(no_ocio_env):
    return ocio.load_config()


@pytest.fixture
def small_config_path(tmp_path: Path) -> Path:
    path = tmp_path / "small" / "config.ocio"
    path.parent.mkdir()
    path.write_text(SMALL_CONFIG)
    return path


@pytest.fixture(scope="module")
def unit_rgb() -> np.ndarray:
    """Pixels in [0, 1]: a fine grey ramp with both ends, then random colours."""
    ramp = np.repeat(np.linspace(0.0, 1.0, 4097)[:, None], 3, axis=1)
    rng = np.random.default_rng(7)
    return np.concatenate([ramp, rng.uniform(0.0, 1.0, (50000, 3))]).astype(np.float32)


@pytest.fixture(scope="module")
def hdr_rgb() -> np.ndarray:
    """Scene-linear pixels with highlights far above 1 and negatives (out-of-gamut colours)."""
    rng = np.random.default_rng(11)
    fixed = np.array([[37.5, 37.5, 37.5], [37.5, 0.2, -0.05], [-0.3, 1.0, 12.0],
                      [1000.0, 0.0, 0.5]], dtype=np.float32)
    return np.concatenate([fixed, rng.uniform(-0.5, 60.0, (50000, 3))]).astype(np.float32)


def srgb_linear_reference():
    """colour-science's sRGB with primaries-derived matrices, as OCIO's configs build theirs.

    Its default sRGB uses the 4-digit IEC 61966-2-1 matrix, 2e-4 away from the derived one.
    """
    space = colour.RGB_COLOURSPACES["sRGB"].copy()
    space.use_derived_matrix_RGB_to_XYZ = True
    space.use_derived_matrix_XYZ_to_RGB = True
    return space


def acescg_to_lin_reference(rgb: np.ndarray, cat: str = "Bradford") -> np.ndarray:
    return colour.RGB_to_RGB(rgb.astype(np.float64), "ACEScg", srgb_linear_reference(),
                             chromatic_adaptation_transform=cat)


def srgb_encode_reference(rgb: np.ndarray) -> np.ndarray:
    return colour.cctf_encoding(np.asarray(rgb, dtype=np.float64), "sRGB")


def max_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Largest absolute error, relative above 1."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = np.maximum(1.0, np.abs(expected))
    return float(np.max(np.abs(actual.astype(np.float64) - expected) / scale))


# --- which config ---------------------------------------------------------------------------

def test_when_pinned_uri_is_inspected_then_it_is_a_versioned_builtin_not_the_moving_default():
    assert ocio.PINNED_CONFIG_URI != "ocio://default"
    name = ocio.PINNED_CONFIG_URI[len("ocio://"):]
    assert ocio.PINNED_CONFIG_URI.startswith("ocio://")
    assert name in [entry[0] for entry in OCIO.BuiltinConfigRegistry().getBuiltinConfigs()]
    assert "aces-v1.3" in name and "cg-config" in name


def test_when_no_path_and_no_ocio_env_then_the_pinned_builtin_is_loaded(config):
    assert ocio.config_name(config) == ocio.PINNED_CONFIG_URI
    assert config.getName() == "cg-config-v2.2.0_aces-v1.3_ocio-v2.4"


def test_when_a_config_is_loaded_twice_then_the_same_object_is_returned(no_ocio_env):
    assert ocio.load_config() is ocio.load_config(ocio.PINNED_CONFIG_URI)


def test_when_ocio_env_is_set_then_its_config_is_used(monkeypatch, small_config_path):
    monkeypatch.setenv("OCIO", str(small_config_path))
    config = ocio.load_config()
    assert ocio.config_name(config) == str(small_config_path)
    assert config.getName() == "mattekit-test-config"
    assert ocio.default_colorspace(config, integer_encoded=False) == "Utility - Linear - sRGB"


def test_when_ocio_env_and_explicit_path_are_both_given_then_the_path_wins(monkeypatch,
                                                                          small_config_path):
    monkeypatch.setenv("OCIO", str(small_config_path))
    config = ocio.load_config(ocio.PINNED_CONFIG_URI)
    assert ocio.config_name(config) == ocio.PINNED_CONFIG_URI


def test_when_ocio_env_file_is_broken_then_colour_error_names_it(monkeypatch, tmp_path):
    broken = tmp_path / "broken.ocio"
    broken.write_text("ocio_profile_version: 2\ncolorspaces: [this is: not {a config\n")
    monkeypatch.setenv("OCIO", str(broken))
    with pytest.raises(ColourError) as info:
        ocio.load_config()
    message = str(info.value)
    assert str(broken) in message and "$OCIO" in message
    assert "\n" not in message


def test_when_ocio_env_file_is_missing_then_colour_error_names_it(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere" / "config.ocio"
    monkeypatch.setenv("OCIO", str(missing))
    with pytest.raises(ColourError, match="nowhere"):
        ocio.load_config()


def test_when_a_builtin_uri_does_not_exist_then_colour_error_names_it():
    with pytest.raises(ColourError, match="no-such-config"):
        ocio.load_config("ocio://no-such-config_v0")


# --- names ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    (LIN, LIN),                            # canonical name
    ("lin_rec709", LIN),                   # OCIO 2 alias
    ("srgb_tx", SRGB),
    ("sRGB - Texture", SRGB),
    ("ACES - ACEScg", "ACEScg"),
    ("scene_linear", "ACEScg"),            # roles
    ("color_picking", SRGB),
    ("acescg", "ACEScg"),                  # any case
    ("LIN_REC709", LIN),
    ("Scene_Linear", "ACEScg"),
    ("linear", LIN),                       # Nuke default config spellings
    ("sRGB", SRGB),
])
def test_when_a_name_alias_or_role_is_given_then_the_canonical_space_is_returned(
        config, name, expected):
    assert ocio.resolve_colorspace(config, name) == expected


def test_when_an_aces1_style_config_is_used_then_nuke_spellings_resolve_in_it(small_config_path):
    config = ocio.load_config(str(small_config_path))
    assert ocio.resolve_colorspace(config, "linear") == "Utility - Linear - sRGB"
    assert ocio.resolve_colorspace(config, "sRGB") == "Utility - sRGB - Texture"
    assert ocio.resolve_colorspace(config, ocio.ENGINE_SRGB) == "Utility - sRGB - Texture"
    assert ocio.resolve_colorspace(config, "SMALL_LINEAR") == "Utility - Linear - sRGB"


def test_when_the_config_has_a_rec709_camera_space_then_rec709_resolves_to_it():
    studio = ocio.load_config("ocio://studio-config-v2.2.0_aces-v1.3_ocio-v2.4")
    assert ocio.resolve_colorspace(studio, "rec709") == "Camera Rec.709"


def test_when_the_config_has_no_rec709_camera_space_then_rec709_is_unknown(config):
    # the CG config's "Gamma 2.4 Encoded Rec.709" is a display encoding, not Nuke's rec709
    with pytest.raises(ColourError, match="unknown colour space 'rec709'"):
        ocio.resolve_colorspace(config, "rec709")


def test_when_a_name_is_unknown_then_colour_error_gives_the_name_and_close_matches(config):
    with pytest.raises(ColourError) as info:
        ocio.resolve_colorspace(config, "ACEScgg")
    message = str(info.value)
    assert message.startswith(
        f"unknown colour space 'ACEScgg' in config {ocio.PINNED_CONFIG_URI}; close matches: ")
    assert "ACEScg" in message.split("close matches: ")[1].split(", ")
    assert "\n" not in message


def test_when_plates_are_float_or_integer_then_defaults_are_scene_linear_or_srgb(config):
    assert ocio.default_colorspace(config, integer_encoded=False) == "ACEScg"
    assert ocio.default_colorspace(config, integer_encoded=True) == SRGB
    assert ocio.resolve_colorspace(config, ocio.ENGINE_SRGB) == SRGB


# --- conversions against colour-science -----------------------------------------------------

def test_when_linear_rec709_is_encoded_then_it_matches_the_srgb_cctf(config, unit_rgb):
    out = ocio.Converter(config, "lin_rec709", ocio.ENGINE_SRGB).apply(unit_rgb)
    assert max_error(out, srgb_encode_reference(unit_rgb)) < TOL


def test_when_srgb_is_decoded_then_it_matches_the_inverse_srgb_cctf(config, unit_rgb):
    out = ocio.Converter(config, "srgb_tx", "lin_rec709").apply(unit_rgb)
    expected = colour.cctf_decoding(unit_rgb.astype(np.float64), "sRGB")
    assert max_error(out, expected) < TOL


def test_when_acescg_goes_to_linear_rec709_then_it_matches_bradford_adaptation(config, hdr_rgb):
    out = ocio.Converter(config, "ACEScg", "lin_rec709").apply(hdr_rgb)
    assert max_error(out, acescg_to_lin_reference(hdr_rgb, "Bradford")) < TOL


def test_when_cat02_is_the_reference_then_acescg_to_linear_rec709_does_not_match(config, unit_rgb):
    # the config's AP0 -> Rec.709 matrix is Bradford-adapted; CAT02 is 4e-3 away
    out = ocio.Converter(config, "ACEScg", "lin_rec709").apply(unit_rgb)
    assert max_error(out, acescg_to_lin_reference(unit_rgb, "CAT02")) > 1e-3


def test_when_acescg_goes_to_srgb_then_it_matches_adaptation_then_cctf(config, unit_rgb):
    out = ocio.Converter(config, "ACEScg", ocio.ENGINE_SRGB).apply(unit_rgb)
    linear = acescg_to_lin_reference(unit_rgb)
    in_gamut = np.all(linear >= 0.0, axis=1)
    assert 0.2 < in_gamut.mean() < 0.95
    assert max_error(out[in_gamut], srgb_encode_reference(linear[in_gamut])) < TOL


def test_when_acescg_is_out_of_rec709_gamut_then_negatives_follow_the_ocio_srgb_curve(
        config, unit_rgb):
    # OCIO's sRGB is a "moncurve": its linear toe has the slope that makes the curve smooth
    # (12.9232), where IEC 61966-2-1 rounds it to 12.92; the two differ by 2.5e-4 relative on
    # negatives only. colour-science implements OCIO's moncurve too.
    out = ocio.Converter(config, "ACEScg", ocio.ENGINE_SRGB).apply(unit_rgb)
    linear = acescg_to_lin_reference(unit_rgb)
    assert linear.min() < -0.5
    moncurve = colour.models.exponent_function_monitor_curve(linear, 2.4, 0.055, "moncurveRev")
    assert max_error(out, moncurve) < TOL
    assert max_error(out, srgb_encode_reference(linear)) > TOL


def test_when_linear_above_one_is_encoded_then_it_is_not_clamped(config):
    rgb = np.array([[37.5, 1.5, 0.5]], dtype=np.float32)
    out = ocio.Converter(config, "lin_rec709", "srgb_tx").apply(rgb)
    assert out[0, 0] > 4.0
    assert max_error(out, srgb_encode_reference(rgb)) < TOL


def test_when_linear_goes_to_srgb_and_back_then_values_return_within_1e5(config, unit_rgb):
    to_srgb = ocio.Converter(config, "lin_rec709", ocio.ENGINE_SRGB)
    back = to_srgb.inverse().apply(to_srgb.apply(unit_rgb))
    assert float(np.max(np.abs(back - unit_rgb))) < 1e-5


def test_when_hdr_and_negative_values_go_through_acescg_and_back_then_they_survive(config,
                                                                                 hdr_rgb):
    to_acescg = ocio.Converter(config, "lin_rec709", "ACEScg")
    back = to_acescg.inverse().apply(to_acescg.apply(hdr_rgb))
    assert back[0, 0] == pytest.approx(37.5, rel=1e-4)
    assert back[1, 2] == pytest.approx(-0.05, abs=1e-4)
    assert max_error(back, hdr_rgb) < TOL
    assert float(back.max()) > 999.0 and float(back.min()) < -0.4


# --- the Converter ----------------------------------------------------------------------------

def test_when_threads_differ_then_results_are_bit_identical(config):
    rng = np.random.default_rng(3)
    image = rng.uniform(-0.5, 40.0, (1080, 1921, 3)).astype(np.float32)
    pixels = rng.uniform(-0.5, 40.0, (200003, 3)).astype(np.float32)
    for src, dst in [("ACEScg", "srgb_tx"), ("srgb_tx", "lin_rec709")]:
        single = ocio.Converter(config, src, dst, threads=1)
        several = ocio.Converter(config, src, dst, threads=4)
        assert np.array_equal(single.apply(image), several.apply(image))
        assert np.array_equal(single.apply(pixels), several.apply(pixels))
        assert not np.array_equal(single.apply(pixels), pixels)


def test_when_applied_then_the_input_is_not_mutated(config, hdr_rgb):
    rgb = hdr_rgb.copy()
    out = ocio.Converter(config, "ACEScg", "srgb_tx").apply(rgb)
    assert np.array_equal(rgb, hdr_rgb)
    assert out is not rgb and not np.shares_memory(out, rgb)


def test_when_out_is_given_then_it_receives_the_result(config, unit_rgb):
    converter = ocio.Converter(config, "lin_rec709", "srgb_tx")
    expected = converter.apply(unit_rgb)
    out = np.zeros_like(unit_rgb)
    assert converter.apply(unit_rgb, out=out) is out
    assert np.array_equal(out, expected)
    in_place = unit_rgb.copy()
    assert converter.apply(in_place, out=in_place) is in_place
    assert np.array_equal(in_place, expected)


def test_when_out_overlaps_the_input_differently_then_value_error(config, unit_rgb):
    rgb = unit_rgb.copy()
    with pytest.raises(ValueError, match="overlaps"):
        ocio.Converter(config, "lin_rec709", "srgb_tx").apply(rgb[:-1], out=rgb[1:])


def test_when_source_and_destination_are_the_same_space_then_a_copy_is_returned(config, hdr_rgb):
    converter = ocio.Converter(config, "ACEScg", "lin_ap1")
    assert converter.is_noop
    out = converter.apply(hdr_rgb)
    assert out is not hdr_rgb and np.array_equal(out, hdr_rgb)


def test_when_inverted_then_source_and_destination_swap(config):
    converter = ocio.Converter(config, "scene_linear", "sRGB", threads=3)
    inverse = converter.inverse()
    assert (inverse.src, inverse.dst, inverse.threads) == (SRGB, "ACEScg", 3)


def test_when_rgba_is_given_then_value_error_because_alpha_is_never_converted(config):
    with pytest.raises(ValueError, match="RGB"):
        ocio.Converter(config, "ACEScg", "srgb_tx").apply(np.zeros((4, 4, 4), np.float32))


def test_when_input_is_float64_or_strided_then_float32_results_match(config, unit_rgb):
    converter = ocio.Converter(config, "ACEScg", "srgb_tx")
    expected = converter.apply(unit_rgb)
    wide = np.zeros((unit_rgb.shape[0], 4), np.float64)
    wide[:, :3] = unit_rgb
    out = converter.apply(wide[:, :3])
    assert out.dtype == np.float32
    assert np.array_equal(out, expected)


def test_when_a_space_is_unknown_then_the_converter_raises_colour_error(config):
    with pytest.raises(ColourError, match="'no_such_space'"):
        ocio.Converter(config, "no_such_space", "ACEScg")


def test_when_one_converter_is_shared_by_threads_then_each_result_is_correct(config, unit_rgb):
    converter = ocio.Converter(config, "lin_rec709", "srgb_tx")
    expected = converter.apply(unit_rgb)
    results: list[bool] = []

    def work() -> None:
        results.append(bool(np.array_equal(converter.apply(unit_rgb), expected)))

    workers = [threading.Thread(target=work) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert results == [True] * 4


def test_when_a_small_config_has_a_gamma_space_then_the_conversion_follows_it(small_config_path):
    config = ocio.load_config(str(small_config_path))
    rgb = np.array([[0.0, 0.18, 1.0], [0.5, 2.0, 0.01]], dtype=np.float32)
    out = ocio.Converter(config, "linear", "Gamma 2.2").apply(rgb)
    assert max_error(out, rgb.astype(np.float64) ** (1 / 2.2)) < TOL
