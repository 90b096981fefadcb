"""The mattekit worker: one long-lived process per user and machine that renders for hosts.

Hosts (Nuke's ``plugin/``, farm wrappers, scripts) talk to it over the loopback socket protocol
documented in ``mattekit/inference/PROTOCOL.md``; images cross as EXR files on disk. This
package is the worker side only and is never imported by the host package.

- ``security``: the home folder, the token file, loopback and allowed-root checks.
- ``protocol``: message framing, job validation, error codes.
- ``scheduler``: fair round-robin turns between connections and the warm engine pool.
- ``server``: the listening socket, connections, ops, ``worker.json``.
- ``cli``: ``mattekit worker start|stop|status`` (also ``python -m mattekit.inference.worker``).
"""
from __future__ import annotations

PROTOCOL_VERSION = 1

__all__ = ["PROTOCOL_VERSION"]
