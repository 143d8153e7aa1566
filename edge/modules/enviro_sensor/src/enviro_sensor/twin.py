"""Module twin sync: the desired document → the applied config; the module's state → reported.

Desired (:class:`DesiredSync`):

- The whole twin, fetched on connect and after every reconnect, REPLACES the applied config:
  the config becomes *base* (defaults + ``ENVIRO_*``) with the whole desired document applied,
  so a property deleted while the module was offline goes back to its base value.
- A desired patch is merged into the last whole document (JSON merge patch: ``null`` deletes),
  and the result is applied the same way, so a patch and a fetch can never disagree.
- A ``$version`` older than the document already held is ignored (a patch that raced the fetch,
  or a stale replay). The same version again is applied again: that is idempotent.
- An invalid document is refused as a whole: the old config stays, and every reason is kept for
  the reported properties (``config.errors``) until a good document arrives.

Reported (:class:`ReportedSync`): sent only when something that matters changed, and at most
every ``min_interval`` seconds (the SDK leaks memory on frequent reported patches, #498).
Counters that move with every reading (reads, messages sent, buffered bytes, the burn-in's
progress) go along when a patch is sent, but never cause one; the buffer depth causes one only
when its order of magnitude changes.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .config import ModuleConfig
from .errors import ConfigError

log = logging.getLogger(__name__)

#: Paths in the reported document that change with every reading: sent along, never a trigger.
VOLATILE_PATHS: tuple[tuple[str, ...], ...] = (
    ("reads", "ok"),
    ("messages", "sent"),
    ("messages", "readingsSent"),
    ("buffer", "bytes"),
    ("airQuality", "samples"),
    ("airQuality", "remainingSeconds"),
)
#: The buffer depth triggers a patch only when its order of magnitude changes (0, 1, 2-3, 4-7,
#: ...): it moves between 0 and 1 with every reading in steady state.
DEPTH_PATH = ("buffer", "depth")


class ConfigTarget(Protocol):
    """What the twin sync changes (the App fits)."""

    @property
    def config(self) -> ModuleConfig:
        """The configuration in force."""
        ...

    def apply_desired(self, patch: Mapping[str, Any]) -> ModuleConfig:
        """Apply (and persist) a desired patch; raises ConfigError when refused."""
        ...


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what a twin patch is): returns a new document."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def reasons(exc: ConfigError) -> list[str]:
    """Every reason a ConfigError gives, one string each."""
    return [str(p) for p in exc.problems]


def _version(doc: Mapping[str, Any]) -> int | None:
    value = doc.get("$version")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


class DesiredSync:
    """Turns whole desired documents and patches into the applied config. Thread-safe."""

    def __init__(self, *, base: ModuleConfig, target: ConfigTarget) -> None:
        """Start from the config in force (which may come from the store).

        Args:
            base: defaults + environment: what a whole document is applied onto.
            target: where the config goes (App.apply_desired; it persists it).
        """
        self._base = base
        self._target = target
        self._lock = threading.Lock()
        self._doc: dict[str, Any] | None = None  # the hub's desired document, as we know it
        self._doc_version = target.config.version
        self._errors: list[str] = []
        self._refused_version: int | None = None

    def apply_twin(self, desired: Mapping[str, Any]) -> bool:
        """A whole desired document (from a twin fetch); True when it was applied."""
        if not isinstance(desired, Mapping):
            return self._refuse(None, [f"desired properties: expected an object, got {desired!r}"])
        with self._lock:
            version = _version(desired)
            if version is not None and version < self._doc_version:
                log.info(
                    "twin desired $version %d is older than %d: ignored", version, self._doc_version
                )
                return False
            self._doc = dict(desired)
            if version is not None:
                self._doc_version = version
            return self._apply_doc(version)

    def apply_patch(self, patch: Mapping[str, Any]) -> bool:
        """A desired patch; True when the resulting document was applied."""
        if not isinstance(patch, Mapping):
            return self._refuse(None, [f"desired patch: expected an object, got {patch!r}"])
        with self._lock:
            version = _version(patch)
            if version is not None and version <= self._doc_version and self._doc is not None:
                log.info("desired patch $version %d already held: ignored", version)
                return False
            if self._doc is None:
                # No whole document yet (a patch before the first fetch): apply it on top.
                try:
                    self._target.apply_desired(patch)
                except ConfigError as exc:
                    return self._refuse_locked(version, reasons(exc))
                if version is not None:
                    self._doc_version = version
                self._errors, self._refused_version = [], None
                return True
            self._doc = merge_patch(self._doc, patch)
            if version is not None:
                self._doc_version = version
                self._doc["$version"] = version
            return self._apply_doc(version)

    def reported(self) -> dict[str, Any]:
        """The ``config`` section of the reported properties."""
        with self._lock:
            return {
                "version": self._target.config.version,
                "desiredVersion": self._doc_version,
                "status": "refused" if self._errors else "applied",
                "refusedVersion": self._refused_version,
                "errors": list(self._errors),
            }

    def _apply_doc(self, version: int | None) -> bool:
        assert self._doc is not None
        try:
            new = self._base.apply_patch(self._doc)
        except ConfigError as exc:
            return self._refuse_locked(version, reasons(exc))
        # The whole config in desired shape: applied onto anything, it gives exactly ``new``.
        self._target.apply_desired(new.to_desired())
        self._errors, self._refused_version = [], None
        return True

    def _refuse(self, version: int | None, why: list[str]) -> bool:
        with self._lock:
            return self._refuse_locked(version, why)

    def _refuse_locked(self, version: int | None, why: list[str]) -> bool:
        self._errors = why
        self._refused_version = version
        log.warning(
            "desired properties $version %s refused, config version %d stays: %s",
            version,
            self._target.config.version,
            "; ".join(why),
        )
        return False


def significant(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` without the volatile counters (what decides whether to report)."""
    out: dict[str, Any] = copy.deepcopy(dict(doc))
    for path in VOLATILE_PATHS:
        node: Any = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    buffer = out.get(DEPTH_PATH[0])
    if isinstance(buffer, dict) and isinstance(depth := buffer.get(DEPTH_PATH[1]), int):
        buffer[DEPTH_PATH[1]] = max(0, depth).bit_length()
    return out


class ReportedSync:
    """Sends the reported document when it changed, at most every ``min_interval`` seconds."""

    def __init__(
        self,
        *,
        source: Callable[[], dict[str, Any]],
        send: Callable[[dict[str, Any]], None],
        min_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wire the sync.

        Args:
            source: the whole reported document now.
            send: patches reported properties (raises when it could not).
            min_interval: seconds between two patches at least.
            clock: monotonic seconds.

        Raises:
            ValueError: ``min_interval`` is negative.
        """
        if not min_interval >= 0:
            raise ValueError(f"min_interval must be >= 0, got {min_interval}")
        self._source = source
        self._send = send
        self._min_interval = min_interval
        self._clock = clock
        self._last: dict[str, Any] | None = None
        self._last_at: float | None = None
        self.patches = 0

    def invalidate(self) -> None:
        """Send the next document whatever it is (e.g. after a reconnect)."""
        self._last = None

    def tick(self) -> bool:
        """Send if due; True when a patch went out. Raises what ``send`` raises."""
        now = self._clock()
        if self._last_at is not None and now - self._last_at < self._min_interval:
            return False
        doc = self._source()
        key = significant(doc)
        if key == self._last:
            return False
        self._send(doc)
        self._last, self._last_at = key, now
        self.patches += 1
        return True
