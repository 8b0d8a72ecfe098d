"""finetune.input: delta (the demo's recipe, issue 14): the encoder reads each clip frame minus the clip's
first frame, so whatever does not move within a clip (who the face is, lighting, background) cannot change
the prediction; frames (the default) reads the frames as they are."""

from __future__ import annotations

import torch

from affectube.train import supervised as S

TINY = {"model": "videomae", "size": "tiny", "depth": 1, "width": 64, "input_size": 32, "num_frames": 4, "sample_stride": 1,
        "tubelet": 2, "patch": 16, "decoder_width": 32, "decoder_depth": 1}
FT = {"mode": "finetune", "init": "scratch", "backbone": "encoder", "head": "linear", "drop_path": 0.0, "gru_hidden": 16,
      "head_dropout": 0.0, "pool_norm": "fc_norm", "head_init_scale": 1.0}


def _outputs(ft: dict, video: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    task = S.Task("both", classes=["a", "b", "c"], targets=["valence"])
    model = S.build_model(ft, task, S.build_backbone(ft, TINY, None)).eval()
    with torch.no_grad():
        out = model(video)
    return torch.cat([out["logits"].flatten(1), out["reg"].flatten(1)], 1)


def test_delta_ignores_what_does_not_move_and_frames_does_not():
    g = torch.Generator().manual_seed(1)
    video = torch.randn(2, 3, 4, 32, 32, generator=g)
    still = torch.randn(2, 3, 1, 32, 32, generator=g).expand(-1, -1, 4, -1, -1)  # another face, the same in every frame
    delta = {**FT, "input": "delta"}
    torch.testing.assert_close(_outputs(delta, video + still), _outputs(delta, video), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(_outputs(FT, video + still), _outputs(FT, video), atol=1e-3)  # frames (and runs before the param)
    assert not torch.allclose(_outputs(delta, video), _outputs(FT, video), atol=1e-3)
    moved = video.clone()
    moved[:, :, 2:] += 0.5  # a change within the clip does reach the model
    assert not torch.allclose(_outputs(delta, moved), _outputs(delta, video), atol=1e-3)
