"""Backbone factory: offline EfficientNet-Lite0 weights map completely and compute exactly what
the raw weight file describes; other weight sources and bad inputs behave."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from embedder.backbones import (
    BackboneError,
    _efficientnet_lite0_file,
    create_backbone,
    map_state_dict_by_order,
)

# EfficientNet-Lite0 stages: (repeats, kernel, first stride, expansion, out channels).
LITE0_STAGES = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
]


def _raw_state() -> dict[str, torch.Tensor]:
    return torch.load(_efficientnet_lite0_file(), map_location="cpu", weights_only=True)


def _bn(x, raw, prefix, eps):
    return F.batch_norm(
        x,
        raw[f"{prefix}.running_mean"],
        raw[f"{prefix}.running_var"],
        raw[f"{prefix}.weight"],
        raw[f"{prefix}.bias"],
        False,
        0.0,
        eps,
    )


def reference_lite0(raw: dict[str, torch.Tensor], x: torch.Tensor, eps: float) -> torch.Tensor:
    """EfficientNet-Lite0 written out from the raw (lukemelas-named) weight file alone."""
    x = F.relu6(_bn(F.conv2d(x, raw["_conv_stem.weight"], stride=2, padding=1), raw, "_bn0", eps))
    index = 0
    in_ch = 32
    for repeats, kernel, stride, expand, out_ch in LITE0_STAGES:
        for r in range(repeats):
            p = f"_blocks.{index}"
            s = stride if r == 0 else 1
            h = x
            if expand != 1:
                h = F.relu6(
                    _bn(F.conv2d(h, raw[f"{p}._expand_conv.weight"]), raw, f"{p}._bn0", eps)
                )
            dw = raw[f"{p}._depthwise_conv.weight"]
            h = F.conv2d(h, dw, stride=s, padding=kernel // 2, groups=dw.shape[0])
            h = F.relu6(_bn(h, raw, f"{p}._bn1", eps))
            h = _bn(F.conv2d(h, raw[f"{p}._project_conv.weight"]), raw, f"{p}._bn2", eps)
            x = h + x if (s == 1 and in_ch == out_ch) else h
            in_ch = out_ch
            index += 1
    x = F.relu6(_bn(F.conv2d(x, raw["_conv_head.weight"]), raw, "_bn1", eps))
    x = x.mean(dim=(2, 3))
    return F.linear(x, raw["_fc.weight"], raw["_fc.bias"])


def test_offline_lite0_maps_every_tensor_of_the_weight_file():
    raw = {k: v for k, v in _raw_state().items() if not k.endswith("num_batches_tracked")}
    backbone = create_backbone(keep_classifier=True)
    loaded = {
        k: v
        for k, v in backbone.model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    assert len(raw) == len(loaded) == 247
    for (raw_key, raw_val), (key, val) in zip(raw.items(), loaded.items(), strict=True):
        assert torch.equal(raw_val, val), f"{raw_key} -> {key} differs"


def test_offline_lite0_outputs_equal_the_raw_weight_files_network():
    backbone = create_backbone(keep_classifier=True)
    eps = backbone.model.bn1.eps
    torch.manual_seed(0)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ours = backbone(images)
        reference = reference_lite0(_raw_state(), images, eps)
    assert ours.shape == (2, 1000)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


def test_default_backbone_gives_pooled_features_and_its_preprocessing():
    backbone = create_backbone()
    assert backbone.num_features == 1280
    assert backbone.preprocess.input_size == 224
    assert backbone.weights_source.startswith("offline:")
    with torch.no_grad():
        assert backbone(torch.zeros(1, 3, 224, 224)).shape == (1, 1280)


def test_local_checkpoint_in_timm_names_loads(tmp_path):
    source = create_backbone(weights=None)
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": source.model.state_dict()}, path)
    loaded = create_backbone(weights=path)
    assert loaded.weights_source == "file:weights.pt"
    for key, value in source.model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key])


def test_local_checkpoint_in_lukemelas_names_loads_by_order(tmp_path):
    path = tmp_path / "lukemelas.pth"
    torch.save(_raw_state(), path)
    from_file = create_backbone(weights=path)
    offline = create_backbone()
    for key, value in offline.model.state_dict().items():
        assert torch.equal(value, from_file.model.state_dict()[key])


def test_other_timm_models_build_without_downloading():
    backbone = create_backbone("resnet18", weights=None)
    assert backbone.num_features == 512
    with pytest.raises(BackboneError, match="no offline weights"):
        create_backbone("resnet18")  # offline weights are only packaged for Lite0


@pytest.mark.parametrize(
    ("name", "weights", "message"),
    [
        ("no_such_model_xyz", None, "unknown timm model"),
        ("efficientnet_lite0", "/nonexistent/weights.pt", "not found"),
    ],
)
def test_bad_backbone_requests_fail_with_clear_errors(name, weights, message):
    with pytest.raises(BackboneError, match=message):
        create_backbone(name, weights=weights)


def test_weights_of_another_architecture_are_refused_naming_the_mismatch(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save(create_backbone("resnet18", weights=None).model.state_dict(), path)
    with pytest.raises(BackboneError):
        create_backbone("efficientnet_lite0", weights=path)


def test_map_by_order_reports_the_first_shape_mismatch():
    source = {"a": torch.zeros(3), "b": torch.zeros(2, 2)}
    target = {"x": torch.zeros(3), "y": torch.zeros(4)}
    with pytest.raises(BackboneError, match="tensor 1"):
        map_state_dict_by_order(source, target)
