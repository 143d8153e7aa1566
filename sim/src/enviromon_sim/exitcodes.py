"""Exit codes the `enviromon` commands share, so scripts (and `make demo`) can tell them apart.

- 0: done; 1: an error the message explains; 2: bad command line (argparse's own).
- 3 (:data:`EXIT_PORT_IN_USE`): a server could not listen because its port is taken.
- 4 (:data:`EXIT_TIMEOUT`): a command that waits (``calibrate``, ``monitor-events
  --count``) gave up after its ``--timeout``.
"""

from __future__ import annotations

import errno

EXIT_PORT_IN_USE = 3
EXIT_TIMEOUT = 4


def is_port_in_use(exc: OSError) -> bool:
    """Whether ``exc`` says the address is taken."""
    return exc.errno == errno.EADDRINUSE
