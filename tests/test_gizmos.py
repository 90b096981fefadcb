"""The four gizmos parse as the Tcl Nuke reads, and agree with what the plugin expects.

Each .gizmo file is evaluated by ``tkinter.Tcl()`` with a stub proc per node class (an unknown
class is an error, as it would be in Nuke); the stubs record every node and its knob list, so
the tests can check balanced braces, known classes, the knobs the Python code reads, tooltips,
labelled inputs, and the internal Write -> raw EXR / Read -> Output wiring.
"""
from __future__ import annotations

import sys
import tkinter
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
GIZMOS = ROOT / "gizmos"
PLUGIN = ROOT / "plugin"
if str(PLUGIN) not in sys.path:
    sys.path.insert(0, str(PLUGIN))

from mattekit_host import knobs  # noqa: E402

NODE_CLASSES = ("Gizmo", "Input", "Output", "Write", "Read", "Unpremult", "Expression")
KNOB_TYPES = {1: "String", 2: "File", 3: "Int", 4: "Enumeration", 6: "Boolean", 7: "Double",
              20: "Tab", 22: "PyScript", 26: "Text"}
TAKES_VALUE = {"l", "t", "T", "M"}


def parse(path: Path) -> List[Tuple[str, List[Tuple[str, str]]]]:
    """[(class, [(knob, value), ...]), ...] in file order."""
    tcl = tkinter.Tcl()
    found: List[Tuple[str, List[Tuple[str, str]]]] = []

    def stub(cls: str):
        def make(body: str = "") -> str:
            words = list(tcl.splitlist(body))
            assert len(words) % 2 == 0, f"{path.name}: {cls} body is not name/value pairs"
            found.append((cls, list(zip(words[0::2], words[1::2]))))
            return ""
        return make

    for cls in NODE_CLASSES:
        tcl.createcommand(cls, stub(cls))
    tcl.createcommand("version", lambda *args: "")
    tcl.createcommand("end_group", lambda: found.append(("end_group", [])) or "")
    tcl.eval("proc unknown {args} {error \"unknown node class or command: [lindex $args 0]\"}")
    tcl.eval(path.read_text(encoding="utf-8"))
    return found


def user_knobs(settings: List[Tuple[str, str]]) -> Dict[str, Dict[str, Any]]:
    tcl = tkinter.Tcl()
    result: Dict[str, Dict[str, Any]] = {}
    for key, value in settings:
        if key != "addUserKnob":
            continue
        words = list(tcl.splitlist(value))
        kind, name, rest = int(words[0]), words[1], words[2:]
        spec: Dict[str, Any] = {"type": KNOB_TYPES[kind], "flags": []}
        i = 0
        while i < len(rest):
            if rest[i] in TAKES_VALUE:
                spec[rest[i]] = rest[i + 1]
                i += 2
            elif rest[i] == "R":
                spec["R"] = rest[i + 1:i + 3]
                i += 3
            else:
                assert rest[i][:1] in "+-", f"{name}: unexpected word {rest[i]!r}"
                spec["flags"].append(rest[i])
                i += 1
        result[name] = spec
    return result


@pytest.fixture(params=sorted(knobs.NODE_TYPES), ids=str)
def gizmo(request):
    kind = knobs.NODE_TYPES[request.param]
    path = GIZMOS / f"{kind.gizmo}.gizmo"
    assert path.is_file(), f"{path} is missing"
    nodes = parse(path)
    header = dict(nodes[0][1])
    return {"type": kind, "nodes": nodes, "header": header,
            "knobs": user_knobs(nodes[0][1]), "settings": nodes[0][1]}


def test_when_the_gizmos_folder_is_listed_then_there_is_one_gizmo_per_node():
    assert sorted(p.stem for p in GIZMOS.glob("*.gizmo")) == sorted(knobs.NODE_TYPES)


def test_when_a_gizmo_is_parsed_then_it_is_one_closed_group(gizmo):
    classes = [cls for cls, _ in gizmo["nodes"]]
    assert classes[0] == "Gizmo" and classes[-1] == "end_group"
    assert classes.count("Gizmo") == 1 and classes.count("end_group") == 1
    assert classes.count("Output") == 1


def test_when_the_plugin_reads_knobs_then_the_gizmo_has_every_one_with_a_tooltip(gizmo):
    declared = gizmo["knobs"]
    for name in gizmo["type"].knobs:
        assert name in declared, f"{gizmo['type'].gizmo}: knob {name} is missing"
    for name, spec in declared.items():
        if spec["type"] != "Tab":
            assert spec.get("t", "").strip(), f"{gizmo['type'].gizmo}: {name} has no tooltip"
    assert declared[knobs.STATUS]["type"] == "Text"
    assert declared[knobs.CACHE_FOLDER]["type"] == "File"
    for button in (knobs.PROCESS_FRAME, knobs.PROCESS_RANGE, knobs.CLEAR_CACHE):
        assert declared[button]["type"] == "PyScript"
        assert "from mattekit_host import nodes" in declared[button]["T"]
        compile(declared[button]["T"], button, "exec")
    assert declared[knobs.NODE_KIND]["flags"] == ["+INVISIBLE"]
    assert declared[knobs.SIGNATURE]["flags"] == ["+INVISIBLE"]
    assert gizmo["header"][knobs.NODE_KIND] == gizmo["type"].worker_node


def test_when_the_gizmo_lists_engines_and_outputs_then_they_match_the_plugin(gizmo):
    tcl = tkinter.Tcl()
    declared = gizmo["knobs"]
    assert tuple(tcl.splitlist(declared[knobs.ENGINE]["M"])) == gizmo["type"].engines
    assert tuple(tcl.splitlist(declared[knobs.DEVICE]["M"])) == knobs.DEVICES
    assert tuple(tcl.splitlist(declared[knobs.OUTPUT]["M"])) == knobs.OUTPUTS


def test_when_params_are_declared_then_types_and_defaults_match_the_engine(gizmo):
    declared = gizmo["knobs"]
    wanted = {"int": "Int", "float": "Double", "bool": "Boolean"}
    for param in gizmo["type"].params:
        assert declared[param.name]["type"] == wanted[param.kind], param.name
        value = gizmo["header"].get(param.name)
        assert value is not None, f"{param.name} has no default in the gizmo"
        if param.kind == "bool":
            assert (value == "true") == bool(param.default)
        else:
            assert float(value) == float(param.default)


def test_when_the_tabs_are_listed_then_engine_quality_colour_cache_and_shot_are_there(gizmo):
    tabs = [name for name, spec in gizmo["knobs"].items() if spec["type"] == "Tab"]
    assert tabs == ["mattekit", "quality", "colour", "cache", "shot"]


def test_when_the_shot_model_tab_is_parsed_then_train_and_use_shot_model_are_on_it(gizmo):
    declared = gizmo["knobs"]
    names = list(declared)
    on_tab = names[names.index("shot") + 1:]
    for name in knobs.SHOT_KNOBS:
        assert name in on_tab, f"{gizmo['type'].gizmo}: {name} is not on the Shot model tab"
    assert declared["shot"]["l"] == "Shot model"
    assert declared[knobs.SHOT_MODEL]["type"] == declared[knobs.SHOT_FRAMES]["type"] == "String"
    assert declared[knobs.SHOT_STEPS]["type"] == "Int"
    assert int(gizmo["header"][knobs.SHOT_STEPS]) == knobs.DEFAULT_SHOT_STEPS
    assert declared[knobs.USE_SHOT]["type"] == "Boolean"
    assert knobs.USE_SHOT not in gizmo["header"]  # off until the user turns it on
    button = declared[knobs.TRAIN_SHOT]
    assert button["type"] == "PyScript"
    assert "shot.train_shot(nuke.thisNode())" in button["T"]
    compile(button["T"], knobs.TRAIN_SHOT, "exec")
    # the Scribbles input is the last one (earlier inputs keep their numbers)
    assert gizmo["type"].inputs[-1] == knobs.SCRIBBLES


def test_when_inputs_are_listed_then_they_are_labelled_in_the_plugin_order(gizmo):
    kind = gizmo["type"]
    assert int(gizmo["header"]["inputs"]) == len(kind.inputs)
    inputs = [dict(s) for cls, s in gizmo["nodes"] if cls == "Input"]
    numbered = {int(i.get("number", 0)): i for i in inputs}
    assert [numbered[n]["name"] for n in range(len(kind.inputs))] == list(kind.inputs)
    assert all(i.get("label") for i in inputs)


def test_when_each_input_is_followed_then_an_internal_write_renders_raw_exr(gizmo):
    nodes = gizmo["nodes"]
    for index, (cls, settings) in enumerate(nodes):
        if cls != "Input":
            continue
        following_cls, following = nodes[index + 1][0], dict(nodes[index + 1][1])
        name = dict(settings)["name"]
        assert following_cls == "Write", f"{name} is not followed by its Write"
        assert following["name"] == knobs.internal_write_name(name)
        assert following["file_type"] == "exr" and following["raw"] == "true"
        assert following["channels"] == "rgba" and following["file"] == ""


def test_when_the_output_is_followed_back_then_it_comes_from_the_result_read(gizmo):
    chain = [(cls, dict(s)) for cls, s in gizmo["nodes"] if cls not in ("Input", "Write",
                                                                          "Gizmo")]
    names = [(cls, s.get("name")) for cls, s in chain]
    assert names[:4] == [("Read", knobs.RESULT_READ), ("Unpremult", "Unpremult_Output"),
                         ("Expression", "Alpha_Output"), ("Output", "Output1")]
    read = chain[0][1]
    assert read["inputs"] == "0" and read["raw"] == "true" and read["on_error"] == "error"
    assert chain[1][1]["disable"] == "{parent.output!=1}"
    assert chain[2][1]["disable"] == "{parent.output!=2}"


def test_when_a_gizmo_is_parsed_then_it_has_a_submit_to_farm_button(gizmo):
    button = gizmo["knobs"][knobs.SUBMIT_FARM]
    assert button["type"] == "PyScript" and button.get("t", "").strip()
    assert "farm.submit_node(nuke.thisNode())" in button["T"]
    compile(button["T"], knobs.SUBMIT_FARM, "exec")


def test_when_sparse4krefine_is_parsed_then_band_knobs_coarse_input_and_keyregion_are_exposed():
    kind = knobs.NODE_TYPES["Sparse4KRefine"]
    nodes = parse(GIZMOS / "Sparse4KRefine.gizmo")
    settings = nodes[0][1]
    declared = user_knobs(settings)
    names = list(declared)
    quality = names[names.index("quality") + 1:names.index("colour")]
    for name in ("low_threshold", "high_threshold", "band_width", "feather"):
        assert name in quality, f"{name} is not on the Quality tab"
    assert declared["low_threshold"]["type"] == declared["high_threshold"]["type"] == "Double"
    params = knobs.params_from_knobs("Sparse4KRefine", {"low_threshold": 0.1,
                                                        "band_width": 24})
    assert params["low_threshold"] == 0.1 and params["band_width"] == 24
    assert params["high_threshold"] == 0.98
    # the Coarse input goes to the job's `coarse` field; the worker's results carry keyregion.Y
    assert knobs.JOB_INPUT_FIELDS[kind.worker_node]["Coarse"] == "coarse"
    assert "keyregion.Y" in dict(settings)["help"]
    assert "keyregion.Y" in declared["keyregion_note"]["t"]
    result = next(dict(s) for cls, s in nodes if cls == "Read")
    assert "channels" not in result  # the Read passes every layer of the EXR, keyregion.Y too
