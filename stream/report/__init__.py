"""The back-test report: an HTML page of a replay, with what-if drift injection.

``streamdrift report`` (and ``streamdrift replay --html``) run :func:`build.build_report`:
:mod:`collect` records what the page shows while the replay runs, :mod:`inject` runs the
what-if scenarios, :mod:`svg` and :mod:`html` draw the page.  Nothing here is imported
by ``run`` or by a plain ``replay``.
"""
