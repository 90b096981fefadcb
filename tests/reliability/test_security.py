"""Who may drive the worker and where it may write: loopback only, a token compared in constant
time from a private file, outputs only inside the allowed roots, no pickle or eval anywhere,
a cap on message size."""
from __future__ import annotations

import ast
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from worker_helpers import Client, start_worker_in

from mattekit.inference.exrio import read_exr
from mattekit.inference.worker import security

from .conftest import FUZZ, POSIX, host_client_module, tiny_plate

REPO = Path(__file__).resolve().parents[2]
PRODUCT_SOURCES = sorted(p for folder in ("inference", "ocio", "plugin")
                         for p in (REPO / folder).rglob("*.py"))
NODE = "video-matte"


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    worker = start_worker_in(tmp_path_factory.mktemp("secure-worker"))
    yield worker
    worker.stop()


# -- loopback and token -----------------------------------------------------------------------

@FUZZ
@given(address=st.ip_addresses())
def test_when_any_peer_address_connects_then_only_loopback_ones_are_served(address):
    mapped = getattr(address, "ipv4_mapped", None)
    expected = address.is_loopback or (mapped is not None and mapped.is_loopback)
    assert security.is_loopback(str(address)) is expected


def test_the_worker_binds_the_loopback_address_only():
    from mattekit.inference.worker import server

    assert ipaddress.ip_address(server.HOST).is_loopback
    tree = ast.parse((REPO / "inference" / "worker" / "server.py").read_text())
    binds = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and node.func.attr == "bind"]
    assert binds and all(ast.unparse(b.args[0]).startswith("(HOST,") for b in binds)


@FUZZ
@given(token=st.one_of(st.text(max_size=70), st.none(), st.integers(), st.lists(st.text())))
def test_when_hello_carries_any_other_token_then_unauthorized_and_closed(worker, token):
    with Client(worker.port, hello=False, timeout=10) as raw:
        raw.send({"op": "hello", "token": token, "protocol": 1})
        reply = raw.recv()
        assert reply["ok"] is False and reply["error"]["code"] == "unauthorized"
        assert raw.closed_by_peer()


@FUZZ
@given(first=st.sampled_from([{"id": "1", "op": "ping"}, {"id": "1", "op": "shutdown"},
                              {"id": "1", "op": "process", "job": {}}, {"op": "hello"}]))
def test_when_any_op_comes_before_hello_then_unauthorized_and_nothing_runs(worker, first):
    with Client(worker.port, hello=False, timeout=10) as raw:
        raw.send(first)
        assert raw.recv()["error"]["code"] == "unauthorized"
    with worker.client() as fine:
        assert fine.request("ping")["ok"] is True  # a shutdown before hello did nothing


def test_tokens_are_compared_in_constant_time_only():
    assert security.token_matches("a" * 64, "a" * 64)
    for wrong in ("a" * 63, "a" * 65, "b" + "a" * 63, "", None, 5, ["a" * 64], "é" * 64):
        assert not security.token_matches("a" * 64, wrong)
    # no ==/!= on anything named token where tokens are handled: hmac.compare_digest only
    auth_sources = [*(REPO / "inference" / "worker").glob("*.py"),
                    REPO / "plugin" / "mattekit_host" / "client.py",
                    REPO / "plugin" / "mattekit_host" / "paths.py"]
    for path in auth_sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Compare) and any(
                    isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                names = [ast.unparse(side) for side in (node.left, *node.comparators)]
                assert not any("token" in name and "len(" not in name
                               for name in names), f"{path}:{node.lineno}: {ast.unparse(node)}"
    source = (REPO / "inference" / "worker" / "security.py").read_text()
    assert "hmac.compare_digest" in source


@pytest.mark.skipif(not POSIX, reason="POSIX file modes")
@pytest.mark.parametrize("side", ["worker", "host"])
def test_when_a_token_is_made_under_umask_0_or_found_loose_then_it_is_0600_in_a_0700_home(
        tmp_path, side):
    if side == "worker":
        make_token = security.read_or_create_token
    else:
        host_client_module()
        from mattekit_host.paths import read_or_create_token as make_token
    home = tmp_path / "home"
    old = os.umask(0)
    try:
        token = make_token(home)
    finally:
        os.umask(old)
    assert len(token) == 64 and int(token, 16) >= 0
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "token").stat().st_mode) == 0o600
    os.chmod(home, 0o755)
    os.chmod(home / "token", 0o644)
    assert make_token(home) == token  # read back, not replaced ...
    assert stat.S_IMODE(home.stat().st_mode) == 0o700  # ... and made private again
    assert stat.S_IMODE((home / "token").stat().st_mode) == 0o600


# -- where the worker writes ------------------------------------------------------------------

def forbidden_outs(worker) -> dict[str, str]:
    work, outside = worker.work, worker.root / "outside"
    outside.mkdir(exist_ok=True)
    link = work / "escape"
    if not link.exists():
        link.symlink_to(outside, target_is_directory=True)
    return {
        "dot-dot": f"{work}/../outside/m.####.exr",
        "deep dot-dot": f"{work}/a/b/../../../outside/m.####.exr",
        "symlinked folder": f"{link}/m.####.exr",
        "under a symlink": f"{link}/deeper/m.####.exr",
        "absolute elsewhere": f"{outside}/m.####.exr",
        "root of the filesystem": "/m.####.exr",
        "the cache's parent": f"{worker.cache.resolve().parent}/m.####.exr",
    }


@pytest.mark.parametrize("case", ["dot-dot", "deep dot-dot", "symlinked folder",
                                  "under a symlink", "absolute elsewhere",
                                  "root of the filesystem", "the cache's parent"])
def test_when_out_leaves_the_allowed_roots_then_forbidden_path_and_nothing_written(worker,
                                                                                  case):
    plate = tiny_plate(worker.root / "plate", 1, seed=80)
    out = forbidden_outs(worker)[case]
    with worker.client() as client:
        events = client.process({"node": NODE, "plate": plate, "out": out})
    assert len(events) == 1 and events[0]["error"]["code"] == "forbidden_path", events
    assert out in events[0]["error"]["message"]
    assert list((worker.root / "outside").rglob("*")) == []
    assert not Path("/m.0001.exr").exists()


def test_when_the_output_file_is_a_symlink_out_of_the_root_then_it_is_replaced_not_written_through(
        worker):
    plate = tiny_plate(worker.root / "plate", 1, seed=81)
    victim = worker.root / "victim.txt"
    victim.write_text("precious")
    out = worker.work / "linked" / "m.0001.exr"
    out.parent.mkdir(exist_ok=True)
    out.symlink_to(victim)
    with worker.client() as client:
        events = client.process({"node": NODE, "plate": plate, "frames": "1",
                                 "out": str(out.parent / "m.####.exr")})
    assert events[-1]["event"] == "done", events
    assert victim.read_text() == "precious"
    assert not out.is_symlink() and read_exr(out).alpha is not None


# -- no pickle, no eval -----------------------------------------------------------------------

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle",
                  "joblib"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__", "input"}


def unsafe_uses(path: Path) -> list[str]:
    """Deserialisers that run code, and eval/exec, anywhere in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where} import {a.name}" for a in node.names
                      if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in \
                UNSAFE_MODULES:
            found.append(f"{where} from {node.module}")
        elif isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if name in UNSAFE_CALLS:
                found.append(f"{where} {name}()")
            elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
                found.append(f"{where} {name}() (use yaml.safe_load)")
            elif name.endswith(("np.load", "numpy.load")) and keywords.get("allow_pickle") \
                    not in (None, "False"):
                found.append(f"{where} {name}(allow_pickle=...)")
            elif name == "torch.load" and keywords.get("weights_only") != "True":
                found.append(f"{where} torch.load without weights_only=True")
            elif name.endswith("read_pickle"):
                found.append(f"{where} {name}()")
            elif keywords.get("shell") == "True":
                found.append(f"{where} {name}(shell=True)")
    return found


def test_no_product_code_unpickles_or_evaluates_anything():
    assert len(PRODUCT_SOURCES) > 40  # the scan sees the whole product
    problems = [use for path in PRODUCT_SOURCES for use in unsafe_uses(path)]
    assert problems == []


def test_the_scan_would_catch_each_unsafe_form(tmp_path):
    sample = tmp_path / "unsafe_sample.py"
    sample.write_text("import pickle\nfrom marshal import loads\nimport yaml, numpy as np\n"
                      "eval('1')\nyaml.load(s)\nnp.load(f, allow_pickle=True)\n"
                      "torch.load(f)\nsubprocess.run(c, shell=True)\nnp.load(f)\n"
                      "torch.load(f, weights_only=True)\nyaml.safe_load(s)\n")
    assert len(unsafe_uses(sample)) == 7


def test_when_a_connection_never_says_hello_then_it_is_refused_and_closed_in_time(worker):
    from mattekit.inference.worker.server import HELLO_SECONDS

    with Client(worker.port, hello=False, timeout=HELLO_SECONDS + 20) as idle, \
            Client(worker.port, hello=False, timeout=HELLO_SECONDS + 20) as trickle:
        trickle.send_raw(b'{"op": "hel')  # half a hello, never finished
        for raw in (idle, trickle):
            replies = []
            while True:  # every message until the worker hangs up
                try:
                    replies.append(raw.recv())
                except (EOFError, ConnectionResetError):
                    break
            assert "no hello within" in replies[0]["error"]["message"]
            assert {r["error"]["code"] for r in replies} == {"unauthorized"}
    with worker.client() as fine:  # an authenticated connection outlives the deadline
        assert fine.request("ping")["ok"] is True
