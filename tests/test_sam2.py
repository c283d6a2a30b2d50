"""SAM2: build, prompts, 2D prompting, propagation, fine-tuning, checkpoints, CLI.

Every model here is randomly initialised (no weights are downloaded, no network). The
shared model is SAM2.1 Hiera-tiny at image size 256 with a shallower trunk and one
memory-attention layer (hydra overrides), so that the whole file runs in about a minute.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from medseg.data.phantom import make_phantom  # noqa: E402
from medseg.errors import ConfigError, InputError  # noqa: E402
from medseg.models.sam2 import build_sam2, load_sam2, read_checkpoint, resolve_config, save_checkpoint  # noqa: E402
from medseg.sam.preprocess import Preprocess, scale_volume, slice_to_tensor, window_ct  # noqa: E402
from medseg.sam.prompts import (  # noqa: E402
    SlicePrompt,
    load_prompts,
    prompt_from_coordinates,
    prompts_from_mask,
    save_prompts,
)
from medseg.sam.segment import SlicePredictor, fill_small_holes, propagate, segment_slice  # noqa: E402
from medseg.volume import Volume  # noqa: E402

SMALL = ["model.image_encoder.trunk.stages=[1,1,2,1]", "model.image_encoder.trunk.global_att_blocks=[3]",
         "model.memory_attention.num_layers=1"]
NET_CONFIG = {"config": "tiny", "image_size": 256, "overrides": SMALL}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: much faster than 2 contended threads on a shared CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_sam2("tiny", image_size=256, device="cpu", overrides=SMALL)


@pytest.fixture(scope="module")
def phantom():
    # non-cubic on purpose: any mix-up of axes changes a shape
    return make_phantom((40, 36, 12), (7.0, 8.0, 20.0), seed=3)


# ----------------------------------------------------------------------------- model
def test_config_names_and_bad_overrides():
    assert resolve_config("tiny") == "sam2.1_hiera_t"
    assert resolve_config("sam2_hiera_large") == "sam2_hiera_l"
    assert resolve_config("configs/sam2.1/sam2.1_hiera_b+.yaml") == "sam2.1_hiera_b+"
    with pytest.raises(ConfigError, match="unknown SAM2 config 'huge'.*sam2.1_hiera_t"):
        resolve_config("huge")
    with pytest.raises(ConfigError, match="not allowed"):
        build_sam2("tiny", image_size=256, overrides=["model._target_=os.system"])
    with pytest.raises(ConfigError, match="multiple of 32"):
        build_sam2("tiny", image_size=250)


def test_build_tiny_on_cpu(net):
    full = build_sam2("tiny", image_size=256, device="cpu")
    assert 35e6 < sum(p.numel() for p in full.parameters()) < 45e6  # Hiera-T SAM2.1: 38.9 M
    assert full.image_size == 256 and full.device.type == "cpu" and not full.training
    assert net.medseg_sam2 == {"config": "sam2.1_hiera_t", "image_size": 256, "overrides": SMALL}
    assert type(net).__name__ == "SAM2VideoPredictor"


def test_registry_builds_sam2():
    import medseg.models.sam2  # noqa: F401  (registers "sam2")
    from medseg.models import create_model, get_model_spec

    spec = get_model_spec("sam2")
    assert spec.spatial_dims == 2 and spec.training_module == "medseg.training.sam2:Sam2FinetuneModule"
    model = create_model("sam2", **NET_CONFIG, in_channels=1, out_channels=9)
    assert model.image_size == 256
    with pytest.raises(ConfigError, match="in_channels"):
        create_model("sam2", **NET_CONFIG, in_channels=2)


def test_wrong_checkpoints_raise_input_error(net, tmp_path):
    path = tmp_path / "ok.pt"
    save_checkpoint(net, path)
    state, settings = read_checkpoint(path)
    assert settings["config"] == "sam2.1_hiera_t" and settings["image_size"] == 256
    # the full tiny trunk is another architecture (other block widths and count)
    with pytest.raises(InputError, match=r"ok.pt: weights do not fit sam2.1_hiera_t .*other architecture"):
        build_sam2("tiny", image_size=256, checkpoint=path)
    # a tensor of another shape: another architecture
    bad = dict(state)
    key = "sam_mask_decoder.iou_prediction_head.layers.0.weight"
    bad[key] = torch.zeros(3, 3)
    torch.save({"model": bad}, tmp_path / "shape.pt")
    with pytest.raises(InputError, match="other architecture"):
        load_sam2(tmp_path / "shape.pt", config="tiny", image_size=256, overrides=SMALL)
    dropped = {k: v for k, v in state.items() if not k.startswith("sam_mask_decoder.")}
    torch.save({"model": dropped}, tmp_path / "missing.pt")
    with pytest.raises(InputError, match=r"missing.pt: weights do not fit .* missing key"):
        load_sam2(tmp_path / "missing.pt", config="tiny", image_size=256, overrides=SMALL)
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, tmp_path / "unet.pt")
    with pytest.raises(InputError, match="not a SAM2 checkpoint"):
        load_sam2(tmp_path / "unet.pt", config="tiny")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt"):
        load_sam2(tmp_path / "junk.pt", config="tiny")
    torch.save({"model": state}, tmp_path / "anonymous.pt")  # Meta-style, no medseg settings, unknown name
    with pytest.raises(ConfigError, match="pass config="):
        load_sam2(tmp_path / "anonymous.pt")


# ----------------------------------------------------------------------------- preprocessing
def test_preprocess_ct_window_and_mr_percentiles():
    assert window_ct(np.array([-1000.0, 40.0, 240.0, 3000.0]), 40, 400).tolist() == [0.0, 127.5, 255.0, 255.0]
    ct = Volume(np.array([[[-1000.0, 40.0]]]), meta={"modality": "CT"})
    assert Preprocess().resolved_mode(ct) == "ct"
    np.testing.assert_allclose(scale_volume(ct, Preprocess(window="lung")), [[[59.5, 236.3]]], atol=0.01)  # (HU + 1350) * 255 / 1500
    assert scale_volume(ct, Preprocess(level=0, width=100)).tolist() == [[[0.0, 229.5]]]  # (40 + 50) * 2.55
    mr = Volume(np.arange(1, 1001, dtype=np.float32).reshape(10, 10, 10))
    s = scale_volume(mr, Preprocess(percentiles=(0, 100)))
    assert s.min() == 0 and s.max() == 255 and Preprocess().resolved_mode(mr) == "mr"
    t = slice_to_tensor(s[:, :, 0], 64)
    assert tuple(t.shape) == (3, 64, 64)
    with pytest.raises(ConfigError, match="unknown CT window"):
        Preprocess(window="kidney")
    with pytest.raises(ConfigError, match="both level and width"):
        Preprocess(level=40)


# ----------------------------------------------------------------------------- prompts
def test_prompt_coordinates_world_voxel_json(phantom, tmp_path):
    image, _ = phantom
    voxel = prompt_from_coordinates(image, axis=2, points=[[10, 12, 5], [20, 20, 5]], point_labels=[1, 0],
                                    box=[[5, 6, 5], [30, 25, 5]])
    world = prompt_from_coordinates(
        image, axis=2, coordinates="world",
        points=image.world_coordinates(np.array([[10, 12, 5], [20, 20, 5]])), point_labels=[1, 0],
        box=image.world_coordinates(np.array([[5, 6, 5], [30, 25, 5]])))
    assert world.slice_index == voxel.slice_index == 5
    np.testing.assert_allclose(world.points, [[10, 12], [20, 20]], atol=1e-6)
    np.testing.assert_allclose(world.box, [5, 6, 30, 25], atol=1e-6)
    save_prompts([voxel], tmp_path / "p.json", volume=image)
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["coordinates"] == "world"
    back = load_prompts(tmp_path / "p.json", image)[0]
    np.testing.assert_allclose(back.points, voxel.points, atol=1e-3)
    np.testing.assert_allclose(back.box, voxel.box, atol=1e-3)
    assert back.point_labels.tolist() == [1, 0] and back.slice_index == 5
    axis0 = prompt_from_coordinates(image, axis=0, points=[[7, 3, 4]])
    assert axis0.slice_index == 7 and axis0.points.tolist() == [[3, 4]]
    with pytest.raises(InputError, match="different slices"):
        prompt_from_coordinates(image, axis=2, points=[[10, 12, 5], [10, 12, 6]])
    with pytest.raises(InputError, match="outside"):
        prompt_from_coordinates(image, axis=2, points=[[100, 12, 5]])
    (tmp_path / "bad.json").write_text('{"prompts": [{"object_id": 1, "pointz": [[1, 2, 3]]}]}')
    with pytest.raises(InputError, match=r"bad.json: prompt #0: unknown key\(s\) pointz"):
        load_prompts(tmp_path / "bad.json", image)


def test_prompts_from_mask(phantom):
    _, labels = phantom
    liver = labels.array == 1
    areas = liver.sum(axis=(0, 1))
    prompts = prompts_from_mask(labels, kind="box+points", labels=[1], n_positive=3, n_negative=2, seed=1)
    assert len(prompts) == 1
    p = prompts[0]
    assert p.slice_index == int(np.argmax(areas))
    plane = liver[:, :, p.slice_index]
    rows, cols = np.nonzero(plane)
    assert p.box.tolist() == [rows.min(), cols.min(), rows.max(), cols.max()]
    pts = p.points.astype(int)
    assert all(plane[a, b] for (a, b), lab in zip(pts, p.point_labels) if lab == 1)
    assert not any(plane[a, b] for (a, b), lab in zip(pts, p.point_labels) if lab == 0)
    assert p.point_labels.tolist().count(1) == 3 and p.point_labels.tolist().count(0) == 2
    every = prompts_from_mask(labels, kind="box", labels=[1], key_slices="all")
    assert [q.slice_index for q in every] == np.flatnonzero(areas).tolist()
    assert prompts_from_mask(labels, kind="mask", labels=[1])[0].mask.shape == (40, 36)


def test_fill_small_holes():
    m = np.ones((9, 9), bool)
    m[4, 4] = False
    m[0:3, 0:3] = False
    assert fill_small_holes(m, 1)[4, 4] and not fill_small_holes(m, 1)[0, 0]
    assert fill_small_holes(m, 9).all()


# ----------------------------------------------------------------------------- 2D prompting
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_segment_slice_point_box_mask_shapes(net, phantom, axis):
    image, labels = phantom
    index = image.spatial_shape[axis] // 2
    plane_shape = tuple(n for a, n in enumerate(image.spatial_shape) if a != axis)
    predictor = SlicePredictor(net, image)
    enc = predictor.encode(index, axis)
    calls = {"n": 0}
    original = net.forward_image

    def counting(x):
        calls["n"] += 1
        return original(x)

    net.forward_image = counting
    try:
        plane_mask = np.take(labels.array, index, axis) > 0
        results = [
            enc.predict(points=[[plane_shape[0] // 2, plane_shape[1] // 2]]),
            enc.predict(box=[2, 3, plane_shape[0] - 5, plane_shape[1] - 4]),
            enc.predict(points=[[5, 5], [plane_shape[0] // 2, plane_shape[1] // 2]], labels=[0, 1],
                        box=[2, 3, plane_shape[0] - 5, plane_shape[1] - 4]),
            enc.predict(mask=plane_mask),
        ]
        assert predictor.encode(index, axis) is enc
    finally:
        del net.forward_image
    assert calls["n"] == 0  # the slice was encoded once, before the prompts
    for r in results:
        assert r.mask.shape == plane_shape and r.logits.shape == plane_shape and r.mask.dtype == bool
        assert 0.0 <= r.score <= 1.5
        np.testing.assert_array_equal(r.mask, fill_small_holes(r.logits > 0, enc.fill_hole_area))
    vol = enc.to_volume(results[1].mask, object_id=3)
    assert vol.same_grid(image) and vol.is_label
    expected = np.zeros(image.spatial_shape, bool)
    idx = [slice(None)] * 3
    idx[axis] = index
    expected[tuple(idx)] = results[1].mask
    np.testing.assert_array_equal(vol.array == 3, expected)
    assert set(np.unique(vol.array)) <= {0, 3}


def test_segment_slice_function_world_box(net, phantom):
    image, _ = phantom
    corners = image.world_coordinates(np.array([[5, 6, 7], [30, 25, 7]]))
    by_world = segment_slice(image, 7, 2, model=net, box=corners, coordinates="world")
    by_voxel = segment_slice(image, 7, 2, model=net, box=[5, 6, 30, 25])
    assert by_world.same_grid(image)
    np.testing.assert_array_equal(by_world.array, by_voxel.array)
    assert not by_world.array[:, :, np.arange(12) != 7].any()


# ----------------------------------------------------------------------------- propagation
def test_propagation_aligned_with_input(net):
    image, labels = make_phantom((40, 36, 6), (7.0, 8.0, 40.0), seed=3)
    liver = prompts_from_mask(labels, kind="mask", labels=[1])
    prompts = liver + prompts_from_mask(labels, kind="box", labels=[4]) + prompts_from_mask(
        labels, kind="points", labels=[2], n_positive=2, n_negative=1)
    out = propagate(net, image, prompts)
    assert out.same_grid(image) and out.is_label and out.array.dtype == np.uint8
    assert set(np.unique(out.array)) <= {0, 1, 2, 4}
    # a mask prompt is taken as the key slice's output (SAM2: use_mask_input_as_output)
    got = out.array[:, :, liver[0].slice_index] == 1
    assert 2 * (got & liver[0].mask).sum() / (got.sum() + liver[0].mask.sum()) > 0.9
    forward = propagate(net, image, liver, direction="forward")
    k = liver[0].slice_index
    assert k > 0 and not forward.array[:, :, :k].any()  # nothing tracked before the key slice
    assert (forward.array[:, :, k] == 1).sum() == got.sum()
    with pytest.raises(InputError, match="share one slice axis"):
        propagate(net, image, [SlicePrompt(3, 2, 1, box=[1, 1, 5, 5]), SlicePrompt(3, 1, 2, box=[1, 1, 5, 5])])


# ----------------------------------------------------------------------------- fine-tuning
def test_sam_loss_prefers_the_right_mask():
    from medseg.training.sam2 import sam_loss

    target = torch.zeros(1, 1, 16, 16)
    target[..., 4:12, 4:12] = 1
    good = (target * 2 - 1) * 10
    w = {"dice": 1.0, "bce": 1.0, "iou": 1.0}
    lg, parts_good = sam_loss(good, torch.ones(1, 1), target, w)
    lb, _ = sam_loss(-good, torch.ones(1, 1), target, w)
    assert lg < 0.05 < lb
    assert parts_good["iou"] < 1e-6  # IoU 1 predicted, actual IoU 1


def test_prompt_simulation_uses_the_mask():
    from medseg.training.sam2 import PromptSimulation

    mask = np.zeros((32, 32), bool)
    mask[8:20, 10:26] = True
    sim = PromptSimulation(p_box=1, p_points=0, p_box_points=0, box_jitter=0.1)
    rng = np.random.default_rng(0)
    for _ in range(20):
        coords, labels, kind = sim.simulate(mask, rng)
        assert kind == "box" and labels.tolist() == [2, 3]
        assert np.all(np.abs(coords - [[8, 10], [19, 25]]) <= 0.1 * np.array([12, 16]) + 1e-9)
    sim = PromptSimulation(p_box=0, p_points=1, p_box_points=0, n_positive=(2, 2), n_negative=(1, 1))
    coords, labels, _ = sim.simulate(mask, rng)
    assert labels.tolist() == [1, 1, 0] and mask[tuple(coords[:2].astype(int).T)].all()
    assert not mask[tuple(coords[2:].astype(int).T)].any()


def test_training_step_on_engine_patches_skips_background():
    from medseg.training.sam2 import Sam2FinetuneModule

    module = Sam2FinetuneModule(model_config={**NET_CONFIG, "in_channels": 1, "out_channels": 3},
                                finetune={"freeze_image_encoder": True, "cache_embeddings": False})
    image = torch.randn(3, 1, 48, 40)  # plan-normalised patches, as the engine's loader gives
    label = torch.zeros(3, 1, 48, 40, dtype=torch.long)
    label[0, 0, 10:30, 8:20] = 2
    label[2, 0, 5:15, 20:35] = 1  # sample 1 is a background patch
    loss, parts = module._step({"image": image, "label": label})
    assert torch.isfinite(loss) and set(parts) == {"dice", "bce", "iou"}
    loss.backward()
    assert module.net.sam_mask_decoder.iou_prediction_head.layers[0].weight.grad is not None
    assert all(p.grad is None for p in module.net.image_encoder.parameters())  # frozen
    assert module._step({"image": image, "label": torch.zeros_like(label)}) is None


@pytest.mark.slow
def test_finetune_checkpoint_reloads_identically(phantom, tmp_path):
    from medseg.models.export import load_exported
    from medseg.sam.export import export_sam2
    from medseg.training.sam2 import FinetuneConfig, SliceDataset, finetune

    image, labels = phantom
    pairs = [(image, labels)]
    init = build_sam2("tiny", image_size=256, device="cpu", overrides=SMALL)
    save_checkpoint(init, tmp_path / "init.pt")  # stands for Meta's published weights
    initial = {k: v.clone() for k, v in init.state_dict().items()}
    n_slices = len(SliceDataset(pairs, key_slices="largest"))
    steps = n_slices // 2 + 1  # a second epoch starts: its slices' embeddings come from the cache
    module = finetune(NET_CONFIG, pairs, config=FinetuneConfig(steps=steps, batch_size=2, lr=1e-3),
                      preprocess=Preprocess(window="liver"), key_slices="largest",
                      init_checkpoint=str(tmp_path / "init.pt"), accelerator="cpu")
    tuned = module.net
    state = tuned.state_dict()
    assert any(not torch.equal(state[k], initial[k]) for k in state if k.startswith("sam_mask_decoder."))
    assert all(torch.equal(state[k], initial[k]) for k in state if k.startswith("image_encoder."))  # frozen
    assert module.cache_hits > 0
    ckpt = save_checkpoint(tuned, tmp_path / "tuned.pt")
    reloaded = load_sam2(ckpt)
    assert reloaded.medseg_sam2["preprocess"]["window"] == "liver"
    prompt = prompts_from_mask(labels, kind="box", labels=[1])[0]
    a = SlicePredictor(tuned, image).encode(prompt.slice_index).predict_prompt(prompt)
    b = SlicePredictor(reloaded, image).encode(prompt.slice_index).predict_prompt(prompt)
    np.testing.assert_array_equal(a.logits, b.logits)
    folder = export_sam2(tuned, tmp_path / "export", training={"steps": 4})
    from_folder = load_sam2(folder)
    c = SlicePredictor(from_folder, image).encode(prompt.slice_index).predict_prompt(prompt)
    np.testing.assert_array_equal(a.logits, c.logits)
    import medseg.models.sam2  # noqa: F401

    generic, info = load_exported(folder)
    assert info["inference"]["mode"] == "prompted"
    pre = Preprocess.from_dict(info["preprocessing"]["preprocess"])  # the generic loader leaves it in model.json
    assert pre.window == "liver"
    d = SlicePredictor(generic, image, preprocess=pre).encode(prompt.slice_index).predict_prompt(prompt)
    np.testing.assert_array_equal(a.logits, d.logits)


def test_evaluate_prompted_rows(net, phantom):
    from medseg.training.sam2 import evaluate_prompted

    image, labels = phantom
    rows = evaluate_prompted(net, [(image, labels)], kinds=("box", "points"))
    present = sorted(int(v) for v in np.unique(labels.array) if v)
    assert sorted({r["label"] for r in rows}) == present
    assert {r["kind"] for r in rows} == {"box", "points"} and len(rows) == 2 * len(present)
    for r in rows:
        assert 0.0 <= r["dice"] <= 1.0 and 0.0 <= r["nsd"] <= 1.0 and 0.0 <= r["boundary_iou"] <= 1.0


# ----------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_segment_nifti_and_prompts(net, phantom, tmp_path):
    from typer.testing import CliRunner

    from medseg.cli.main import app
    from medseg.io import load, save

    image, labels = phantom
    save(image, tmp_path / "ct.nii.gz")
    save(labels, tmp_path / "ref.nii.gz")
    save_checkpoint(net, tmp_path / "sam.pt")
    runner = CliRunner()
    res = runner.invoke(app, ["sam2", "prompts", "--mask", str(tmp_path / "ref.nii.gz"), "--out",
                              str(tmp_path / "prompts.json"), "--kind", "box"])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "prompts.json").read_text())
    assert doc["coordinates"] == "world" and len(doc["prompts"]) == len(np.unique(labels.array)) - 1
    res = runner.invoke(app, ["sam2", "segment", "--model", str(tmp_path / "sam.pt"), "--input",
                              str(tmp_path / "ct.nii.gz"), "--prompts", str(tmp_path / "prompts.json"),
                              "--out", str(tmp_path / "out"), "--mode", "slices", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    seg = load(tmp_path / "out" / "ct_sam2.nii.gz")
    assert seg.same_grid(image, atol=1e-3)
    record = json.loads((tmp_path / "out" / "ct_sam2.json").read_text())
    assert record["mode"] == "slices" and record["objects"] == sorted(int(v) for v in np.unique(labels.array) if v)
    corner0, corner1 = image.world_coordinates(np.array([[5.0, 6.0, 4.0], [30.0, 25.0, 4.0]]))
    centre = image.world_coordinates(np.array([20.0, 18.0, 4.0]))
    res = runner.invoke(app, ["sam2", "segment", "--model", str(tmp_path / "sam.pt"), "--input",
                              str(tmp_path / "ct.nii.gz"), "--out", str(tmp_path / "out3"), "--mode", "slices",
                              "--box", ",".join(map(str, [*corner0, *corner1])),
                              "--point", ",".join(map(str, [*centre, 1])), "--object-id", "7"])
    assert res.exit_code == 0, res.output
    used = json.loads((tmp_path / "out3" / "ct_sam2_prompts.json").read_text())["prompts"]
    assert len(used) == 1 and used[0]["object_id"] == 7 and used[0]["slice"] == 4
    np.testing.assert_allclose(used[0]["box"], [corner0, corner1], atol=1e-3)
    seg3 = load(tmp_path / "out3" / "ct_sam2.nii.gz").array
    assert set(np.unique(seg3)) <= {0, 7} and not seg3[:, :, np.arange(12) != 4].any()
    res = runner.invoke(app, ["sam2", "segment", "--model", str(tmp_path / "sam.pt"), "--input",
                              str(tmp_path / "ct.nii.gz"), "--prompt-mask", str(tmp_path / "ref.nii.gz"),
                              "--out", str(tmp_path / "out2"), "--formats", "dicomseg"])
    assert res.exit_code != 0 and "DICOM-SEG output needs a DICOM input" in str(res.exception)


def test_refiner_prompts_sam2_from_another_model(net, phantom, tmp_path):
    from medseg.inference.outputs import predict_to_files
    from medseg.io import load, save
    from medseg.inference.sam2 import Sam2Refiner

    image, labels = phantom

    class Reference:  # stands for a U-Net Predictor: its label map becomes the prompts
        label_names = {0: "background", 1: "liver", 4: "spleen"}
        model_sha256 = "unet"

        def predict(self, volume, return_probabilities=False):
            return volume.with_array(np.where(np.isin(labels.array, (1, 4)), labels.array, 0), is_label=True)

    refiner = Sam2Refiner(net, Reference(), prompt_kind="box", mode="slices")
    out = refiner.predict(image)
    assert out.same_grid(image) and set(np.unique(out.array)) <= {0, 1, 4}
    key = {p.slice_index for p in prompts_from_mask(labels, kind="box", labels=[1, 4])}
    assert not out.array[:, :, [k for k in range(12) if k not in key]].any()
    save(image, tmp_path / "ct.nii.gz")
    record = predict_to_files(refiner, tmp_path / "ct.nii.gz", tmp_path / "out")
    assert load(record["outputs"]["nifti"]).same_grid(image, atol=1e-3)


@pytest.mark.slow
def test_cli_segment_dicom_writes_dicom_seg(net, tmp_path):
    import pydicom
    from typer.testing import CliRunner

    from medseg.cli.main import app
    from medseg.data.cohort import write_cohort
    from medseg.io import load

    root = write_cohort(tmp_path / "dicom", 1, shape=(32, 28, 8), spacing=(8.0, 8.0, 25.0), seed=2, fmt="dicom")
    study, ref = root / "case_000", root / "labels" / "case_000.nii.gz"
    save_checkpoint(net, tmp_path / "sam.pt")
    res = CliRunner().invoke(app, ["sam2", "segment", "--model", str(tmp_path / "sam.pt"), "--input", str(study),
                                   "--prompt-mask", str(ref), "--prompt-kind", "box", "--labels", "1,4", "--out", str(tmp_path / "out"),
                                   "--window", "abdomen", "--mode", "slices"])
    assert res.exit_code == 0, res.output
    seg = load(tmp_path / "out" / "case_000_sam2.nii.gz")
    assert seg.same_grid(load(study), atol=1e-3)
    ds = pydicom.dcmread(tmp_path / "out" / "case_000_sam2.dcm")
    assert ds.Modality == "SEG"
    present = {int(v) for v in np.unique(seg.array) if v}
    assert present <= {1, 4} and len(ds.SegmentSequence) == len(present) > 0


@pytest.mark.slow
def test_medseg_train_with_sam2_config_and_export(tmp_path):
    import medseg.models.sam2  # noqa: F401  (registers "sam2")
    from medseg.data.cohort import write_cohort
    from medseg.training import train

    root = write_cohort(tmp_path / "data", 2, shape=(40, 36, 12), spacing=(7.0, 8.0, 20.0), seed=0)
    overrides = json.dumps(SMALL)
    run = train("pipelines/sam2_finetune.yaml", out_dir=tmp_path / "run", overrides=[
        f"dataset.root={root}", "dataset.n_folds=2", "model.config.image_size=256",
        f"model.config.overrides={overrides}", "train.max_epochs=1", "train.iterations_per_epoch=2",
        "train.batch_size=2", "train.progress_bar=false"])
    info = json.loads((run / "export" / "model.json").read_text())
    assert info["model"]["name"] == "sam2" and info["training"]["global_step"] == 2
    assert "val_dice" in (run / "metrics.csv").read_text()
    net = load_sam2(run / "export")
    assert net.medseg_sam2["preprocess"] == {"mode": "mr"} and net.image_size == 256
    image, _ = make_phantom((40, 36, 12), (7.0, 8.0, 20.0), seed=9)
    assert segment_slice(image, 6, 2, model=net, box=[5, 5, 30, 30]).same_grid(image)


def test_meta_checkpoint_architecture_is_read_from_its_tensors_not_its_name(tmp_path):
    """A published-layout checkpoint ({'model': state_dict}) renamed to anything still loads (issue 10)."""
    from medseg.models.sam2 import config_from_state

    full = build_sam2("tiny", image_size=256, device="cpu")
    assert config_from_state(full.state_dict()) == "sam2.1_hiera_t"
    path = tmp_path / "weights_from_the_hospital.pt"
    torch.save({"model": full.state_dict()}, path)
    loaded = load_sam2(path, image_size=256)
    assert loaded.medseg_sam2["config"] == "sam2.1_hiera_t"
    assert config_from_state({k: v for k, v in full.state_dict().items() if "trunk.blocks.11." not in k}) is None
