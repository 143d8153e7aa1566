"""Sub-commands of `enviromon` for this service (to be filled in)."""

from __future__ import annotations

import argparse
from typing import Any


def register(services: argparse._SubParsersAction[Any]) -> None:
    """Add this service's sub-commands to `enviromon`."""
