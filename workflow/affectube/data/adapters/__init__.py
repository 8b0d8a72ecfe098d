"""Adapters: ``adapter(name, spec) -> DataFrame`` of manifest rows, registered by name."""

from __future__ import annotations

import importlib
from typing import Callable

import pandas as pd

from affectube.errors import ConfigError

Adapter = Callable[[str, dict], pd.DataFrame]

# adapter name -> module defining `build(name, spec)`
_ADAPTERS: dict[str, str] = {
    "demo": "affectube.data.adapters.demo",
    "csv": "affectube.data.adapters.csv",
    "folder": "affectube.data.adapters.folder",
    "mead": "affectube.data.adapters.mead",
    "cremad": "affectube.data.adapters.cremad",
    "ravdess": "affectube.data.adapters.ravdess",
    "dfew": "affectube.data.adapters.dfew",
    "mafw": "affectube.data.adapters.mafw",
    "deap": "affectube.data.adapters.deap",
    "amigos": "affectube.data.adapters.amigos",
    "recola": "affectube.data.adapters.recola",
    "sewa": "affectube.data.adapters.sewa",
    "grid": "affectube.data.adapters.grid",
}


def register(name: str, module: str) -> None:
    _ADAPTERS[name] = module


def get_adapter(name: str) -> Adapter:
    if name not in _ADAPTERS:
        raise ConfigError(f"data.datasets.*.adapter: unknown adapter {name!r} (known: {', '.join(sorted(_ADAPTERS))})")
    mod = importlib.import_module(_ADAPTERS[name])
    build = mod.build
    build.generated = getattr(mod, "GENERATED", False)
    return build
