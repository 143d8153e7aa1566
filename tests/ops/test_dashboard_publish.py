"""`enviromon dashboard publish` against Azurite's Blob service: the static website is turned on,
the built files land in $web with their content types, and config.json points at the app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient
from enviromon_sim.cli import main
from enviromon_sim.ops.errors import ConfigurationError
from enviromon_sim.ops.publish import api_base_url


def _site(root: Path) -> Path:
    site = root / "dist"
    (site / "assets").mkdir(parents=True)
    (site / "index.html").write_text("<!doctype html><title>enviromon</title>", "utf-8")
    (site / "app.js").write_text("console.log('hi')", "utf-8")
    (site / "app.css").write_text("body{}", "utf-8")
    (site / "assets" / "logo.svg").write_text("<svg/>", "utf-8")
    (site / "config.json").write_text('{"apiBaseUrl": "http://127.0.0.1:7071/api"}', "utf-8")
    return site


def test_publish_uploads_the_site_and_its_config(
    azurite_blob: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every file but the local config.json is uploaded; config.json is the app's API; the
    static website is on with index.html; --prune removes what the new site no longer has."""
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    site = _site(tmp_path)
    args = ["dashboard", "publish", "--connection-string", azurite_blob, "--dir", str(site)]
    rc = main([*args, "--function-app", "enviromon-sink-abc"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    service = BlobServiceClient.from_connection_string(azurite_blob)
    web = service.get_container_client("$web")
    names = sorted(b.name for b in web.list_blobs())
    assert names == ["app.css", "app.js", "assets/logo.svg", "config.json", "index.html"]
    config = json.loads(web.download_blob("config.json").readall())
    assert config == {
        "apiBaseUrl": "https://enviromon-sink-abc.azurewebsites.net/api",
        "hub": "enviromon",
    }
    props = {n: web.get_blob_client(n).get_blob_properties().content_settings for n in names}
    assert props["index.html"].content_type == "text/html; charset=utf-8"
    assert props["index.html"].cache_control == "no-cache"
    assert props["app.js"].content_type == "text/javascript"
    assert props["config.json"].content_type == "application/json; charset=utf-8"
    website = service.get_service_properties()["static_website"]
    assert website.enabled and website.index_document == "index.html"
    assert "uploaded config.json" in out
    # A rebuild without app.css, published with --prune and another API and hub.
    (site / "app.css").unlink()
    rc = main([*args, "--api-base-url", "https://api.example.org/api/", "--hub", "home", "--prune"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "deleted app.css" in out
    assert sorted(b.name for b in web.list_blobs()) == [
        "app.js",
        "assets/logo.svg",
        "config.json",
        "index.html",
    ]
    assert json.loads(web.download_blob("config.json").readall()) == {
        "apiBaseUrl": "https://api.example.org/api",
        "hub": "home",
    }


def test_publish_refuses_bad_input_with_one_line(
    azurite_blob: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No build, a bad app name, a bad hub, no credentials: exit 1, one line, nothing uploaded."""
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("AZURE_STORAGE_KEY", raising=False)
    service = BlobServiceClient.from_connection_string(azurite_blob)

    def blobs() -> list[tuple[str, object]]:
        web = service.get_container_client("$web")
        if not web.exists():
            return []
        return sorted((b.name, b.etag) for b in web.list_blobs())

    before = blobs()
    base = ["dashboard", "publish", "--connection-string", azurite_blob]
    cases = [
        ([*base, "--function-app", "app", "--dir", str(tmp_path / "nothing")], "make dashboard"),
        ([*base, "--function-app=-bad-", "--dir", str(tmp_path)], "--function-app"),
        ([*base, "--function-app", "app", "--hub", "no spaces", "--dir", str(tmp_path)], "--hub"),
        ([*base, "--dir", str(tmp_path)], "one of --function-app"),
        (
            ["dashboard", "publish", "--function-app", "app", "--storage-account", "Bad!"],
            "--storage-account",
        ),
        (
            ["dashboard", "publish", "--function-app", "app", "--storage-account", "acct"],
            "AZURE_STORAGE_KEY",
        ),
    ]
    for argv, expected in cases:
        rc = main(argv)
        _, err = capsys.readouterr()
        assert rc == 1 and err.startswith("error: ") and expected in err, (argv, err)
        assert err.count("\n") == 1
    assert blobs() == before


def test_api_base_url_is_the_function_apps_default_host() -> None:
    """The app name becomes its azurewebsites.net API; names Azure refuses are refused."""
    assert api_base_url("Enviromon-Sink") == "https://enviromon-sink.azurewebsites.net/api"
    for bad in ("", "-x", "x-", "a_b", "a" * 61):
        with pytest.raises(ConfigurationError):
            api_base_url(bad)
