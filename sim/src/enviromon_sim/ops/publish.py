"""``enviromon dashboard publish``: put the built dashboard on a Storage static website.

It turns the account's static website on (index ``index.html``; the ARM template cannot: it is
a data-plane setting, so this is the post-deployment step), uploads ``dashboard/dist`` to the
``$web`` container with content types, and writes the page's ``config.json`` for the Function
App: ``{"apiBaseUrl": "https://<app>.azurewebsites.net/api", "hub": "enviromon"}``.
"""

from __future__ import annotations

import contextlib
import mimetypes
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from enviromon_sim.ops.errors import ConfigurationError, OpsError

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

WEB_CONTAINER = "$web"
# Function App names: 2-60 letters, digits and hyphens, not starting or ending with a hyphen.
_APP_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,58}[A-Za-z0-9])?")
ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
# Files a browser must fetch fresh after every publish; the rest may be cached a while.
_NO_CACHE = {"index.html", "config.json"}
_EXTRA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".map": "application/json"}


def api_base_url(function_app: str) -> str:
    """``https://<app>.azurewebsites.net/api`` (the sink's routePrefix is ``api``)."""
    if not _APP_NAME.fullmatch(function_app):
        raise ConfigurationError(
            f"--function-app {function_app!r}: 2-60 letters, digits and hyphens"
        )
    return f"https://{function_app.lower()}.azurewebsites.net/api"


def content_type(path: Path) -> str:
    """The Content-Type to serve ``path`` with."""
    if path.suffix in _EXTRA_TYPES:
        return _EXTRA_TYPES[path.suffix]
    guessed, _ = mimetypes.guess_type(path.name)
    kind = guessed or "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/json", "image/svg+xml"):
        kind += "; charset=utf-8"
    return kind


def site_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """``(blob name, file)`` for every file of the built site, but its ``config.json``."""
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not path.is_symlink():
            name = path.relative_to(directory).as_posix()
            if name != "config.json":
                yield name, path


@dataclass(frozen=True, slots=True)
class Published:
    """What was uploaded."""

    files: list[str]
    pruned: list[str]
    config: bytes


def publish(
    *,
    service: BlobServiceClient,
    directory: Path,
    config: bytes,
    prune: bool = False,
) -> Published:
    """Enable the static website, upload the site and ``config``; optionally delete the rest."""
    from azure.core.exceptions import AzureError, ResourceExistsError
    from azure.storage.blob import ContentSettings, StaticWebsite

    if not (directory / "index.html").is_file():
        raise OpsError(f"{directory}/index.html not found: build the dashboard (make dashboard)")
    try:
        service.set_service_properties(
            static_website=StaticWebsite(
                enabled=True, index_document="index.html", error_document404_path="index.html"
            )
        )
        container = service.get_container_client(WEB_CONTAINER)
        with contextlib.suppress(ResourceExistsError):
            container.create_container()  # Azure makes $web itself; the emulator does not
        uploaded = []
        for name, path in site_files(directory):
            settings = ContentSettings(
                content_type=content_type(path),
                cache_control="no-cache" if name in _NO_CACHE else "public, max-age=300",
            )
            with path.open("rb") as data:
                container.upload_blob(name, data, overwrite=True, content_settings=settings)
            uploaded.append(name)
        container.upload_blob(
            "config.json",
            config,
            overwrite=True,
            content_settings=ContentSettings(
                content_type="application/json; charset=utf-8", cache_control="no-cache"
            ),
        )
        uploaded.append("config.json")
        pruned = []
        if prune:
            keep = set(uploaded)
            for blob in container.list_blobs():
                if blob.name not in keep:
                    container.delete_blob(blob.name)
                    pruned.append(blob.name)
    except AzureError as exc:
        raise OpsError(f"upload to the static website failed: {exc}") from exc
    return Published(files=uploaded, pruned=pruned, config=config)
