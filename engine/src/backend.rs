//! One model code path, two executors: the GPU (ops recorded into a [`Pass`]) and the CPU twins.
//! Models are written once against [`Backend`]; the CPU backend runs them where no adapter exists
//! and is the reference the GPU is tested against.

use std::future::Future;

use crate::ops::{
    attention, conv2d, depthwise, elementwise, embedding, grid_sample, l2_norm, layer_norm, masked_mean, matmul,
    preprocess::{self, Normalize},
    squeeze_excite, Activation,
};
use crate::quant::Packed;
use crate::{Error, Gpu, Pass, Result, Tensor};

pub trait Backend {
    type Tensor: Clone;
    type Weight;

    /// A weight with its logical shape (`[N, K]` matrices may be f16/q8 packed; others f32).
    fn weight(&self, packed: &Packed, shape: &[usize]) -> Result<Self::Weight>;
    fn tensor(&mut self, shape: &[usize], data: &[f32]) -> Result<Self::Tensor>;
    fn tensor_u32(&mut self, shape: &[usize], data: &[u32]) -> Result<Self::Tensor>;
    fn shape(t: &Self::Tensor) -> Vec<usize>;
    fn reshape(&self, t: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;
    /// Multiply-adds x 2 of the matmuls, convolutions and attention recorded so far.
    fn flops(&self) -> u64;
    /// Finishes the recorded work and returns the values of an f32 tensor.
    fn read(&mut self, t: &Self::Tensor) -> impl Future<Output = Result<Vec<f32>>>;

    /// RGBA8 images (`u32 [h, w]` each) -> resized, normalised `[B, out_h, out_w, 3]`.
    fn preprocess(
        &mut self,
        images: &[Self::Tensor],
        out_h: usize,
        out_w: usize,
        norm: &Normalize,
    ) -> Result<Self::Tensor>;
    fn linear(
        &mut self,
        x: &Self::Tensor,
        w: &Self::Weight,
        b: Option<&Self::Weight>,
        act: Activation,
    ) -> Result<Self::Tensor>;
    fn conv2d(
        &mut self,
        x: &Self::Tensor,
        w: &Self::Weight,
        b: Option<&Self::Weight>,
        stride: usize,
        act: Activation,
    ) -> Result<Self::Tensor>;
    fn depthwise(
        &mut self,
        x: &Self::Tensor,
        w: &Self::Weight,
        b: Option<&Self::Weight>,
        stride: usize,
        act: Activation,
    ) -> Result<Self::Tensor>;
    fn squeeze_excite(
        &mut self,
        x: &Self::Tensor,
        w1: &Self::Weight,
        b1: &Self::Weight,
        w2: &Self::Weight,
        b2: &Self::Weight,
    ) -> Result<Self::Tensor>;
    fn add(&mut self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;
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

/// FLOPs (2 x multiply-adds) of the ops that dominate BriVL's cost, from their shapes.
mod cost {
    fn n(shape: &[usize]) -> u64 {
        shape.iter().product::<usize>() as u64
    }
    /// `x [..., K] · w[N, K]ᵀ`
    pub fn linear(x: &[usize], w_rows: usize) -> u64 {
        2 * n(x) * w_rows as u64
    }
    /// Output `[B, Ho, Wo, Cout]`, weight `[Cout, Cin_per_group, kh, kw]`.
    pub fn conv(out: &[usize], w: &[usize]) -> u64 {
        2 * n(out) * n(&w[1..])
    }
    /// `qkv [B, S, 3D]`: scores and weighted sum, `2 x B x S x S x D` each.
    pub fn attention(qkv: &[usize]) -> u64 {
        let (b, s, d) = (qkv[0] as u64, qkv[1] as u64, qkv[2] as u64 / 3);
        4 * b * s * s * d
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
}

impl Backend for GpuBackend {
    type Tensor = Tensor;
    type Weight = Tensor;

    fn weight(&self, packed: &Packed, shape: &[usize]) -> Result<Tensor> {
        let t = Tensor::from_packed(&self.gpu, packed)?;
        if shape.len() == 2 && shape == [packed.rows, packed.cols] {
            Ok(t)
        } else {
            t.reshape(shape)
        }
    }
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
    fn flops(&self) -> u64 {
        self.flops
    }
    async fn read(&mut self, t: &Tensor) -> Result<Vec<f32>> {
        std::mem::replace(&mut self.pass, Pass::new(&self.gpu)).submit()?;
        t.read_f32(&self.gpu).await
    }
    fn preprocess(&mut self, images: &[Tensor], out_h: usize, out_w: usize, norm: &Normalize) -> Result<Tensor> {
        let out = Tensor::uninit(&self.gpu, &[images.len(), out_h, out_w, 3])?;
        for (i, img) in images.iter().enumerate() {
            preprocess::preprocess_into(&mut self.pass, img, &out, i, norm)?;
        }
        Ok(out)
    }
    fn linear(&mut self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, act: Activation) -> Result<Tensor> {
        self.flops += cost::linear(x.shape(), w.shape()[0]);
        matmul::linear(&mut self.pass, x, w, b, act)
    }
    fn conv2d(&mut self, x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, act: Activation) -> Result<Tensor> {
        let y = conv2d::conv2d(&mut self.pass, x, w, b, stride, act)?;
        self.flops += cost::conv(y.shape(), w.shape());
        Ok(y)
    }
    fn depthwise(
        &mut self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        stride: usize,
        act: Activation,
    ) -> Result<Tensor> {
        let y = depthwise::depthwise(&mut self.pass, x, w, b, stride, act)?;
        self.flops += cost::conv(y.shape(), w.shape());
        Ok(y)
    }
    fn squeeze_excite(&mut self, x: &Tensor, w1: &Tensor, b1: &Tensor, w2: &Tensor, b2: &Tensor) -> Result<Tensor> {
        squeeze_excite::squeeze_excite(&mut self.pass, x, w1, b1, w2, b2)
    }
    fn add(&mut self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        elementwise::add(&mut self.pass, a, b)
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
        self.flops += cost::attention(qkv.shape());
        attention::attention(&mut self.pass, qkv, heads, key_mask)
    }
    fn embedding(&mut self, ids: &Tensor, table: &Tensor, add: Option<&Tensor>) -> Result<Tensor> {
        embedding::embedding(&mut self.pass, ids, table, add)
    }
}

/// Host values: f32 activations, or u32 ids / masks / pixels.
#[derive(Clone, Debug)]
pub enum CpuData {
    F32(Vec<f32>),
    U32(Vec<u32>),
}

#[derive(Clone, Debug)]
pub struct CpuTensor {
    pub shape: Vec<usize>,
    pub data: CpuData,
}

impl CpuTensor {
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
    fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self { shape, data: CpuData::F32(data) }
    }
    fn dims4(&self) -> Result<[usize; 4]> {
        self.shape
            .as_slice()
            .try_into()
            .map_err(|_| Error::Shape(format!("expected [B, H, W, C], got {:?}", self.shape)))
    }
}

/// A weight on the host: the dequantised values the GPU kernels see, and the packed form.
pub struct CpuWeight {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
    pub packed: Packed,
}

impl CpuWeight {
    fn dims4(&self) -> Result<[usize; 4]> {
        self.shape
            .as_slice()
            .try_into()
            .map_err(|_| Error::Shape(format!("expected a 4-d weight, got {:?}", self.shape)))
    }
}

/// The CPU twins, in plain Rust.
#[derive(Default)]
pub struct CpuBackend {
    flops: u64,
}

fn last(shape: &[usize]) -> usize {
    shape.last().copied().unwrap_or(1)
}

impl CpuBackend {
    /// Standard or depthwise convolution with SAME padding, channels-last.
    fn conv_cpu(
        &mut self,
        x: &CpuTensor,
        w: &CpuWeight,
        b: Option<&CpuWeight>,
        stride: usize,
        act: Activation,
        depthwise: bool,
    ) -> Result<CpuTensor> {
        let (xs, ws) = (x.dims4()?, w.dims4()?);
        let bias = b.map(|b| &b.values[..]);
        let y = if depthwise {
            depthwise::depthwise_cpu(x.f32()?, xs, &w.values, ws, bias, stride, act)?
        } else {
            conv2d::conv2d_cpu(x.f32()?, xs, &w.values, ws, bias, stride, act)?
        };
        let (oh, _) = conv2d::same_padding(xs[1], ws[2], stride);
        let (ow, _) = conv2d::same_padding(xs[2], ws[3], stride);
        let shape = vec![xs[0], oh, ow, if depthwise { xs[3] } else { ws[0] }];
        self.flops += cost::conv(&shape, &ws);
        Ok(CpuTensor::new(shape, y))
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Weight = CpuWeight;

    fn weight(&self, packed: &Packed, shape: &[usize]) -> Result<CpuWeight> {
        let values = packed.dequantize();
        if values.len() != shape.iter().product::<usize>() {
            return Err(Error::Shape(format!("weight of {} values cannot be {shape:?}", values.len())));
        }
        Ok(CpuWeight { shape: shape.to_vec(), values, packed: packed.clone() })
    }
    fn tensor(&mut self, shape: &[usize], data: &[f32]) -> Result<CpuTensor> {
        if data.len() != shape.iter().product::<usize>() {
            return Err(Error::Shape(format!("{} values cannot be {shape:?}", data.len())));
        }
        Ok(CpuTensor::new(shape.to_vec(), data.to_vec()))
    }
    fn tensor_u32(&mut self, shape: &[usize], data: &[u32]) -> Result<CpuTensor> {
        if data.len() != shape.iter().product::<usize>() {
            return Err(Error::Shape(format!("{} values cannot be {shape:?}", data.len())));
        }
        Ok(CpuTensor { shape: shape.to_vec(), data: CpuData::U32(data.to_vec()) })
    }
    fn shape(t: &CpuTensor) -> Vec<usize> {
        t.shape.clone()
    }
    fn reshape(&self, t: &CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
        if t.shape.iter().product::<usize>() != shape.iter().product::<usize>() {
            return Err(Error::Shape(format!("cannot reshape {:?} to {shape:?}", t.shape)));
        }
        Ok(CpuTensor { shape: shape.to_vec(), data: t.data.clone() })
    }
    fn flops(&self) -> u64 {
        self.flops
    }
    async fn read(&mut self, t: &CpuTensor) -> Result<Vec<f32>> {
        t.f32().map(<[f32]>::to_vec)
    }
    fn preprocess(&mut self, images: &[CpuTensor], out_h: usize, out_w: usize, norm: &Normalize) -> Result<CpuTensor> {
        let mut out = Vec::with_capacity(images.len() * out_h * out_w * 3);
        for img in images {
            let [h, w] = img.shape[..] else {
                return Err(Error::Shape(format!("image must be [h, w], got {:?}", img.shape)));
            };
            out.extend(preprocess::preprocess_cpu(img.u32()?, h, w, out_h, out_w, norm));
        }
        Ok(CpuTensor::new(vec![images.len(), out_h, out_w, 3], out))
    }
    fn linear(&mut self, x: &CpuTensor, w: &CpuWeight, b: Option<&CpuWeight>, act: Activation) -> Result<CpuTensor> {
        let (n, k) = (w.packed.rows, w.packed.cols);
        if last(&x.shape) != k || k == 0 {
            return Err(Error::Shape(format!("linear: x {:?} does not end in K = {k} > 0", x.shape)));
        }
        self.flops += cost::linear(&x.shape, n);
        let y = matmul::linear_cpu(x.f32()?, &w.values, b.map(|b| &b.values[..]), k, act);
        let mut shape = x.shape.clone();
        *shape.last_mut().unwrap() = n;
        Ok(CpuTensor::new(shape, y))
    }
    fn conv2d(
        &mut self,
        x: &CpuTensor,
        w: &CpuWeight,
        b: Option<&CpuWeight>,
        stride: usize,
        act: Activation,
    ) -> Result<CpuTensor> {
        self.conv_cpu(x, w, b, stride, act, false)
    }
    fn depthwise(
        &mut self,
        x: &CpuTensor,
        w: &CpuWeight,
        b: Option<&CpuWeight>,
        stride: usize,
        act: Activation,
    ) -> Result<CpuTensor> {
        self.conv_cpu(x, w, b, stride, act, true)
    }
    fn squeeze_excite(
        &mut self,
        x: &CpuTensor,
        w1: &CpuWeight,
        b1: &CpuWeight,
        w2: &CpuWeight,
        b2: &CpuWeight,
    ) -> Result<CpuTensor> {
        let xs = x.dims4()?;
        if w1.packed.cols != xs[3] || w2.packed.rows != xs[3] || w2.packed.cols != w1.packed.rows {
            return Err(Error::Shape(format!(
                "squeeze_excite: weights {:?}, {:?} do not fit x {xs:?}",
                w1.shape, w2.shape
            )));
        }
        let y = squeeze_excite::squeeze_excite_cpu(x.f32()?, xs, &w1.values, &b1.values, &w2.values, &b2.values);
        Ok(CpuTensor::new(x.shape.clone(), y))
    }
    fn add(&mut self, a: &CpuTensor, b: &CpuTensor) -> Result<CpuTensor> {
        if a.shape != b.shape {
            return Err(Error::Shape(format!("add: {:?} vs {:?}", a.shape, b.shape)));
        }
        Ok(CpuTensor::new(a.shape.clone(), elementwise::add_cpu(a.f32()?, b.f32()?)))
    }
    fn grid_sample(&mut self, x: &CpuTensor, thetas: &CpuWeight, grid: usize) -> Result<CpuTensor> {
        let xs = x.dims4()?;
        let th: Vec<[f32; 6]> = thetas.values.chunks_exact(6).map(|c| c.try_into().unwrap()).collect();
        let y = grid_sample::grid_sample_cpu(x.f32()?, xs, &th, grid);
        Ok(CpuTensor::new(vec![xs[0], th.len(), grid * grid, xs[3]], y))
    }
    fn masked_mean(&mut self, x: &CpuTensor, mask: Option<&CpuTensor>) -> Result<CpuTensor> {
        let [b, s, d] = x.shape[..] else {
            return Err(Error::Shape(format!("masked_mean: x must be [B, S, D], got {:?}", x.shape)));
        };
        let mask = mask.map(|m| m.u32()).transpose()?;
        Ok(CpuTensor::new(vec![b, d], masked_mean::masked_mean_cpu(x.f32()?, b, s, d, mask)))
    }
    fn l2_normalize(&mut self, x: &CpuTensor) -> Result<CpuTensor> {
        Ok(CpuTensor::new(x.shape.clone(), l2_norm::l2_normalize_cpu(x.f32()?, last(&x.shape))))
    }
    fn layer_norm(
        &mut self,
        x: &CpuTensor,
        residual: Option<&CpuTensor>,
        gamma: &CpuWeight,
        beta: &CpuWeight,
        eps: f32,
    ) -> Result<CpuTensor> {
        let r = residual.map(|r| r.f32()).transpose()?;
        let y = layer_norm::layer_norm_cpu(x.f32()?, r, &gamma.values, &beta.values, eps);
        Ok(CpuTensor::new(x.shape.clone(), y))
    }
    fn attention(&mut self, qkv: &CpuTensor, heads: usize, key_mask: Option<&CpuTensor>) -> Result<CpuTensor> {
        let [b, s, d3] = qkv.shape[..] else {
            return Err(Error::Shape(format!("attention: qkv must be [B, S, 3D], got {:?}", qkv.shape)));
        };
        let mask = key_mask.map(|m| m.u32()).transpose()?;
        self.flops += cost::attention(&qkv.shape);
        let y = attention::attention_cpu(qkv.f32()?, b, s, d3 / 3, heads, mask);
        Ok(CpuTensor::new(vec![b, s, d3 / 3], y))
    }
    fn embedding(&mut self, ids: &CpuTensor, table: &CpuWeight, add: Option<&CpuWeight>) -> Result<CpuTensor> {
        let d = table.packed.cols;
        let len = last(&ids.shape);
        let y = embedding::embedding_cpu(ids.u32()?, &table.values, d, len, add.map(|a| &a.values[..]));
        let mut shape = ids.shape.clone();
        shape.push(d);
        Ok(CpuTensor::new(shape, y))
    }
}
