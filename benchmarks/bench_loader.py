"""Clip loading throughput: HDF5 clip stores vs decoding the videos on the fly vs raw sequential reads.

Builds clip stores from the real clips in ../shared/realdata (MEAD, CREMA-D, GRID: the videos
no larger than 640 px, so decoded frames need no resampling) in a temporary directory (never in
the repo), replicated to a few GB, and measures:

1. store layouts: compression (none, lzf, gzip, blosc-lz4) x chunk_frames (8, 16, 32): size,
   write speed and the rate of random clip reads (uint8, one process) from a cold and a warm
   page cache;
2. the loader (ClipDataset + torch DataLoader, train mode, augmentation on, batch 32) with 0, 1
   and 2 workers, page cache dropped before each run (posix_fadvise DONTNEED on every store) and
   warm; for both outputs: ``float`` (the tube transform on the CPU, float32 normalised clips)
   and ``uint8`` (stored crops + crop windows; the transform then runs on the accelerator);
3. (a) VideoMAE's way: the same clips (same starts, same crops, same augmentation, same output)
   decoded on the fly from the source videos with PyAV (one decoder thread, as VideoMAE's
   decord; videos dropped from the page cache first), 0/1/2 workers, run right after the loader
   run it is compared with;
4. (b) a raw sequential read (8 MiB reads) of the stores from a cold cache, right before each
   cold loader run: the physical limit, expressed in clips/s for the bytes the loader reads per
   clip: the T frames themselves ("payload": direct reads skip the frames between two sampled
   ones), and for reference the frame span ((T-1)*stride+1 frames: what a read through h5py
   takes) and the chunks that span touches;
5. one store per video vs a few shards per dataset: index time, cold random clip reads,
   per-clip cost of reopening a store, and the cost of adding one video.

Writes benchmarks/results/loader.json. Usage:

    .venv/bin/python benchmarks/bench_loader.py [--replicas 10] [--clips 1200] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

import av  # noqa: E402
import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from affectube.clips import dataset as clips_dataset  # noqa: E402
from affectube.clips import sampling  # noqa: E402
from affectube.clips.dataset import ClipDataset  # noqa: E402
from affectube.clips.readers import DirectReader, StoreReader, chunk_byte_ranges, frame_layout, read_span  # noqa: E402
from affectube.clips.store import COMPRESSION, StoreContent, write_store  # noqa: E402
from affectube.faces.crop import crop_frames  # noqa: E402
from affectube.io import write_json  # noqa: E402
from affectube.video.decode import decode  # noqa: E402

FPS = 25.0
CROP = {"strategy": "box", "scale": 1.3, "size": 112, "grayscale": False, "pad_mode": "edge"}
NUM_FRAMES, STRIDE, BATCH = 16, 2, 32  # BATCH: VideoMAE pretraining's per-GPU batch
FOLDERS = ("mead", "cremad", "grid", "grid_s1")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- sources
def source_videos(realdata: Path) -> list[Path]:
    out = []
    for folder in FOLDERS:
        out += sorted(p for p in (realdata / "videos" / folder).iterdir() if p.is_file())
    return out


def centre_box(h: int, w: int) -> np.ndarray:
    side = 0.6 * min(h, w)
    return np.array([w / 2 - side / 2, h / 2 - side / 2, w / 2 + side / 2, h / 2 + side / 2], np.float32)


def tracks_for(n: int, h: int, w: int) -> dict:
    """A fixed centred face box (this benchmark measures I/O, not detection)."""
    return {"boxes": np.tile(centre_box(h, w), (n, 1)), "landmarks": np.zeros((n, 5, 2), np.float32),
            "status": np.ones(n, np.uint8), "frame_size": np.array([h, w])}


def build_crops(videos: list[Path]) -> list[dict]:
    out = []
    t0 = time.perf_counter()
    for i, v in enumerate(videos):
        dec = decode(v, fps=FPS, max_side=640)
        n, h, w = dec.frames.shape[:3]
        crops, _ = crop_frames(dec.frames, tracks_for(n, h, w), CROP)
        out.append({"video": v, "name": f"{v.parent.name}_{v.stem}", "crops": crops, "timestamps": dec.timestamps,
                    "size": (h, w), "info": dec.info})
        if (i + 1) % 20 == 0:
            log(f"  decoded+cropped {i + 1}/{len(videos)} videos ({time.perf_counter() - t0:.0f} s)")
    return out


def write_stores(crops: list[dict], root: Path, compression: str, chunk_frames: int) -> tuple[list[Path], float]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    t0 = time.perf_counter()
    for c in crops:
        content = StoreContent(frames=c["crops"], timestamps=c["timestamps"], dataset=c["video"].parent.name, video_id=c["name"],
                               subject=c["name"].split("_")[-2] if "_" in c["name"] else c["name"], labels={"emotion": None}, fps=FPS, crop=CROP,
                               clips={"compression": compression, "chunk_frames": chunk_frames}, source=c["info"])
        paths.append(write_store(root / f"{c['name']}.h5", content, compression, chunk_frames))
    return paths, time.perf_counter() - t0


def replicate(paths: list[Path], root: Path, replicas: int) -> list[Path]:
    out = []
    for r in range(replicas):
        d = root / f"r{r:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for p in paths:
            q = d / p.name
            shutil.copyfile(p, q)
            out.append(q)
    return out


# ---------------------------------------------------------------- page cache
def evict(paths) -> None:
    """Drop the files' pages from the page cache (clean pages; no root needed)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths) -> None:
    for p in paths:
        with open(p, "rb", buffering=0) as fh:
            while fh.read(8 << 20):
                pass


def raw_sequential(paths) -> dict:
    """(b): every store read front to back with 8 MiB reads from a cold page cache."""
    evict(paths)
    buf = bytearray(8 << 20)
    n = 0
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as fh:
            while k := fh.readinto(buf):
                n += k
    dt = time.perf_counter() - t0
    return {"bytes": n, "seconds": dt, "bytes_per_s": n / dt}


# ---------------------------------------------------------------- clip reads
def clip_plan(lengths: list[int], count: int, seed: int = 0) -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    span = sampling.clip_span(NUM_FRAMES, STRIDE)
    plan = []
    for _ in range(count):
        v = int(rng.integers(len(lengths)))
        start = sampling.train_start(lengths[v], span, rng)
        plan.append((v, sampling.frame_indices(start, NUM_FRAMES, STRIDE, lengths[v])))
    return plan


def touched_bytes(paths: list[Path], plan) -> float:
    """Mean bytes of the chunks each planned clip's frame span touches."""
    ranges = {}
    total = 0
    for v, idx in plan:
        if v not in ranges:
            with h5py.File(paths[v], "r") as f:
                ds = f["frames"]
                fb = int(np.prod(ds.shape[1:]))
                # contiguous: one "chunk" per frame, so the touched bytes are the span's
                ranges[v] = chunk_byte_ranges(ds) if ds.chunks else [(i, 0, fb) for i in range(ds.shape[0])]
        cf = ranges[v][1][0] - ranges[v][0][0] if len(ranges[v]) > 1 else 10**9
        first, last = int(idx[0]) // cf, int(idx[-1]) // cf
        total += sum(r[2] for r in ranges[v][first : last + 1])
    return total / len(plan)


def layouts_of(paths) -> list:
    out = []
    for p in paths:
        with h5py.File(p, "r") as f:
            out.append(frame_layout(f, p))
    return out


def read_clips(paths: list[Path], plan, cold: bool, check: bool = True, layouts=None, reopen: bool = True) -> float:
    """Clips (uint8 frames + timestamps) read as the loader reads them: through direct preads where
    ``layouts`` has one, else h5py; a store opened for each clip (``reopen``: one clip per video per
    epoch on more videos than open handles) or kept open."""
    if cold:
        evict(paths)
    layouts = layouts or [None] * len(paths)
    readers = {}

    def reader(v):
        return DirectReader(paths[v], layouts[v]) if layouts[v] is not None else StoreReader(paths[v], check_complete=False)

    t0 = time.perf_counter()
    for v, idx in plan:
        r = readers.get(v) or reader(v)
        r.read(idx, check=check)
        r.array("timestamps", idx)
        if reopen:
            r.close()
        else:
            readers[v] = r
    dt = time.perf_counter() - t0
    for r in readers.values():
        r.close()
    return len(plan) / dt


def layout_sweep(crops, root: Path, clips: int, chunk_sizes, compressions) -> list[dict]:
    rows = []
    raw_bytes = sum(c["crops"].nbytes for c in crops)
    for comp in compressions:
        for cf in ((0, *chunk_sizes) if comp == "none" else chunk_sizes):  # 0: contiguous (uncompressed only)
            d = root / f"{comp}_{cf}"
            paths, dt = write_stores(crops, d, comp, cf)
            size = sum(p.stat().st_size for p in paths)
            lengths = [len(c["crops"]) for c in crops]
            plan = clip_plan(lengths, clips)
            layouts = layouts_of(paths)
            row = {
                "compression": comp,
                "chunk_frames": cf,
                "bytes_on_disk": size,
                "ratio": raw_bytes / size,
                "write_MB_per_s": raw_bytes / dt / 1e6,
                "direct_reads": all(x is not None for x in layouts),
                "touched_bytes_per_clip": touched_bytes(paths, plan),
                "read_clips_per_s_cold": read_clips(paths, plan, cold=True, layouts=layouts),
                "read_clips_per_s_warm": read_clips(paths, plan, cold=False, layouts=layouts),
                "read_clips_per_s_warm_no_crc": read_clips(paths, plan, cold=False, check=False, layouts=layouts),
                "read_clips_per_s_warm_h5py": read_clips(paths, plan, cold=False),
            }
            rows.append(row)
            log(f"  layout {comp:9s} chunk {cf:2d}: ratio {row['ratio']:.2f}, write {row['write_MB_per_s']:.0f} MB/s, "
                f"clips/s cold {row['read_clips_per_s_cold']:.0f} warm {row['read_clips_per_s_warm']:.0f}")
            shutil.rmtree(d)
    return rows


# ---------------------------------------------------------------- loaders
class DecodeClips(Dataset):
    """VideoMAE's way: the same items as ``base`` (same start, crop box and augmentation), decoded on the fly."""

    def __init__(self, base: ClipDataset, sources: dict[str, Path]):
        self.base, self.sources = base, sources

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        b = self.base
        e = b.entries[index]
        rng = np.random.default_rng([b.seed, b.epoch, index])
        start = sampling.train_start(e.num_frames, b.span, rng)
        idx = sampling.frame_indices(start, b.num_frames, b.sample_stride, e.num_frames)
        frames = decode_frames(self.sources[e.video_id], idx)
        t, h, w = frames.shape[:3]
        crops, _ = crop_frames(frames, tracks_for(t, h, w), CROP)
        if b.output == "float":
            return {"video": b.transform(crops, rng), "start": start}
        window = b.transform.window(crops.shape[1], crops.shape[2], rng)
        return {"video": torch.from_numpy(crops), "window": window.as_tensor(), "start": start}


def decode_frames(path: Path, idx: np.ndarray) -> np.ndarray:
    """Frames ``idx`` of the video's 25 fps grid (ffmpeg's slot rule, as affectube.video.decode), decoded with PyAV."""
    wanted = set(int(i) for i in idx)
    last = int(idx[-1])
    got = {}
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.codec_context.thread_count = 1
        nxt, k = 0, -1
        for frame in c.decode(stream):
            slot = math.floor(float(frame.time) * FPS + 0.5)
            if slot < nxt:
                continue
            nxt, k = slot + 1, k + 1
            if k in wanted:
                got[k] = frame.to_ndarray(format="rgb24")
            if k >= last:
                break
    return np.stack([got[int(i)] for i in idx])


def run_loader(ds: Dataset, workers: int, clips: int, cold_paths=None) -> dict:
    if cold_paths is not None:
        evict(cold_paths)
    g = torch.Generator().manual_seed(0)
    kw = {"prefetch_factor": 4, "persistent_workers": False} if workers else {}
    dl = DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers, generator=g, **kw)
    n = 0
    t_start = time.perf_counter()
    t_first = None
    n_first = 0
    for batch in dl:
        if t_first is None:
            t_first, n_first = time.perf_counter(), len(batch["video"])
        n += len(batch["video"])
        if n >= clips:
            break
    t_end = time.perf_counter()
    del dl
    steady = (n - n_first) / (t_end - t_first) if t_end > t_first else float("nan")
    return {"workers": workers, "clips": n, "clips_per_s": steady, "clips_per_s_with_startup": n / (t_end - t_start),
            "startup_s": t_first - t_start}


# ---------------------------------------------------------------- shards
def build_shards(paths: list[Path], root: Path, shards: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for s in range(shards):
        p = root / f"shard{s}.h5"
        with h5py.File(p, "w", libver=("v110", "latest")) as dst:
            for src_path in paths[s::shards]:
                with h5py.File(src_path, "r") as src:
                    g = dst.create_group(src_path.stem)
                    for name in src:
                        src.copy(src[name], g, name)
                    g.attrs.update(dict(src.attrs))
        out.append(p)
    return out


def shard_index(shard_paths) -> tuple[list[tuple[Path, str, int]], float]:
    evict(shard_paths)
    t0 = time.perf_counter()
    entries = []
    for p in shard_paths:
        with h5py.File(p, "r") as f:
            for name, g in f.items():
                entries.append((p, name, int(g.attrs["num_frames"])))
    return entries, time.perf_counter() - t0


def shard_reads(entries, plan, cold_paths, cold: bool) -> float:
    """Clips read from shard files kept open (a group lookup per clip)."""
    if cold:
        evict(cold_paths)
    files = {}
    t0 = time.perf_counter()
    for v, idx in plan:
        p, name, _ = entries[v]
        f = files.get(p)
        if f is None:
            f = files[p] = h5py.File(p, "r")
        g = f[name]
        read_span(g["frames"], idx, g["frame_crc32"], p)
        g["timestamps"][int(idx[0]) : int(idx[-1]) + 1]
    dt = time.perf_counter() - t0
    for f in files.values():
        f.close()
    return len(plan) / dt


def per_video_vs_shards(paths: list[Path], crops, root: Path, clips: int, shards: int) -> dict:
    shard_paths = build_shards(paths, root / "shards", shards)
    lengths = [len(c["crops"]) for c in crops]
    # per-video index: ClipDataset reads and verifies each store's metadata (not from its in-process cache)
    clips_dataset._INDEX.clear()
    evict(paths)
    t0 = time.perf_counter()
    ClipDataset(paths, NUM_FRAMES, STRIDE, 112)
    index_per_video = time.perf_counter() - t0
    entries, index_shards = shard_index(shard_paths)
    order = {name: i for i, (_, name, _) in enumerate(entries)}
    plan = clip_plan(lengths, clips, seed=1)
    shard_plan = [(order[paths[v].stem], idx) for v, idx in plan]
    layouts = layouts_of(paths)
    out = {
        "stores": len(paths),
        "shards": shards,
        "index_s_per_video_stores_cold": index_per_video,
        "index_s_shards_cold": index_shards,
        "read_clips_per_s_per_video_direct_open_each_clip_cold": read_clips(paths, plan, cold=True, layouts=layouts),
        "read_clips_per_s_per_video_h5py_open_each_clip_cold": read_clips(paths, plan, cold=True),
        "read_clips_per_s_shards_kept_open_cold": shard_reads(entries, shard_plan, shard_paths, cold=True),
        "read_clips_per_s_per_video_direct_open_each_clip_warm": read_clips(paths, plan, cold=False, layouts=layouts),
        "read_clips_per_s_per_video_h5py_open_each_clip_warm": read_clips(paths, plan, cold=False),
        "read_clips_per_s_per_video_h5py_kept_open_warm": read_clips(paths, plan, cold=False, reopen=False),
        "read_clips_per_s_shards_kept_open_warm": shard_reads(entries, shard_plan, shard_paths, cold=False),
    }
    # adding one video: a new store vs an atomic rewrite of one shard (copy + append + rename)
    c = crops[0]
    t0 = time.perf_counter()
    write_stores([{**c, "name": "added_video"}], root / "added", "none", 16)
    out["add_video_s_per_video"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tmp = root / "shards" / ".shard0.tmp"
    shutil.copyfile(shard_paths[0], tmp)
    with h5py.File(tmp, "a") as dst, h5py.File(paths[0], "r") as src:
        g = dst.create_group("added")
        for name in src:
            src.copy(src[name], g, name)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, shard_paths[0])
    out["add_video_s_rewrite_shard"] = time.perf_counter() - t0
    out["shard_bytes"] = shard_paths[0].stat().st_size
    shutil.rmtree(root / "shards")
    shutil.rmtree(root / "added")
    return out


# ---------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--realdata", default=str(REPO.parent / "shared" / "realdata"))
    p.add_argument("--workdir", default=None, help="scratch directory (default: a new temporary one, removed at the end)")
    p.add_argument("--replicas", type=int, default=10, help="copies of the store set for the loader runs")
    p.add_argument("--clips", type=int, default=800, help="clips per loader run (at most one epoch: one clip per store)")
    p.add_argument("--decode-clips", type=int, default=160, help="clips per on-the-fly decoding run")
    p.add_argument("--layout-clips", type=int, default=600, help="clips per layout read test")
    p.add_argument("--compression", default=None, choices=sorted(COMPRESSION), help="layout of the loader runs (default: params.yaml clips)")
    p.add_argument("--chunk-frames", type=int, default=None, help="(default: params.yaml clips)")
    p.add_argument("--quick", action="store_true", help="small numbers everywhere (a smoke run)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "loader.json"))
    args = p.parse_args(argv)
    clips_cfg = yaml.safe_load((REPO / "params.yaml").read_text())["clips"]
    args.compression = args.compression or clips_cfg["compression"]
    args.chunk_frames = clips_cfg["chunk_frames"] if args.chunk_frames is None else args.chunk_frames
    if args.quick:
        args.replicas, args.clips, args.decode_clips, args.layout_clips = 2, 160, 32, 100
    # DataLoader workers run with one torch thread; the main process (0 workers) gets the same,
    # so every configuration computes with one thread per process.
    torch.set_num_threads(1)
    realdata = Path(args.realdata)
    if not (realdata / "README.md").exists():
        raise SystemExit(f"{realdata}: real test material not found")
    scratch = Path(args.workdir or tempfile.mkdtemp(prefix="affectube-bench-loader-"))
    scratch.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "command": "python benchmarks/bench_loader.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "python": platform.python_version(),
                    "torch": torch.__version__, "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version,
                    "torch_threads": torch.get_num_threads(), "scratch": str(scratch)},
        "clip": {"num_frames": NUM_FRAMES, "sample_stride": STRIDE, "size": CROP["size"], "batch": BATCH, "augment": True},
    }
    try:
        videos = source_videos(realdata)
        log(f"decoding and cropping {len(videos)} real videos ...")
        crops = build_crops(videos)
        frames = sum(len(c["crops"]) for c in crops)
        result["source"] = {"videos": len(videos), "frames": frames, "crop_bytes": sum(c["crops"].nbytes for c in crops),
                            "folders": list(FOLDERS)}

        log("store layouts ...")
        chunk_sizes = (8, 16) if args.quick else (8, 16, 32)
        result["layouts"] = layout_sweep(crops, scratch / "layouts", args.layout_clips, chunk_sizes, sorted(COMPRESSION))

        log(f"loader: {args.compression}, chunk {args.chunk_frames}, {args.replicas} replicas ...")
        base, _ = write_stores(crops, scratch / "base", args.compression, args.chunk_frames)
        paths = replicate(base, scratch / "replicas", args.replicas)
        total = sum(p.stat().st_size for p in paths)
        result["stores"] = {"compression": args.compression, "chunk_frames": args.chunk_frames, "replicas": args.replicas,
                            "files": len(paths), "bytes": total}
        datasets = {out: ClipDataset(paths, NUM_FRAMES, STRIDE, CROP["size"], mode="train", augment=True, seed=0, output=out)
                    for out in ("float", "uint8")}
        lengths = [e.num_frames for e in datasets["float"].entries]
        plan = clip_plan(lengths, 2000, seed=2)
        touched = touched_bytes(paths, plan)
        stored_per_raw = total / (args.replicas * result["source"]["crop_bytes"])  # stored bytes per crop byte
        frame_bytes = CROP["size"] ** 2 * 3 * stored_per_raw
        payload = NUM_FRAMES * frame_bytes
        span_bytes = sampling.clip_span(NUM_FRAMES, STRIDE) * frame_bytes
        sources = {c["name"]: c["video"] for c in crops}
        decoders = {out: DecodeClips(ClipDataset(base, NUM_FRAMES, STRIDE, CROP["size"], mode="train", augment=True, seed=0, output=out), sources)
                    for out in ("float", "uint8")}
        dds = decoders["float"]
        same = [(dds[i]["video"] - dds.base[i]["video"]).abs().max().item() for i in range(0, len(base), max(1, len(base) // 8))]
        # the loader and (a) run back to back for each output and worker count, so both see the same machine load
        loader, decode_runs = {"float": [], "uint8": []}, {"float": [], "uint8": []}
        for out in ("float", "uint8"):
            for w in (0, 1, 2):
                raw_now = raw_sequential(paths)  # (b), right before the run it is compared with
                cold = run_loader(datasets[out], w, args.clips, cold_paths=paths)
                cold["raw_sequential_bytes_per_s"] = raw_now["bytes_per_s"]
                dec = run_loader(decoders[out], w, args.decode_clips, cold_paths=list(sources.values()))
                hot = run_loader(datasets[out], w, args.clips)
                loader[out].append({"workers": w, "cold": cold, "warm": hot})
                decode_runs[out].append(dec)
                log(f"  {out:5s} {w} workers: loader cold {cold['clips_per_s']:.0f} clips/s, warm {hot['clips_per_s']:.0f} clips/s; "
                    f"(a) decoding {dec['clips_per_s']:.1f} clips/s")
        result["loader"] = loader
        result["decode_on_the_fly"] = {"runs": decode_runs, "decoder": f"PyAV {av.__version__}, 1 thread",
                                       "max_abs_diff_vs_store_items_normalised": max(same)}

        raw_rates = [r["cold"]["raw_sequential_bytes_per_s"] for out in loader for r in loader[out]]
        raw = {
            "bytes": total,
            "bytes_per_s_runs": raw_rates,
            "bytes_per_s_max": max(raw_rates),
            "span_bytes_per_clip": span_bytes,
            "touched_bytes_per_clip": touched,
            "payload_bytes_per_clip": payload,
        }
        result["raw_sequential_read"] = raw

        result["ratios"], result["summary"] = {}, {"targets": {"vs_decode": 20.0, "vs_raw": 0.5}}
        for out in ("float", "uint8"):
            ratios = []
            for lr, dr in zip(loader[out], decode_runs[out]):
                bps = lr["cold"]["raw_sequential_bytes_per_s"]  # measured right before this run
                ratios.append({
                    "workers": lr["workers"],
                    "vs_decode_on_the_fly": lr["cold"]["clips_per_s"] / dr["clips_per_s"],
                    "raw_clips_per_s_payload_bytes": bps / payload,
                    "raw_clips_per_s_span_bytes": bps / span_bytes,
                    "vs_raw_read_span_bytes": lr["cold"]["clips_per_s"] / (bps / span_bytes),
                    "vs_raw_read_touched_bytes": lr["cold"]["clips_per_s"] / (bps / touched),
                    "vs_raw_read_payload_bytes": lr["cold"]["clips_per_s"] / (bps / payload),
                })
            best = max(loader[out], key=lambda r: r["cold"]["clips_per_s"])
            result["ratios"][out] = ratios
            result["summary"][out] = {
                "best_workers": best["workers"],
                "loader_clips_per_s_cold": best["cold"]["clips_per_s"],
                "decode_clips_per_s_same_workers": decode_runs[out][best["workers"]]["clips_per_s"],
                "raw_read_clips_per_s_payload_bytes": ratios[best["workers"]]["raw_clips_per_s_payload_bytes"],
                "raw_read_clips_per_s_span_bytes": ratios[best["workers"]]["raw_clips_per_s_span_bytes"],
                "ratio_vs_decode": ratios[best["workers"]]["vs_decode_on_the_fly"],
                "ratio_vs_raw_span": ratios[best["workers"]]["vs_raw_read_span_bytes"],
                "ratio_vs_raw_touched": ratios[best["workers"]]["vs_raw_read_touched_bytes"],
                "ratio_vs_raw_payload": ratios[best["workers"]]["vs_raw_read_payload_bytes"],
            }

        log("one store per video vs shards ...")
        result["per_video_vs_shards"] = per_video_vs_shards(base, crops, scratch, args.layout_clips, shards=4)
        result["machine"]["loadavg_end"] = os.getloadavg()
    finally:
        if args.workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    write_json(args.out, result)
    log(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
