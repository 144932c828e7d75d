"""Entry point of the ``fathom`` command. Each area registers its commands from its own module."""

from __future__ import annotations

import importlib
import importlib.util

from fathom.cli.output import command_group

app = command_group("Fathom: open deep research — search agent, tools, synthesizer.")

# (module, attribute, sub-command name or None to merge top-level commands)
_AREAS: list[tuple[str, str, str | None]] = [
    ("fathom.cli.corpus", "app", "corpus"),
    ("fathom.cli.models", "app", "models"),
    ("fathom.cli.tools", "register", None),
    ("fathom.cli.research", "register", None),
    ("fathom.cli.bench", "app", "bench"),
    # The distributed plane (docs/PLANE.md).
    ("fathom.cli.serve", "app", "serve"),
    ("fathom.cli.worker", "register", None),
    ("fathom.cli.jobs", "app", "jobs"),
    ("fathom.cli.batch", "app", "batch"),
    ("fathom.cli.stack", "app", "stack"),
    ("fathom.cli.store", "app", "store"),
    # Training (docs/TRAINING.md).
    ("fathom.cli.train", "app", "train"),
]


def _load_areas() -> None:
    for module_name, attr, sub in _AREAS:
        if importlib.util.find_spec(module_name) is None:  # an area not written yet
            continue
        module = importlib.import_module(module_name)
        obj = getattr(module, attr)
        if sub is None:
            obj(app)
        else:
            app.add_typer(obj, name=sub)


_load_areas()


if __name__ == "__main__":
    app()
