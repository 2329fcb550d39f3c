"""Plug-ins: the modules that register techniques (methods, norms, models, model transforms, run loops).

The core (registries, `leannet.method`, `leannet.models`, `leannet.data`, `leannet.train`) imports no
technique. The techniques are imported here, by name, when a registry is first asked for a name it
lacks (so `build_model("resnet20", norm="rbn")` just works), from three places:

* leannet's own techniques (`BUILTIN`);
* installed packages declaring an entry point in the group ``leannet.plugins``
  (``[project.entry-points."leannet.plugins"] mytech = "mypkg.mytech"``);
* a recipe's ``plugins:`` list: module names or paths of ``.py`` files (a user's own method in one file).
  A relative path is taken from the current directory when the recipe is loaded and kept absolute in
  the run folder's ``config.yaml`` (:func:`absolute_spec`), so eval and resume find it from anywhere.

A run folder may come from someone else: the plug-ins its config names are code. `leannet eval`,
`leannet train --resume` and `leannet explain` import them only with ``--allow-plugins``
(:func:`require_consent`); the Python functions (``load_trained``, ``resume``) trust their caller.

`leannet list` reads the names from ``catalog.json`` (`leannet.catalog`) instead of importing them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from leannet.errors import LeannetError

BUILTIN = ("leannet.norm", "leannet.distill", "leannet.evolve", "leannet.spiking", "leannet.multitask")
ENTRY_POINT_GROUP = "leannet.plugins"

_loaded: set[str] = set()
_loading = False


def entry_points() -> list[metadata.EntryPoint]:
    """Installed plug-ins: entry points of the group ``leannet.plugins``."""
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def load_plugins(extra: Iterable[str] = ()) -> None:
    """Import the built-in techniques, installed plug-ins and `extra` (module names or .py paths), once each."""
    global _loading
    if _loading:  # a plug-in being imported looked a name up: it registers as it goes
        return
    _loading = True
    try:
        for name in BUILTIN:
            _import_module(name)
        for point in entry_points():
            if f"entry:{point.value}" not in _loaded:
                _loaded.add(f"entry:{point.value}")
                point.load()
        for spec in extra:
            load_plugin(spec)
    finally:
        _loading = False


def is_file_spec(spec: str) -> bool:
    """Whether a ``plugins:`` entry is the path of a ``.py`` file (else a module name)."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def absolute_spec(spec: str) -> str:
    """A ``plugins:`` entry as a run folder keeps it: a file path made absolute (from the current directory),
    a module name unchanged."""
    return str(Path(spec).expanduser().resolve()) if is_file_spec(spec) else spec


def require_consent(specs: Iterable[str], source: str | Path, allowed: bool, command: str) -> None:
    """Refuse, in one line, to go on with the plug-ins ``source`` (a run folder's config.yaml) names unless
    ``allowed`` (``--allow-plugins``): they are code, and a run folder may come from someone else."""
    specs = list(specs)
    if specs and not allowed:
        raise LeannetError(f"{source} names plug-ins that `{command}` would import and run: {', '.join(specs)}; "
                           "read them, then pass --allow-plugins to run them")


def load_plugin(spec: str) -> None:
    """Import one plug-in: a module name (``mypkg.mytech``) or the path of a ``.py`` file."""
    if is_file_spec(spec):
        path = Path(spec).expanduser().resolve()
        if not path.is_file():
            raise LeannetError(f"plugin file not found: {spec}; give a path to a .py file or a module name")
        key = f"file:{path}"
        if key in _loaded:
            return
        name = f"leannet_plugin_{len(_loaded)}_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        _loaded.add(key)
        try:
            module_spec.loader.exec_module(module)
        except Exception:
            _loaded.discard(key)
            sys.modules.pop(name, None)
            raise
        return
    _import_module(spec)


def _import_module(name: str) -> None:
    if name in _loaded:
        return
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name and name.startswith(err.name):
            raise LeannetError(
                f"plugin module '{name}' not found; install it or give the path of its .py file"
            ) from None
        raise
    _loaded.add(name)

