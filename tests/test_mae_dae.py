import math

import pytest
import torch

import vissl_lite.methods.mae as mae_mod
from vissl_lite.backbones import create_backbone
from vissl_lite.heads import patchify, unpatchify
from vissl_lite.losses import masked_mse
from vissl_lite.methods import DAE, MAE
from vissl_lite.methods.mae import random_masking


def vit(chans=3, size=16, **kw):
    torch.manual_seed(0)
    return create_backbone("vit_tiny_patch16_224", in_chans=chans, img_size=size, small_input=True, **kw)


@pytest.mark.parametrize("length,ratio", [(64, 0.75), (16, 0.5), (49, 0.9), (10, 0.33)])
def test_masking_keeps_exact_count_and_restore_inverts(length, ratio):
    x = torch.randn(5, length, 3)
    visible, mask, ids_restore = random_masking(x, ratio)
    keep = round(length * (1 - ratio))
    assert visible.shape == (5, keep, 3)
    assert (mask.sum(1) == length - keep).all() and set(mask.unique().tolist()) <= {0.0, 1.0}
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    shuffled = torch.gather(x, 1, ids_shuffle[..., None].expand(-1, -1, 3))
    assert torch.equal(torch.gather(shuffled, 1, ids_restore[..., None].expand(-1, -1, 3)), x)
    for b in range(5):  # the visible tokens are exactly the unmasked ones
        assert torch.equal(torch.sort(visible[b, :, 0]).values, torch.sort(x[b, mask[b] == 0, 0]).values)
    assert not torch.equal(mask[0], mask[1]) or length < 12  # per-sample masks


@pytest.mark.parametrize("chans", [1, 3])
def test_patchify_roundtrip_and_layout(chans):
    imgs = torch.randn(2, chans, 12, 8)
    p = patchify(imgs, 4)
    assert p.shape == (2, 6, 16 * chans)
    assert torch.equal(unpatchify(p, 4, chans, 12, 8), imgs)
    # patch (row 1, col 1) is index 1 * 2 + 1 = 3, pixels stored as (p, p, C)
    assert torch.equal(p[:, 3].reshape(2, 4, 4, chans), imgs[:, :, 4:8, 4:8].permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match="not divisible"):
        patchify(torch.randn(1, 1, 10, 10), 4)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_mae_loss_equals_naive_per_patch_loop(norm_pix):
    model = MAE(vit(), decoder_dim=32, decoder_depth=1, decoder_heads=2, norm_pix_loss=norm_pix)
    imgs = torch.randn(3, 3, 16, 16)
    torch.manual_seed(1)
    loss = model([imgs])["loss"]
    torch.manual_seed(1)
    latent, mask, ids_restore = model.forward_encoder(imgs)
    pred = model.decoder(latent, ids_restore)
    total, count = 0.0, 0
    for b in range(3):
        for i in range(16):  # 16 patches of 4x4
            r, c = divmod(i, 4)
            patch = imgs[b, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4].permute(1, 2, 0).reshape(-1)
            if norm_pix:
                patch = (patch - patch.mean()) / math.sqrt(patch.var().item() + 1e-6)
            if mask[b, i] == 1:
                total += ((pred[b, i] - patch) ** 2).mean().item()
                count += 1
    assert count == 3 * 12 and loss.item() == pytest.approx(total / count, rel=1e-4)


def test_mae_loss_ignores_predictions_for_visible_patches(monkeypatch):
    model = MAE(vit(), decoder_dim=32, decoder_depth=1, decoder_heads=2)
    imgs = torch.randn(2, 3, 16, 16)
    seen = {}
    real = mae_mod.random_masking

    def recording(x, ratio):
        out = real(x, ratio)
        seen["mask"] = out[1]
        return out

    monkeypatch.setattr(mae_mod, "random_masking", recording)
    torch.manual_seed(3)
    base = model([imgs])["loss"]
    hook = model.decoder.register_forward_hook(lambda m, i, o: o + 100.0 * (1 - seen["mask"])[..., None])
    torch.manual_seed(3)
    changed = model([imgs])["loss"]
    hook.remove()
    assert changed.item() == pytest.approx(base.item(), rel=1e-6)
    assert masked_mse(torch.zeros(1, 4, 2), torch.ones(1, 4, 2), torch.tensor([[1.0, 0, 0, 0]])).item() == 1.0


def test_mae_keeps_prefix_tokens_and_works_with_registers_and_one_channel():
    for bb in (vit(chans=1), vit(reg_tokens=2, class_token=True)):
        model = MAE(bb, mask_ratio=0.75, decoder_dim=32, decoder_depth=1, decoder_heads=2)
        latent, mask, _ = model.forward_encoder(torch.randn(2, bb.patch_embed.proj.in_channels, 16, 16))
        assert latent.shape[1] == bb.num_prefix_tokens + 4 and mask.shape == (2, 16)
        # the prefix tokens the encoder saw are the model's own (cls first), not patch tokens
        assert bb.num_prefix_tokens in (1, 3)


def test_mae_needs_a_vit():
    with pytest.raises(ValueError, match="not a timm VisionTransformer"):
        MAE(create_backbone("resnet18", img_size=16))


@pytest.mark.parametrize("args,message", [
    ({"noise": "salt_pepper", "sp_ratio": 2.0}, r"sp_ratio must be in \(0, 1\), got 2.0"),
    ({"noise": "mask", "mask_ratio": 0.0}, r"mask_ratio must be in \(0, 1\), got 0.0"),
    ({"noise": "mask", "mask_ratio": 1.5}, r"mask_ratio must be in \(0, 1\)"),
    ({"noise": "mask", "mask_patch": -3}, r"mask_patch must be 0 .* got -3"),
    ({"decoder_dim": 0}, r"decoder_dim must be >= 1, got 0"),
])
def test_dae_refuses_arguments_that_leave_nothing_to_learn_or_build(args, message):
    """A corruption of none or all of the pixels, a negative patch or an empty decoder: an error naming the
    argument, not a run that trains on a degenerate task or a tensor error blamed on the image size."""
    with pytest.raises(ValueError, match=message):
        DAE(create_backbone("resnet18", img_size=16, small_input=False), **args)


def test_dae_gaussian_noise_statistics():
    x = torch.zeros(2000, 1, 32, 32)  # 1,024 pixels a sample: per-sample std estimates within ~0.01
    dae = DAE(create_backbone("resnet18", in_chans=1, img_size=16, small_input=False), sigma=0.3)
    noisy, where = dae.corrupt(x)
    assert noisy.std().item() == pytest.approx(0.3, rel=0.02) and abs(noisy.mean().item()) < 0.005
    assert where.all()
    dae.sigma_max = 0.9
    torch.manual_seed(0)  # not the state earlier tests left
    per_sample = dae.corrupt(x)[0].flatten(1).std(1)
    # each sample's std, estimated from 1,024 pixels, is within ~4 standard errors (sigma * 4 / sqrt(2 * 1024)) of
    # its draw from [0.3, 0.9]: 2,000 samples put some draws near both ends
    assert per_sample.min() > 0.3 - 0.03 and per_sample.max() < 0.9 + 0.08
    assert per_sample.mean().item() == pytest.approx(0.6, rel=0.05)  # U[0.3, 0.9] has mean 0.6


def test_dae_masking_and_salt_pepper_statistics():
    x = torch.randn(500, 3, 16, 16)
    dae = DAE(create_backbone("resnet18", img_size=16, small_input=False), noise="mask", mask_ratio=0.4)
    noisy, where = dae.corrupt(x)
    assert where.mean().item() == pytest.approx(0.4, abs=0.01)
    assert (noisy[where.expand_as(x) == 1] == 0).all() and torch.equal(noisy[where.expand_as(x) == 0],
                                                                       x[where.expand_as(x) == 0])
    dae.mask_patch = 4  # whole 4x4 blocks are masked together
    blocks = dae.corrupt(x)[1].reshape(500, 1, 4, 4, 4, 4)
    assert (blocks.amax(dim=(3, 5)) == blocks.amin(dim=(3, 5))).all()
    dae.noise, dae.sp_ratio = "salt_pepper", 0.2
    noisy, where = dae.corrupt(x)
    assert where.mean().item() == pytest.approx(0.2, abs=0.01)
    hit = noisy.permute(1, 0, 2, 3)[:, where[:, 0] == 1]  # (C, n_hit)
    hi, lo = x.amax(dim=(0, 2, 3))[:, None], x.amin(dim=(0, 2, 3))[:, None]
    assert ((hit == hi) | (hit == lo)).all()


@pytest.mark.parametrize("target", ["clean", "noise"])
def test_dae_targets(target, monkeypatch):
    dae = DAE(create_backbone("resnet18", img_size=16, small_input=False), target=target)
    x = torch.randn(2, 3, 16, 16)
    noisy = x + 1.0
    monkeypatch.setattr(dae, "corrupt", lambda t: (noisy, torch.ones(2, 1, 16, 16)))
    expected_target = x if target == "clean" else noisy - x
    monkeypatch.setattr(dae, "decode", lambda t: expected_target)
    assert dae([x])["loss"].item() == pytest.approx(0.0, abs=1e-7)


def test_dae_loss_on_corrupted_only(monkeypatch):
    dae = DAE(create_backbone("resnet18", img_size=16, small_input=False), noise="mask", loss_on="corrupted")
    x = torch.zeros(1, 3, 16, 16)
    where = torch.zeros(1, 1, 16, 16)
    where[..., :8, :] = 1
    monkeypatch.setattr(dae, "corrupt", lambda t: (t, where))
    wrong = torch.zeros(1, 3, 16, 16)
    wrong[..., 8:, :] = 5.0  # errors only where nothing was corrupted
    monkeypatch.setattr(dae, "decode", lambda t: wrong)
    assert dae([x])["loss"].item() == 0.0
