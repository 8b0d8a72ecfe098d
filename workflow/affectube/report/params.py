"""The params the report and figures stages read, through :func:`affectube.config.sections`.

Both stages get every params section from their rule (validated, defaults filled), but they
are also run by hand, on the results of older runs, and by tests with partial params. So:

* ``report``, ``evaluate``, ``figures``: always validated and filled (a missing one: all defaults);
* ``finetune``, ``pretrain``: validated and filled when given; a missing one stays missing (the
  report then says what it cannot tell, e.g. protocol ``?``, instead of stating a default);
* ``data`` and ``experiments`` are read as given: ``data`` names the datasets of the run (its
  required keys are not made up), ``experiments`` has no defaults.

The stages' code then indexes the filled sections: no defaults in code.
"""

from __future__ import annotations

from affectube.config import sections

ALWAYS = ("report", "evaluate", "figures")
IF_GIVEN = ("finetune", "pretrain")


def report_params(cfg: dict, source: str = "--cfg") -> dict:
    """``cfg`` with its :data:`ALWAYS` sections, and its :data:`IF_GIVEN` sections that are there,
    validated and filled with the schema's defaults (other sections as they are)."""
    names = [*ALWAYS, *(name for name in IF_GIVEN if cfg.get(name))]
    return {**cfg, **sections(cfg, *names, source=source)}
