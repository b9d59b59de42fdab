import pytest
import torch

from vissl_lite.augment import build_augment
from vissl_lite.backbones import create_backbone, feature_pooling
from vissl_lite.methods import METHODS, build_method

BACKBONES = [("resnet18", 3), ("resnet18", 1), ("vit_tiny_patch16_224", 3), ("vit_tiny_patch16_224", 1)]
AUGMENT = {"simclr": "simclr", "mae": "crop_flip", "dae": "crop_flip", "classifier": "crop_flip"}
SMALL_DECODER = {"mae": dict(decoder_dim=32, decoder_depth=1, decoder_heads=2), "dae": dict(decoder_dim=32),
                 "classifier": dict(num_classes=4)}
CASES = [(m, b, c) for m in METHODS for b, c in BACKBONES if not (m == "mae" and b.startswith("resnet"))]


def tiny(name: str, chans: int):
    torch.manual_seed(0)
    return create_backbone(name, in_chans=chans, img_size=16, small_input=True)


def make(method: str, name: str, chans: int):
    return build_method(method, tiny(name, chans), **SMALL_DECODER.get(method, {}))


def views_for(method: str, chans: int, b: int = 8):
    torch.manual_seed(1)
    return build_augment(AUGMENT[method], 16, chans)(torch.randint(0, 256, (b, chans, 16, 16), dtype=torch.uint8))


def test_every_registered_method_is_covered():
    assert set(AUGMENT) == set(METHODS) and {m for m, _, _ in CASES} == set(METHODS)


@pytest.mark.parametrize("method,name,chans", CASES)
def test_finite_loss_gradient_everywhere_and_embed(method, name, chans):
    model = make(method, name, chans)
    views = views_for(method, chans)
    out = model(views, torch.arange(8) % 4)  # labels: used by the classifier, ignored by the SSL methods
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert all(not v.requires_grad for k, v in out.items() if k != "loss")
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or
                                                                              not torch.isfinite(p.grad).all())]
    assert not missing, f"no finite gradient for {missing[:5]}"
    assert model.embed(views[0]).shape == (8, model.backbone.num_features)


@pytest.mark.parametrize("method,name,chans", CASES)
def test_loss_falls_on_a_fixed_batch(method, name, chans):
    model = make(method, name, chans)
    views = views_for(method, chans, b=16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        torch.manual_seed(2)  # the same mask / noise every step: a truly fixed batch
        loss = model(views, torch.arange(16) % 4)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_simclr_runs_backbone_once_on_concatenated_views():
    backbone = tiny("resnet18", 3)
    calls = []
    backbone.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    model = build_method("simclr", backbone)
    model([torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)])
    assert calls == [8]


def test_simclr_head_ends_in_scale_only_batchnorm_like_the_reference_code():
    model = build_method("simclr", tiny("resnet18", 3), proj_dim=16)
    head = model.projector
    assert isinstance(head[-1], torch.nn.BatchNorm1d) and head[-2].bias is None
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        model([torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)])["loss"].backward()
        opt.step()
    assert torch.equal(head[-1].bias, torch.zeros(16))  # no shift ever trains (reference: center=False)
    assert not torch.equal(head[-1].weight, torch.ones(16))  # the scale does
    z = head(torch.randn(32, model.backbone.num_features))  # train mode: batch statistics, zero shift
    assert z.mean(0).abs().max() < 1e-5
    torch.testing.assert_close(z.var(0, unbiased=False), head[-1].weight.detach() ** 2, rtol=1e-3, atol=1e-4)
    old = build_method("simclr", tiny("resnet18", 3), proj_out_bn=False)
    assert isinstance(old.projector[-1], torch.nn.Linear) and old.projector[-1].bias is not None


def test_small_input_modes():
    r = create_backbone("resnet18", img_size=32)
    assert r.conv1.stride == (1, 1) and r.conv1.kernel_size == (3, 3) and isinstance(r.maxpool, torch.nn.Identity)
    assert r.forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 4  # 32 / 8 (three stride-2 stages)
    big = create_backbone("resnet18", img_size=224)
    assert big.conv1.stride == (2, 2)
    deep = create_backbone("resnet10t", img_size=32)
    assert deep.conv1[0].stride == (1, 1)
    v = create_backbone("vit_tiny_patch16_224", img_size=32, in_chans=1)
    assert v.patch_embed.patch_size == (4, 4) and v.patch_embed.num_patches == 64
    assert feature_pooling(v) == "cls token"
    assert create_backbone("vit_tiny_patch16_224", img_size=224).patch_embed.patch_size == (16, 16)


def test_unknown_backbone_and_method_args_are_clear():
    with pytest.raises(ValueError, match="unknown timm model 'resnet_eighteen'"):
        create_backbone("resnet_eighteen")
    with pytest.raises(ValueError, match="Valid: proj_hidden_dim, proj_dim, proj_layers, temperature, proj_out_bn"):
        build_method("simclr", tiny("resnet18", 3), temp=0.1)
    with pytest.raises(ValueError, match="unknown method 'moco'"):
        build_method("moco", tiny("resnet18", 3))


def test_method_args_of_the_wrong_type_or_that_cannot_build_are_clear():
    with pytest.raises(ValueError, match="mask_ratio for 'mae' must be a number .* got 'abc'"):
        build_method("mae", create_backbone("vit_tiny_patch16_224", img_size=32, patch_size=4), mask_ratio="abc")
    with pytest.raises(ValueError, match="temperature for 'simclr' must be a number .* got True"):
        build_method("simclr", tiny("resnet18", 3), temperature=True)
    with pytest.raises(ValueError, match="proj_out_bn for 'simclr' must be true or false"):
        build_method("simclr", tiny("resnet18", 3), proj_out_bn="yes")
    assert build_method("dae", tiny("resnet18", 3), sigma=1).sigma == 1  # an int is a number
    with pytest.raises(ValueError, match="cannot build mae with method_args .*decoder_heads.* divisible"):
        build_method("mae", create_backbone("vit_tiny_patch16_224", img_size=32, patch_size=4), decoder_heads=5)


def test_check_fits_names_a_backbone_too_deep_for_the_images_and_changes_nothing():
    from vissl_lite import runs

    too_deep = build_method("simclr", create_backbone("convnext_atto", in_chans=1))  # 32x downsampling
    with pytest.raises(ValueError, match="backbone convnext_atto does not run on 1-channel 16x16 images"):
        runs.check_fits(too_deep, 1, 16)
    assert too_deep.training  # mode put back
    model = build_method("simclr", tiny("resnet18", 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    runs.check_fits(model, 3, 16)
    assert torch.equal(torch.get_rng_state(), rng)  # a resume's random stream is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too
