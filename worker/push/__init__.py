"""Push providers: one module per external system, all behind :class:`PushProvider`."""

from worker.push.base import Platform, PushKind, PushMessage, PushOutcome, PushProvider, PushResult

__all__ = ["Platform", "PushKind", "PushMessage", "PushOutcome", "PushProvider", "PushResult"]
