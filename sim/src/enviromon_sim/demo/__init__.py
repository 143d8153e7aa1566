"""`enviromon demo`: the whole local pipeline on this machine, started and stopped as one.

``stack.DemoStack`` is the logic (used by the CLI, the end-to-end tests and the benchmark);
``cli.py`` only adapts it to a terminal.
"""
