use crate::backend::Backend;
use crate::model_file::ModelFile;
use crate::quant::Packed;
use crate::{DType, Error, Result};

/// Reads named weights from a model file onto a backend, checking shapes. Each weight is packed
/// from the file's bytes when it is read and handed to the backend (the GPU uploads it and the
/// packed copy goes), so loading holds the file and one tensor, not a second copy of the model.
pub struct Loader<'a, B: Backend> {
    pub backend: &'a B,
    pub file: &'a ModelFile<'a>,
}

impl<'a, B: Backend> Loader<'a, B> {
    pub fn new(backend: &'a B, file: &'a ModelFile<'a>) -> Self {
        Self { backend, file }
    }

    pub fn has(&self, name: &str) -> bool {
        self.file.contains(name)
    }

    pub fn shape(&self, name: &str) -> Result<&'a [usize]> {
        self.file.shape(name)
    }

    /// A weight with its stored shape.
    pub fn get(&self, name: &str) -> Result<B::Weight> {
        let t = self.file.get(name)?;
        self.backend.weight(&t.packed, &t.shape)
    }

    /// A weight that must have `shape`.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<B::Weight> {
        let got = self.file.shape(name)?;
        if got != shape {
            return Err(Error::Model(format!("tensor '{name}' is {got:?}, expected {shape:?}")));
        }
        self.get(name)
    }

    /// A weight computed at load time (e.g. box thetas).
    pub fn constant(&self, values: &[f32], shape: &[usize]) -> Result<B::Weight> {
        let rows = if shape.len() < 2 { 1 } else { shape[0] };
        let packed = Packed::new(values, rows, values.len() / rows.max(1), DType::F32)?;
        self.backend.weight(&packed, shape)
    }
}

/// Weight and bias of a linear layer, with the sizes read from the weight.
pub struct Linear<B: Backend> {
    pub w: B::Weight,
    pub b: Option<B::Weight>,
    pub out: usize,
    pub inp: usize,
}

impl<B: Backend> Linear<B> {
    pub fn load(l: &Loader<B>, prefix: &str) -> Result<Self> {
        let shape = l.shape(&format!("{prefix}.weight"))?;
        let [out, inp] = shape[..] else {
            return Err(Error::Model(format!("'{prefix}.weight' is {shape:?}, expected [out, in]")));
        };
        let bias = format!("{prefix}.bias");
        let b = if l.has(&bias) { Some(l.get_shaped(&bias, &[out])?) } else { None };
        Ok(Self { w: l.get(&format!("{prefix}.weight"))?, b, out, inp })
    }

    pub fn forward(&self, be: &mut B, x: &B::Tensor, act: crate::ops::Activation) -> Result<B::Tensor> {
        be.linear(x, &self.w, self.b.as_ref(), act)
    }
}

/// LayerNorm weight and bias.
pub struct Norm<B: Backend> {
    pub gamma: B::Weight,
    pub beta: B::Weight,
    pub eps: f32,
}

impl<B: Backend> Norm<B> {
    pub fn load(l: &Loader<B>, prefix: &str, dim: usize, eps: f32) -> Result<Self> {
        Ok(Self {
            gamma: l.get_shaped(&format!("{prefix}.weight"), &[dim])?,
            beta: l.get_shaped(&format!("{prefix}.bias"), &[dim])?,
            eps,
        })
    }

    /// LN(x + residual).
    pub fn forward(&self, be: &mut B, x: &B::Tensor, residual: Option<&B::Tensor>) -> Result<B::Tensor> {
        be.layer_norm(x, residual, &self.gamma, &self.beta, self.eps)
    }
}
