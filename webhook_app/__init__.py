"""The HTTP receiver: a thin adapter in front of the worker's domain."""

from webhook_app.app import create_app

__all__ = ["create_app"]
