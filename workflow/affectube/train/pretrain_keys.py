"""``pretrain`` params that change how a run is executed, not what it computes (no torch import: the DAG
uses it to tell whether an experiment's ``pretrain.*`` overrides need a pretraining of its own)."""

OPERATIONAL_KEYS = frozenset({"num_workers", "checkpoint_every", "gpus", "compile", "recon_clips", "threads"})
