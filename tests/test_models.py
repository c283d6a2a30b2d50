"""One harness for every model family: build, forward, backward, export, reload, same output."""

from __future__ import annotations

import json
import re

import pytest
import torch

from medseg.errors import ConfigError, ModelError
from medseg.models import create_model, get_model_spec, list_models
from medseg.models.export import load_exported, save_export

# every registered family's tiny config comes from its registry contract: a family registered
# without one fails test_every_family_declares_a_contract
TINY = {name: get_model_spec(name).tiny_config for name in list_models() if get_model_spec(name).tiny_config}
DENSE = sorted(name for name in TINY if not get_model_spec(name).promptable and get_model_spec(name).task == "semantic")
INSTANCE = sorted(name for name in TINY if get_model_spec(name).task == "instance")
INPUT = {3: (2, 1, 16, 16, 8), 2: (2, 1, 32, 32)}


def _info(name: str, config: dict) -> dict:
    sd = get_model_spec(name).spatial_dims
    return {"model": {"name": name, "config": config}, "spatial_dims": sd,
            "labels": {"0": "background", "1": "liver", "2": "spleen"},
            "preprocessing": {"orientation": "RAS", "target_spacing_mm": [2.0, 2.0, 2.5],
                              "normalization": {"kind": "ct", "clip": [-160.0, 240.0], "mean": 60.0, "std": 50.0}},
            "inference": {"patch_size": list(INPUT[sd][2:]), "overlap": 0.5, "batch_size": 2},
            "postprocessing": {"1": {"largest_component": True, "min_size_mm3": 0, "fill_holes": False}}}


def test_builtin_models_registered():
    assert {"unet2d", "unet3d", "deeplabv3plus", "segformer"} <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_every_family_declares_a_contract(name):
    spec = get_model_spec(name)
    assert spec.tiny_config is not None, f"model {name!r} is registered without a tiny_config"
    multiple = spec.size_multiple(spec.tiny_config)
    assert len(multiple) == spec.spatial_dims and min(multiple) >= 1
    assert set(spec.weight_keys) <= set(spec.defaults), "weight_keys must be builder options"
    if max(multiple) > 1:  # a size off the multiple is refused with the factor in the message
        with pytest.raises(ConfigError, match=re.escape(f"multiple of {list(multiple)}")):
            spec.check_size([m + 1 for m in multiple], spec.tiny_config, what="patch")
    spec.check_size(list(multiple), spec.tiny_config, what="patch")


@pytest.mark.parametrize("name", DENSE)
def test_declared_multiple_is_what_the_network_takes(name):
    """A dense family's declared input multiple is enough: a forward at exactly that size keeps the size."""
    spec = get_model_spec(name)
    multiple = spec.size_multiple(spec.tiny_config)
    model = create_model(name, **spec.tiny_config).eval()
    x = torch.randn(1, spec.tiny_config.get("in_channels", 1), *[2 * m for m in multiple])
    with torch.no_grad():
        assert model(x).shape[2:] == x.shape[2:]


def _loss_falls(model: torch.nn.Module, x: torch.Tensor, steps: int = 6) -> bool:
    """Cross-entropy on one fixed batch and random target falls over a few Adam steps."""
    target = torch.randint(0, 3, (x.shape[0], *x.shape[2:]), generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        out = model(x)
        out = out[:, 0] if out.ndim == x.ndim + 1 else out
        loss = torch.nn.functional.cross_entropy(out.float(), target)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    return losses[-1] < losses[0]


@pytest.mark.parametrize("name", DENSE)
def test_model_harness(name, tmp_path):
    torch.manual_seed(0)
    spec = get_model_spec(name)
    model = create_model(name, **TINY[name])
    x = torch.randn(INPUT[spec.spatial_dims])
    model.train()
    out = model(x)
    out = out[:, 0] if out.ndim == x.ndim + 1 else out  # deep supervision heads
    assert out.shape == (x.shape[0], 3, *x.shape[2:])
    out.float().mean().backward()
    params = [p for p in model.parameters() if p.requires_grad]
    assert params[-1].grad is not None and params[0].grad is not None  # head and first layer
    assert sum(p.grad is not None for p in params) > 0.5 * len(params)
    assert _loss_falls(model, x)
    model.eval()
    with torch.no_grad():
        ref = model(x)
    assert ref.shape == (x.shape[0], 3, *x.shape[2:])
    folder = save_export(tmp_path / "export", model, _info(name, TINY[name]))
    info = json.loads((folder / "model.json").read_text())
    assert info["format_version"] == 1 and len(info["sha256"]) == 64 and "torch" in info["versions"]
    state = torch.load(folder / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    loaded, info2 = load_exported(tmp_path, device="cpu")  # RUN_DIR form: finds export/
    assert not loaded.training and info2["labels"]["1"] == "liver"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref)


def test_unet3d_deep_supervision_one_tensor_in_eval():
    model = create_model("unet3d", out_channels=2, filters=[4, 8, 16, 32], deep_supervision=True, deep_supr_num=2)
    x = torch.randn(1, 1, 16, 16, 16)
    model.train()
    assert model(x).shape == (1, 3, 2, 16, 16, 16)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (1, 2, 16, 16, 16)


def test_unknown_model_and_bad_config():
    with pytest.raises(KeyError, match="unknown model 'unet4d'; known: .*unet2d, unet3d"):
        create_model("unet4d")
    with pytest.raises(ConfigError, match="unknown config key.*chanels.*accepted:.*in_channels"):
        create_model("unet3d", chanels=3)
    with pytest.raises(ConfigError, match="arch 'vnet' is not known; valid: dynunet, unet"):
        create_model("unet3d", arch="vnet")
    with pytest.raises(ConfigError, match="encoder_name 'resnet999'"):
        create_model("unet2d", encoder_name="resnet999")


def test_export_detects_tampering_and_mismatch(tmp_path):
    model = create_model("unet3d", **TINY["unet3d"])
    folder = save_export(tmp_path, model, _info("unet3d", TINY["unet3d"]))
    info = json.loads((folder / "model.json").read_text())
    info["model"]["config"]["filters"] = [8, 16, 32]
    (folder / "model.json").write_text(json.dumps(info))
    with pytest.raises(ModelError, match="do not fit"):
        load_exported(folder)
    (folder / "model.pt").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="SHA-256"):
        load_exported(folder)


def test_unet2d_local_encoder_weights(tmp_path):
    src = create_model("unet2d", **TINY["unet2d"])
    path = tmp_path / "enc.pt"
    torch.save(src.encoder.state_dict(), path)
    dst = create_model("unet2d", **TINY["unet2d"], encoder_weights_path=str(path))
    for k, v in src.encoder.state_dict().items():
        torch.testing.assert_close(dst.encoder.state_dict()[k], v)
    with pytest.raises(ModelError, match="not found"):
        create_model("unet2d", **TINY["unet2d"], encoder_weights_path=str(tmp_path / "none.pt"))


@pytest.mark.parametrize("name", sorted(n for n in TINY if get_model_spec(n).promptable))
def test_promptable_model_harness(name, tmp_path):
    """Promptable families (SAM2) have no plain forward: build, export, reload, identical weights and encoder output."""
    from medseg.sam.export import export_sam2

    torch.manual_seed(0)
    net = create_model(name, **TINY[name])
    folder = export_sam2(net, tmp_path / "export")
    loaded, info = load_exported(folder, device="cpu")
    assert info["inference"]["mode"] == "prompted" and info["spatial_dims"] == get_model_spec(name).spatial_dims
    assert loaded.state_dict().keys() == net.state_dict().keys()
    for key, value in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    x = torch.randn(1, 3, net.image_size, net.image_size)
    with torch.no_grad():
        torch.testing.assert_close(loaded.image_encoder(x)["vision_features"], net.image_encoder(x)["vision_features"])


def test_schema_1_exports_still_load(tmp_path):
    """model.json written before ModelExport (no schema_version; SAM2 training keys in model.config) loads."""
    from medseg.models.export import SCHEMA_VERSION, ModelExport, read_export

    model = create_model("unet3d", **TINY["unet3d"])
    folder = save_export(tmp_path / "e", model, _info("unet3d", TINY["unet3d"]))
    data = json.loads((folder / "model.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION == 2
    del data["schema_version"]
    (folder / "model.json").write_text(json.dumps(data))
    export = read_export(folder)
    assert export.schema_version == 1 and export.labels == {0: "background", 1: "liver", 2: "spleen"}
    loaded, info = load_exported(folder)
    assert info["schema_version"] == 2 and isinstance(loaded, torch.nn.Module)
    # a schema-1 SAM2-style config key the builder no longer takes is dropped, not an error
    data["model"]["config"]["freeze_image_encoder"] = True
    (folder / "model.json").write_text(json.dumps(data))
    load_exported(folder)
    data["schema_version"] = 2
    (folder / "model.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="freeze_image_encoder"):
        load_exported(folder)  # in the current schema an unknown key is an error again
    with pytest.raises(ModelError, match="schema_version 7"):
        ModelExport.from_json({**data, "schema_version": 7})


def _instance_batch(n_images: int = 2, size: int = 64) -> dict:
    """Two images with one bright square each, as ultralytics' segment loss takes them (overlap masks)."""
    img = torch.zeros(n_images, 3, size, size)
    masks = torch.zeros(n_images, size, size)
    boxes = []
    for i in range(n_images):
        y0, x0, s = 8 + 10 * i, 12 + 6 * i, 24
        img[i, :, y0:y0 + s, x0:x0 + s] = 1.0
        masks[i, y0:y0 + s, x0:x0 + s] = 1  # instance 1 of image i
        boxes.append([(x0 + s / 2) / size, (y0 + s / 2) / size, s / size, s / size])
    return {"img": img, "batch_idx": torch.arange(n_images).float(), "cls": torch.tensor([[0.0], [1.0]][:n_images]),
            "bboxes": torch.tensor(boxes), "masks": masks}


@pytest.mark.parametrize("name", INSTANCE)
def test_instance_model_harness(name, tmp_path):
    """Instance families (YOLO-seg): build, ultralytics' own loss falls, export, reload, identical eval outputs."""
    pytest.importorskip("ultralytics")
    from ultralytics.cfg import get_cfg

    torch.manual_seed(0)
    model = create_model(name, **TINY[name])
    model.args = get_cfg()  # the loss reads its gains (box, cls, dfl, overlap_mask) here
    batch = _instance_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss, _items = model.loss(batch)
        loss.sum().backward()
        optimizer.step()
        losses.append(float(loss.sum().detach()))
    assert losses[-1] < losses[0], losses
    model.eval()
    x = batch["img"]
    with torch.no_grad():
        ref = model(x)[0]
    info = {**_info(name, TINY[name]), "labels": {"0": "background", "1": "liver", "2": "spleen"}}
    folder = save_export(tmp_path / "export", model, info)
    state = torch.load(folder / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    loaded, info2 = load_exported(tmp_path, device="cpu")
    assert not loaded.training and info2["model"]["name"] == name
    with torch.no_grad():
        out = loaded(x)[0]
    torch.testing.assert_close(out[0], ref[0])  # [B, 4 + nc + 32, anchors]: boxes, scores, mask coefficients
    torch.testing.assert_close(out[1], ref[1])  # protos
