#!/usr/bin/env python3
"""PyTorch reference for BriVL (see ../shared/BRIVL_SPEC.md): builds random-weight models in the
released checkpoint layout and writes golden embeddings for the Rust engine's parity tests.

Used only to make fixtures (never in CI). Usage (from the repo root):

    python tests/reference/brivl_ref.py tiny --out tests/fixtures/tiny
    python tests/reference/brivl_ref.py full --out /some/dir [--no-golden] [--mom distinct]

`tiny` writes brivl-tiny.pth, config.json, golden.json and images/ (synthetic images are
regenerated; the shared photos are copied). `full` writes the full-size random model (the spec's
real sizes, 456 px) as brivl-full.pth plus config.json and golden.json for the same inputs.

The towers follow the spec line by line:
  image: PIL decode -> EXIF transpose -> convert('RGB') -> /255 -> bilinear resize (float tensor,
         align_corners=False, no antialias) -> normalise -> timm tf_efficientnet_b5
         forward_features -> 37 boxes (6x6 grid + whole image) affine_grid/grid_sample 4x4 ->
         max_pool = Sequential(Conv2d 1x1, AvgPool2d(4)) -> L2 -> imgAtt -> mean -> imgFC -> L2
  text:  BertTokenizer ([CLS] .. [SEP], pad/truncate to L) -> BertModel with NO attention mask ->
         L2 per token -> textAtt with key padding mask -> mean over real tokens -> textFC -> L2
"""
import argparse
import copy
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from functools import partial

import numpy as np
import PIL.features
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageOps

import timm
from timm.models.efficientnet import _create_effnet, decode_arch_def, round_channels
from transformers import BertConfig, BertModel, BertTokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))


def _find_shared():
    """../shared beside the repo root (CI); a worktree may sit deeper, so look further up, or
    take BRIVL_SHARED."""
    if os.environ.get("BRIVL_SHARED"):
        return os.environ["BRIVL_SHARED"]
    d = REPO
    while True:
        cand = os.path.join(os.path.dirname(d), "shared")
        if os.path.isfile(os.path.join(cand, "BRIVL_SPEC.md")):
            return cand
        if os.path.dirname(d) == d:
            raise SystemExit("cannot find shared/ (with BRIVL_SPEC.md); set BRIVL_SHARED")
        d = os.path.dirname(d)


SHARED = _find_shared()
VOCAB = os.path.join(SHARED, "vocab", "zh-bert-vocab.txt")
PHOTOS = os.path.join(SHARED, "photos")

IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

# timm's EfficientNet arch definition (timm.models.efficientnet._gen_efficientnet), copied so the
# tiny model can choose its own per-stage repeats; block types, kernels, strides, expansion and SE
# are unchanged, so the key layout is the same as tf_efficientnet_b5's.
EFFNET_ARCH_DEF = [
    ["ds_r1_k3_s1_e1_c16_se0.25"],
    ["ir_r2_k3_s2_e6_c24_se0.25"],
    ["ir_r2_k5_s2_e6_c40_se0.25"],
    ["ir_r3_k3_s2_e6_c80_se0.25"],
    ["ir_r3_k5_s1_e6_c112_se0.25"],
    ["ir_r4_k5_s2_e6_c192_se0.25"],
    ["ir_r1_k3_s1_e6_c320_se0.25"],
]
STAGE_STRIDES = [1, 2, 2, 2, 1, 2, 1]  # first block of each stage; the stem conv has stride 2

CONFIGS = {
    # The released model (spec): tf_efficientnet_b5, chinese-roberta-wwm-ext, 2048-d embeddings.
    "full": dict(
        name="brivl-full",
        image_size=456, box_grid=6, pool_grid=4,
        backbone=dict(timm_name="tf_efficientnet_b5"),
        img_att=dict(layers=4, heads=4, ff=2048),
        bert=dict(hidden=768, layers=12, heads=12, intermediate=3072, max_position=512,
                  type_vocab=2, vocab=21128),
        text_att=dict(layers=4, heads=4, ff=2048),
        emb_dim=2048,
        max_text_len=32,
        seed=20220530,
    ),
    # Tiny model, same key layout. Backbone: timm's EfficientNet generator with channel
    # multiplier 0.15 (divisor 4) and per-stage repeats [2,1,1,2,2,2,1] so both the skip and the
    # no-skip variants of the depthwise-separable and inverted-residual blocks occur; head 64.
    # 200 px gives feature sizes 100, 50, 25, 13, 7 (odd sizes exercise asymmetric SAME padding).
    "tiny": dict(
        name="brivl-tiny",
        image_size=200, box_grid=6, pool_grid=4,
        backbone=dict(channel_multiplier=0.15, channel_divisor=4, stage_repeats=[2, 1, 1, 2, 2, 2, 1],
                      num_features=64, num_classes=16),
        img_att=dict(layers=2, heads=2, ff=64),
        bert=dict(hidden=32, layers=2, heads=2, intermediate=64, max_position=128,
                  type_vocab=2, vocab=21128),
        text_att=dict(layers=2, heads=2, ff=64),
        emb_dim=32,
        max_text_len=32,
        seed=20220530,
    ),
}


# ----------------------------------------------------------------------------- model

def make_backbone(bcfg):
    """timm EfficientNet with TF 'SAME' padding and BN eps 1e-3 (the tf_ variants)."""
    if "timm_name" in bcfg:
        return timm.create_model(bcfg["timm_name"], pretrained=False)
    arch = []
    for stage, reps in zip(EFFNET_ARCH_DEF, bcfg["stage_repeats"]):
        parts = stage[0].split("_")
        parts = [("r%d" % reps) if p.startswith("r") and p[1:].isdigit() else p for p in parts]
        arch.append(["_".join(parts)])
    rc = partial(round_channels, multiplier=bcfg["channel_multiplier"], divisor=bcfg["channel_divisor"])
    # Mirrors timm.models.efficientnet._gen_efficientnet + tf_efficientnet_b5's kwargs.
    return _create_effnet(
        "tf_efficientnet_b5", False,
        block_args=decode_arch_def(arch, 1.0),
        num_features=bcfg["num_features"],
        stem_size=32,
        round_chs_fn=rc,
        act_layer=nn.SiLU,
        norm_layer=partial(nn.BatchNorm2d, eps=1e-3),
        pad_type="same",
        num_classes=bcfg["num_classes"],
    )


def encoder_stack(d, heads, ff, layers):
    layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, activation="relu",
                                       batch_first=True, norm_first=False)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class FakeTransformer(nn.Module):
    """The release's FC head: fc1 -> ReLU -> fc2."""

    def __init__(self, d_in, d_hidden, d_out):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_out)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class ImgLearnable(nn.Module):
    def __init__(self, c, cfg):
        super().__init__()
        g = cfg["pool_grid"]
        # Named max_pool in the release; it is a 1x1 conv followed by a grid average.
        self.max_pool = nn.Sequential(nn.Conv2d(c, c, 1), nn.AvgPool2d(g))
        a = cfg["img_att"]
        self.imgAtt = encoder_stack(c, a["heads"], a["ff"], a["layers"])
        self.imgFC = FakeTransformer(c, cfg["emb_dim"], cfg["emb_dim"])


class ImgEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.backbone = make_backbone(cfg["backbone"])
        self.learnable = ImgLearnable(self.backbone.num_features, cfg)

    def boxes(self):
        s_img, g = self.cfg["image_size"], self.cfg["box_grid"]
        s = s_img / g
        b = [(i * s, j * s, (i + 1) * s, (j + 1) * s) for i in range(g) for j in range(g)]
        b.append((0.0, 0.0, float(s_img), float(s_img)))
        return torch.tensor(b, dtype=torch.float32)

    def thetas(self, feat_h, feat_w):
        """Exactly the release's roi_grid_pool theta (rotation angle 0)."""
        rois = self.boxes()
        r = self.cfg["image_size"] / feat_h  # down_sample_ratio
        x1, y1, x2, y2 = (rois[:, k] / r for k in range(4))
        w, h = feat_w, feat_h
        theta = torch.stack((
            (x2 - x1) / (w - 1), torch.zeros_like(x1), (x1 + x2 - w + 1) / (w - 1),
            torch.zeros_like(x1), (y2 - y1) / (h - 1), (y1 + y2 - h + 1) / (h - 1),
        ), dim=1).view(-1, 2, 3).float()
        return theta

    def pool(self, fmap):
        """fmap [1, C, H, W] -> [37, C, G, G] bilinear samples."""
        _, c, h, w = fmap.shape
        theta = self.thetas(h, w).to(fmap.dtype)
        n, g = theta.shape[0], self.cfg["pool_grid"]
        grid = F.affine_grid(theta, [n, c, g, g], align_corners=False)
        return F.grid_sample(fmap.expand(n, c, h, w), grid, mode="bilinear",
                             padding_mode="zeros", align_corners=False)

    def forward(self, x, trace=None):
        fmap = self.backbone.forward_features(x)  # [1, C, H, W]
        samples = self.pool(fmap)  # [37, C, G, G]
        pooled = self.learnable.max_pool(samples).flatten(1)  # conv on the samples, then mean
        pooled = F.normalize(pooled, p=2, dim=-1)
        att = self.learnable.imgAtt(pooled.unsqueeze(0))  # [1, 37, C]
        emb = F.normalize(self.learnable.imgFC(att.mean(dim=1)), p=2, dim=-1)
        if trace is not None:
            trace.update(fmap=fmap[0], samples=samples, pooled=pooled, att=att[0])
        return emb[0]


class TextBackbone(nn.Module):
    def __init__(self, bcfg):
        super().__init__()
        conf = BertConfig(
            vocab_size=bcfg["vocab"], hidden_size=bcfg["hidden"], num_hidden_layers=bcfg["layers"],
            num_attention_heads=bcfg["heads"], intermediate_size=bcfg["intermediate"],
            max_position_embeddings=bcfg["max_position"], type_vocab_size=bcfg["type_vocab"],
            hidden_act="gelu", layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, pad_token_id=0,
        )
        conf._attn_implementation = "eager"
        self.bert = BertModel(conf, add_pooling_layer=True)


class TextLearnable(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["bert"]["hidden"]
        a = cfg["text_att"]
        self.textAtt = encoder_stack(d, a["heads"], a["ff"], a["layers"])
        self.textFC = FakeTransformer(d, cfg["emb_dim"], cfg["emb_dim"])


class TextEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.backbone = TextBackbone(cfg["bert"])
        self.learnable = TextLearnable(cfg)

    def forward(self, ids, mask, trace=None):
        """ids, mask: [1, L] (mask 1 for real tokens). No attention mask for BERT."""
        hid = self.backbone.bert(input_ids=ids, token_type_ids=torch.zeros_like(ids)).last_hidden_state
        x = F.normalize(hid, p=2, dim=-1)
        att = self.learnable.textAtt(x, src_key_padding_mask=(mask == 0))
        m = mask.unsqueeze(-1).to(att.dtype)
        mean = (att * m).sum(dim=1) / m.sum(dim=1)
        emb = F.normalize(self.learnable.textFC(mean), p=2, dim=-1)
        if trace is not None:
            trace.update(bert=hid[0], att=att[0])
        return emb[0]


class BriVL(nn.Module):
    def __init__(self, cfg, with_mom=True):
        super().__init__()
        self.imgencoder = ImgEncoder(cfg)
        self.textencoder = TextEncoder(cfg)
        if with_mom:
            self.imgencoder_mom = ImgEncoder(cfg)
            self.textencoder_mom = TextEncoder(cfg)


# ----------------------------------------------------------------------------- random weights

def _normal_(t, std, mean=0.0):
    with torch.no_grad():
        t.normal_(mean, std)


def _uniform_(t, lo, hi):
    with torch.no_grad():
        t.uniform_(lo, hi)


def randomize_layer_norm(ln):
    _uniform_(ln.weight, 0.7, 1.3)
    _normal_(ln.bias, 0.1)


SCORE_STD = 2.5  # std of the attention logits q.k/sqrt(d_head): peaked but not one-hot
BRANCH = 0.5  # size of each residual branch relative to the residual stream


def randomize_encoder_stack(stack, d, first_input_rms):
    """Scale so every sublayer matters without washing the tokens out: logits with std
    SCORE_STD (attention neither uniform nor one-hot) and residual branches about BRANCH times
    the residual stream, so tokens stay distinct through the layers."""
    qk = math.sqrt(SCORE_STD)
    for li, layer in enumerate(stack.layers):
        a = first_input_rms if li == 0 else 1.0
        w = layer.self_attn.in_proj_weight
        _normal_(w[:2 * d], qk / (a * math.sqrt(d)))  # Q, K elements with variance SCORE_STD
        _normal_(w[2 * d:], 1.0 / math.sqrt(d))  # V: elements ~ a
        _normal_(layer.self_attn.in_proj_bias, 0.1 * a)
        _normal_(layer.self_attn.out_proj.weight, BRANCH / math.sqrt(d))
        _normal_(layer.self_attn.out_proj.bias, 0.1 * a)
        _normal_(layer.linear1.weight, 1.0 / math.sqrt(d))
        _normal_(layer.linear1.bias, 0.2)
        _normal_(layer.linear2.weight, BRANCH / math.sqrt(layer.linear1.out_features))
        _normal_(layer.linear2.bias, 0.1)
        randomize_layer_norm(layer.norm1)
        randomize_layer_norm(layer.norm2)


def randomize_linear(lin, bias_std=0.1):
    _normal_(lin.weight, 1.0 / math.sqrt(lin.in_features))
    _normal_(lin.bias, bias_std)


def randomize_bert(bert):
    emb = bert.embeddings
    _normal_(emb.word_embeddings.weight, 1.0)
    _normal_(emb.position_embeddings.weight, 0.5)
    _normal_(emb.token_type_embeddings.weight, 0.5)
    for mod in bert.modules():
        if isinstance(mod, nn.Linear):
            randomize_linear(mod)
        elif isinstance(mod, nn.LayerNorm):
            randomize_layer_norm(mod)
    # Same scaling idea as randomize_encoder_stack (the hidden states after LayerNorm have
    # elements of about unit size).
    qk = math.sqrt(SCORE_STD)
    for layer in bert.encoder.layer:
        att = layer.attention
        d = att.self.query.in_features
        _normal_(att.self.query.weight, qk / math.sqrt(d))
        _normal_(att.self.key.weight, qk / math.sqrt(d))
        _normal_(att.output.dense.weight, BRANCH / math.sqrt(d))
        _normal_(layer.output.dense.weight, BRANCH / math.sqrt(layer.output.dense.in_features))


def calibration_batch(n, size, seed):
    """Photo-like random images (1/f noise: content at every scale, like photos), normalised, for
    the BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(size).view(-1, 1)
    fx = torch.fft.rfftfreq(size).view(1, -1)
    f = (fx ** 2 + fy ** 2).sqrt().clamp(min=1.0 / size)
    imgs = []
    for i in range(n):
        alpha = 0.8 + 0.6 * torch.rand(1, generator=g)  # spectral slope: smoother or rougher
        base = torch.randn(1, size, size // 2 + 1, dtype=torch.complex64, generator=g)
        chans = torch.randn(3, size, size // 2 + 1, dtype=torch.complex64, generator=g)
        spec = (base + 0.5 * chans) / f.pow(alpha)
        img = torch.fft.irfft2(spec, s=(size, size))
        img = (img - img.mean()) / (img.std() + 1e-6)
        img = (0.45 + 0.22 * img + 0.1 * torch.randn(3, 1, 1, generator=g)).clamp(0, 1)
        imgs.append(img.unsqueeze(0))
    x = torch.cat(imgs).float()
    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (x - mean) / std


RESIDUAL_GAIN = 0.3


def randomize_backbone(bb, image_size, seed, calib_n, calib_images):
    # Convs keep timm's init (normal, fan-out); conv biases (squeeze-excite) become random. In
    # each conv that feeds a BatchNorm (no bias), about 1 channel in 8 is made weak (weights x0.03)
    # so its running variance is near BN's eps, as in trained nets: then eps = 1e-3 matters.
    for mod in bb.modules():
        if isinstance(mod, nn.Conv2d) and mod.bias is not None:
            _normal_(mod.bias, 0.2)
        elif isinstance(mod, nn.Conv2d):
            with torch.no_grad():
                weak = torch.rand(mod.out_channels) < 0.125
                mod.weight[weak] *= 0.03
        elif isinstance(mod, nn.Linear):
            randomize_linear(mod)
        elif isinstance(mod, nn.BatchNorm2d):
            _uniform_(mod.weight, 0.6, 1.4)
            _normal_(mod.bias, 0.25)
    # Residual branches enter at ~0.3 of the skip path (the last BN of each skip block is scaled):
    # a deep random net is otherwise chaotic enough to map most inputs to nearly one feature.
    with torch.no_grad():
        for blk in (b for stage in bb.blocks for b in stage):
            if blk.has_skip:
                last = blk.bn3 if hasattr(blk, "bn3") else blk.bn2
                last.weight.mul_(RESIDUAL_GAIN)
                last.bias.mul_(RESIDUAL_GAIN)
    # Running statistics from data, so eval-mode activations stay O(1) through the network.
    bns = [m for m in bb.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    # Calibration set: the fixture images themselves (random nets amplify any shift between
    # calibration and test statistics, stage after stage), optionally with photo-like noise
    # images (--calib N; rough noise dominates the statistics and squashes real images), one batch.
    bb.train()
    x = torch.cat(([calibration_batch(calib_n, image_size, seed)] if calib_n else []) + list(calib_images))
    with torch.no_grad():
        bb.forward_features(x)
    bb.eval()
    calib = x
    # Then perturb them a little so they are not exactly the calibration statistics.
    with torch.no_grad():
        for m in bns:
            m.momentum = 0.1
            m.running_var.mul_(torch.empty_like(m.running_var).uniform_(0.8, 1.25))
            m.running_mean.add_(0.1 * m.running_var.sqrt() * torch.randn_like(m.running_mean))
    return calib


def center_bias(lin_out, bias, noise=0.1):
    """Set a bias so the layer's outputs over the calibration inputs have zero mean (plus a little
    noise). Without it every image (or text) shares one large common direction and the
    embeddings of different inputs end up nearly parallel."""
    with torch.no_grad():
        out = lin_out.reshape(-1, lin_out.shape[-1])
        bias.copy_(-out.mean(0) + noise * out.std(0) * torch.randn_like(bias))


def randomize(model, cfg, calib_n, calib_images):
    torch.manual_seed(cfg["seed"])
    ie, te = model.imgencoder, model.textencoder
    calib = randomize_backbone(ie.backbone, cfg["image_size"], cfg["seed"] + 7, calib_n, calib_images)
    c = ie.backbone.num_features
    conv = ie.learnable.max_pool[0]
    _normal_(conv.weight, 1.0 / math.sqrt(c))
    randomize_encoder_stack(ie.learnable.imgAtt, c, 1.0 / math.sqrt(c))
    randomize_linear(ie.learnable.imgFC.fc1)
    randomize_linear(ie.learnable.imgFC.fc2)
    randomize_bert(te.backbone.bert)
    d = cfg["bert"]["hidden"]
    randomize_encoder_stack(te.learnable.textAtt, d, 1.0 / math.sqrt(d))
    randomize_linear(te.learnable.textFC.fc1)
    randomize_linear(te.learnable.textFC.fc2)

    # Data-centred biases for the 1x1 conv and the two FC heads (calibration images / texts).
    ie.eval()
    te.eval()
    with torch.no_grad():
        samples = torch.cat([ie.pool(ie.backbone.forward_features(x.unsqueeze(0))) for x in calib])
        center_bias(F.conv2d(samples, conv.weight).mean((2, 3)), conv.bias)
        means = []
        for x in calib:
            tr = {}
            ie(x.unsqueeze(0), trace=tr)
            means.append(tr["att"].mean(0))
        means = torch.stack(means)
        fc = ie.learnable.imgFC
        center_bias(F.linear(means, fc.fc1.weight), fc.fc1.bias)
        center_bias(F.linear(F.relu(fc.fc1(means)), fc.fc2.weight), fc.fc2.bias, noise=0.3)
        means = []
        for t in TEXTS:
            ids, mask = tokenize(t, cfg["max_text_len"])
            tr = {}
            te(ids, mask, trace=tr)
            means.append(tr["att"][mask[0].bool()].mean(0))
        means = torch.stack(means)
        fc = te.learnable.textFC
        center_bias(F.linear(means, fc.fc1.weight), fc.fc1.bias)
        center_bias(F.linear(F.relu(fc.fc1(means)), fc.fc2.weight), fc.fc2.bias, noise=0.3)


MOM_SHARE_MIN = 4096


def make_mom(model, share_min=MOM_SHARE_MIN):
    """Momentum twins: the online towers times (1 + 5% noise) (distinct values, same shapes), except tensors
    of >= MOM_SHARE_MIN elements, which share storage with the online ones to keep the file small
    (a storage referenced by two keys is legal in the format). So a loader that picks a mom tensor
    instead of the online one still changes the result through the many small tensors."""
    gen = torch.Generator().manual_seed(12345)
    for name in ("imgencoder", "textencoder"):
        online = getattr(model, name)
        mom = copy.deepcopy(online)
        with torch.no_grad():
            for t in list(mom.parameters()) + list(mom.buffers()):
                if t.is_floating_point():  # multiplicative: variances stay positive
                    t.mul_(1 + 0.05 * torch.randn(t.shape, generator=gen))
        mods = dict(online.named_modules())
        for mname, mod in mom.named_modules():
            for pname, p in list(mod.named_parameters(recurse=False)):
                if p.numel() >= share_min:
                    setattr(mod, pname, getattr(mods[mname], pname))
        setattr(model, name + "_mom", mom)


def released_state_dict(model, cfg):
    sd = model.state_dict()
    # Older transformers (the release's) saved embeddings.position_ids (int64 [1, max_position]);
    # current ones do not. Add it so loaders meet it as in the release.
    pos = torch.arange(cfg["bert"]["max_position"], dtype=torch.int64).unsqueeze(0)
    for p in ("textencoder", "textencoder_mom"):
        key = p + ".backbone.bert.embeddings.position_ids"
        if key not in sd:
            sd[key] = pos
    return sd


def load_released(path, cfg):
    """Load a released-layout checkpoint into fresh online towers (the mom twins are ignored)."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    sd = ck["learnable"]
    model = BriVL(cfg, with_mom=False)
    own = {k: v for k, v in sd.items()
           if k.startswith(("imgencoder.", "textencoder.")) and not k.endswith("embeddings.position_ids")}
    model.load_state_dict(own, strict=True)
    model.eval()
    return model, sd


# ----------------------------------------------------------------------------- inputs

def load_image(path):
    img = Image.open(path)
    img = ImageOps.exif_transpose(img)
    return img.convert("RGB")


def preprocess(rgb, size):
    a = np.asarray(rgb, dtype=np.uint8)
    x = torch.from_numpy(a.astype(np.float32) / np.float32(255.0)).permute(2, 0, 1).unsqueeze(0)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    mean = torch.tensor(IMAGE_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


_TOKENIZER = None


def tokenizer():
    """BertTokenizer.from_pretrained(folder with vocab.txt). NOT BertTokenizer(vocab_file=...):
    transformers 5.x ignores that argument and yields all [UNK]."""
    global _TOKENIZER
    if _TOKENIZER is None:
        d = tempfile.mkdtemp(prefix="brivl-vocab-")
        shutil.copyfile(VOCAB, os.path.join(d, "vocab.txt"))
        _TOKENIZER = BertTokenizer.from_pretrained(d, do_lower_case=True)
        shutil.rmtree(d)
        assert len(_TOKENIZER) == 21128
        ids = _TOKENIZER("一只猫 Dog Café")["input_ids"]
        assert ids == [101, 671, 1372, 4344, 13030, 8377, 102], ids
    return _TOKENIZER


def tokenize(text, max_len):
    enc = tokenizer()(text, max_length=max_len, truncation=True, padding="max_length")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert len(ids) == max_len and ids[0] == 101 and 102 in ids
    return torch.tensor([ids]), torch.tensor([mask])


SYNTHETIC = ["synth_rgba.png", "synth_grey.png", "synth_palette.gif", "synth_exif6.jpg",
             "synth_tiny.bmp", "synth_lossless.webp"]


def _pattern(w, h, seed):
    """A deterministic picture: stripes at a random angle and frequency over a colour gradient,
    plus a few random filled shapes (each seed gives a different layout and palette)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ang = rng.uniform(0, np.pi)
    per = rng.uniform(2.5, 12)
    phase = (xx * np.cos(ang) + yy * np.sin(ang)) / per
    c0, c1, c2 = rng.uniform(0, 255, (3, 3))
    t = xx / max(w - 1, 1)
    u = yy / max(h - 1, 1)
    img = (c0 * (1 - t)[..., None] + c1 * t[..., None]) * (0.6 + 0.4 * np.sin(phase))[..., None]
    img = img + c2 * u[..., None] * 0.5
    img = Image.fromarray(img.clip(0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 6)):
        x0, x1 = sorted(rng.uniform(-0.1, 1.1, 2) * w)
        y0, y1 = sorted(rng.uniform(-0.1, 1.1, 2) * h)
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        kind = rng.integers(0, 3)
        if kind == 0:
            d.ellipse([x0, y0, x1, y1], fill=col)
        elif kind == 1:
            d.rectangle([x0, y0, x1, y1], fill=col)
        else:
            d.line([x0, y1, x1, y0], fill=col, width=max(1, int(w // rng.integers(8, 30))))
    return img


def write_synthetic_images(folder):
    os.makedirs(folder, exist_ok=True)
    # RGBA PNG: alpha varies and is 0 over part of the picture; convert('RGB') drops it (no
    # compositing), so the colour under transparent pixels counts.
    rgba = _pattern(96, 64, 1).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, 96).astype(np.uint8), (64, 1))
    alpha[:, :20] = 0
    rgba.putalpha(Image.fromarray(alpha, "L"))
    rgba.save(os.path.join(folder, "synth_rgba.png"))
    # Greyscale PNG (mode L).
    _pattern(80, 120, 2).convert("L").save(os.path.join(folder, "synth_grey.png"))
    # Palette GIF (mode P, 32 colours, no transparency).
    _pattern(90, 70, 3).quantize(colors=32, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
        .save(os.path.join(folder, "synth_palette.gif"))
    # JPEG stored 64x48 with EXIF orientation 6 (displayed rotated 90 deg clockwise, 48x64).
    exif = Image.Exif()
    exif[0x0112] = 6
    _pattern(64, 48, 4).save(os.path.join(folder, "synth_exif6.jpg"), quality=95, subsampling=0,
                             exif=exif.tobytes())
    # Tiny 7x5 BMP (24-bit).
    _pattern(7, 5, 5).save(os.path.join(folder, "synth_tiny.bmp"))
    # Lossless WebP (exact pixels in any conforming decoder).
    _pattern(72, 56, 6).save(os.path.join(folder, "synth_lossless.webp"), lossless=True, quality=100)


TEXTS = [
    "一只猫在沙发上",
    "海边的日落",
    "两只黄色的鸭子在蓝色的水面上",
    "a cat on a sofa",
    "一只猫 Dog Café",
    "2022年5月20日 下午3点45分，温度23.5度",
    "诺伍德大厅酒店",
    "超越神灵",
    "南昌市第一职业中等专业学校",
    "你好，世界！ＡＢＣ１２３",
    "Ünïcödé naïve résumé supercalifragilisticexpialidocious",
    "  多个   空格\t和\n换行  ",
    "🐱猫咪😀 東京タワー",
    # Over-long: more than 32 tokens (truncated at L=32, not at L=80).
    "清晨的阳光洒在安静的湖面上，一群白色的天鹅慢慢地游过，远处的山峰被薄雾笼罩，岸边的柳树随风轻轻摇摆。",
    # Longer than 80 tokens (truncated at both lengths).
    "在一个阳光明媚的周末下午，我们一家人带着野餐篮来到城市公园，孩子们在草地上放风筝、追逐嬉戏，"
    "爸爸妈妈坐在大树下聊天，远处的湖面上有几只小船缓缓划过，湖边还有许多人在钓鱼和散步，"
    "傍晚时分夕阳把天空染成了金红色，大家依依不舍地收拾东西回家。",
    "",
]
TEXTS_L80 = [TEXTS[0], TEXTS[4], TEXTS[13], TEXTS[14]]


# ----------------------------------------------------------------------------- golden

def r7(x):
    """Round to 7 significant digits for JSON."""
    if isinstance(x, torch.Tensor):
        x = x.detach().double().reshape(-1).tolist()
    if isinstance(x, (list, tuple)):
        return [r7(v) for v in x]
    return float("%.7g" % x)


def decoded_png_name(jpeg_name):
    return jpeg_name + ".pil.png"


def write_decoded_pngs(folder, jpegs):
    """The JPEGs as PIL decodes them (after EXIF transpose), losslessly as PNG: parity of the
    model can be tested independently of the JPEG decoder (decoders may differ by 1-2 levels,
    which moves these random-weight embeddings by ~1e-4 in cosine)."""
    for f in jpegs:
        load_image(os.path.join(folder, f)).save(os.path.join(folder, decoded_png_name(f)), optimize=True)


def image_record(model, folder, fname, size):
    rgb = load_image(os.path.join(folder, fname))
    x = preprocess(rgb, size)
    tr = {}
    emb = model.imgencoder(x, trace=tr)
    fmap = tr["fmap"]
    c, h, w = fmap.shape
    # 37 pooled vectors of the backbone's width; a finite unit-norm embedding.
    assert tr["pooled"].shape == (model.imgencoder.boxes().shape[0], c)
    assert abs(float(emb.norm()) - 1) < 1e-5
    assert torch.isfinite(emb).all()
    rec = {
        "file": fname,
        "decoded_size": [rgb.width, rgb.height],
        "decoded_sum": int(np.asarray(rgb, dtype=np.int64).sum()),
        "preprocessed_sum": r7(float(x.double().sum())),
        "backbone_shape": [c, h, w],
        "backbone_sum": r7(float(fmap.double().sum())),
        "backbone_first8": r7(fmap[:8, 0, 0]),
        "pooled_first8": r7(tr["pooled"][0, :8]),
        "img_att_first8": r7(tr["att"][0, :8]),
        "embedding": r7(emb),
    }
    if fname.endswith(".jpg"):
        png = decoded_png_name(fname)
        again = load_image(os.path.join(folder, png))
        assert np.array_equal(np.asarray(again), np.asarray(rgb)), png
        rec["pil_decoded_png"] = png
    return rec


def text_record(model, text, max_len):
    ids, mask = tokenize(text, max_len)
    tr = {}
    emb = model.textencoder(ids, mask, trace=tr)
    assert abs(float(emb.norm()) - 1) < 1e-5 and torch.isfinite(emb).all()
    return {
        "text": text,
        "ids": ids[0].tolist(),
        "num_tokens": int(mask.sum()),
        "bert_first8": r7(tr["bert"][0, :8]),
        "text_att_first8": r7(tr["att"][0, :8]),
        "embedding": r7(emb),
    }


def cos_table(name, embs):
    e = torch.stack(embs)
    c = e @ e.T
    off = c[~torch.eye(len(embs), dtype=torch.bool)]
    print("%s: pairwise cosines min %.4f mean %.4f max %.4f" % (name, off.min(), off.mean(), off.max()))
    return c


def spec_checks(model, cfg):
    ie = model.imgencoder
    s = cfg["image_size"]
    # Backbone output shape and the pooling identities.
    with torch.no_grad():
        fmap = ie.backbone.forward_features(torch.zeros(1, 3, s, s))
    c, h, w = fmap.shape[1:]
    expect_h = s
    for _ in range(5):  # five stride-2 steps, SAME padding: ceil
        expect_h = -(-expect_h // 2)
    assert h == w == expect_h, (fmap.shape, expect_h)
    if cfg["name"] == "brivl-full":
        assert tuple(fmap.shape[1:]) == (2048, 15, 15)
    # Box thetas: whole-image box.
    th = ie.thetas(h, w)
    assert th.shape == (cfg["box_grid"] ** 2 + 1, 2, 3)
    r = s / h
    x2 = s / r
    exp_whole = torch.tensor([[x2 / (w - 1), 0, (x2 - w + 1) / (w - 1)], [0, x2 / (h - 1), (x2 - h + 1) / (h - 1)]])
    assert torch.allclose(th[-1], exp_whole, atol=1e-6)
    # Box (i=1, j=2): x from s/6 .. 2s/6, y from 2s/6 .. 3s/6, in feature units.
    g = cfg["box_grid"]
    k = 1 * g + 2
    bx1, by1, bx2, by2 = s / g / r, 2 * s / g / r, 2 * s / g / r, 3 * s / g / r
    exp = torch.tensor([[(bx2 - bx1) / (w - 1), 0, (bx1 + bx2 - w + 1) / (w - 1)],
                        [0, (by2 - by1) / (h - 1), (by1 + by2 - h + 1) / (h - 1)]])
    assert torch.allclose(th[k], exp, atol=1e-6), (th[k], exp)
    # grid_sample at the affine_grid points equals hand-written bilinear sampling.
    fm = torch.randn(1, 3, h, w)
    samp = ie.pool(fm)
    gsz = cfg["pool_grid"]
    for bi in (0, k, len(th) - 1):
        for a in range(gsz):
            for b in range(gsz):
                # affine_grid(align_corners=False): base coords (2*idx+1)/G - 1
                u = (2 * b + 1) / gsz - 1
                v = (2 * a + 1) / gsz - 1
                gx = th[bi, 0, 0] * u + th[bi, 0, 2]
                gy = th[bi, 1, 1] * v + th[bi, 1, 2]
                px = ((gx + 1) * w - 1) / 2
                py = ((gy + 1) * h - 1) / 2
                x0, y0 = math.floor(px), math.floor(py)
                val = torch.zeros(3)
                for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
                    for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
                        if 0 <= yy < h and 0 <= xx < w:
                            val += wy * wx * fm[0, :, yy, xx]
                assert torch.allclose(samp[bi, :, a, b], val, atol=1e-5)
    # Conv-then-average == average-then-conv.
    with torch.no_grad():
        feats = torch.randn(5, c, gsz, gsz)
        lit = ie.learnable.max_pool(feats).flatten(1)
        conv = ie.learnable.max_pool[0]
        fast = F.conv2d(feats.mean(dim=(2, 3), keepdim=True), conv.weight, conv.bias).flatten(1)
        assert torch.allclose(lit, fast, atol=1e-5)
    print("spec checks passed: backbone", list(fmap.shape[1:]), "thetas, grid_sample, pooling")


def golden(model, cfg, out_dir, image_folder, image_files):
    size = cfg["image_size"]
    images = [image_record(model, image_folder, f, size) for f in image_files]
    texts = [text_record(model, t, cfg["max_text_len"]) for t in TEXTS]
    texts80 = [text_record(model, t, 80) for t in TEXTS_L80]
    ie = [torch.tensor(r["embedding"]) for r in images]
    te = [torch.tensor(r["embedding"]) for r in texts]
    cos_table("images", ie)
    cos_table("texts", te)
    cos_table("images x texts", ie + te)
    return {"images": images, "texts": texts, "texts_l80": texts80}


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_json(cfg, ckpt_name, model):
    bb = model.imgencoder.backbone
    return {
        "name": cfg["name"],
        "checkpoint": ckpt_name,
        "note": "Values a loader cannot read from the weights. Everything else (widths, layers, "
                "kernel sizes, vocab size, embedding size) comes from the tensor shapes; the "
                "'informational' block lists them only for checking.",
        "image_size": cfg["image_size"],
        "box_grid": cfg["box_grid"],
        "pool_grid": cfg["pool_grid"],
        "img_att_heads": cfg["img_att"]["heads"],
        "text_att_heads": cfg["text_att"]["heads"],
        "bert_heads": cfg["bert"]["heads"],
        "max_text_len": cfg["max_text_len"],
        "image_mean": list(IMAGE_MEAN),
        "image_std": list(IMAGE_STD),
        "backbone": {
            "stem_stride": 2,
            "stage_strides": STAGE_STRIDES,
            "padding": "tf_same",
            "bn_eps": 1e-3,
            "activation": "silu",
        },
        "bert_layer_norm_eps": 1e-12,
        "att_layer_norm_eps": 1e-5,
        "vocab_from_repo_root": "../shared/vocab/zh-bert-vocab.txt",
        "vocab_sha256": sha256(VOCAB),
        "informational": {
            "backbone_stem_width": bb.conv_stem.out_channels,
            "backbone_stage_blocks": [len(s) for s in bb.blocks],
            "backbone_features": bb.num_features,
            "img_att_layers": cfg["img_att"]["layers"],
            "img_att_ff": cfg["img_att"]["ff"],
            "bert_hidden": cfg["bert"]["hidden"],
            "bert_layers": cfg["bert"]["layers"],
            "bert_intermediate": cfg["bert"]["intermediate"],
            "bert_max_position": cfg["bert"]["max_position"],
            "vocab_size": cfg["bert"]["vocab"],
            "text_att_layers": cfg["text_att"]["layers"],
            "text_att_ff": cfg["text_att"]["ff"],
            "emb_dim": cfg["emb_dim"],
        },
    }


def prefix_counts(sd):
    counts = {}
    for k in sd:
        parts = k.split(".")
        p = ".".join(parts[:3]) if parts[1] == "learnable" else ".".join(parts[:2])
        counts[p] = counts.get(p, 0) + 1
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=sorted(CONFIGS))
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--no-golden", action="store_true",
                    help="only write the checkpoint, config.json and images/ (no golden.json)")
    ap.add_argument("--mom", choices=["share-large", "distinct", "same"], default="share-large",
                    help="momentum twins: noisy copies whose tensors of >= %d elements share storage "
                         "with the online ones (default); all distinct (file twice the size of one "
                         "copy, like the release); or the online tensors themselves" % MOM_SHARE_MIN)
    ap.add_argument("--calib", type=int, default=0,
                    help="1/f-noise images added to the fixture images for the BatchNorm statistics")
    args = ap.parse_args()

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    torch.backends.mha.set_fastpath_enabled(False)  # plain math path of nn.TransformerEncoder
    cfg = CONFIGS[args.mode]
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    ckpt_name = cfg["name"] + ".pth"
    ckpt = os.path.join(out, ckpt_name)

    # Inputs first: the fixture images also serve to calibrate the BatchNorm statistics.
    img_dir = os.path.join(out, "images")
    os.makedirs(img_dir, exist_ok=True)
    photos = sorted(f for f in os.listdir(PHOTOS) if f.endswith(".jpg"))
    for f in photos:
        shutil.copyfile(os.path.join(PHOTOS, f), os.path.join(img_dir, f))
    write_synthetic_images(img_dir)
    image_files = photos + SYNTHETIC
    write_decoded_pngs(img_dir, [f for f in image_files if f.endswith(".jpg")])
    calib = [preprocess(load_image(os.path.join(img_dir, f)), cfg["image_size"]) for f in image_files]

    print("building %s" % cfg["name"])
    torch.manual_seed(cfg["seed"])  # timm's conv init draws from the global generator
    model = BriVL(cfg, with_mom=False)
    randomize(model, cfg, args.calib, calib)
    model.eval()
    if args.mom == "same":
        model.imgencoder_mom = model.imgencoder
        model.textencoder_mom = model.textencoder
    else:
        make_mom(model, MOM_SHARE_MIN if args.mom == "share-large" else float("inf"))
    sd = released_state_dict(model, cfg)
    for k, v in sd.items():
        assert v.dtype in (torch.float32, torch.int64), (k, v.dtype)
    torch.save({"learnable": sd}, ckpt)
    print("wrote %s (%d bytes, %d keys)" % (ckpt, os.path.getsize(ckpt), len(sd)))
    for p, n in sorted(prefix_counts(sd).items()):
        print("  %-45s %d" % (p, n))

    # Everything below runs on the checkpoint as written, through a fresh model.
    ref, _ = load_released(ckpt, cfg)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config_json(cfg, ckpt_name, ref), f, indent=2, ensure_ascii=False)
        f.write("\n")
    with torch.no_grad():
        spec_checks(ref, cfg)
    if args.no_golden:
        return

    with torch.no_grad():
        g = golden(ref, cfg, out, img_dir, image_files)
    doc = {
        "model": cfg["name"],
        "checkpoint": ckpt_name,
        "checkpoint_sha256": sha256(ckpt),
        "image_size": cfg["image_size"],
        "max_text_len": cfg["max_text_len"],
        "max_text_len_l80": 80,
        "float_digits": 7,
        "generator": {"python": sys.version.split()[0], "torch": torch.__version__,
                      "timm": timm.__version__, "transformers": __import__("transformers").__version__,
                      "numpy": np.__version__, "pillow": Image.__version__,
                      "libjpeg_turbo": PIL.features.version("libjpeg_turbo"),
                      "libwebp": PIL.features.version("webp")},
        **g,
    }
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %s (%.1f KB)" % (os.path.join(out, "golden.json"),
                                  os.path.getsize(os.path.join(out, "golden.json")) / 1e3))


if __name__ == "__main__":
    main()
