"""The engine manifest: names resolve, unknown names list the valid ones, models are verified."""
from __future__ import annotations

import pytest

from mattekit.inference.engines import registry
from mattekit.inference.errors import EngineError


def test_when_a_node_has_a_default_engine_then_it_resolves_to_a_declared_engine():
    manifest = registry.load_manifest()
    built = [node for node, engine in manifest.default_engines.items() if engine is not None]
    assert "video-matte" in built
    for node in built:
        spec = registry.default_engine(node, manifest)
        assert spec.node == node


def test_when_an_engine_name_is_unknown_then_the_error_lists_the_known_ones():
    with pytest.raises(EngineError, match="known engines: .*rvm"):
        registry.engine_spec("rvn")


def test_when_an_engine_parameter_is_unknown_then_the_error_lists_the_valid_ones():
    with pytest.raises(EngineError, match="downsample_target"):
        registry.create_engine("rvm", "cpu", {"downsample_targte": 256})


def test_when_every_model_is_installed_then_its_sha256_matches_the_manifest():
    manifest = registry.load_manifest()
    for model in manifest.models.values():
        path = registry.verified_model_path(model)
        assert registry.file_sha256(path) == model.sha256
        assert model.licence


def test_when_a_model_file_is_altered_then_it_is_refused(tmp_path, monkeypatch):
    model = registry.load_manifest().models["rvm-mobilenetv3-fp32"]
    fake = tmp_path / model.file
    fake.write_bytes(b"not the network")
    monkeypatch.setattr(registry, "model_path", lambda m: fake)
    with pytest.raises(EngineError, match="checksum mismatch"):
        registry.verified_model_path(model)


def test_when_a_model_package_is_absent_then_the_error_says_how_to_install_it():
    model = registry.ModelSpec("x", "d", "no_such_package_mattekit", "m.onnx", "0" * 64,
                               "MIT", "nowhere")
    with pytest.raises(EngineError, match="install.py"):
        registry.model_path(model)


def test_when_asked_for_cuda_without_a_cuda_provider_then_the_error_says_so(monkeypatch):
    import onnxruntime

    from mattekit.inference.engines import rvm

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(EngineError, match="CUDA"):
        rvm.select_providers("cuda")
    assert rvm.select_providers("auto") == ["CPUExecutionProvider"]


def test_when_a_node_has_no_engine_yet_then_it_says_not_implemented():
    from mattekit.inference.errors import NotImplementedEngineError

    shipped = registry.load_manifest()
    unbuilt = registry.Manifest(shipped.models, shipped.engines,
                                {**shipped.default_engines, "sparse-4k-refine": None})
    with pytest.raises(NotImplementedEngineError, match="sparse-4k-refine.*not implemented"):
        registry.default_engine("sparse-4k-refine", unbuilt)
    assert all(shipped.default_engines.values())  # every node of the product has its engine


@pytest.mark.parametrize("engine, params, named", [
    ("sparse-refine", {"radius": 0}, "radius"),
    ("sparse-refine", {"high_threshold": 1.5}, "high_threshold"),
    ("parallax", {"flow_size": 8}, "flow_size"),
])
def test_when_a_new_engine_gets_a_value_out_of_range_then_the_error_names_the_parameter(
        engine, params, named):
    with pytest.raises(EngineError, match=named):
        registry.create_engine(engine, "cpu", params)
