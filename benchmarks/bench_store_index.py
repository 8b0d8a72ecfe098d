"""What opening a dataset of clip stores costs today, per store (issue 17 point 3: stores and loader at scale).

    .venv/bin/python benchmarks/bench_store_index.py [--stores 400] [--out benchmarks/results/store_index.json]

Builds one real clip store (a GRID clip of ../shared/realdata at 25 fps, 64-px crops, through the clips
stage's own builder), links it under N names and opens a :class:`ClipDataset` over the folder (pretraining's
arguments: 8 frames, stride 1), measuring per store: the wall and CPU time of the constructor (it reads and
verifies every store's metadata), the files it opened (``open_store`` calls), and the Python memory held per
store afterwards (tracemalloc, a second construction with the per-process index cleared).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

import affectube.clips.dataset as dataset_mod  # noqa: E402
from affectube.clips.build import build_store  # noqa: E402
from affectube.faces.detect import build_detector  # noqa: E402
from affectube.faces.pipeline import track_video  # noqa: E402
from affectube.faces.tracks import save_tracks  # noqa: E402

REALDATA = Path(os.environ.get("AFFECTUBE_REALDATA", REPO.parent / "shared" / "realdata"))


def cpu_now() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", type=int, default=400)
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/store_index.json"))
    args = ap.parse_args(argv)
    video = REALDATA / "videos/grid/bbaf2n.mpg"
    decode = {"fps": 25, "max_side": 320}
    faces = {"backend": "insightface", "model": str(REALDATA / "models/insightface/buffalo_sc/det_500m.onnx"), "det_size": 160, "every_k": 4}
    with tempfile.TemporaryDirectory(prefix="bench_store_index_") as tmp:
        tmp = Path(tmp)
        save_tracks(tmp / "t.npz", track_video(video, decode, faces, build_detector(faces, threads=1), threads=1))
        row = {"dataset": "grid", "video_id": "v", "path": str(video), "subject": "s"}
        build_store(video, tmp / "t.npz", row, "v", {"decode": decode, "crop": {"size": 64}, "clips": {}}, tmp / "one.h5")
        folder = tmp / "stores"
        folder.mkdir()
        for i in range(args.stores):
            os.symlink(tmp / "one.h5", folder / f"v{i:07d}.h5")
        opened = []
        real_open = dataset_mod.open_store
        dataset_mod.open_store = lambda path, **kw: (opened.append(path), real_open(path, **kw))[1]
        kw = dict(num_frames=8, sample_stride=1, input_size=64)
        dataset_mod.ClipDataset([tmp / "one.h5"], **kw)  # imports warm
        dataset_mod._INDEX.clear()
        opened.clear()
        c0, w0 = cpu_now(), time.perf_counter()
        ds = dataset_mod.ClipDataset(folder, **kw)
        cpu, wall = cpu_now() - c0, time.perf_counter() - w0
        n = len(ds.entries)
        files_opened = len(opened)
        del ds
        dataset_mod._INDEX.clear()
        gc.collect()
        tracemalloc.start()
        ds = dataset_mod.ClipDataset(folder, **kw)
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        frames = ds.entries[0].num_frames
    doc = {
        "what": "ClipDataset over N links to one real store (GRID clip, 25 fps, 64-px crops): constructor time, files opened, "
                "Python memory held per store (entries + the per-process store index)",
        "command": " ".join(["benchmarks/bench_store_index.py", *(argv if argv is not None else sys.argv[1:])]),
        "stores": n, "frames_per_store": frames, "files_opened_at_start": files_opened,
        "constructor_cpu_ms_per_store": round(1000 * cpu / n, 3), "constructor_wall_ms_per_store": round(1000 * wall / n, 3),
        "bytes_held_per_store": round(held / n), "load_1min": round(os.getloadavg()[0], 2),
        "extrapolated_1m_stores": {"files_opened": 1_000_000, "cpu_minutes": round(cpu / n * 1e6 / 60, 1), "gb_held": round(held / n * 1e6 / 1e9, 2)},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
