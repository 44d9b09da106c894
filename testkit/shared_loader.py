"""One botocore data loader for every session of a test process.

Each ``boto3.session.Session()`` gets its own loader, which reads and parses the service models
(JSON files of megabytes) again. A Lambda does that once per cold start; the suite, which starts
every test with fresh clients (chalicelib.aws.reset, a new moto world), did it hundreds of times:
a quarter of a second per test. The models are read-only files, so sharing one loader changes
nothing a test sees; only the parsing is done once per process.
"""

from __future__ import annotations

from typing import Any

import botocore.loaders
import botocore.session

_shared: Any = None
_Session: Any = botocore.session.Session  # its component registry is private: typed loosely


def _register_shared_loader(self: Any) -> None:
    def shared_loader() -> Any:
        global _shared
        if _shared is None:  # made on first use, as botocore makes its own (its config is ready then)
            _shared = botocore.loaders.create_loader(self.get_config_variable("data_path"))
        return _shared

    self._components.lazy_register_component("data_loader", shared_loader)


def install() -> None:
    """From now on, every new botocore (and boto3) session in this process shares one loader."""
    _Session._register_data_loader = _register_shared_loader
