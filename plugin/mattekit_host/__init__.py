"""mattekit_host: the host side of mattekit, the code that runs inside Nuke's own Python.

Code relevant to anyone hosting mattekit in a tool or application (Nuke, a render wrapper, a
farm script). It runs on Python 3.9+ with the standard library ONLY: Nuke ships its own
libtorch and Python packages, so numpy, torch, onnxruntime and ``mattekit.inference`` are never
imported here. It talks to the worker process (``mattekit.inference.worker``) over the
documented protocol (``inference/PROTOCOL.md``) and exchanges images as EXR files on disk; the
two packages never import each other's internals (STYLE.md, point 3).

- ``errors``: the exceptions this package raises (``MattekitHostError`` and its subclasses).
- ``paths``: the worker's home folder, the token, ``worker.json``, the worker's interpreter.
- ``client``: ``WorkerClient``, which starts or reattaches to the worker and runs requests.
- ``farm``: Submit to Farm (a job built by the worker environment's `mattekit farm`).
"""
