"""Engine parameters (the nodes' knobs) out of range or of the wrong type: every value is
either rendered into a valid matte or refused with an error naming the parameter; none is a
crash (an ``internal`` error in the worker). Host knobs are checked the same way."""
from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from mattekit.inference.engines.registry import engine_spec
from mattekit.inference.errors import MattekitError
from mattekit.inference.exrio import read_exr
from mattekit.inference.render import RenderJob, render

from .conftest import FUZZ, host_client_module, tiny_plate

JSON_SCALARS = (st.none() | st.booleans() | st.integers(-10**12, 10**12)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
SMALL_NUMBERS = st.sampled_from([0, -1, -0.5, 1e-9, 1, 3, 1e6, 1e308, -1e308, 2**63])


def params_for(engine: str) -> st.SearchStrategy[dict]:
    """Some of the engine's parameters (and now and then an unknown one) with odd values."""
    names = sorted(engine_spec(engine).defaults) + ["no_such_knob"]
    return st.dictionaries(st.sampled_from(names), SMALL_NUMBERS | JSON_VALUES, max_size=3)


def check_outcome(job: RenderJob, params: dict) -> None:
    try:
        report = render(job)
    except MattekitError as exc:
        message = str(exc)
        assert "\n" not in message.strip()
        named = [name for name in params if name in message]
        assert named or "warmup_frames" in message, message  # the error names the parameter
        return
    alpha = read_exr(report.frames[0].path).alpha
    assert alpha is not None and alpha.shape == (36, 64)
    assert np.all(np.isfinite(alpha)) and alpha.min() >= 0.0 and alpha.max() <= 1.0


def fuzz_engine(tmp_path_factory, engine: str, node: str, extra: dict) -> None:
    folder = tmp_path_factory.mktemp(engine)
    plate = tiny_plate(folder / "plate", 2, seed=60)
    for name, value in list(extra.items()):
        if value == "CLEAN":
            extra[name] = tiny_plate(folder / "clean", 1, seed=61).replace("####", "0001")

    @FUZZ
    @given(params=params_for(engine))
    def run(params: dict) -> None:
        job = RenderJob(node=node, engine=engine, plate=plate, frames="2", params=params,
                        use_cache=False, out=str(folder / "out" / "m.####.exr"), **extra)
        check_outcome(job, params)

    run()


def test_when_rvm_params_are_out_of_range_then_each_renders_or_is_refused_by_name(
        tmp_path_factory):
    fuzz_engine(tmp_path_factory, "rvm", "video-matte", {})


def test_when_guided_video_params_are_out_of_range_then_each_renders_or_is_refused_by_name(
        tmp_path_factory):
    fuzz_engine(tmp_path_factory, "rvm-guided", "video-matte", {})


def test_when_clean_plate_params_are_out_of_range_then_each_renders_or_is_refused_by_name(
        tmp_path_factory):
    fuzz_engine(tmp_path_factory, "cleanplate", "background-matte", {"clean_plate": "CLEAN"})


@FUZZ
@given(kind=st.sampled_from(["VideoMatte", "BackgroundMatte"]),
       name=st.sampled_from(["downsample_target", "cut_threshold", "warmup_frames",
                             "max_shift", "edge_softness", "flicker_strength"]),
       value=st.one_of(st.floats(), st.integers(), st.text(max_size=6), st.none(),
                       st.booleans()))
def test_when_a_knob_holds_any_value_then_params_are_json_or_a_knob_error_names_it(
        kind, name, value):
    host_client_module()  # puts plugin/ on sys.path
    from mattekit_host.errors import MattekitHostError
    from mattekit_host.knobs import params_from_knobs

    try:
        params = params_from_knobs(kind, {name: value}, node="Matte1")
    except MattekitHostError as exc:
        assert "Matte1" in str(exc) and f"'{name}'" in str(exc)
        return
    for number in params.values():
        assert not isinstance(number, float) or math.isfinite(number)
    json.dumps(params, allow_nan=False)  # what the host sends must be JSON

