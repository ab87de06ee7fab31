"""The mechanism plug-ins. Every module in this folder is one plug-in that registers itself
(eat.model.mechanism.register); importing this package imports them all, in file-name order, so adding a
mechanism is adding a file here (and its config node in conf/mechanism/)."""
from __future__ import annotations

import importlib
import pkgutil

from eat.model.mechanism import PLUGINS, Mechanism, build_mechanisms, combination_name  # noqa: F401 (the API)

for _m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_m.name}")
