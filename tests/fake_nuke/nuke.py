"""A fake ``nuke`` module for mattekit's host tests (test code: never shipped, never on NUKE_PATH).

It implements only what ``plugin/`` calls, with the signatures of the ``types-nuke`` stubs, and
behaves like Nuke where the plugin depends on it:

- scripts and gizmos are real ``.nk`` / ``.gizmo`` text (a Tcl subset evaluated by
  ``tkinter.Tcl``): node commands with knob bodies, ``addUserKnob``, ``set``/``push``/``stack``,
  Groups and ``end_group``; ``createNode("VideoMatte")`` loads ``VideoMatte.gizmo`` from the
  plugin path;
- knobs may only be touched from the main thread (``STRICT_THREADS``), as in Nuke; background
  threads use ``executeInMainThread(WithResult)``, whose calls run when the test pumps the main
  thread (``pump``);
- ``execute`` renders Write nodes to real EXR files (through ``mattekit.inference.exrio``) by
  evaluating the node graph (Read, Input/Output, Groups, Dot, Multiply, Unpremult, Expression),
  runs the beforeRender / beforeFrameRender callbacks, and refuses to nest ("I'm already
  executing something else");
- menus, panels, progress tasks and ``tprint`` record what the plugin did.

Colour management is not simulated: Reads and Writes move pixels unchanged.
"""
from __future__ import annotations

import os
import queue
import re
import sys
import threading
import time
import tkinter
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

GUI = False
NUKE_VERSION_STRING = "15.1v1"
NUKE_VERSION_MAJOR = 15
NUKE_VERSION_MINOR = 1
INPUTS = 1
HIDDEN_INPUTS = 2
EXPRESSIONS = 4
REPLACE = 1
STRICT_THREADS = True

# -- recorded state (reset() clears it) ----------------------------------------------------------

plugin_paths: List[str] = []
tprinted: List[str] = []
messages: List[str] = []
progress_tasks: List["ProgressTask"] = []
menus: Dict[str, "Menu"] = {}
_callbacks: Dict[str, Dict[str, List[Tuple[Callable, tuple, dict]]]] = {}
_main_queue: "queue.Queue[Tuple[Callable, tuple, dict, Optional[dict]]]" = queue.Queue()
_this: List["Node"] = []
_context: List["Group"] = []
_state: Dict[str, Any] = {}


class KnobThreadError(RuntimeError):
    """A knob was touched off the main thread (Nuke crashes or misbehaves when that happens)."""


def _check_thread(what: str) -> None:
    if STRICT_THREADS and threading.current_thread() is not threading.main_thread():
        raise KnobThreadError(f"{what} touched off the main thread "
                              f"({threading.current_thread().name})")


# -- knobs -------------------------------------------------------------------------------------

class Knob:
    def __init__(self, name: str, label: Optional[str] = None, value: Any = None):
        self._name = name
        self._label = label if label is not None else name
        self._tooltip = ""
        self._flags: set = set()
        self._node: Optional[Node] = None
        self._expression: Optional[str] = None
        self._value = self._coerce(value) if value is not None else self._empty()

    def _empty(self) -> Any:
        return ""

    def _coerce(self, value: Any) -> Any:
        return value

    def name(self) -> str:
        return self._name

    def label(self) -> str:
        return self._label

    def setLabel(self, label: str) -> None:
        self._label = label

    def tooltip(self) -> str:
        return self._tooltip

    def setTooltip(self, tooltip: str) -> None:
        self._tooltip = tooltip

    def node(self) -> "Node":
        assert self._node is not None
        return self._node

    def setFlag(self, flag: Any) -> None:
        self._flags.add(flag)

    def clearFlag(self, flag: Any) -> None:
        self._flags.discard(flag)

    def getFlag(self, flag: Any) -> bool:
        return flag in self._flags

    def visible(self) -> bool:
        return "INVISIBLE" not in self._flags

    def value(self, index: int = 0) -> Any:
        _check_thread(f"knob {self._name}")
        if self._expression is not None:
            return self._coerce(_evaluate_expression(self._expression, self._node))
        return self._value

    def getValue(self, channel: int = 0) -> Any:
        return self.value()

    def setValue(self, val: Any, chan: int = 0) -> bool:
        _check_thread(f"knob {self._name}")
        self._expression = None
        self._value = self._coerce(val)
        return True

    def setExpression(self, expression: str, index: int = 0, view: Optional[str] = None) -> bool:
        self._expression = expression
        return True

    def fromScript(self, script: str) -> None:
        """A value as written in a script; ``{expr}`` is an expression."""
        text = script.strip()
        if text.startswith("{") and text.endswith("}"):
            self._expression = text[1:-1].strip()
        else:
            self._value = self._coerce(text)


class String_Knob(Knob):
    def _coerce(self, value: Any) -> Any:
        return "" if value is None else str(value)


class EvalString_Knob(String_Knob):
    def evaluate(self) -> str:
        return str(self.value())


class File_Knob(EvalString_Knob):
    pass


class Text_Knob(String_Knob):
    pass


class Tab_Knob(Knob):
    pass


class Array_Knob(Knob):
    def _empty(self) -> Any:
        return 0.0

    def _coerce(self, value: Any) -> Any:
        return float(value)


class Double_Knob(Array_Knob):
    pass


class Int_Knob(Array_Knob):
    def _empty(self) -> Any:
        return 0

    def _coerce(self, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower().startswith("0x"):
            return int(value, 16)
        return int(float(value))


class Boolean_Knob(Array_Knob):
    def _empty(self) -> Any:
        return False

    def _coerce(self, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes", "on")
        return bool(value)


class Enumeration_Knob(Knob):
    def __init__(self, name: str, label: Optional[str] = None, values: Any = ()):
        self._values = [str(v) for v in values]
        super().__init__(name, label, None)

    def _empty(self) -> Any:
        return self._values[0] if self._values else ""

    def _coerce(self, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self._values[int(value)]
        text = str(value)
        if self._values and text not in self._values:
            raise ValueError(f"{self._name}: '{text}' is not one of {self._values}")
        return text

    def values(self) -> List[str]:
        return list(self._values)

    def getValue(self, channel: int = 0) -> Any:
        return float(self._values.index(self.value())) if self._values else 0.0

    def numValues(self) -> int:
        return len(self._values)


class Script_Knob(Knob):
    """A button; ``action`` runs in Python (the fake's stand-in for its Tcl or built-in
    command)."""

    def __init__(self, name: str, label: Optional[str] = None, command: str = "",
                 action: Optional[Callable[[], Any]] = None):
        super().__init__(name, label, command)
        self._action = action

    def command(self) -> str:
        return str(self._value)

    def execute(self) -> Any:
        _check_thread(f"knob {self._name}")
        if self._action is not None:
            return self._action()
        return None


class PyScript_Knob(Script_Knob):
    def execute(self) -> Any:
        _check_thread(f"knob {self._name}")
        _this.append(self.node())
        try:
            exec(compile(str(self._value), f"<{self._name}>", "exec"),
                 {"nuke": sys.modules[__name__]})
        finally:
            _this.pop()
        return None


_USER_KNOBS: Dict[int, Callable[..., Knob]] = {
    1: String_Knob, 2: File_Knob, 3: Int_Knob, 4: Enumeration_Knob, 6: Boolean_Knob,
    7: Double_Knob, 20: Tab_Knob, 22: PyScript_Knob, 26: Text_Knob,
}


def _evaluate_expression(expression: str, node: Optional["Node"]) -> Any:
    """Enough of Nuke's expressions for the gizmos: ``parent.KNOB op NUMBER`` and numbers."""
    text = expression.strip()
    match = re.match(r"^parent\.(\w+)\s*(==|!=)\s*(-?\d+(?:\.\d+)?)$", text)
    if match and node is not None:
        group = node.parent()
        knob = group.knob(match.group(1))
        if knob is None:
            raise NameError(f"expression {text!r}: {group.fullName()} has no knob "
                            f"{match.group(1)}")
        value = knob.getValue()
        same = float(value) == float(match.group(3))
        return same if match.group(2) == "==" else not same
    return float(text)


# -- nodes -------------------------------------------------------------------------------------

class Node:
    _default_inputs = 1

    def __init__(self, cls: str):
        self._class = cls
        self._knobs: Dict[str, Knob] = {}
        self._inputs: List[Optional[Node]] = []
        self._parent: Optional[Group] = None
        self._max_inputs = self._default_inputs
        for knob in (String_Knob("name"), String_Knob("label"), Boolean_Knob("disable"),
                     Int_Knob("xpos"), Int_Knob("ypos"), Boolean_Knob("selected"),
                     String_Knob("help"), Int_Knob("tile_color"), String_Knob("note_font"),
                     Int_Knob("inputs")):
            self.addKnob(knob)
        self._setup()

    def _setup(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<fake {self._class} {self._knobs['name']._value}>"

    def Class(self) -> str:
        return self._class

    def name(self) -> str:
        return str(self._knobs["name"]._value)

    def setName(self, name: str, uncollide: bool = False, updateExpressions: bool = False) -> None:
        self._knobs["name"]._value = name

    def fullName(self) -> str:
        parent = self._parent
        if parent is None or isinstance(parent, Root):
            return self.name()
        return f"{parent.fullName()}.{self.name()}"

    def parent(self) -> "Group":
        return self._parent if self._parent is not None else root()

    def addKnob(self, knob: Knob) -> None:
        knob._node = self
        self._knobs[knob.name()] = knob

    def knob(self, p: Union[str, int], follow_link: bool = False) -> Optional[Knob]:
        return self._knobs.get(str(p))

    def knobs(self) -> Dict[str, Knob]:
        return dict(self._knobs)

    def allKnobs(self) -> List[Knob]:
        return list(self._knobs.values())

    def __getitem__(self, name: str) -> Knob:
        knob = self._knobs.get(name)
        if knob is None:
            raise NameError(f"{self.name()}: no knob named {name}")
        return knob

    def input(self, index: int) -> Optional["Node"]:
        _check_thread(f"node {self.name()} input")
        return self._inputs[index] if 0 <= index < len(self._inputs) else None

    def inputs(self) -> int:
        return len(self._inputs)

    def maxInputs(self) -> int:
        return self._max_inputs

    def setInput(self, i: int, node: Optional["Node"]) -> bool:
        while len(self._inputs) <= i:
            self._inputs.append(None)
        self._inputs[i] = node
        while self._inputs and self._inputs[-1] is None:
            self._inputs.pop()
        return True

    connectInput = setInput

    def dependencies(self, mask: int = INPUTS | HIDDEN_INPUTS) -> List["Node"]:
        found: List[Node] = []
        for node in self._inputs:
            if node is not None and node not in found:
                found.append(node)
        return found

    def isSelected(self) -> bool:
        return bool(self._knobs["selected"]._value)

    def setSelected(self, selected: bool) -> None:
        self._knobs["selected"]._value = bool(selected)

    def firstFrame(self) -> int:
        return int(root()["first_frame"].value())

    def lastFrame(self) -> int:
        return int(root()["last_frame"].value())

    # pixels: (rgb float32 HxWx3, alpha HxW)
    def _pixels(self, frame: int) -> Tuple[np.ndarray, np.ndarray]:
        if self["disable"].value():
            return self._upstream(0, frame)
        return self._compute(frame)

    def _compute(self, frame: int) -> Tuple[np.ndarray, np.ndarray]:
        return self._upstream(0, frame)

    def _upstream(self, index: int, frame: int) -> Tuple[np.ndarray, np.ndarray]:
        node = self.input(index)
        if node is None:
            raise RuntimeError(f"{self.fullName()}: input {index} is not connected")
        return node._pixels(frame)


class Dot(Node):
    pass


class Multiply(Node):
    def _setup(self) -> None:
        self.addKnob(Double_Knob("value", value=1.0))
        self.addKnob(String_Knob("channels", value="rgb"))

    def _compute(self, frame: int) -> Tuple[np.ndarray, np.ndarray]:
        rgb, alpha = self._upstream(0, frame)
        return rgb * float(self["value"].value()), alpha


class Unpremult(Node):
    def _setup(self) -> None:
        self.addKnob(String_Knob("channels", value="rgb"))

    def _compute(self, frame: int) -> Tuple[np.ndarray, np.ndarray]:
        rgb, alpha = self._upstream(0, frame)
        safe = np.where(alpha > 0, alpha, 1.0)[..., None]
        return np.where(alpha[..., None] > 0, rgb / safe, rgb), alpha


class Expression(Node):
    def _setup(self) -> None:
        for i in range(4):
            self.addKnob(String_Knob(f"expr{i}"))

    def _compute(self, frame: int) -> Tuple[np.ndarray, np.ndarray]:
        rgb, alpha = self._upstream(0, frame)
        out = rgb.copy()
        for i in range(3):
            if self[f"expr{i}"].value().strip() == "a":
                out[..., i] = alpha
        return out, alpha


def frame_file(pattern: str, frame: int) -> str:
    """The fake's own frame-token substitution (####, %04d, $F4, @)."""
    folder, name = os.path.split(pattern)
    name = re.sub(r"#+", lambda m: f"{frame:0{len(m.group(0))}d}", name)
    name = re.sub(r"%0?(\d*)d", lambda m: f"{frame:0{int(m.group(1) or 0)}d}", name)
    name = re.sub(r"\$F(\d*)", lambda m: f"{frame:0{int(m.group(1) or 0)}d}", name)
    name = re.sub(r"@+", lambda m: f"{frame:0{len(m.group(0))}d}", name)
    return os.path.join(folder, name)


class Read(Node):
    _default_inputs = 0

    def _setup(self) -> None:
        self.addKnob(File_Knob("file"))
        for name in ("first", "last", "origfirst", "origlast"):
            self.addKnob(Int_Knob(name, value=1))
        for name in ("raw", "premultiplied"):
            self.addKnob(Boolean_Knob(name))
        self.addKnob(String_Knob("colorspace", value="default"))
        self.addKnob(String_Knob("frame"))
        self.addKnob(String_Knob("frame_mode"))
        self.addKnob(String_Knob("on_error", value="error"))
        self.addKnob(String_Knob("before", value="hold"))
        self.addKnob(String_Knob("after", value="hold"))
        self.reloads = 0
        self.addKnob(Script_Knob("reload", action=self._reload))

    def _reload(self) -> None:
        self.reloads += 1

    def _compute(self, frame: int) -> Tuple[np.ndarray, np.ndarray]:
        from mattekit.inference.exrio import read_exr

        pattern = self["file"].value()
        if not pattern:
            raise RuntimeError(f"{self.fullName()}: no file")
        first, last = int(self["first"].value()), int(self["last"].value())
        if not first <= frame <= last:
            raise RuntimeError(f"{self.fullName()}: frame {frame} is outside {first}-{last}")
        path = frame_file(pattern, frame)
        if not os.path.isfile(path):
            raise RuntimeError(f"{self.fullName()}: {path}: no such file")
        image = read_exr(path)
        assert image.rgb is not None
        alpha = image.alpha if image.alpha is not None else np.ones(image.rgb.shape[:2],
                                                                     np.float32)
        return image.rgb.astype(np.float32), alpha.astype(np.float32)


class Write(Node):
    def _setup(self) -> None:
        self.addKnob(File_Knob("file"))
        for name in ("file_type", "channels", "datatype", "colorspace", "compression"):
            self.addKnob(String_Knob(name))
        for name in ("raw", "use_limit", "create_directories"):
            self.addKnob(Boolean_Knob(name))
        self.addKnob(Int_Knob("first", value=1))
        self.addKnob(Int_Knob("last", value=1))
        self.written: List[str] = []

    def _render(self, first: int, last: int, incr: int) -> None:
        from mattekit.inference.exrio import write_exr

        _run_callbacks("beforeRender", self)
        for frame in range(first, last + 1, max(1, incr)):
            _state["frame"] = frame
            _run_callbacks("beforeFrameRender", self)
            rgb, alpha = self._upstream(0, frame)
            path = frame_file(self["file"].value(), frame)
            if not path:
                raise RuntimeError(f"{self.fullName()}: no file name")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            pixel_type = "float" if "32" in self["datatype"].value() else "half"
            write_exr(path, rgb, alpha, pixel_type=pixel_type, compression="zip")
            self.written.append(path)
            _run_callbacks("afterFrameRender", self)
        _run_callbacks("afterRender", self)


class Input(Node):
    _default_inputs = 0

    def _setup(self) -> None:
        self.addKnob(Int_Knob("number"))

    def _compute(self, frame: int) -> Tuple[np.ndarray, np.ndarray]:
        group = self.parent()
        source = group.input(int(self["number"].value()))
        if source is None:
            raise RuntimeError(f"{group.fullName()}: input {self.name()} is not connected")
        return source._pixels(frame)


class Output(Node):
    pass


class Group(Node):
    def _setup(self) -> None:
        self._children: List[Node] = []

    def nodes(self) -> List[Node]:
        return list(self._children)

    def numNodes(self) -> int:
        return len(self._children)

    def node(self, s: str) -> Optional[Node]:
        head, _, rest = s.partition(".")
        for child in self._children:
            if child.name() == head:
                if not rest:
                    return child
                return child.node(rest) if isinstance(child, Group) else None
        return None

    def begin(self) -> "Group":
        _context.append(self)
        return self

    def end(self) -> None:
        if _context and _context[-1] is self:
            _context.pop()

    def __enter__(self) -> "Group":
        return self.begin()

    def __exit__(self, *exc: Any) -> None:
        self.end()

    def _compute(self, frame: int) -> Tuple[np.ndarray, np.ndarray]:
        outputs = [n for n in self._children if n.Class() == "Output"]
        if not outputs:
            raise RuntimeError(f"{self.fullName()}: the group has no Output")
        return outputs[0]._pixels(frame)

    def _adopt(self, node: Node) -> None:
        node._parent = self
        if not node.name():
            base = node.Class()
            taken = {c.name() for c in self._children}
            number = 1
            while f"{base}{number}" in taken:
                number += 1
            node._knobs["name"]._value = f"{base}{number}"
        self._children.append(node)


class Gizmo(Group):
    pass


class Root(Group):
    _default_inputs = 0

    def _setup(self) -> None:
        super()._setup()
        self.addKnob(Int_Knob("first_frame", value=1))
        self.addKnob(Int_Knob("last_frame", value=100))
        self.addKnob(String_Knob("workingSpaceLUT", value="scene_linear"))
        self.addKnob(String_Knob("OCIO_config", value="nuke-default"))
        self.addKnob(String_Knob("customOCIOConfigPath"))
        self.addKnob(String_Knob("format"))
        self.addKnob(String_Knob("colorManagement"))
        self._script = ""

    def name(self) -> str:
        return self._script or "Root"

    def fullName(self) -> str:
        return "root"


_CLASSES: Dict[str, type] = {c.__name__: c for c in (
    Dot, Multiply, Unpremult, Expression, Read, Write, Input, Output, Group, Root)}


# -- the Tcl subset of .nk / .gizmo files -------------------------------------------------------

class _Loader:
    """Evaluates script text: node commands create nodes in the current group."""

    def __init__(self, group: Group, gizmo_node: Optional[Gizmo] = None):
        self.tcl = tkinter.Tcl()
        self.handles: Dict[str, Optional[Node]] = {"0": None}
        self.groups: List[Tuple[Group, List[Optional[Node]]]] = [(group, [])]
        self.gizmo_node = gizmo_node
        self.last: Optional[Node] = None
        self.error: Optional[BaseException] = None
        self.tcl.createcommand("_fake_node", self._guarded)
        self.tcl.createcommand("push", self._push)
        self.tcl.createcommand("stack", self._stack)
        self.tcl.createcommand("version", lambda *a: "")
        self.tcl.createcommand("end_group", self._end_group)
        self.tcl.eval("proc unknown {args} {return [_fake_node {*}$args]}")

    def run(self, text: str) -> None:
        try:
            self.tcl.eval(text)
        except tkinter.TclError:
            if self.error is not None:
                raise self.error from None
            raise

    def _guarded(self, *args: str) -> str:
        try:
            return self._node(*args)
        except Exception as exc:  # Tcl would swallow the Python error: keep it for run()
            self.error = exc
            raise

    def _handle(self, node: Optional[Node]) -> str:
        key = f"node{id(node)}" if node is not None else "0"
        self.handles[key] = node
        return key

    def _push(self, handle: str) -> str:
        self.groups[-1][1].append(self.handles[str(handle)])
        return ""

    def _stack(self, index: str = "0") -> str:
        stack = self.groups[-1][1]
        return self._handle(stack[-1 - int(index)] if stack else None)

    def _end_group(self) -> str:
        self.groups.pop()
        return ""

    def _node(self, cls: str, body: str = "") -> str:
        group, stack = self.groups[-1]
        pairs = list(self.tcl.splitlist(body))
        if len(pairs) % 2:
            raise ValueError(f"{cls}: knob list has an odd number of words: {body!r}")
        settings = list(zip(pairs[0::2], pairs[1::2]))
        declared = dict(settings).get("inputs")
        if cls == "Gizmo":
            if self.gizmo_node is None:
                raise ValueError("a Gizmo block outside a .gizmo file")
            node: Node = self.gizmo_node
            node._max_inputs = int(declared or 0)
        elif cls in _CLASSES:
            node = _CLASSES[cls](cls)
        else:
            node = _load_gizmo(cls)
        if cls != "Gizmo":
            group._adopt(node)
        count = int(declared) if declared is not None else node._max_inputs
        if cls in ("Root", "Gizmo"):
            count = 0
        for index in range(count):
            node.setInput(index, stack.pop() if stack else None)
        _apply_knobs(node, settings, self.tcl)
        if cls not in ("Root", "Gizmo"):
            _run_callbacks("onCreate", node)
        if cls == "Root":
            return ""
        if cls != "Gizmo":
            stack.append(node)
        if cls in ("Gizmo", "Group"):  # their internal nodes follow, up to end_group
            assert isinstance(node, Group)
            self.groups.append((node, []))
        self.last = node
        return self._handle(node)


def _apply_knobs(node: Node, settings: List[Tuple[str, str]], tcl: Any) -> None:
    for name, value in settings:
        if name == "inputs":
            continue
        if name == "addUserKnob":
            node.addKnob(_user_knob(list(tcl.splitlist(value))))
            continue
        knob = node.knob(name)
        if knob is None:
            raise NameError(f"{node.Class()} {node.name()}: no knob named '{name}'")
        knob.fromScript(value)


def _user_knob(words: List[str]) -> Knob:
    kind, name, rest = int(words[0]), words[1], words[2:]
    options: Dict[str, Any] = {}
    flags = []
    i = 0
    while i < len(rest):
        word = rest[i]
        if word in ("l", "t", "T", "M"):
            options[word] = rest[i + 1]
            i += 2
        elif word == "R":
            options["R"] = (rest[i + 1], rest[i + 2])
            i += 3
        elif word[:1] in "+-":
            flags.append(word[1:])
            i += 1
        else:
            raise ValueError(f"addUserKnob {name}: unknown word {word!r}")
    factory = _USER_KNOBS.get(kind)
    if factory is None:
        raise ValueError(f"addUserKnob {name}: knob type {kind} is not in the fake")
    label = options.get("l", name)
    if kind == 4:
        knob = Enumeration_Knob(name, label, tkinter.Tcl().splitlist(options.get("M", "")))
    elif kind == 22:
        knob = PyScript_Knob(name, label, options.get("T", ""))
    elif kind == 26:
        knob = Text_Knob(name, label, options.get("T", ""))
    else:
        knob = factory(name, label)
    knob.setTooltip(options.get("t", ""))
    for flag in flags:
        if flag != "STARTLINE":
            knob.setFlag(flag)
    return knob


def _find_gizmo(cls: str) -> Optional[str]:
    for folder in reversed(plugin_paths):
        path = os.path.join(folder, f"{cls}.gizmo")
        if os.path.isfile(path):
            return path
    return None


def _load_gizmo(cls: str) -> Gizmo:
    path = _find_gizmo(cls)
    if path is None:
        raise RuntimeError(f"{cls}: unknown command (no {cls}.gizmo on the plugin path)")
    gizmo = Gizmo(cls)
    loader = _Loader(gizmo, gizmo_node=gizmo)
    with open(path, encoding="utf-8") as stream:
        loader.run(stream.read())
    return gizmo


# -- the nuke API ------------------------------------------------------------------------------

def reset() -> None:
    """A fresh session: empty script, no callbacks, menus, paths or records."""
    global GUI
    GUI = False
    plugin_paths.clear()
    tprinted.clear()
    messages.clear()
    progress_tasks.clear()
    menus.clear()
    _callbacks.clear()
    _this.clear()
    _context.clear()
    while not _main_queue.empty():
        _main_queue.get_nowait()
    _state.clear()
    _state["root"] = Root("Root")
    _state["frame"] = 1
    _state["executing"] = False


def root() -> Root:
    return _state["root"]


def thisRoot() -> Root:
    return root()


def thisGroup() -> Group:
    return _context[-1] if _context else root()


def thisNode() -> Node:
    return _this[-1] if _this else root()


def frame(f: Optional[int] = None) -> int:
    if f is not None:
        _state["frame"] = int(f)
    return int(_state["frame"])


def createNode(typ: str, knobs: str = "", inpanel: bool = True) -> Node:
    group = thisGroup()
    if typ in _CLASSES:
        node: Node = _CLASSES[typ](typ)
    else:
        node = _load_gizmo(typ)
    group._adopt(node)
    if knobs:
        tcl = tkinter.Tcl()
        words = list(tcl.splitlist(knobs))
        _apply_knobs(node, list(zip(words[0::2], words[1::2])), tcl)
    _run_callbacks("onCreate", node)
    return node


def toNode(s: str) -> Optional[Node]:
    text = s[5:] if s.startswith("root.") else s
    return thisGroup().node(text) or root().node(text)


def allNodes(filter: Optional[str] = None, group: Optional[Group] = None,
             recurseGroups: bool = False) -> List[Node]:
    found: List[Node] = []

    def walk(g: Group) -> None:
        for node in g.nodes():
            if filter is None or node.Class() == filter:
                found.append(node)
            if recurseGroups and isinstance(node, Group):
                walk(node)

    walk(group or thisGroup())
    return found


def selectedNodes(filter: Optional[str] = None) -> List[Node]:
    return [n for n in allNodes(filter) if n.isSelected()]


def filename(node: Node, i: int = 0) -> Optional[str]:
    knob = node.knob("file")
    if knob is None or not knob.value():
        return None
    value = str(knob.value())
    return frame_file(value, frame()) if i == REPLACE else value


def execute(nameOrNode: Union[Node, str], start: Optional[int] = None,
            end: Optional[int] = None, incr: int = 1, views: Optional[List[str]] = None,
            continueOnError: bool = False) -> None:
    _check_thread("execute")
    node = toNode(nameOrNode) if isinstance(nameOrNode, str) else nameOrNode
    if not isinstance(node, Write):
        raise RuntimeError(f"{nameOrNode}: not a Write node")
    if _state["executing"]:
        raise RuntimeError("I'm already executing something else")
    first = int(root()["first_frame"].value()) if start is None else int(start)
    last = int(root()["last_frame"].value()) if end is None else int(end)
    _state["executing"] = True
    saved = frame()
    try:
        node._render(first, last, incr)
    except RuntimeError:
        raise
    except Exception as exc:  # Nuke reports every render failure as a RuntimeError
        raise RuntimeError(str(exc)) from exc
    finally:
        _state["executing"] = False
        _state["frame"] = saved


def scriptOpen(filename: Optional[str] = None) -> None:
    if not filename:
        raise RuntimeError("scriptOpen: no file name")
    scriptClose()
    script = root()
    script._script = os.path.abspath(filename)
    with open(filename, encoding="utf-8") as stream:
        text = stream.read()
    loader = _Loader(script)
    # Root { ... } sets the root's knobs
    match = re.search(r"^Root\s*(\{.*?^\})", text, re.MULTILINE | re.DOTALL)
    if match:
        words = list(loader.tcl.splitlist(match.group(1)[1:-1]))
        _apply_knobs(script, [p for p in zip(words[0::2], words[1::2]) if p[0] != "name"],
                      loader.tcl)
        text = text[:match.start()] + text[match.end():]
    loader.run(text)


def scriptClose(*args: Any, **kwargs: Any) -> None:
    _state["root"] = Root("Root")


def scriptName() -> str:
    return root()._script


def pluginAddPath(args: Union[str, List[str]], addToSysPath: bool = True) -> None:
    for path in [args] if isinstance(args, str) else list(args):
        plugin_paths.append(path)
        if addToSysPath and path not in sys.path:
            sys.path.insert(0, path)


def pluginPath() -> List[str]:
    return list(plugin_paths)


def tprint(*args: Any, sep: str = " ", end: str = "\n", file: Any = None) -> None:
    text = sep.join(str(a) for a in args)
    tprinted.append(text)
    print(text, end=end, file=file or sys.stdout)


def message(prompt: str) -> None:
    messages.append(prompt)


def getPaneFor(panelName: str) -> Any:
    return f"<pane {panelName}>"


# callbacks (nuke.callbacks): registries by event, then by node class

def _add(event: str, call: Callable, args: Any = (), kwargs: Any = None,
         nodeClass: str = "Write") -> None:
    if not isinstance(args, tuple):
        args = (args,)
    _callbacks.setdefault(event, {}).setdefault(nodeClass, []).append(
        (call, args, dict(kwargs or {})))


def _run_callbacks(event: str, node: Node) -> None:
    registry = _callbacks.get(event, {})
    for call, args, kwargs in registry.get(node.Class(), []) + registry.get("*", []):
        _this.append(node)
        try:
            call(*args, **kwargs)
        finally:
            _this.pop()


def addOnCreate(call: Callable, args: Any = (), kwargs: Any = None,
                nodeClass: str = "*") -> None:
    _add("onCreate", call, args, kwargs, nodeClass)


def addBeforeRender(call: Callable, args: Any = (), kwargs: Any = None,
                    nodeClass: str = "Write") -> None:
    _add("beforeRender", call, args, kwargs, nodeClass)


def addBeforeFrameRender(call: Callable, args: Any = (), kwargs: Any = None,
                         nodeClass: str = "Write") -> None:
    _add("beforeFrameRender", call, args, kwargs, nodeClass)


def addAfterFrameRender(call: Callable, args: Any = (), kwargs: Any = None,
                        nodeClass: str = "Write") -> None:
    _add("afterFrameRender", call, args, kwargs, nodeClass)


def addAfterRender(call: Callable, args: Any = (), kwargs: Any = None,
                   nodeClass: str = "Write") -> None:
    _add("afterRender", call, args, kwargs, nodeClass)


def callbacks_for(event: str, nodeClass: str = "Write") -> List[Callable]:
    """Test helper: the functions registered for an event."""
    return [c for c, _, _ in _callbacks.get(event, {}).get(nodeClass, [])]


# threads

def executeInMainThread(call: Callable, args: Any = (), kwargs: Any = None) -> None:
    if not isinstance(args, tuple):
        args = (args,)
    _main_queue.put((call, args, dict(kwargs or {}), None))


def executeInMainThreadWithResult(call: Callable, args: Any = (), kwargs: Any = None) -> Any:
    if not isinstance(args, tuple):
        args = (args,)
    if threading.current_thread() is threading.main_thread():
        return call(*args, **dict(kwargs or {}))
    box: Dict[str, Any] = {"done": threading.Event()}
    _main_queue.put((call, args, dict(kwargs or {}), box))
    box["done"].wait()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def pump(until: Callable[[], bool], timeout: float = 120.0) -> None:
    """Test helper: be Nuke's main thread (run queued calls) until ``until()`` holds and
    nothing is queued; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            call, args, kwargs, box = _main_queue.get(timeout=0.01)
        except queue.Empty:
            if until():
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the main thread waited too long") from None
            continue
        try:
            result = call(*args, **kwargs)
            if box is not None:
                box["result"] = result
        except BaseException as exc:  # handed to the waiting thread
            if box is None:
                raise
            box["error"] = exc
        finally:
            if box is not None:
                box["done"].set()


class ProgressTask:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.title = str(args[0]) if args else ""
        self.messages: List[str] = []
        self.progress: List[int] = []
        self.cancelled = False
        progress_tasks.append(self)

    def isCancelled(self) -> bool:
        return self.cancelled

    def setMessage(self, message: str) -> None:
        self.messages.append(message)

    def setProgress(self, progress: int) -> None:
        self.progress.append(int(progress))


# menus

class MenuItem:
    def __init__(self, name: str, command: Any = None, **options: Any):
        self._name = name
        self.command = command
        self.options = options

    def name(self) -> str:
        return self._name

    def invoke(self) -> Any:
        return self.command() if callable(self.command) else exec(str(self.command))


class Menu(MenuItem):
    def __init__(self, name: str, **options: Any):
        super().__init__(name, None, **options)
        self._items: List[MenuItem] = []

    def addMenu(self, name: str, **options: Any) -> "Menu":
        found = self.findItem(name)
        if isinstance(found, Menu):
            return found
        menu = Menu(name, **options)
        self._items.append(menu)
        return menu

    def addCommand(self, name: str, command: Any = None, shortcut: str = "", icon: str = "",
                   tooltip: str = "", index: int = -1, **options: Any) -> MenuItem:
        item = MenuItem(name, command, shortcut=shortcut, icon=icon, tooltip=tooltip, **options)
        self._items.append(item)
        return item

    def addSeparator(self, **options: Any) -> MenuItem:
        item = MenuItem("", None, separator=True)
        self._items.append(item)
        return item

    def findItem(self, name: str) -> Optional[MenuItem]:
        head, _, rest = name.partition("/")
        for item in self._items:
            if item.name() == head:
                if not rest:
                    return item
                return item.findItem(rest) if isinstance(item, Menu) else None
        return None

    def items(self) -> List[MenuItem]:
        return list(self._items)

    def menu(self, name: str) -> Optional["Menu"]:
        found = self.findItem(name)
        return found if isinstance(found, Menu) else None


def menu(name: str) -> Menu:
    if name not in menus:
        menus[name] = Menu(name)
    return menus[name]


def toolbar(name: str, create: bool = True) -> Optional[Menu]:
    return menu(name) if create or name in menus else None


reset()
