"""The farm spec the farm tests share: two matte nodes (a temporal one with a mask on a GPU, a
per-frame one with a clean plate on the CPU) and a Nuke comp step."""
from __future__ import annotations

import json
from pathlib import Path


def write_two_node_spec(folder: Path, frames: str = "1001-1100",
                        ocio_config: str = "/show/ocio/config.ocio") -> Path:
    spec = {
        "name": "sh010 mattes", "frames": frames, "chunk_size": 10, "target_runtime": 300,
        "ocio_config": ocio_config, "cache_dir": "/shared/cache",
        "gpus": 1, "gpu_memory_gib": 6,
        "nodes": [
            {"name": "VideoMatte1", "node": "video-matte", "plate": "/shots/sh010/p.####.exr",
             "mask": "/shots/sh010/roto/r.####.exr", "out": "/shots/sh010/vm/vm.####.exr",
             "params": {"downsample_target": 384, "focus_view": False}},
            {"name": "BackgroundMatte1", "node": "background-matte",
             "plate": "/shots/sh010/p.####.exr", "clean_plate": "/shots/sh010/clean plate.exr",
             "out": "/shots/sh010/bm/bm.####.exr", "device": "cpu"},
        ],
        "comp": {"script": "/shots/sh010/comp.nk", "writes": ["Write1"], "chunk_size": 25},
    }
    path = folder / "spec.json"
    path.write_text(json.dumps(spec))
    return path
