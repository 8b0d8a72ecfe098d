"""What opening a dataset of clip stores costs, per store (issue 17 point 3: stores and loader at scale).

    .venv/bin/python benchmarks/bench_store_index.py [--stores 400] [--shard-size 100] [--out benchmarks/results/store_index.json]

Builds one real clip store (a GRID clip of ../shared/realdata at 25 fps, 64-px crops, through the clips
stage's own builder), links it under N names and opens a :class:`ClipDataset` (pretraining's arguments:
8 frames, stride 1) two ways, side by side:

- ``stores``: over the folder of stores: the constructor reads and verifies every store's metadata;
- ``tables``: over clips shard indexes of ``--shard-size`` stores with their store tables
  (:mod:`affectube.clips.store_table`, written as ``clips-shard`` writes them: ``write_table_ms_per_store``
  is that cost in the shard job): the constructor reads the tables only.

Per store: the wall and CPU time of the constructor, the files it opened (``open_store`` calls), and the
Python memory held afterwards (tracemalloc, a second construction with the per-process index cleared);
then the same item read both ways (equal pixels).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import torch

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


def shard_indexes(root: Path, stores: list[str], shard_size: int) -> list[str]:
    """Clips shard indexes over ``stores`` with their store tables, as ``clips-shard`` writes them."""
    from affectube.clips.store_table import table_path, write_table
    from affectube.shards.index import run_shard

    out = []
    for k in range(0, len(stores), shard_size):
        rows = [{"video_id": Path(s).stem, "path": s} for s in stores[k : k + shard_size]]
        index = root / f"shard-{k // shard_size}.json"
        with contextlib.redirect_stdout(io.StringIO()):
            run_shard("clips", "grid", str(k // shard_size), rows, lambda r: ("cached", r["path"], None), index,
                      finish=lambda listed, index=index: write_table(listed, table_path(index)))
        out.append(str(index))
    return out


def measure(source, kw: dict) -> tuple[dict, "dataset_mod.ClipDataset"]:
    """Constructor CPU/wall per store, stores opened, memory held per store (tracemalloc, a second construction)."""
    opened = []
    real_open = dataset_mod.open_store
    dataset_mod.open_store = lambda path, **k: (opened.append(path), real_open(path, **k))[1]
    try:
        dataset_mod._INDEX.clear()
        gc.collect()
        c0, w0 = cpu_now(), time.perf_counter()
        ds = dataset_mod.ClipDataset(source, **kw)
        cpu, wall = cpu_now() - c0, time.perf_counter() - w0
    finally:
        dataset_mod.open_store = real_open
    n = len(ds.entries)
    del ds
    dataset_mod._INDEX.clear()
    gc.collect()
    tracemalloc.start()
    ds = dataset_mod.ClipDataset(source, **kw)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "stores": n, "files_opened_at_start": len(opened),
        "constructor_cpu_ms_per_store": round(1000 * cpu / n, 3), "constructor_wall_ms_per_store": round(1000 * wall / n, 3),
        "bytes_held_per_store": round(held / n),
        "extrapolated_1m_stores": {"files_opened": round(len(opened) / n * 1e6), "cpu_minutes": round(cpu / n * 1e6 / 60, 1),
                                   "gb_held": round(held / n * 1e6 / 1e9, 3)},
    }, ds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", type=int, default=400)
    ap.add_argument("--shard-size", type=int, default=100)
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
        links = sorted(str(p) for p in folder.glob("*.h5"))
        c0, w0 = cpu_now(), time.perf_counter()
        indexes = shard_indexes(tmp / "shards", links, args.shard_size)
        write_cpu, write_wall = cpu_now() - c0, time.perf_counter() - w0
        kw = dict(num_frames=8, sample_stride=1, input_size=64)
        dataset_mod.ClipDataset([tmp / "one.h5"], **kw)  # imports warm
        ways = {"stores": folder, "tables": indexes}
        results, datasets = {}, {}
        for name, source in ways.items():
            results[name], datasets[name] = measure(source, kw)
        a, b = datasets["stores"][5], datasets["tables"][5]
        assert all(torch.equal(a[k], b[k]) for k in ("video", "times")), "the two ways read different items"
        n = results["stores"]["stores"]
        frames = datasets["stores"].entries[0].num_frames
    doc = {
        "what": "ClipDataset over N links to one real store (GRID clip, 25 fps, 64-px crops), two ways: over the stores "
                "(every store opened at start) and over clips shard indexes with their store tables: constructor time, "
                "files opened, Python memory held per store (entries + the per-process store index)",
        "command": " ".join(["benchmarks/bench_store_index.py", *(argv if argv is not None else sys.argv[1:])]),
        "stores": n, "frames_per_store": frames, "shard_size": args.shard_size, "load_1min": round(os.getloadavg()[0], 2),
        **{f"over_{name}": r for name, r in results.items()},
        "write_table_ms_per_store": {"cpu": round(1000 * write_cpu / n, 3), "wall": round(1000 * write_wall / n, 3)},
        "constructor_cpu_ratio_tables_vs_stores": round(results["tables"]["constructor_cpu_ms_per_store"]
                                                        / results["stores"]["constructor_cpu_ms_per_store"], 4),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
