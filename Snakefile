# affectube: raw face videos -> faces -> HDF5 clip stores -> SSL pretraining -> per-subject CV -> report.
# Stage logic lives in the `affectube` package (workflow/affectube); rules are thin CLI calls.
# Inside a Snakefile `workflow` is Snakemake's own object, so the package is imported as `affectube`.
import os
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import min_version, validate

min_version("9.0")

PKG_DIR = str(Path(workflow.basedir) / "workflow")
sys.path.insert(0, PKG_DIR)

from affectube import config as affectube_config  # noqa: E402
from affectube import dag  # noqa: E402

# Jobs (local, SLURM or conda) find the package without installing it, and (unless a conda env
# provides one) run with the Python that runs Snakemake, whatever `python` is on PATH.
PY_BIN = "" if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method else Path(sys.executable).parent
shell.prefix(
    f"export PYTHONPATH={PKG_DIR}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    + (f"export PATH={PY_BIN}:$PATH; " if PY_BIN else "")
)

configfile: "params.yaml"


# One line naming the key and the allowed range on a bad value (also for --config/--configfile
# overrides); then Snakemake's own validation fills in the schema defaults.
_overridden = workflow.config_settings.overwrite_config or workflow.config_settings.configfiles
affectube_config.validate(config, source="params.yaml" + (" (with command-line overrides)" if _overridden else ""))
validate(config, "workflow/affectube/schemas/params.schema.yaml")
D = dag.Dag(config)
R = D.results  # run.results: this run's results root (every output, log and the report)


include: "rules/ingest.smk"
include: "rules/faces.smk"
include: "rules/clips.smk"
include: "rules/pretrain.smk"
include: "rules/finetune.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        D.all_targets(),
