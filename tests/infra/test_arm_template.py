"""cloud/infra/azuredeploy.json: it parses, wires every setting the sink reads, declares and uses
the same parameters, keeps secrets out, and uses a Flex Consumption plan with Python 3.11.

These check the template as data; deploying it needs an Azure subscription, which CI has not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from enviromon_sink import settings as sink_settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "cloud" / "infra" / "azuredeploy.json"
FUNCTION_APP = ROOT / "cloud" / "sink" / "function_app.py"
SINK_DEPLOY_DOC = ROOT / "docs" / "sink-deploy.md"
# Flex Consumption sets these itself (functionAppConfig) and refuses them as app settings.
FLEX_FORBIDDEN = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_RUN_FROM_PACKAGE",
}
SECRET_NAME = re.compile(r"key|password|secret|token|connection", re.IGNORECASE)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """The template, parsed."""
    doc: dict[str, Any] = json.loads(TEMPLATE.read_text("utf-8"))
    return doc


def _resources(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r for r in template["resources"] if r["type"] == kind]


def _app_settings(template: dict[str, Any]) -> dict[str, str]:
    (site,) = _resources(template, "Microsoft.Web/sites")
    pairs = site["properties"]["siteConfig"]["appSettings"]
    names = [p["name"] for p in pairs]
    assert len(names) == len(set(names)), "an app setting is set twice"
    return {p["name"]: p["value"] for p in pairs}


def sink_reads() -> set[str]:
    """Every setting name the sink's code reads: settings.py's names and the trigger's."""
    names = {
        value
        for name, value in vars(sink_settings).items()
        if name.isupper() and isinstance(value, str)
    }
    source = FUNCTION_APP.read_text("utf-8")
    names |= set(re.findall(r'connection="([A-Za-z_][A-Za-z0-9_]*)"', source))
    names |= set(re.findall(r'"%([A-Za-z_][A-Za-z0-9_]*)%"', source))
    return names


def test_template_is_an_arm_deployment_template(template: dict[str, Any]) -> None:
    """The deploymentTemplate schema, and every resource with a dated apiVersion."""
    assert template["$schema"].endswith("/deploymentTemplate.json#")
    assert template["resources"]
    for resource in template["resources"]:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", resource.get("apiVersion", "")), (
            resource["type"]
        )
    for name, value in template["variables"].items():
        if name.endswith("Api"):
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", value), name


def test_every_setting_the_sink_reads_is_set(template: dict[str, Any]) -> None:
    """settings.py's names and the trigger's connection and %NAME% bindings are app settings,
    and so is every setting docs/sink-deploy.md lists (but those Flex sets itself)."""
    required = sink_reads()
    assert {
        "IOTHUB_EVENTS_CONNECTION",
        "IOTHUB_EVENT_HUB_NAME",
        "IOTHUB_CONSUMER_GROUP",
    } <= required
    assert {"AZURE_TABLES_CONNECTION_STRING", "WEBPUBSUB_CONNECTION_STRING"} <= required
    settings = _app_settings(template)
    assert required - set(settings) == set()
    documented = set(
        re.findall(
            r"^\| `([A-Z][A-Za-z0-9_]*)` \|", SINK_DEPLOY_DOC.read_text("utf-8"), re.MULTILINE
        )
    )
    assert documented, "the settings table in docs/sink-deploy.md was not found"
    assert documented - set(settings) - FLEX_FORBIDDEN == set()
    assert FLEX_FORBIDDEN & set(settings) == set()
    assert all(isinstance(v, str) and v for v in settings.values())


def test_the_sink_reads_what_the_template_creates(template: dict[str, Any]) -> None:
    """The consumer group setting names the consumer group resource; the CORS origin is the
    static website; keys come from listKeys, never literals."""
    settings = _app_settings(template)
    (group,) = _resources(template, "Microsoft.Devices/IotHubs/eventHubEndpoints/ConsumerGroups")
    assert settings["IOTHUB_CONSUMER_GROUP"] == "[variables('consumerGroup')]"
    assert group["name"].endswith("'/events/', variables('consumerGroup'))]")
    assert "primaryEndpoints.web" in settings["ENVIROMON_CORS_ORIGINS"]
    for name in (
        "AzureWebJobsStorage",
        "AZURE_TABLES_CONNECTION_STRING",
        "IOTHUB_EVENTS_CONNECTION",
        "WEBPUBSUB_CONNECTION_STRING",
    ):
        assert "listKeys(" in settings[name], name
    assert "EntityPath=" in settings["IOTHUB_EVENTS_CONNECTION"]


def test_flex_consumption_python_311(template: dict[str, Any]) -> None:
    """The plan is Flex Consumption (FC1) and the app runs Python 3.11 from a blob container
    the template creates."""
    (plan,) = _resources(template, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert plan["properties"]["reserved"] is True  # Linux
    (site,) = _resources(template, "Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"]["storageAccountConnectionStringName"] in _app_settings(
        template
    )
    (container,) = _resources(template, "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert "variables('deploymentContainer')" in container["name"]
    assert "variables('deploymentContainer')" in storage["value"]


def test_parameters_declared_are_used_and_used_are_declared(template: dict[str, Any]) -> None:
    """No parameter or variable is referenced without a declaration, or declared and unused."""
    text = TEMPLATE.read_text("utf-8")
    used = set(re.findall(r"parameters\('([^']+)'\)", text))
    assert used == set(template["parameters"])
    body = json.dumps({k: v for k, v in template.items() if k != "variables"})
    variables_text = json.dumps(template["variables"])
    used_vars = set(re.findall(r"variables\('([^']+)'\)", body + variables_text))
    assert used_vars == set(template["variables"])


def test_nothing_secret_has_a_default(template: dict[str, Any]) -> None:
    """A parameter that looks like a secret is a secureString with no default; no key-like
    literal anywhere in the template."""
    for name, spec in template["parameters"].items():
        if spec["type"].lower() in ("securestring", "secureobject"):
            assert "defaultValue" not in spec, name
        elif SECRET_NAME.search(name):
            pytest.fail(f"parameter {name} looks secret but is {spec['type']}")
    text = TEMPLATE.read_text("utf-8")
    assert not re.search(
        r"(?<![A-Za-z0-9+/])(?=[A-Za-z0-9+/]*\d)(?=[A-Za-z0-9+/]*[A-Z])[A-Za-z0-9+]{40,}={0,2}",
        text,
    ), "a key-like literal"
    for marker in ("AccountKey=", "SharedAccessKey="):
        for match in re.finditer(re.escape(marker), text):
            assert text[match.end() : match.end() + 3] == "', ", "a literal key follows " + marker
    for output in template["outputs"].values():
        assert "listKeys" not in json.dumps(output), "an output leaks a key"
