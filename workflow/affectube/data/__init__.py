"""Datasets: manifests (one row per video) and adapters that build them from common layouts."""
