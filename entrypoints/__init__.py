"""The edges of the service: CLI, HTTP, workers, and the composition root (``container``).

Three libraries load optional extras this service never uses whenever those are installed: structlog
loads ``rich`` for console tracebacks, httpx its command line (``click``, ``rich``, ``pygments``), and
dependency-injector its ``pydantic_settings`` and ``werkzeug`` integrations. They are imported here
first with those looking absent, which saves every process about 10 MB and a tenth of its start
(tests/integration/test_serve_imports.py); a later import of the extras themselves still works.
"""

import sys

_absent = [name for name in ("click", "rich", "pydantic_settings", "werkzeug") if name not in sys.modules]
sys.modules.update(dict.fromkeys(_absent))  # type: ignore[arg-type]  # None: importing it raises ImportError
try:
    import dependency_injector.containers  # noqa: F401
    import httpx  # noqa: F401
    import structlog  # noqa: F401
finally:
    for _name in _absent:
        del sys.modules[_name]
