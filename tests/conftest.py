"""Shared fixtures. Each stand-in's fixtures live in tests/support/, one module per service."""

pytest_plugins = [
    "tests.support.azurite",
    "tests.support.browser",
    "tests.support.hub",
    "tests.support.pubsub",
]
