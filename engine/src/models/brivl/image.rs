//! Image tower: EfficientNet backbone (BatchNorm folded by the converter), 37-box patch pooling,
//! imgAtt, mean, imgFC.

use super::boxes::box_thetas;
use super::encoder::{load_stack, EncoderLayer};
use super::loader::{Linear, Loader};
use super::BrivlConfig;
use crate::backend::Backend;
use crate::ops::{
    conv2d::same_padding,
    preprocess::{Normalize, Photo},
    squeeze_excite::SeWeights,
    Activation,
};
use crate::{Error, Result};

/// Largest conv kernel side (EfficientNet's are 3 and 5).
const MAX_KERNEL: usize = 15;
/// The release's input normalisation: ImageNet's per-channel mean and standard deviation.
const IMAGENET: Normalize = Normalize { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

/// A conv weight with its folded bias.
struct Conv<B: Backend> {
    w: B::Weight,
    b: B::Weight,
}

impl<B: Backend> Conv<B> {
    /// A `[out, in_ch, k, k]` conv; `in_ch` 1 for a depthwise one.
    fn load(l: &Loader<B>, prefix: &str, in_ch: usize) -> Result<(Self, Vec<usize>)> {
        let shape = l.shape(&format!("{prefix}.weight"))?.to_vec();
        match shape[..] {
            [_, i, k, k2] if i == in_ch && k == k2 && (1..=MAX_KERNEL).contains(&k) => {}
            _ => {
                return Err(Error::Model(format!(
                    "'{prefix}.weight' is {shape:?}, expected [out, {in_ch}, k, k] with k at most {MAX_KERNEL}"
                )))
            }
        }
        let b = l.get_shaped(&format!("{prefix}.bias"), &shape[..1])?;
        Ok((Self { w: l.get(&format!("{prefix}.weight"))?, b }, shape))
    }
}

/// EfficientNet block: [1x1 expand ->] depthwise -> squeeze-excite -> 1x1 project [+ input].
struct Block<B: Backend> {
    expand: Option<Linear<B>>,
    dw: Conv<B>,
    se_reduce: Linear<B>,
    se_expand: Linear<B>,
    project: Linear<B>,
    stride: usize,
    skip: bool,
}

impl<B: Backend> Block<B> {
    fn load(l: &Loader<B>, prefix: &str, in_ch: usize, stride: usize) -> Result<Self> {
        let expand = if l.has(&format!("{prefix}.expand.weight")) {
            Some(Linear::load(l, &format!("{prefix}.expand"))?)
        } else {
            None
        };
        let mid = expand.as_ref().map_or(in_ch, |e| e.out);
        if let Some(e) = &expand {
            if e.inp != in_ch {
                return Err(Error::Model(format!(
                    "'{prefix}.expand' takes {} channels, the previous block gives {in_ch}",
                    e.inp
                )));
            }
        }
        let (dw, dw_shape) = Conv::load(l, &format!("{prefix}.dw"), 1)?;
        if dw_shape[0] != mid {
            return Err(Error::Model(format!("'{prefix}.dw.weight' is {dw_shape:?}, expected [{mid}, 1, k, k]")));
        }
        let project = Linear::load(l, &format!("{prefix}.project"))?;
        let se_reduce = Linear::load(l, &format!("{prefix}.se_reduce"))?;
        let se_expand = Linear::load(l, &format!("{prefix}.se_expand"))?;
        if se_reduce.inp != mid || se_expand.inp != se_reduce.out || se_expand.out != mid || project.inp != mid {
            return Err(Error::Model(format!(
                "'{prefix}': squeeze-excite [{}, {}] -> [{}, {}] and project input {} do not fit {mid} channels",
                se_reduce.out, se_reduce.inp, se_expand.out, se_expand.inp, project.inp
            )));
        }
        Ok(Self { expand, dw, se_reduce, se_expand, skip: stride == 1 && project.out == in_ch, project, stride })
    }

    fn forward(&self, be: &mut B, x: &B::Tensor) -> Result<B::Tensor> {
        let h = match &self.expand {
            Some(e) => e.forward(be, x, Activation::Silu)?,
            None => x.clone(),
        };
        let (r, e) = (&self.se_reduce, &self.se_expand);
        let se = SeWeights {
            w1: &r.w,
            b1: r.b.as_ref().ok_or_else(no_bias)?,
            w2: &e.w,
            b2: e.b.as_ref().ok_or_else(no_bias)?,
        };
        let (h, gate) = be.depthwise_se(&h, &self.dw.w, Some(&self.dw.b), self.stride, Activation::Silu, se)?;
        // The gate is applied as the project conv loads its input, the skip added as it stores.
        be.gated_linear(&h, &gate, &self.project.w, self.project.b.as_ref(), self.skip.then_some(x))
    }
}

fn no_bias() -> Error {
    Error::Model("squeeze-excite layers need biases".into())
}

pub struct ImageTower<B: Backend> {
    stem: Conv<B>,
    blocks: Vec<Block<B>>,
    head: Linear<B>,
    box_proj: Linear<B>,
    thetas: B::Weight,
    boxes: usize,
    att: Vec<EncoderLayer<B>>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    image_size: usize,
    pool_grid: usize,
}

impl<B: Backend> ImageTower<B> {
    pub fn load(l: &Loader<B>, c: &BrivlConfig) -> Result<Self> {
        c.validate()?;
        let (stem, stem_shape) = Conv::load(l, "image.stem", 3)?;
        let mut ch = stem_shape[0];
        let mut size = same_padding(c.image_size, stem_shape[2], 2).0;
        let mut blocks = Vec::new();
        for (s, &stride) in c.stage_strides.iter().enumerate() {
            let mut b = 0;
            while l.has(&format!("image.blocks.{s}.{b}.dw.weight")) {
                let st = if b == 0 { stride } else { 1 };
                let block = Block::load(l, &format!("image.blocks.{s}.{b}"), ch, st)?;
                ch = block.project.out;
                size = same_padding(size, 1, st).0;
                blocks.push(block);
                b += 1;
            }
            if b == 0 {
                return Err(Error::Model(format!("model file has no blocks for EfficientNet stage {s}")));
            }
        }
        if l.has(&format!("image.blocks.{}.0.dw.weight", c.stage_strides.len())) {
            return Err(Error::Model(format!(
                "model file has more stages than the {} strides configured",
                c.stage_strides.len()
            )));
        }
        let head = Linear::load(l, "image.head")?;
        let box_proj = Linear::load(l, "image.box_proj")?;
        if head.inp != ch || box_proj.inp != head.out {
            return Err(Error::Model(format!(
                "image head/box_proj widths {}->{}->{} do not chain from {ch}",
                head.inp, head.out, box_proj.inp
            )));
        }
        let thetas: Vec<f32> = box_thetas(c.image_size as f32, size, size, c.box_grid)?.into_iter().flatten().collect();
        let boxes = thetas.len() / 6;
        let att = load_stack(l, "image.att", c.img_heads, Activation::Relu, 1e-5)?;
        let (fc1, fc2) = (Linear::load(l, "image.fc1")?, Linear::load(l, "image.fc2")?);
        let d = att[0].width();
        if box_proj.out != d || fc1.inp != d || fc2.inp != fc1.out {
            return Err(Error::Model(format!(
                "image box_proj -> imgAtt -> fc1 -> fc2 widths {} -> {d} -> [{}, {}] -> [{}, {}] do not chain",
                box_proj.out, fc1.out, fc1.inp, fc2.out, fc2.inp
            )));
        }
        Ok(Self {
            thetas: l.constant(&thetas, &[boxes, 6])?,
            boxes,
            stem,
            blocks,
            head,
            box_proj,
            att,
            fc1,
            fc2,
            image_size: c.image_size,
            pool_grid: c.pool_grid,
        })
    }

    /// Width of the embeddings this tower gives.
    pub fn embedding_dim(&self) -> usize {
        self.fc2.out
    }

    /// Photos -> the mean of each box's samples of the backbone's features, `[B * boxes, C]`.
    fn box_features(&self, be: &mut B, photos: &[Photo]) -> Result<B::Tensor> {
        let x = be.preprocess(photos, self.image_size, self.image_size, &IMAGENET)?;
        let mut x = be.conv2d(&x, &self.stem.w, Some(&self.stem.b), 2, Activation::Silu)?;
        for block in &self.blocks {
            x = block.forward(be, &x)?;
        }
        let x = self.head.forward(be, &x, Activation::Silu)?;
        // The 1x1 conv on the samples and their average commute: average first, 1/16 the work.
        let samples = be.grid_sample(&x, &self.thetas, self.pool_grid)?;
        let c = self.head.out;
        let samples = be.reshape(&samples, &[photos.len() * self.boxes, self.pool_grid * self.pool_grid, c])?;
        be.masked_mean(&samples, None)
    }

    /// Photos (RGBA8, any size) -> L2-normalised embeddings `[B, E]`.
    pub fn forward(&self, be: &mut B, photos: &[Photo]) -> Result<B::Tensor> {
        let batch = photos.len();
        let step = be.backbone_batch().max(1);
        let pooled = if batch <= step {
            self.box_features(be, photos)?
        } else {
            let parts = photos.chunks(step).map(|chunk| self.box_features(be, chunk)).collect::<Result<Vec<_>>>()?;
            be.concat(&parts)?
        };
        let boxes = self.box_proj.forward(be, &pooled, Activation::None)?;
        let mut x = be.reshape(&boxes, &[batch, self.boxes, self.box_proj.out])?;
        x = be.l2_normalize(&x)?;
        for layer in &self.att {
            x = layer.forward(be, &x, None)?;
        }
        let m = be.masked_mean(&x, None)?;
        let h = self.fc1.forward(be, &m, Activation::Relu)?;
        let e = self.fc2.forward(be, &h, Activation::None)?;
        be.l2_normalize(&e)
    }
}
