"""Hub mode: the App loop with the IoT Hub client, twin sync and direct methods around it.

One supervisor thread owns everything that talks to the hub apart from sending readings:
connecting (retried with growing, jittered delays while the loop goes on reading into the
buffer), fetching the whole twin after every connect, applying desired patches in arrival
order, reporting, and reconnecting when the SDK has given up. Twin work is serialised on that
thread, so a patch can never overtake the whole-document fetch it raced.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .errors import HubError
from .hubclient import HubClient
from .methods import Identifier, Methods
from .twin import DesiredSync, ReportedSync

if TYPE_CHECKING:
    from .config import ModuleConfig
    from .pipeline import App

log = logging.getLogger(__name__)

FIRST_RETRY_S = 1.0
MAX_RETRY_S = 60.0
TICK_S = 0.5
#: After this long disconnected, connect again ourselves: the SDK stops retrying on some errors
#: (a proxy refusing, credentials refused) and says nothing.
RECONNECT_GRACE_S = 60.0
MAX_QUEUED_PATCHES = 100


class Reporting(Protocol):
    """What the runner reports (the App fits)."""

    def reported(self) -> dict[str, Any]:
        """State for reported properties."""
        ...


def backoff(attempt: int, *, first: float = FIRST_RETRY_S, cap: float = MAX_RETRY_S) -> float:
    """Growing, jittered delay before retry number ``attempt`` (1, 2, …): full jitter."""
    ceiling = min(cap, first * (2 ** max(0, attempt - 1)))
    return random.uniform(first / 2, ceiling)  # noqa: S311 (jitter, not cryptography)


class HubRunner:
    """Keeps the module connected, its config in step with the twin, and the twin informed."""

    def __init__(
        self,
        *,
        client: HubClient,
        app: Reporting,
        desired: DesiredSync,
        methods: Methods,
        report_interval: float = 5.0,
        reconnect_grace: float = RECONNECT_GRACE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wire the runner; nothing starts before :meth:`start`.

        Args:
            client: the hub client (not yet connected).
            app: gives the reported state.
            desired: applies whole desired documents and patches.
            methods: answers direct methods.
            report_interval: reported properties at most this often (seconds).
            reconnect_grace: seconds disconnected before the runner connects again itself.
            clock: monotonic seconds.

        Raises:
            ValueError: an interval is not positive.
        """
        if not report_interval > 0 or not reconnect_grace > 0:
            raise ValueError("report_interval and reconnect_grace must be > 0")
        self._client = client
        self._app = app
        self._desired = desired
        self._methods = methods
        self._reconnect_grace = reconnect_grace
        self._clock = clock
        self._reported = ReportedSync(
            source=self.reported, send=client.patch_reported, min_interval=report_interval
        )
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._patches: deque[Any] = deque(maxlen=MAX_QUEUED_PATCHES)
        self._need_twin = True
        self._subscribed = False
        self._ever_connected = False
        self._lost_at: float | None = None
        self._thread = threading.Thread(target=self._supervise, name="hub-runner", daemon=True)
        self.twin_fetches = 0

    def start(self) -> None:
        """Start connecting (in the background: reading never waits for the hub)."""
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the supervisor, waiting at most ``timeout`` s; the caller closes the client.

        The supervisor may be inside a bounded hub call; it is a daemon thread, so it ends with
        the process either way.
        """
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def reported(self) -> dict[str, Any]:
        """The whole reported document."""
        doc = self._app.reported()
        doc["config"] = self._desired.reported()
        doc["hub"] = {
            "mode": self._client.settings.mode,
            "methods": list(self._methods.names),
            "twinFetches": self.twin_fetches,
        }
        return doc

    # ----- SDK callbacks (SDK threads) -------------------------------------------------
    def on_connection_change(self, connected: bool) -> None:
        """The SDK connected or lost the connection."""
        with self._lock:
            if connected:
                self._need_twin = True  # after every reconnect: the whole twin again
                self._lost_at = None
            elif self._lost_at is None:
                self._lost_at = self._clock()
        self._wake.set()

    def on_desired(self, patch: Any) -> None:
        """A desired patch arrived: applied in order on the supervisor thread."""
        with self._lock:
            if len(self._patches) == self._patches.maxlen:
                # A flood: the whole twin (fetched next) holds every patch's effect anyway.
                self._need_twin = True
            self._patches.append(patch)
        self._wake.set()

    # ----- the supervisor ----------------------------------------------------------------
    def _supervise(self) -> None:
        attempt = 0
        next_try = self._clock()
        while not self._stop.is_set():
            try:
                if not self._subscribed:
                    if self._clock() >= next_try:
                        attempt += 1
                        if self._first_connect():
                            attempt = 0
                        else:
                            next_try = self._clock() + backoff(attempt)
                else:
                    self._keep_connected()
                    if self._client.connected:
                        self._sync_twin()
                        self._reported.tick()
            except HubError as exc:
                log.warning("hub: %s", exc)
            except Exception:  # the supervisor must outlive any bug in one step
                log.exception("hub supervisor step failed")
            self._wake.wait(TICK_S)
            self._wake.clear()

    def _first_connect(self) -> bool:
        try:
            self._client.connect()
            self._client.set_handlers(on_desired=self.on_desired, on_method=self._methods.handle)
        except HubError as exc:
            log.warning("hub %s: not connected (%s); retrying", self._client.settings.identity, exc)
            return False
        self._subscribed = self._ever_connected = True
        with self._lock:
            self._need_twin = True
        return True

    def _keep_connected(self) -> None:
        with self._lock:
            lost_at = self._lost_at
        if self._client.connected or lost_at is None:
            return
        if self._clock() - lost_at < self._reconnect_grace:
            return
        log.info("hub: disconnected for %.0f s; connecting again", self._clock() - lost_at)
        with self._lock:
            self._lost_at = self._clock()  # next attempt after another grace period
        self._client.connect()

    def _sync_twin(self) -> None:
        with self._lock:
            need_twin = self._need_twin
            self._need_twin = False
        if need_twin:
            try:
                twin = self._client.get_twin()
            except HubError:
                with self._lock:
                    self._need_twin = True
                raise
            self.twin_fetches += 1
            self._desired.apply_twin(twin["desired"])
            self._reported.invalidate()
        while True:
            with self._lock:
                if not self._patches:
                    return
                patch = self._patches.popleft()
            self._desired.apply_patch(patch)


def start_hub(
    *,
    client: HubClient,
    app: App,
    base: ModuleConfig,
    led: Identifier | None,
    report_interval: float,
) -> HubRunner:
    """Wire twin sync and methods to ``app`` and start connecting in the background."""
    runner = HubRunner(
        client=client,
        app=app,
        desired=DesiredSync(base=base, target=app),
        methods=Methods(app=app, led=led),
        report_interval=report_interval,
    )
    client.on_connection_change = runner.on_connection_change
    runner.start()
    return runner


def stop_hub(runner: HubRunner, client: HubClient, app: App, *, drain_timeout: float) -> None:
    """SIGTERM path: send what can be sent within ``drain_timeout``, then close (bounded).

    What is not sent stays in the buffer for the next start.
    """
    try:
        left = app.drain(drain_timeout)
        if left:
            log.info("%d readings stay in the buffer for the next start", left)
    except Exception:
        log.exception("drain before exit failed; the rest stays in the buffer")
    app.close()  # the sender stops before the client it sends through
    runner.stop()
    client.close()
