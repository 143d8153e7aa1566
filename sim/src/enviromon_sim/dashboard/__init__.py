"""A plain static file server for the built dashboard (``dashboard/dist``), for local use.

It serves the files as they are, plus a generated ``config.json`` that points the page at a
local sink API: ``enviromon dashboard serve --api http://127.0.0.1:7071/api``.
"""
