//! One model code path, two executors: the GPU (ops recorded into a [`Pass`]) and the CPU twins.
//! Models are written once against [`Backend`]; the CPU backend runs them where no adapter exists
//! and is the reference the GPU is tested against.

use std::future::Future;

use crate::cpu::gemm::{PanelMatrix, Rhs};
use crate::cpu::op_times;
use crate::ops::{
    attention, concat, conv2d, depthwise, embedding, grid_sample, l2_norm, layer_norm, masked_mean, matmul,
    preprocess::{self, Normalize, Photo},
    squeeze_excite::{self, SeWeights},
    Activation, Meta,
};
use crate::quant::Packed;
use crate::tensor::{check_len, Readback};
use crate::{DType, Error, Gpu, Pass, Result, Tensor};

/// The ops a model calls. Both implementations validate inputs with the same per-op `check`
/// (`ops/<op>.rs`), so a bad input gets the same error from either.
pub trait Backend {
    type Tensor: Clone;
    type Weight;

    /// A weight with its logical shape (`[N, K]` matrices may be f16/q8 packed; others f32).
    fn weight(&self, packed: &Packed, shape: &[usize]) -> Result<Self::Weight>;
    /// An f32 activation from the host. Only tests need one: models start from ids and pixels.
    #[cfg(test)]
    fn tensor(&mut self, shape: &[usize], data: &[f32]) -> Result<Self::Tensor>;
    fn tensor_u32(&mut self, shape: &[usize], data: &[u32]) -> Result<Self::Tensor>;
    fn shape(t: &Self::Tensor) -> Vec<usize>;
    fn reshape(&self, t: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;
    /// f32 tensors joined along their first axis.
    fn concat(&mut self, parts: &[Self::Tensor]) -> Result<Self::Tensor>;
    /// Photos the image backbone takes at once. The GPU takes a whole batch; the CPU one photo
    /// at a time, so that a photo's activations (tens of MB at 456 px) stay in cache from op to
    /// op and their buffers are reused by the next photo, where a batch of 8 would hold
    /// 240 MB tensors and twice the memory.
    fn backbone_batch(&self) -> usize;
    /// Multiply-adds x 2 of the matmuls, convolutions and attention recorded so far.
    fn flops(&self) -> u64;
    /// The values of a tensor on their way to the host (see [`Backend::submit_read`]).
    type Pending;
    /// Finishes the recorded work with `t` (f32) copied for the host. Work recorded and
    /// submitted after this runs while the copy waits for [`Backend::finish`].
    fn submit_read(&mut self, t: &Self::Tensor) -> Result<Self::Pending>;
    fn finish(&mut self, pending: Self::Pending) -> impl Future<Output = Result<Vec<f32>>>;

    /// RGBA8 photos on the host -> resized, normalised `[B, out_h, out_w, 3]`.
    fn preprocess(&mut self, photos: &[Photo], out_h: usize, out_w: usize, norm: &Normalize) -> Result<Self::Tensor>;
    fn linear(
        &mut self,
        x: &Self::Tensor,
        w: &Self::Weight,
        b: Option<&Self::Weight>,
        act: Activation,
    ) -> Result<Self::Tensor>;
    /// `(x ⊙ gate) · wᵀ + b (+ residual)`, `gate [B, K]` one row per image of `x [B, ..., K]`.
    fn gated_linear(
        &mut self,
        x: &Self::Tensor,
        gate: &Self::Tensor,
        w: &Self::Weight,
        b: Option<&Self::Weight>,
        residual: Option<&Self::Tensor>,
    ) -> Result<Self::Tensor>;
    fn conv2d(
        &mut self,
        x: &Self::Tensor,
        w: &Self::Weight,
        b: Option<&Self::Weight>,
        stride: usize,
        act: Activation,
    ) -> Result<Self::Tensor>;
    /// A depthwise conv's output and squeeze-excite's gate of it, `[B, C]`.
    fn depthwise_se(
        &mut self,
        x: &Self::Tensor,
        w: &Self::Weight,
        b: Option<&Self::Weight>,
        stride: usize,
        act: Activation,
        se: SeWeights<'_, Self::Weight>,
    ) -> Result<(Self::Tensor, Self::Tensor)>;
    fn grid_sample(&mut self, x: &Self::Tensor, thetas: &Self::Weight, grid: usize) -> Result<Self::Tensor>;
    fn masked_mean(&mut self, x: &Self::Tensor, mask: Option<&Self::Tensor>) -> Result<Self::Tensor>;
    fn l2_normalize(&mut self, x: &Self::Tensor) -> Result<Self::Tensor>;
    fn layer_norm(
        &mut self,
        x: &Self::Tensor,
        residual: Option<&Self::Tensor>,
        gamma: &Self::Weight,
        beta: &Self::Weight,
        eps: f32,
    ) -> Result<Self::Tensor>;
    fn attention(&mut self, qkv: &Self::Tensor, heads: usize, key_mask: Option<&Self::Tensor>) -> Result<Self::Tensor>;
    fn embedding(
        &mut self,
        ids: &Self::Tensor,
        table: &Self::Weight,
        add: Option<&Self::Weight>,
    ) -> Result<Self::Tensor>;
}

/// FLOPs (2 x multiply-adds) of the ops that dominate BriVL's cost, from the shapes of an op that
/// succeeded.
mod cost {
    fn n(shape: &[usize]) -> u64 {
        shape.iter().product::<usize>() as u64
    }
    /// Output `[..., N]` of `x [..., K] · w[N, K]ᵀ`.
    pub fn linear(out: &[usize], k: usize) -> u64 {
        2 * n(out) * k as u64
    }
    /// Output `[B, Ho, Wo, Cout]`, weight `[Cout, Cin_per_group, kh, kw]`.
    pub fn conv(out: &[usize], w: &[usize]) -> u64 {
        2 * n(out) * n(w.get(1..).unwrap_or_default())
    }
    /// Output `[B, S, D]`: scores and weighted sum, `2 x B x S x S x D` each.
    pub fn attention(out: &[usize]) -> u64 {
        4 * n(out) * out.get(1).copied().unwrap_or(0) as u64
    }
}

/// Records into one pass; `read` submits it (one submission per forward pass).
pub struct GpuBackend {
    gpu: Gpu,
    pass: Pass,
    flops: u64,
}

impl GpuBackend {
    pub fn new(gpu: &Gpu) -> Self {
        Self { gpu: gpu.clone(), pass: Pass::new(gpu), flops: 0 }
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    fn count(&mut self, flops: u64) {
        self.flops += flops;
        self.pass.note_flops(flops);
    }
}

impl Backend for GpuBackend {
    type Tensor = Tensor;
    type Weight = Tensor;
    type Pending = Readback;

    fn weight(&self, packed: &Packed, shape: &[usize]) -> Result<Tensor> {
        let t = Tensor::from_packed(&self.gpu, packed)?;
        if shape == [packed.rows, packed.cols] {
            Ok(t)
        } else {
            t.reshape(shape)
        }
    }
    #[cfg(test)]
    fn tensor(&mut self, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        Tensor::from_f32(&self.gpu, shape, data)
    }
    fn tensor_u32(&mut self, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        Tensor::from_u32(&self.gpu, shape, data)
    }
    fn shape(t: &Tensor) -> Vec<usize> {
        t.shape().to_vec()
    }
    fn reshape(&self, t: &Tensor, shape: &[usize]) -> Result<Tensor> {
        t.reshape(shape)
    }
    fn concat(&mut self, parts: &[Tensor]) -> Result<Tensor> {
        concat::concat(&mut self.pass, &parts.iter().collect::<Vec<_>>())
    }
    fn backbone_batch(&self) -> usize {
        usize::MAX
    }
    fn flops(&self) -> u64 {
        self.flops
    }
    fn submit_read(&mut self, t: &Tensor) -> Result<Readback> {
        std::mem::replace(&mut self.pass, Pass::new(&self.gpu)).submit_and_read(t)
    }
    async fn finish(&mut self, pending: Readback) -> Result<Vec<f32>> {
        pending.f32s(&self.gpu).await
    }
    fn preprocess(&mut self, photos: &[Photo], out_h: usize, out_w: usize, norm: &Normalize) -> Result<Tensor> {
        preprocess::preprocess(&mut self.pass, photos, out_h, out_w, norm)
    }
    fn linear(&mut self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, act: Activation) -> Result<Tensor> {
        let y = matmul::linear(&mut self.pass, x, w, b, act)?;
        self.count(cost::linear(y.shape(), x.shape().last().copied().unwrap_or(0)));
        Ok(y)
    }
    fn gated_linear(
        &mut self,
        x: &Tensor,
        gate: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let y = matmul::gated_linear(&mut self.pass, x, gate, w, b, residual)?;
        self.count(cost::linear(y.shape(), x.shape().last().copied().unwrap_or(0)));
        Ok(y)
    }
    fn conv2d(&mut self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, act: Activation) -> Result<Tensor> {
        let y = conv2d::conv2d(&mut self.pass, x, w, b, stride, act)?;
        self.count(cost::conv(y.shape(), w.shape()));
        Ok(y)
    }
    fn depthwise_se(
        &mut self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        stride: usize,
        act: Activation,
        se: SeWeights<'_, Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        // Both checked before anything is recorded, so an Err leaves the pass untouched.
        let se_metas = [se.w1.into(), se.b1.into(), se.w2.into(), se.b2.into()];
        squeeze_excite::check_depthwise_se(x.into(), w.into(), b.map(Meta::from), stride, se_metas)?;
        let (y, partial) = depthwise::depthwise_pooled(&mut self.pass, x, w, b, stride, act)?;
        self.count(cost::conv(y.shape(), w.shape()));
        let gate = squeeze_excite::se_gate(&mut self.pass, &y, &partial, se)?;
        Ok((y, gate))
    }
    fn grid_sample(&mut self, x: &Tensor, thetas: &Tensor, grid: usize) -> Result<Tensor> {
        grid_sample::grid_sample(&mut self.pass, x, thetas, grid)
    }
    fn masked_mean(&mut self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        masked_mean::masked_mean(&mut self.pass, x, mask)
    }
    fn l2_normalize(&mut self, x: &Tensor) -> Result<Tensor> {
        l2_norm::l2_normalize(&mut self.pass, x)
    }
    fn layer_norm(
        &mut self,
        x: &Tensor,
        residual: Option<&Tensor>,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f32,
    ) -> Result<Tensor> {
        layer_norm::layer_norm(&mut self.pass, x, residual, gamma, beta, eps)
    }
    fn attention(&mut self, qkv: &Tensor, heads: usize, key_mask: Option<&Tensor>) -> Result<Tensor> {
        let y = attention::attention(&mut self.pass, qkv, heads, key_mask)?;
        self.count(cost::attention(y.shape()));
        Ok(y)
    }
    fn embedding(&mut self, ids: &Tensor, table: &Tensor, add: Option<&Tensor>) -> Result<Tensor> {
        embedding::embedding(&mut self.pass, ids, table, add)
    }
}

/// Host values: f32 activations, or u32 ids / masks / pixels.
#[derive(Clone, Debug)]
enum CpuData {
    F32(Vec<f32>),
    U32(Vec<u32>),
}

/// A tensor on the host. Built only by [`CpuBackend`], so its data always fills its shape.
#[derive(Clone, Debug)]
pub struct CpuTensor {
    shape: Vec<usize>,
    data: CpuData,
}

impl Drop for CpuTensor {
    fn drop(&mut self) {
        if let CpuData::F32(v) = &mut self.data {
            crate::cpu::buffers::recycle(std::mem::take(v));
        }
    }
}

impl CpuTensor {
    fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self { shape, data: CpuData::F32(data) }
    }
    fn meta(&self) -> Meta<'_> {
        let dtype = match self.data {
            CpuData::F32(_) => DType::F32,
            CpuData::U32(_) => DType::U32,
        };
        Meta { shape: &self.shape, dtype }
    }
    /// The values of an f32 tensor; the op's `check` has already refused other dtypes.
    fn f32(&self) -> Result<&[f32]> {
        match &self.data {
            CpuData::F32(v) => Ok(v),
            CpuData::U32(_) => Err(Error::Shape("expected an f32 tensor, got u32".into())),
        }
    }
    fn u32(&self) -> Result<&[u32]> {
        match &self.data {
            CpuData::U32(v) => Ok(v),
            CpuData::F32(_) => Err(Error::Shape("expected a u32 tensor, got f32".into())),
        }
    }
}

/// A weight on the host: its logical shape and format, and its values: f32 ones as they are,
/// f16 and q8 matrices still in their format, rearranged into the GEMM's panels.
pub struct CpuWeight {
    shape: Vec<usize>,
    dtype: DType,
    data: WeightData,
}

enum WeightData {
    F32(Vec<f32>),
    Panels(PanelMatrix),
}

impl CpuWeight {
    fn meta(&self) -> Meta<'_> {
        Meta { shape: &self.shape, dtype: self.dtype }
    }
    /// The values of an f32 weight; ops whose `check` takes only f32 call this.
    fn f32(&self) -> Result<&[f32]> {
        match &self.data {
            WeightData::F32(v) => Ok(v),
            WeightData::Panels(_) => Err(Error::Shape(format!("expected an f32 weight, got {:?}", self.dtype))),
        }
    }
    /// The weight as the right-hand side of a GEMM (`[N, K]`).
    fn rhs(&self) -> Rhs<'_> {
        match &self.data {
            WeightData::F32(v) => Rhs::F32(v),
            WeightData::Panels(m) => Rhs::Panels(m),
        }
    }
    /// Row `r` of a `[rows, cols]` weight as f32.
    fn row(&self, r: usize, out: &mut [f32]) {
        match &self.data {
            WeightData::F32(v) => out.copy_from_slice(&v[r * out.len()..(r + 1) * out.len()]),
            WeightData::Panels(m) => m.row(r, out),
        }
    }
}

/// The CPU twins, in plain Rust.
#[derive(Default)]
pub struct CpuBackend {
    flops: u64,
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Weight = CpuWeight;
    type Pending = Vec<f32>;

    fn weight(&self, packed: &Packed, shape: &[usize]) -> Result<CpuWeight> {
        check_len(shape, packed.rows * packed.cols)?;
        // u32 words are kept as they are (as the GPU keeps them): each op's check refuses them.
        let data = match PanelMatrix::from_packed(packed) {
            Some(m) => WeightData::Panels(m),
            None => WeightData::F32(packed.words.iter().map(|w| f32::from_bits(*w)).collect()),
        };
        Ok(CpuWeight { shape: shape.to_vec(), dtype: packed.dtype, data })
    }
    #[cfg(test)]
    fn tensor(&mut self, shape: &[usize], data: &[f32]) -> Result<CpuTensor> {
        check_len(shape, data.len())?;
        Ok(CpuTensor::new(shape.to_vec(), data.to_vec()))
    }
    fn tensor_u32(&mut self, shape: &[usize], data: &[u32]) -> Result<CpuTensor> {
        check_len(shape, data.len())?;
        Ok(CpuTensor { shape: shape.to_vec(), data: CpuData::U32(data.to_vec()) })
    }
    fn shape(t: &CpuTensor) -> Vec<usize> {
        t.shape.clone()
    }
    fn reshape(&self, t: &CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
        check_len(shape, t.shape.iter().product())?;
        Ok(CpuTensor { shape: shape.to_vec(), data: t.data.clone() })
    }
    fn concat(&mut self, parts: &[CpuTensor]) -> Result<CpuTensor> {
        let shape = concat::check(&parts.iter().map(CpuTensor::meta).collect::<Vec<_>>())?;
        let values = parts.iter().map(CpuTensor::f32).collect::<Result<Vec<_>>>()?;
        Ok(CpuTensor::new(shape, concat::concat_cpu(&values)))
    }
    fn backbone_batch(&self) -> usize {
        1
    }
    fn flops(&self) -> u64 {
        self.flops
    }
    fn submit_read(&mut self, t: &CpuTensor) -> Result<Vec<f32>> {
        // The forward pass is over: buffers it did not use go back to the allocator.
        crate::cpu::buffers::end_pass();
        match &t.data {
            CpuData::F32(v) => Ok(v.clone()),
            // As `Tensor::read_f32` words it.
            CpuData::U32(_) => Err(Error::Shape(format!("read_f32 on a {:?} tensor", DType::U32))),
        }
    }
    async fn finish(&mut self, pending: Vec<f32>) -> Result<Vec<f32>> {
        Ok(pending)
    }
    fn preprocess(&mut self, photos: &[Photo], out_h: usize, out_w: usize, norm: &Normalize) -> Result<CpuTensor> {
        preprocess::check(photos, out_h, out_w, norm)?;
        let mut out = Vec::with_capacity(photos.len() * out_h * out_w * 3);
        for p in photos {
            out.extend(preprocess::preprocess_cpu(p.rgba, p.height, p.width, out_h, out_w, norm));
        }
        Ok(CpuTensor::new(vec![photos.len(), out_h, out_w, 3], out))
    }
    fn linear(&mut self, x: &CpuTensor, w: &CpuWeight, b: Option<&CpuWeight>, act: Activation) -> Result<CpuTensor> {
        let g = matmul::check(x.meta(), w.meta(), b.map(CpuWeight::meta))?;
        let _t = op_times::start(|| format!("linear {:?} k{} {:?} {act:?}", g.out_shape, g.k, w.dtype));
        let y = matmul::linear_cpu(x.f32()?, w.rhs(), b.map(CpuWeight::f32).transpose()?, g.k, act);
        self.flops += cost::linear(&g.out_shape, g.k);
        Ok(CpuTensor::new(g.out_shape, y))
    }
    fn gated_linear(
        &mut self,
        x: &CpuTensor,
        gate: &CpuTensor,
        w: &CpuWeight,
        b: Option<&CpuWeight>,
        residual: Option<&CpuTensor>,
    ) -> Result<CpuTensor> {
        let (g, rows) = matmul::check_gated(
            x.meta(),
            gate.meta(),
            w.meta(),
            b.map(CpuWeight::meta),
            residual.map(CpuTensor::meta),
        )?;
        let (b, residual) = (b.map(CpuWeight::f32).transpose()?, residual.map(CpuTensor::f32).transpose()?);
        let _t = op_times::start(|| format!("gated linear {:?} k{} {:?}", g.out_shape, g.k, w.dtype));
        let y = matmul::gated_linear_cpu(x.f32()?, gate.f32()?, rows, w.rhs(), b, g.k, residual);
        self.flops += cost::linear(&g.out_shape, g.k);
        Ok(CpuTensor::new(g.out_shape, y))
    }
    fn conv2d(
        &mut self,
        x: &CpuTensor,
        w: &CpuWeight,
        b: Option<&CpuWeight>,
        stride: usize,
        act: Activation,
    ) -> Result<CpuTensor> {
        let g = conv2d::check(x.meta(), w.meta(), b.map(CpuWeight::meta), stride)?;
        let _t = op_times::start(|| format!("conv {:?} {}x{} s{stride}", g.out_shape(), g.kh, g.kw));
        let y = conv2d::conv2d_cpu(x.f32()?, w.f32()?, b.map(CpuWeight::f32).transpose()?, &g, act);
        self.flops += cost::conv(&g.out_shape(), &w.shape);
        Ok(CpuTensor::new(g.out_shape().to_vec(), y))
    }
    fn depthwise_se(
        &mut self,
        x: &CpuTensor,
        w: &CpuWeight,
        b: Option<&CpuWeight>,
        stride: usize,
        act: Activation,
        se: SeWeights<'_, CpuWeight>,
    ) -> Result<(CpuTensor, CpuTensor)> {
        let se_metas = [se.w1.meta(), se.b1.meta(), se.w2.meta(), se.b2.meta()];
        let g = squeeze_excite::check_depthwise_se(x.meta(), w.meta(), b.map(CpuWeight::meta), stride, se_metas)?;
        let dw = depthwise::check(x.meta(), w.meta(), b.map(CpuWeight::meta), stride)?;
        let bias = b.map(CpuWeight::f32).transpose()?;
        let _t = op_times::start(|| format!("depthwise+se {:?} {}x{} s{stride}", dw.out_shape(), dw.kh, dw.kw));
        let (y, means) = depthwise::depthwise_pooled_cpu(x.f32()?, w.f32()?, bias, &dw, act);
        self.flops += cost::conv(&dw.out_shape(), &w.shape);
        let gate = squeeze_excite::se_gate_from_means(&means, &g, se.w1.rhs(), se.b1.f32()?, se.w2.rhs(), se.b2.f32()?);
        Ok((CpuTensor::new(dw.out_shape().to_vec(), y), CpuTensor::new(vec![g.b, g.c], gate)))
    }
    fn grid_sample(&mut self, x: &CpuTensor, thetas: &CpuWeight, grid: usize) -> Result<CpuTensor> {
        let g = grid_sample::check(x.meta(), thetas.meta(), grid)?;
        let y = grid_sample::grid_sample_cpu(x.f32()?, &g, thetas.f32()?);
        Ok(CpuTensor::new(g.out_shape().to_vec(), y))
    }
    fn masked_mean(&mut self, x: &CpuTensor, mask: Option<&CpuTensor>) -> Result<CpuTensor> {
        let g = masked_mean::check(x.meta(), mask.map(CpuTensor::meta))?;
        let mask = mask.map(CpuTensor::u32).transpose()?;
        Ok(CpuTensor::new(vec![g.b, g.d], masked_mean::masked_mean_cpu(x.f32()?, &g, mask)))
    }
    fn l2_normalize(&mut self, x: &CpuTensor) -> Result<CpuTensor> {
        let d = l2_norm::check(x.meta())?;
        Ok(CpuTensor::new(x.shape.clone(), l2_norm::l2_normalize_cpu(x.f32()?, d)))
    }
    fn layer_norm(
        &mut self,
        x: &CpuTensor,
        residual: Option<&CpuTensor>,
        gamma: &CpuWeight,
        beta: &CpuWeight,
        eps: f32,
    ) -> Result<CpuTensor> {
        layer_norm::check(x.meta(), residual.map(CpuTensor::meta), gamma.meta(), beta.meta())?;
        let r = residual.map(CpuTensor::f32).transpose()?;
        let y = layer_norm::layer_norm_cpu(x.f32()?, r, gamma.f32()?, beta.f32()?, eps);
        Ok(CpuTensor::new(x.shape.clone(), y))
    }
    fn attention(&mut self, qkv: &CpuTensor, heads: usize, key_mask: Option<&CpuTensor>) -> Result<CpuTensor> {
        let g = attention::check(qkv.meta(), heads, key_mask.map(CpuTensor::meta))?;
        let mask = key_mask.map(CpuTensor::u32).transpose()?;
        let shape = vec![g.batch, g.seq, g.d];
        self.flops += cost::attention(&shape);
        Ok(CpuTensor::new(shape, attention::attention_cpu(qkv.f32()?, &g, mask)))
    }
    fn embedding(&mut self, ids: &CpuTensor, table: &CpuWeight, add: Option<&CpuWeight>) -> Result<CpuTensor> {
        let g = embedding::check(ids.meta(), table.meta(), add.map(CpuWeight::meta))?;
        let y =
            embedding::embedding_cpu(ids.u32()?, |r, out| table.row(r, out), &g, add.map(CpuWeight::f32).transpose()?);
        Ok(CpuTensor::new(g.out_shape, y))
    }
}
