"""The names `leannet list` prints, kept in ``catalog.json`` so that listing them imports no torch.

``python -m leannet.catalog`` rewrites the file after a name is added to leannet (a test checks it is
current). With installed plug-ins (entry points) the names are read from the live registries instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leannet.plugins import entry_points, load_plugins

CATALOG = Path(__file__).with_name("catalog.json")
EXTERNAL_MODELS = ("tv:<name> (any torchvision classification model, e.g. tv:resnet18)",
                   "timm:<name> (any timm model, e.g. timm:resnet18)")


def live_catalog() -> dict[str, list[str]]:
    """Every registered name by kind, after importing every plug-in (imports torch: seconds)."""
    from leannet.data import DATASETS
    from leannet.method import METHODS
    from leannet.models import MODELS, NORMS
    from leannet.models.factory import model_patterns

    load_plugins()
    return {"models": [*MODELS.names(), *model_patterns(), *EXTERNAL_MODELS], "datasets": DATASETS.names(),
            "methods": METHODS.names(), "norms": NORMS.names()}


def catalog() -> dict[str, list[str]]:
    """The names `leannet list` prints: from catalog.json (fast) unless plug-ins are installed."""
    if CATALOG.is_file() and not entry_points():
        return json.loads(CATALOG.read_text())
    return live_catalog()


def main() -> None:
    parser = argparse.ArgumentParser(description="Write leannet/catalog.json, the names `leannet list` prints.")
    parser.parse_args()
    CATALOG.write_text(json.dumps(live_catalog(), indent=1) + "\n")
    print(f"wrote {CATALOG}")


if __name__ == "__main__":
    main()
