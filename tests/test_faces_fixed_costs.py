"""The faces stage's per-clip fixed costs (issue 18): one container open per probe, params sections
validated once per content. Results must be what they were: same values, independent copies, the
same errors every time."""

from __future__ import annotations

import av
import pytest

from affectube.config import sections
from affectube.errors import ConfigError
from affectube.video.probe import probe


def test_probe_opens_the_file_once_and_still_reads_the_rotation(realdata, tmp_path, monkeypatch):
    import subprocess

    from affectube.video.decode import ffmpeg_exe

    src = realdata / "videos/mead/M030_front_angry_level3_001.mp4"
    rot = tmp_path / "rot.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-display_rotation", "90", "-i", str(src), "-c", "copy", str(rot)], check=True)
    opens = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: opens.append(a[0]) or real_open(*a, **k))
    a, b = probe(src), probe(rot)
    assert len(opens) == 2, opens  # one open per probe (the first-frame rotation check used to open it again)
    assert a["rotation"] == 0 and b["rotation"] == 90
    assert (b["width"], b["height"]) == (a["height"], a["width"]) and b["packets"] == a["packets"] > 50


def test_sections_cached_by_content_give_the_same_results_and_errors():
    first = sections({"faces": {"det_size": 160}}, "faces")["faces"]
    again = sections({"faces": {"det_size": 160}}, "faces")["faces"]
    assert first == again and first is not again
    first["det_size"] = 999  # a caller's changes do not reach the next caller
    first["pad"] = None
    assert sections({"faces": {"det_size": 160}}, "faces")["faces"] == again
    # values validation tells apart are not confused by the cache: 1.5 is a valid pad, "1.5" and True are not
    assert sections({"faces": {"pad": 0.5}}, "faces")["faces"]["pad"] == 0.5
    for bad in ("0.5", True, [0.5]):
        for _ in range(2):  # the error is raised every time, naming the caller's source
            with pytest.raises(ConfigError, match=r"^src\d faces: pad"):
                sections({"faces": {"pad": bad}}, "faces", source=f"src{_}")
    assert sections({"decode": {}}, "decode")["decode"] == sections({}, "decode")["decode"]
