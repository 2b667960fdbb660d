"""Failures the loopback mirror injects per request, to show how the downloader copes.

A :class:`FaultPlan` maps a SAS-relative path ('dr17/manga/.../x.fits.gz') to a queue of
:class:`Fault` objects. Each request for that path (GET or HEAD) takes the next fault from its
queue; once the queue is empty the file is served normally. Nothing is random.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal["http", "stall", "reset", "lying_length", "truncated"]


@dataclass(frozen=True)
class Fault:
    """One injected failure; build it with the class methods, which say what each kind does.

    Attributes
    ----------
    kind : {'http', 'stall', 'reset', 'lying_length', 'truncated'}
        What goes wrong.
    status : int
        Status code answered by an ``http`` fault.
    seconds : float
        How long a ``stall`` fault holds the connection silent.
    fraction : float
        Share of the body sent before a ``stall`` or ``reset``, or kept by ``truncated``.
    extra_bytes : int
        How many bytes a ``lying_length`` fault announces beyond the real body.
    """

    kind: FaultKind
    status: int = 500
    seconds: float = 0.0
    fraction: float = 0.5
    extra_bytes: int = 0

    @classmethod
    def http(cls, status: int) -> Fault:
        """Answer ``status`` (500, 503, 404, ...) with a short text body instead of the file."""
        return cls("http", status=status)

    @classmethod
    def stall(cls, seconds: float, *, fraction: float = 0.5) -> Fault:
        """Send the headers and ``fraction`` of the body, then go silent for ``seconds`` and close.

        Choose ``seconds`` longer than the client's read timeout.
        """
        return cls("stall", seconds=seconds, fraction=fraction)

    @classmethod
    def reset(cls, *, fraction: float = 0.5) -> Fault:
        """Send the headers and ``fraction`` of the body, then reset the connection (TCP RST)."""
        return cls("reset", fraction=fraction)

    @classmethod
    def lying_length(cls, extra_bytes: int = 4096) -> Fault:
        """Announce ``extra_bytes`` more than the body in Content-Length, send the body, close."""
        return cls("lying_length", extra_bytes=extra_bytes)

    @classmethod
    def truncated(cls, fraction: float = 0.5) -> Fault:
        """Serve only the first ``fraction`` of the body, with a Content-Length that agrees.

        This is a file that is short on the server: the HTTP exchange itself looks correct.
        """
        return cls("truncated", fraction=fraction)


class FaultPlan:
    """Per-path queues of faults, consumed in order and safe to use from server threads.

    Parameters
    ----------
    faults : mapping of str to iterable of Fault, optional
        Initial queues, keyed by SAS-relative path ('dr17/manga/...'; a leading '/' or 'sas/'
        is ignored).

    Examples
    --------
    >>> plan = FaultPlan().add("dr17/a.fits.gz", Fault.http(503), Fault.reset())
    >>> plan.remaining("dr17/a.fits.gz")
    2
    """

    def __init__(self, faults: Mapping[str, Iterable[Fault]] | None = None) -> None:
        self._queues: dict[str, deque[Fault]] = {}
        self._lock = threading.Lock()
        for path, path_faults in (faults or {}).items():
            self.add(path, *path_faults)

    def add(self, path: str, *faults: Fault) -> FaultPlan:
        """Append ``faults`` to the queue of ``path``; returns the plan for chaining."""
        with self._lock:
            self._queues.setdefault(_normalise(path), deque()).extend(faults)
        return self

    def take(self, path: str) -> Fault | None:
        """Remove and return the next fault for ``path``, or None when it should be served."""
        with self._lock:
            queue = self._queues.get(_normalise(path))
            return queue.popleft() if queue else None

    def remaining(self, path: str) -> int:
        """Number of faults still queued for ``path``."""
        with self._lock:
            return len(self._queues.get(_normalise(path), ()))


def _normalise(path: str) -> str:
    path = path.lstrip("/")
    return path[len("sas/") :] if path.startswith("sas/") else path
