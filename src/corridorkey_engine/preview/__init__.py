"""``corridorkey preview``: a local web viewer that keys one frame at a time with live settings, and renders
whole clips through the same code as ``corridorkey infer`` (docs/ui.md).

Layer 5 (above ``clips``): :mod:`.settings` (the page's settings, their ``infer`` command line, the clip's
saved settings), :mod:`.confine` (paths kept inside the clip folders), :mod:`.frames` (one frame keyed, its
prediction cached, views as 8-bit images), :mod:`.render` (a render job: plan, begin, key, finish),
:mod:`.server` (the FastAPI app: token, Host check, routes; the only module importing a web framework).
"""
