"""The web app for Flask's own command line: ``flask --app webhook_app.flask_entry routes``
(or ``shell``, ``run`` for a quick local look; production runs `callpush web`).

Flask finds the factory below by its name and calls it with no arguments
(https://flask.palletsprojects.com/en/stable/cli/#application-discovery), so the app is built,
from the settings read once, only when a command needs it: importing this module reads no
configuration and connects to nothing.
"""

from __future__ import annotations

from flask import Flask


def create_app() -> Flask:
    """The callpush web app, configured from the settings (the config file and ``CALLPUSH_*``
    variables, as for every `callpush` command)."""
    from webhook_app.app import create_app as build_app
    from worker.foundation.settings import load_settings

    return build_app(load_settings())
