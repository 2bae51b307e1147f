"""``tinywf serve`` and ``tinywf link``: runs over HTTP, and signed links that answer one event.

Nothing here is imported by the other commands. ``links`` and the pure renderers (``html``,
``forms``, ``svg``, ``pages``) need only the standard library; ``app`` and ``server`` need the
``[web]`` extra (FastAPI, uvicorn).
"""
