"""What the operator's commands need from an IoT Hub, local or real: a small Protocol."""

from __future__ import annotations

from typing import Any, Protocol

from enviromon_sim.iothub.topics import Identity


class HubService(Protocol):
    """Registry and twins of one IoT Hub (service side, like ``az iot hub``)."""

    def list_identities(self) -> list[Identity]:
        """Every device and module, devices first."""
        ...

    def show(self, identity: Identity) -> dict[str, Any]:
        """One device or module: ids, connection state, modules; never its keys."""
        ...

    def add(self, identity: Identity) -> str:
        """Register a device, or a module (and its device when missing); its connection string."""
        ...

    def delete(self, identity: Identity) -> list[Identity]:
        """Delete a module, or a device with its modules; the identities removed."""
        ...

    def get_twin(self, identity: Identity) -> dict[str, Any]:
        """The twin: ``{"deviceId", ["moduleId",] "properties": {"desired", "reported"}}``."""
        ...

    def patch_desired(self, identity: Identity, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge ``patch`` into the desired properties; the twin after it."""
        ...
