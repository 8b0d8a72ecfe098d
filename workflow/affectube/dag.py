"""What the Snakemake DAG needs at parse time: videos per dataset, folds, experiments.

The Snakefile builds one :class:`Dag` from the validated config; rules ask it for
file lists and for the params they pass on. Nothing here runs a stage.

Convention (relied on by :mod:`affectube.dvcgen`): a rule passes configuration to
its CLI only through ``params: cfg=D.cfg("section", ...)`` (a JSON object whose
top-level keys are params.yaml sections), so the params each rule depends on can
be read off the DAG.
"""

from __future__ import annotations

import copy
import json
import os
from functools import cached_property, lru_cache

from affectube.errors import ConfigError
from affectube.layout import datasets_of, results_root


class Dag:
    def __init__(self, config: dict):
        self.config = config
        self.results = results_root(config)

    # ---------------------------------------------------------------- params
    @staticmethod
    def params_files(workflow) -> str:
        """The params files Snakemake read (``configfile:`` + ``--configfile``), space-separated, for the report."""
        files = [*getattr(workflow, "configfiles", []), *(workflow.config_settings.configfiles or [])]
        names = []
        for f in files:
            try:
                name = os.path.relpath(str(f), workflow.basedir)
            except ValueError:
                name = str(f)
            if name not in names:
                names.append(name)
        overrides = " (with --config overrides)" if workflow.config_settings.overwrite_config else ""
        return " ".join(names) + overrides

    def cfg(self, *sections: str) -> str:
        """JSON of the named params.yaml sections, passed to a CLI as ``--cfg``."""
        return json.dumps({s: self.config[s] for s in sections}, sort_keys=True)

    def exp_cfg(self, exp: str, *sections: str) -> str:
        """Like :meth:`cfg`, with experiment ``exp``'s overrides applied."""
        resolved = self.experiment_config(exp)
        out = {s: resolved[s] for s in sections}
        out["experiment"] = {"name": exp, "overrides": self.experiment_overrides[exp]}
        return json.dumps(out, sort_keys=True)

    def experiment_config(self, exp: str) -> dict:
        """The params with experiment ``exp``'s overrides applied (validated, cached; do not modify)."""
        from affectube.config import apply_overrides, validate

        cache = self.__dict__.setdefault("_exp_cfgs", {})
        if exp not in cache:
            if exp not in self.experiment_overrides:
                raise ConfigError(f"params.yaml: experiments: no experiment named {exp!r} (experiments: {', '.join(self.experiments)})")
            cfg = apply_overrides(copy.deepcopy(self.config), self.experiment_overrides[exp])
            cache[exp] = validate(cfg, source=f"params.yaml (experiment {exp})", experiments=False)
        return cache[exp]

    @cached_property
    def experiment_overrides(self) -> dict[str, dict]:
        """Experiment name -> overrides, grid entries expanded (:func:`affectube.config.expand_experiments`)."""
        from affectube.config import expand_experiments

        return expand_experiments(self.config["experiments"])

    @property
    def experiments(self) -> list[str]:
        return list(self.experiment_overrides)

    # ---------------------------------------------------------------- data
    @cached_property
    def datasets(self) -> list[str]:
        """``data.pretrain``, ``data.finetune`` and the datasets of cross-dataset chains (``finetune.dataset``)."""
        from affectube.lineage import chain_datasets

        return list(dict.fromkeys([*datasets_of(self.config), *chain_datasets(self.config)]))

    def exp_dataset(self, exp: str) -> str:
        """The labelled dataset experiment ``exp`` fine-tunes and is tested on (``finetune.dataset`` or ``data.finetune``)."""
        from affectube.lineage import experiment_dataset

        return experiment_dataset(self.config, exp)

    @lru_cache(maxsize=None)
    def manifest(self, dataset: str):
        from affectube.data.manifest import build_manifest, dataset_spec

        return build_manifest(dataset, dataset_spec(self.config, dataset))

    def demo_spec(self) -> dict | None:
        """The ``demo`` params merged with the spec of the dataset named ``demo`` (None if there is none)."""
        spec = self.config["data"]["datasets"].get("demo")
        if spec is None or spec["adapter"] != "demo":
            return None
        return {**self.config.get("demo", {}), **spec}

    def demo_outputs(self, kind: str) -> list[str]:
        """Files rule demo_data writes: ``videos``, ``annotations`` or ``labels`` (none without a demo dataset)."""
        from affectube.demo import outputs

        spec = self.demo_spec()
        return outputs(spec)[kind] if spec else []

    def video_ids(self, dataset: str) -> list[str]:
        return list(self.manifest(dataset).table["video_id"])

    def video_path(self, wildcards) -> str:
        table = self.manifest(wildcards.dataset).table
        row = table.loc[table["video_id"] == wildcards.video]
        if row.empty:
            raise ConfigError(f"dataset {wildcards.dataset}: no video {wildcards.video!r} in its manifest")
        return str(row["path"].iloc[0])

    def manifest_row(self, wildcards) -> str:
        """JSON of video ``wildcards.video``'s manifest row (canonical: :func:`affectube.clips.labels.canonical_row`),
        passed to its clips job as a param: the job re-runs when its own row changes, not when
        another video is added to the dataset's manifest."""
        from affectube.clips.labels import canonical_row

        return json.dumps(canonical_row(self._row(wildcards)), sort_keys=True)

    def annotation_files(self, wildcards) -> list[str]:
        """The per-frame annotation files named by the video's manifest row (inputs of its clips job)."""
        from affectube.data.annotation import entries

        value = self._row(wildcards).get("annotation")
        if not isinstance(value, str) or not value.strip():
            return []
        return [path for _, path in entries(value)]

    def _row(self, wildcards) -> dict:
        table = self.manifest(wildcards.dataset).table
        rows = table.loc[table["video_id"] == wildcards.video]
        if rows.empty:
            raise ConfigError(f"dataset {wildcards.dataset}: no video {wildcards.video!r} in its manifest")
        return rows.iloc[0].to_dict()

    def manifest_inputs(self, wildcards) -> list[str]:
        """Files a manifest rule depends on: its videos (generated ones included) and the label/list files read.
        Sharded (``data.shard_size``), a dataset whose videos no rule writes: its shards' faces rows files instead
        of the videos (they hold each video's path, size and mtime: :meth:`shard_rows`), so the DAG has a few
        input files per shard, not one per video."""
        m = self.manifest(wildcards.dataset)
        if self.shard_size and not self.generated(wildcards.dataset):
            return [self.shard_rows_file(wildcards.dataset, s, "faces") for s in self.shards(wildcards.dataset)] + list(m.sources)
        return [str(p) for p in m.table["path"]] + list(m.sources)

    @lru_cache(maxsize=None)
    def generated(self, dataset: str) -> bool:
        """Whether a rule writes the dataset's videos (the demo): they are then inputs themselves."""
        from affectube.data.adapters import get_adapter
        from affectube.data.manifest import dataset_spec

        return bool(getattr(get_adapter(dataset_spec(self.config, dataset)["adapter"]), "generated", False))

    def tracks(self, dataset: str) -> list[str]:
        """What the dataset's faces jobs write: per video its tracks file, or (``data.shard_size`` set)
        per shard its index (the tracks files are then written under ``faces/<dataset>/tracks/`` by the shard jobs)."""
        if self.shard_size:
            return [f"{self.results}/faces/{dataset}/shard-{s}.json" for s in self.shards(dataset)]
        return [f"{self.results}/faces/{dataset}/tracks/{v}.npz" for v in self.video_ids(dataset)]

    def stores(self, dataset: str) -> list[str]:
        """What the dataset's clips jobs write: per video its store, or (sharded) per shard its index, which
        lists the stores (``clips/<dataset>/<video>.h5`` as well; :func:`affectube.shards.index.expand_stores`)."""
        if self.shard_size:
            return [f"{self.results}/clips/{dataset}/shard-{s}.json" for s in self.shards(dataset)]
        return [f"{self.results}/clips/{dataset}/{v}.h5" for v in self.video_ids(dataset)]

    # ---------------------------------------------------------------- shards (data.shard_size)
    @property
    def shard_size(self) -> int | None:
        return self.config["data"].get("shard_size")

    @lru_cache(maxsize=None)
    def shards(self, dataset: str) -> dict[str, list[dict]]:
        """Shard name -> the manifest rows of its videos (:mod:`affectube.shards.assign`)."""
        from affectube.shards.assign import assign

        table = self.manifest(dataset).table
        rows = {str(r["video_id"]): r for r in table.to_dict("records")}
        return {s: [rows[v] for v in ids] for s, ids in assign(list(rows), self.shard_size).items()}

    def _shard(self, wildcards) -> list[dict]:
        rows = self.shards(wildcards.dataset).get(wildcards.shard)
        if rows is None:
            raise ConfigError(f"dataset {wildcards.dataset}: no shard {wildcards.shard!r} (data.shard_size {self.shard_size})")
        return rows

    def shard_videos(self, wildcards) -> list[str]:
        """The video files of shard ``wildcards.shard`` when a rule writes them (the demo: the shard's jobs
        wait for it); else none: the shard's faces rows file holds each video's size and mtime, so a changed
        video changes that file and re-runs its shard, without one Snakemake input file per video."""
        if not self.generated(wildcards.dataset):
            self._shard(wildcards)  # an unknown shard: its error
            return []
        return [str(r["path"]) for r in self._shard(wildcards)]

    def shard_annotation_files(self, wildcards) -> list[str]:
        from affectube.data.annotation import row_files

        return [path for r in self._shard(wildcards) for path in row_files(r)]

    def shard_rows(self, stage: str):
        """An input function: the file listing shard ``wildcards.shard``'s manifest rows for its ``stage`` job
        (faces: id and path; clips: the canonical rows), written here at DAG time when its content changed
        and left untouched otherwise. So a shard job depends on its own rows only: adding a video re-runs the
        jobs of that video's shard, not every shard of the dataset (the dataset manifest is no input of a
        shard job; with it as an ``ancient`` input Snakemake 9.27 skips the shard's own checks)."""

        def path(wildcards) -> str:
            self._shard(wildcards)  # an unknown shard: its error
            return self.shard_rows_file(wildcards.dataset, wildcards.shard, stage)

        return path

    def shard_rows_file(self, dataset: str, shard: str, stage: str) -> str:
        """Write (only when its content changed) and return the file of shard ``shard``'s rows for ``stage``:
        faces: id, path and, for videos no rule writes, the file's size and mtime (a changed video re-runs its
        shard, whose per-video cache then redoes that video only); clips: the canonical rows."""
        from affectube.clips.labels import canonical_row
        from affectube.io import to_jsonable, write_text

        done = self.__dict__.setdefault("_rows_files", {})  # once per DAG: the manifest, faces_sheet and the shard ask
        if (dataset, shard, stage) in done:
            return done[dataset, shard, stage]
        rows = self.shards(dataset)[shard]
        if stage == "faces":
            out_rows = [{"video_id": str(r["video_id"]), "path": str(r["path"])} for r in rows]
            if not self.generated(dataset):
                for r in out_rows:
                    try:
                        st = os.stat(r["path"])
                        r["size"], r["mtime_ns"] = st.st_size, st.st_mtime_ns
                    except OSError:  # gone since the manifest was read: the shard job records it as failed
                        r["size"] = r["mtime_ns"] = None
        else:
            out_rows = [canonical_row(r) for r in rows]
        out = f"{self.results}/shards/{dataset}/{stage}-{shard}.json"
        # a row per line, each by json's C encoder (indent= would take its Python one: 100k rows in seconds)
        text = "[\n" + ",\n".join(json.dumps(r, sort_keys=True, default=to_jsonable) for r in out_rows) + "\n]\n"
        try:
            with open(out, encoding="utf-8") as f:
                same = f.read() == text
        except OSError:
            same = False
        if not same:
            write_text(out, text)
        done[dataset, shard, stage] = out
        return out

    def shard_runtime(self, minutes_per_video: float):
        """SLURM runtime (minutes) of a shard job, sized by its own videos: 10 + the shard's number of videos x
        ``minutes_per_video`` (x attempt on retries). Hash buckets hold unequal numbers of videos (about
        ``shard_size / 2`` to ``shard_size`` on average, more or fewer in one bucket), so each shard asks for its own."""

        def runtime(wildcards, attempt) -> int:
            return int(10 + len(self._shard(wildcards)) * minutes_per_video) * attempt

        return runtime

    def pretrain_stores(self, wildcards=None) -> list[str]:
        return [s for d in self.config["data"]["pretrain"] for s in self.stores(d)]

    # ---------------------------------------------------------------- folds
    @cached_property
    def fold_ids(self) -> list[str]:
        from affectube.eval.folds import plan_folds

        table = self.manifest(self.config["data"]["finetune"]).table
        return [str(i) for i in range(len(plan_folds(table, self.config["finetune"])))]

    def exp_fold_ids(self, exp: str) -> list[str]:
        """Fold indices of experiment ``exp`` (its overrides may change the protocol)."""
        from affectube.eval.folds import plan_folds

        cache = self.__dict__.setdefault("_exp_folds", {})
        if exp not in cache:
            table = self.manifest(self.exp_dataset(exp)).table
            cache[exp] = [str(i) for i in range(len(plan_folds(table, self.experiment_config(exp)["finetune"])))]
        return cache[exp]

    def fold_predictions(self, wildcards) -> list[str]:
        return [f"{self.results}/finetune/{wildcards.exp}/fold{k}/predictions.csv" for k in self.exp_fold_ids(wildcards.exp)]

    def pretrain_label(self, exp: str) -> str | None:
        """None when experiment ``exp`` uses the run's pretraining; else the name of the pretraining of its own
        (``method=dino``, ``masking=face``, ...: its ``pretrain.*`` overrides that change what pretraining computes,
        e.g. pretexts compared as experiments; experiments with the same overrides share it)."""
        from affectube.config import value_label
        from affectube.train.pretrain_keys import OPERATIONAL_KEYS

        def computed(section: dict) -> dict:
            return {k: v for k, v in section.items() if k not in OPERATIONAL_KEYS}

        if computed(self.experiment_config(exp)["pretrain"]) == computed(self.config["pretrain"]):
            return None
        keys = {k.split(".", 1)[1]: v for k, v in self.experiment_overrides[exp].items() if k.startswith("pretrain.")}
        return "-".join(f"{k}={value_label(v)}" for k, v in sorted(keys.items()) if k not in OPERATIONAL_KEYS)

    def pretrain_experiment(self, label: str) -> str:
        """An experiment whose pretraining is ``label`` (rule ``pretrain_experiment`` takes its params)."""
        for exp in self.experiments:
            if self.pretrain_label(exp) == label:
                return exp
        raise ConfigError(f"params.yaml: no experiment has the pretraining {label!r}")

    def pretrain_root(self, exp: str) -> str:
        """Where experiment ``exp``'s pretraining lives: ``pretrain/`` or ``pretrain_exp/{label}/``."""
        label = self.pretrain_label(exp)
        return f"{self.results}/pretrain" if label is None else f"{self.results}/pretrain_exp/{label}"

    def pretrained_encoder(self, wildcards) -> list[str]:
        """The pretraining checkpoint when experiment ``exp`` starts from it, else nothing."""
        from affectube.lineage import parse_init, source_model

        kind, value = parse_init(self.experiment_config(wildcards.exp)["finetune"]["init"])
        if kind == "pretrained":
            return [f"{self.pretrain_root(wildcards.exp)}/encoder.safetensors"]
        if kind == "experiment":  # a chain: another experiment's fold model (same folds, or another dataset: no leak)
            return [source_model(self, wildcards.exp, wildcards.fold)]
        if kind == "scratch":
            return []
        # a checkpoint file (docs/checkpoints.md); a transformers directory: its weights (config.json is read beside them)
        return [os.path.join(value, "model.safetensors") if os.path.isdir(value) else value]

    # ---------------------------------------------------------------- targets
    def all_targets(self) -> list[str]:
        targets = [f"{self.results}/faces/{d}/qc.csv" for d in self.datasets]
        targets += [f"{self.results}/faces/{d}/contact_sheet.png" for d in self.datasets]
        targets += [f"{self.results}/report/report.html"]
        return targets
