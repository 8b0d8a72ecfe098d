"""Store tables (issue 17, point 3): a ClipDataset over clips shard indexes reads each shard's table, opens
no store at start, holds numpy columns (no Python object per clip) and gives the same items as over the stores."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import affectube.clips.dataset as dataset_mod
from affectube.clips.dataset import ClipDataset
from affectube.clips.masking import TubeMaskGenerator
from affectube.clips.store import StoreContent, write_store
from affectube.clips.store_table import EntryTable, table_fingerprints, table_path
from affectube.errors import DataError
from affectube.eval.overlap import fingerprint
from affectube.shards.index import expand_stores, run_shard

from clips_util import content, make_stores
from pretrain_util import one_thread  # noqa: F401  (fixture)


def _shards(tmp_path, stores: list, per: int = 3) -> list[str]:
    """Clips shard indexes (and their tables) over ``stores``, ``per`` stores a shard, as clips-shard writes them."""
    out = []
    for k in range(0, len(stores), per):
        rows = [{"video_id": os.path.basename(s)[:-3], "path": str(s)} for s in stores[k : k + per]]
        index = tmp_path / f"shard-{k // per}.json"
        from affectube.clips.store_table import write_table

        run_shard("clips", "d", str(k // per), rows, lambda r: ("ran", r["path"], None), index,
                  finish=lambda listed, index=index: write_table(listed, table_path(index)))
        out.append(str(index))
    return out


@pytest.fixture()
def shards(tmp_path):
    stores = [str(p) for p in make_stores(tmp_path, n_videos=6, n=40, size=24)]
    empty = StoreContent(**{**content("v6", n=40, size=24).__dict__, "frames": np.zeros((0, 24, 24, 3), np.uint8),
                            "timestamps": np.zeros(0), "face_status": np.zeros(0, np.uint8), "face_score": np.zeros(0, np.float32),
                            "face_boxes": np.zeros((0, 4), np.float32), "valid": np.zeros(0, bool), "frame_labels": {},
                            "error": "no face found"})  # fmt: skip
    stores.append(str(write_store(tmp_path / "v6.h5", empty)))
    return stores, _shards(tmp_path, stores)


def _no_store_opened(monkeypatch):
    def refuse(path, **kw):
        raise AssertionError(f"{path}: a store was opened while the dataset was indexed")

    monkeypatch.setattr(dataset_mod, "open_store", refuse)


def _same_entries(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.__dict__.keys() == y.__dict__.keys()
        for k in x.__dict__:
            if k == "layout":
                assert (x.layout is None) == (y.layout is None)
                if x.layout is not None:  # the table's signature: (size, mtime), the store index's: (inode, size, mtime)
                    assert x.layout.signature[-2:] == y.layout.signature[-2:]
                    assert {**x.layout.__dict__, "signature": 0} == {**y.layout.__dict__, "signature": 0}
            elif k == "clip_targets":  # NaN where a store has no value
                np.testing.assert_array_equal(np.asarray(x.clip_targets, float), np.asarray(y.clip_targets, float))
                assert all(type(v) is float for v in x.clip_targets + y.clip_targets)
            else:
                assert getattr(x, k) == getattr(y, k), k


@pytest.mark.parametrize("mode", ["train", "test"])
def test_a_dataset_over_shard_tables_equals_one_over_the_stores(shards, monkeypatch, mode):
    stores, indexes = shards
    assert expand_stores(indexes) == stores and all(table_path(i).exists() for i in indexes)
    kw = dict(num_frames=6, sample_stride=2, input_size=16, mode=mode, test_clips=2, targets=["valence", "arousal"],
              augment=mode == "train", seed=3, mask_generator=TubeMaskGenerator(grid=(3, 2, 2), ratio=0.5))
    dataset_mod._INDEX.clear()
    ref = ClipDataset(stores, **kw)
    _no_store_opened(monkeypatch)
    ds = ClipDataset(indexes, **kw)
    assert isinstance(ds.entries, EntryTable) and not isinstance(ref.entries, EntryTable)
    assert len(ds) == len(ref) == 6 * (1 if mode == "train" else 2)
    assert ds.skipped == ref.skipped == [(stores[6], "no face found")]
    assert (ds.classes, ds.channels, ds.short, ds.subjects, ds.datasets, ds.video_ids, ds.paths) == (
        ref.classes, ref.channels, ref.short, ref.subjects, ref.datasets, ref.video_ids, ref.paths)
    np.testing.assert_array_equal(ds.labels(), ref.labels())
    assert ds.nbytes() == ref.nbytes()
    for extra in ({"output": "uint8"}, {"output": "uint8", "direct": False}):
        assert ClipDataset(indexes, **kw, **extra).nbytes() == ClipDataset(stores, **kw, **extra).nbytes(), extra
    _same_entries(list(ds.entries), list(ref.entries))
    for i in (0, 3, len(ds) - 1, len(ds) + 2):  # (an index past the end: the next epoch)
        a, b = ds[i], ref[i]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) and not a[k].is_floating_point() else (
                torch.allclose(a[k], b[k], equal_nan=True, rtol=0, atol=0) if isinstance(a[k], torch.Tensor) else a[k] == b[k]), k
    # filters and require_label as over the stores
    sub = dict(kw, subjects=["s0", "s2"], classes=["happy", "sad"], require_label=True)
    a, b = ClipDataset(indexes, **sub), ClipDataset(stores, **sub)
    assert a.video_ids == b.video_ids and len(a.video_ids) == 2
    _same_entries(list(a.entries), list(b.entries))
    # as_test, pickling (DataLoader workers), and no open handle before a read
    t = ds.as_test()
    assert len(t) == 12 and torch.equal(t[5]["video"], ref.as_test()[5]["video"])
    import pickle

    again = pickle.loads(pickle.dumps(ds))
    assert torch.equal(again[1]["video"], ref[1]["video"])


def test_the_table_holds_a_few_hundred_bytes_per_clip_and_fingerprints(shards):
    stores, indexes = shards
    ds = ClipDataset(indexes, num_frames=4, sample_stride=1, input_size=16)
    assert ds.entries.nbytes() / len(ds.entries) < 400, ds.entries.nbytes()
    prints = table_fingerprints(indexes)
    assert prints == {s: fingerprint(s) for s in stores}
    assert table_fingerprints([*indexes, stores[0]]) is None  # not only shard indexes: read the stores


def test_without_a_valid_table_the_stores_are_opened(shards, tmp_path, monkeypatch):
    stores, indexes = shards
    kw = dict(num_frames=4, sample_stride=1, input_size=16)
    ref = ClipDataset(stores, **kw)
    table_path(indexes[0]).unlink()  # a shard without its table (an older clips job)
    ds = ClipDataset(indexes, **kw)
    assert not isinstance(ds.entries, EntryTable)
    _same_entries(list(ds.entries), list(ref.entries))
    # a table that lists other stores than its index: not used
    os.replace(table_path(indexes[1]), table_path(indexes[0]))
    assert table_fingerprints(indexes) is None
    assert not isinstance(ClipDataset(indexes[:1], **kw).entries, EntryTable)
    # a broken table: named, and the stores are read instead
    table_path(indexes[0]).write_bytes(b"not a table")
    assert not isinstance(ClipDataset(indexes[:1], **kw).entries, EntryTable)


def test_a_store_rewritten_after_its_table_fails_its_first_read(shards):
    stores, indexes = shards
    ds = ClipDataset(indexes, num_frames=4, sample_stride=1, input_size=16)
    st = os.stat(stores[0])
    os.utime(stores[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DataError, match="changed since the dataset was indexed"):
        ds[0]


def test_pretraining_on_shard_tables_equals_pretraining_on_the_stores(tmp_path, monkeypatch, one_thread):
    """The pretrain stage given clips shard indexes: the same weights and summary whether it reads their tables
    (no store opened to index or fingerprint them) or, without tables, every store."""
    import json

    import affectube.eval.overlap as overlap
    from safetensors.torch import load_file

    from affectube.cli import main as cli_main
    from pretrain_util import TINY

    stores = [str(p) for p in make_stores(tmp_path / "clips" / "d", n_videos=4, n=20, size=32)]
    indexes = _shards(tmp_path / "clips" / "d", stores, per=2)
    p = {**TINY, "num_frames": 4, "sample_stride": 2, "mask_ratio": 0.75, "batch_size": 2, "steps": 2,
         "warmup_steps": 1, "checkpoint_every": 1, "recon_clips": 1}  # fmt: skip
    data = {"datasets": {"d": {"adapter": "folder", "root": "videos/d"}}, "pretrain": ["d"], "finetune": "d", "transductive": True}
    cfg = json.dumps({"data": data, "pretrain": p})

    def run(out):
        assert cli_main(["pretrain", "--cfg", cfg, "--stores", *indexes, "--out-dir", str(out)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        timing = {"clips_per_s", "tokens_per_s", "data_wait", "wall_time_s"}  # wall-clock measurements
        return load_file(str(out / "encoder.safetensors")), {k: v for k, v in summary.items() if k not in timing}

    with monkeypatch.context() as m:
        _no_store_opened(m)
        m.setattr(overlap, "fingerprint", lambda path: pytest.fail(f"{path}: fingerprinted by opening it"))
        with_tables = run(tmp_path / "a")
    for i in indexes:
        table_path(i).unlink()
    dataset_mod._INDEX.clear()
    without = run(tmp_path / "b")
    a, b = with_tables[0], without[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "pretrained weights differ"
    assert with_tables[1] == without[1] and with_tables[1]["data"]["clips"] == 4


def test_a_store_the_table_cannot_read_leaves_the_shard_without_a_table(shards, tmp_path):
    from affectube.shards.clips import table

    stores, indexes = shards
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not a store")
    table([*stores[:2], str(bad)], indexes[0])  # an old table is not left behind either
    assert not table_path(indexes[0]).exists()


@pytest.mark.parametrize("compression", ["none", "lzf"])
def test_rows_the_writers_recorded_make_the_same_table_and_a_changed_store_is_reopened(tmp_path, monkeypatch, compression):
    """The clips shard job's table from the rows each StoreWriter made from its read-back (kept in the key files)
    is the table made by opening every store; a store whose file changed since (size or mtime) is opened again."""
    import affectube.clips.readers as readers_mod
    from affectube.clips.store_table import read_table, write_table

    stores, known = [], {}
    for i, n in enumerate([30, 41, 0]):
        c = content(f"v{i}", n=n, size=24, subject=f"s{i}", seed=i, valence=0.2 * i)
        path = write_store(tmp_path / f"v{i}.h5", c, compression, 8 if compression != "none" else 0)
        assert c.table is not None and c.table["row"]["video_id"] == f"v{i}"
        stores.append(str(path))
        known[str(path)] = c.table
    write_table(stores, tmp_path / "opened.npz")
    opened = []
    real_open = readers_mod.open_store
    monkeypatch.setattr(readers_mod, "open_store", lambda p, **kw: opened.append(str(p)) or real_open(p, **kw))
    write_table(stores, tmp_path / "known.npz", known)
    assert opened == []  # every row from the writers
    a, b = read_table(tmp_path / "opened.npz"), read_table(tmp_path / "known.npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    os.utime(stores[1], ns=(os.stat(stores[1]).st_atime_ns, os.stat(stores[1]).st_mtime_ns + 10**9))
    write_table(stores, tmp_path / "changed.npz", known)
    assert opened == [stores[1]]
    assert read_table(tmp_path / "changed.npz")["mtime_ns"][1] == os.stat(stores[1]).st_mtime_ns


def test_order_video_gives_one_order_whether_stores_come_per_video_or_shard_by_shard(shards, tmp_path, monkeypatch):
    """Pretraining's ``order="video"``: the same videos in the same order (dataset, then video id) over the stores
    in any order and over shard indexes whose shards interleave them, with the same items; ``given`` keeps the
    order they came in."""
    stores, _ = shards
    scrambled = [stores[i] for i in (5, 0, 3, 1, 4, 2, 6)]
    (tmp_path / "other").mkdir()
    indexes = _shards(tmp_path / "other", scrambled, per=2)  # shards that interleave the videos
    kw = dict(num_frames=6, sample_stride=2, input_size=16, mode="train", augment=True, seed=3)
    ref = ClipDataset(stores, **kw, order="video")
    assert ref.video_ids == sorted(ref.video_ids) == [f"v{i}" for i in range(6)]
    assert ClipDataset(scrambled, **kw).video_ids == [f"v{i}" for i in (5, 0, 3, 1, 4, 2)]  # given
    for source in (scrambled, indexes):
        ds = ClipDataset(source, **kw, order="video")
        assert ds.video_ids == ref.video_ids and ds.paths == ref.paths, source
        for i in (0, 4):
            assert torch.equal(ds[i]["video"], ref[i]["video"])
    _no_store_opened(monkeypatch)
    assert isinstance(ClipDataset(indexes, **kw, order="video").entries, EntryTable)  # from the tables, reordered
    with pytest.raises(ValueError, match="order"):
        ClipDataset(stores, **kw, order="random")
