"""mattekit on render farms: the same matte nodes as Open Job Description (Deadline Cloud) and
OpenCue jobs. Farm-level code only: it builds jobs whose tasks run `mattekit render` (and
optionally `nuke -t`), and never schedules anything itself.

- ``spec``: ``FarmJob``, read and checked from a spec file (what the Nuke plugin writes);
- ``openjd``: a job bundle (template, parameter values, asset references);
- ``opencue``: a pyoutline outline, its XML job spec, a launch through pycue;
- ``cli``: ``mattekit farm openjd | opencue``.
"""
