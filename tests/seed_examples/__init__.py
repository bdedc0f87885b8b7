"""The seed article's code examples, as close to verbatim as possible.

Only the import line changes (``fastapi_taskflow`` -> ``anytask``); names the article
leaves undefined (``smtp_client``, ``fetch_rates``, ``db``, ...) and calls to outside
hosts come from :mod:`._stubs`.
"""
