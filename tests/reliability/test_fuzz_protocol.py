"""Anything a client can send to the real worker: bytes that are not JSON, JSON of every shape,
jobs with fields of every type, unknown ops, oversized lines, frame ranges and broken plates.
Every rejection is a one-line error with a code; nothing stops the worker."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from worker_helpers import Client, start_worker, worker_env

from mattekit.inference.errors import FramePatternError
from mattekit.inference.sequence import parse_frame_range, parse_pattern
from mattekit.inference.worker.protocol import (
    JOB_FIELDS,
    MAX_LINE_BYTES,
    ProtocolError,
    job_from_message,
)

from .conftest import FUZZ, tiny_plate

CODES = {"bad_request", "input_error", "engine_error", "not_implemented", "forbidden_path",
         "message_too_large", "cancelled", "unauthorized"}
JSON_SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                           max_leaves=10)
SAFE_OPS = st.sampled_from(["ping", "models", "status", "cancel", "process", "fly", "", "PING",
                            "hello"]) | st.text(max_size=8)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzzed-worker")
    worker = start_worker(root / "home", root / "cache",
                          env=worker_env(root / "home", root / "cache"))
    worker.root = root  # type: ignore[attr-defined]
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def client(worker):
    with worker.client(name="fuzzer") as connection:
        yield connection


def check_error(reply: dict) -> None:
    assert reply["ok"] is False, reply
    error = reply["error"]
    assert error["code"] in CODES, reply
    assert error["code"] != "internal" and error["message"].strip()
    assert "\n" not in error["message"]


def still_serves(client: Client) -> None:
    assert client.request("ping")["op"] == "pong"


@FUZZ
@given(line=st.binary(max_size=200).filter(lambda b: b"\n" not in b and b.strip()))
def test_when_a_line_is_any_bytes_then_a_reply_per_line_and_the_connection_serves(client, line):
    client.send_raw(line + b"\n")
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        message = None
    if isinstance(message, dict) and isinstance(message.get("id"), str) and message["id"] \
            and message.get("op") in ("ping", "models", "status"):
        assert client.recv()["ok"] is True  # valid after all
    else:
        reply = client.recv()
        if reply.get("event") in ("queued", "started"):
            return  # a process request that happens to be valid: not fuzzable here
        check_error(reply)
    still_serves(client)


@FUZZ
@given(message=st.dictionaries(st.sampled_from(["id", "op", "job", "target", "token"])
                               | st.text(max_size=5), JSON_VALUES, max_size=5),
       op=SAFE_OPS, request_id=st.one_of(st.text(min_size=1, max_size=6), JSON_SCALARS))
def test_when_a_message_has_any_fields_then_an_error_or_a_reply_never_a_crash(
        client, message, op, request_id):
    message = {**message, "op": op, "id": request_id}
    if op == "process":
        message["job"] = {"node": 5}  # never a real render: fields of the job are fuzzed below
    client.send_raw(json.dumps(message).encode() + b"\n")
    reply = client.recv()
    while reply.get("event") == "error" and reply["error"]["code"] == "cancelled":
        reply = client.recv()  # a cancel's target from an earlier example
    if reply.get("ok") is False:
        check_error(reply)
    else:
        assert isinstance(request_id, str) and op in ("ping", "models", "status", "cancel")
    still_serves(client)


@FUZZ
@given(job=st.dictionaries(st.sampled_from(sorted(JOB_FIELDS) + ["cache_root", "x"]),
                           JSON_VALUES | st.sampled_from(["/abs/p.####.exr", "rel/p.exr",
                                                          "video-matte", "1-3", "\0"]),
                           max_size=6))
def test_when_a_job_has_fields_of_any_type_then_a_job_or_bad_request_naming_a_field(tmp_path,
                                                                                     job):
    try:
        job_from_message(job, tmp_path, "auto")
    except ProtocolError as exc:
        assert exc.code == "bad_request" and "'" in str(exc)  # names the field in quotes


@FUZZ
@given(text=st.text(alphabet="0123456789-x,: Xab", max_size=20) | st.text(max_size=20))
def test_when_a_frame_range_is_any_text_then_frames_or_a_frame_pattern_error(text):
    try:
        frames = parse_frame_range(text)
    except FramePatternError as exc:
        assert repr(text)[1:-1][:10] in str(exc) or not text.strip()
        return
    assert frames == sorted(set(frames)) and frames


@FUZZ
@given(name=st.text(alphabet="ab.#%@$F{}0123456789d_-", min_size=1, max_size=16),
       frame=st.integers(-100_000, 10**7))
def test_when_a_frame_pattern_is_any_text_then_a_pattern_or_a_frame_pattern_error(name, frame):
    try:
        pattern = parse_pattern("/shots/plate" + name)
    except FramePatternError as exc:
        assert name in str(exc)
        return
    path = pattern.path_for(frame)
    assert path.parent == Path("/shots")
    if pattern.is_sequence:  # the frame is written in full, never truncated
        assert str(abs(frame)) in path.name


def test_when_hello_is_oversized_then_message_too_large_and_the_worker_still_serves(worker):
    with Client(worker.port, hello=False) as raw:
        raw.send_raw(b'{"op": "hello", "token": "' + b"0" * MAX_LINE_BYTES + b'"}\n')
        reply = raw.recv()
        assert reply["error"]["code"] == "message_too_large"
        assert raw.closed_by_peer()
    with worker.client() as fine:
        still_serves(fine)


@pytest.mark.parametrize("frames", ["", "3-1", "1-1000000000", "1-3x0", "a-b", "1,,2",
                                    "99999"])
def test_when_the_frames_field_is_bad_then_input_error_names_the_range(client, worker, frames):
    plate = tiny_plate(worker.root / "plate", 3, seed=70)
    events = client.process({"node": "video-matte", "plate": plate, "frames": frames})
    check_error(events[-1])
    assert events[-1]["error"]["code"] in ("input_error", "bad_request")
    if frames.strip():
        assert frames in events[-1]["error"]["message"]
    still_serves(client)


def broken_plates(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    good = Path(tiny_plate(folder / "good", 1, seed=71).replace("####", "0001")).read_bytes()
    plates = {"empty file": b"", "not an exr": b"GIF89a" + bytes(100),
              "truncated": good[: len(good) // 2],
              "header damaged": good[:40] + bytes(40) + good[80:]}
    paths = {}
    for cause, data in plates.items():
        path = folder / cause.replace(" ", "_") / "plate.0001.exr"
        path.parent.mkdir()
        path.write_bytes(data)
        paths[cause] = path
    return paths


def test_when_plates_are_broken_exr_files_then_input_error_names_file_and_frame(client, worker):
    for cause, path in broken_plates(worker.root / "broken").items():
        pattern = str(path).replace("0001", "####")
        events = client.process({"node": "video-matte", "plate": pattern, "frames": "1"})
        error = events[-1]
        check_error(error)
        assert error["error"]["code"] == "input_error", (cause, error)
        assert str(path) in error["error"]["message"] and "frame 1" in error["error"]["message"]
    still_serves(client)


@pytest.mark.parametrize("params, name", [
    ({"downsample_target": "big"}, "downsample_target"), ({"downsample_target": 0},
                                                          "downsample_target"),
    ({"cut_threshold": -1}, "cut_threshold"), ({"flicker_strength": 7}, "flicker_strength"),
    ({"warmup_frames": -5}, "warmup_frames"), ({"focus_view": "yes"}, "focus_view"),
    ({"unknown_knob": 1}, "unknown_knob"),
])
def test_when_a_param_is_out_of_range_then_engine_error_names_it(client, worker, params, name):
    plate = tiny_plate(worker.root / "plate", 3, seed=70)
    events = client.process({"node": "video-matte", "plate": plate, "frames": "1",
                             "params": params})
    check_error(events[-1])
    assert events[-1]["error"]["code"] in ("engine_error", "input_error")
    assert name in events[-1]["error"]["message"]


@pytest.mark.parametrize("name", ["m.%4d.exr", "matte.%2d.exr"])
def test_when_out_is_an_unreadable_pattern_then_the_stream_ends_with_an_error_event(
        client, worker, name):
    out = str(worker.cache.resolve() / "bad" / name)
    events = client.process({"node": "video-matte", "plate": "/nowhere/p.####.exr",
                             "out": out})
    assert len(events) == 1 and events[0]["event"] == "error", events  # not a bare reply
    check_error(events[0])
    assert name in events[0]["error"]["message"]
    still_serves(client)


@pytest.mark.parametrize("case", ["garbage ocio config", "folder as ocio config",
                                  "unknown built-in config", "unknown colour space",
                                  "folder as mask", "empty mask", "clean plate on video-matte",
                                  "engine of another node", "unknown node",
                                  "checkpoint that is not one"])
def test_when_job_values_are_wrong_then_the_error_names_the_value(client, worker, case):
    if case == "checkpoint that is not one":
        pytest.importorskip("torch", reason="checkpoints need the train extra (torch)")
    folder = worker.root / "wrong-values"
    folder.mkdir(exist_ok=True)
    plate = tiny_plate(worker.root / "plate", 3, seed=70)
    garbage, empty = folder / "garbage.ocio", folder / "empty.exr"
    garbage.write_text("ocio_profile_version: 2\nroles: [\n")
    empty.write_bytes(b"")
    extra, named = {
        "garbage ocio config": ({"ocio_config": str(garbage)}, str(garbage)),
        "folder as ocio config": ({"ocio_config": str(folder)}, str(folder)),
        "unknown built-in config": ({"ocio_config": "ocio://nonsense"}, "nonsense"),
        "unknown colour space": ({"colorspace": "no such space"}, "no such space"),
        "folder as mask": ({"mask": str(folder)}, str(folder)),
        "empty mask": ({"mask": str(empty)}, "file is empty"),
        "clean plate on video-matte": ({"clean_plate": plate}, "--clean-plate"),
        "engine of another node": ({"engine": "cleanplate"}, "background-matte"),
        "unknown node": ({"node": "nope"}, "nope"),
        "checkpoint that is not one": ({"engine": "oavm", "params": {"checkpoint": str(garbage)}},
                                       str(garbage)),
    }[case]
    events = client.process({"node": "video-matte", "plate": plate, "frames": "1", **extra})
    check_error(events[-1])
    assert events[-1]["error"]["code"] in ("input_error", "engine_error")
    assert named in events[-1]["error"]["message"]
