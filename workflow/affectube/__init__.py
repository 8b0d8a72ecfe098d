"""affectube: from raw face videos to self-supervised video-transformer models of affect.

Stage logic lives in subpackages (one concept per module); ``affectube.cli`` exposes
each stage as ``affectube <stage> ...`` (or ``python -m affectube <stage> ...``), which
is what the Snakemake rules in ``rules/`` call.
"""

__version__ = "0.1.0"


def predict(*args, **kwargs):
    """Run a trained model on new videos; see :func:`affectube.predict.predict`."""
    from affectube.predict import predict as _predict

    return _predict(*args, **kwargs)
