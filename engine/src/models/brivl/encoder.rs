//! The post-norm transformer layer shared by BERT and the imgAtt / textAtt stacks:
//! `x = LN1(x + MHA(x))`, `x = LN2(x + W2 act(W1 x))`. Q, K and V are one fused projection.

use super::loader::{Linear, Loader, Norm};
use crate::backend::Backend;
use crate::ops::Activation;
use crate::{Error, Result};

pub struct EncoderLayer<B: Backend> {
    qkv: Linear<B>,
    out: Linear<B>,
    ff1: Linear<B>,
    ff2: Linear<B>,
    ln1: Norm<B>,
    ln2: Norm<B>,
    heads: usize,
    act: Activation,
}

impl<B: Backend> EncoderLayer<B> {
    pub fn load(l: &Loader<B>, prefix: &str, heads: usize, act: Activation, eps: f32) -> Result<Self> {
        let qkv = Linear::load(l, &format!("{prefix}.in_proj"))?;
        let d = qkv.inp;
        if qkv.out != 3 * d || heads == 0 || d % heads != 0 {
            return Err(Error::Model(format!(
                "'{prefix}.in_proj' is [{}, {d}]: needs [3d, d] with d divisible by {heads} heads",
                qkv.out
            )));
        }
        Ok(Self {
            qkv,
            out: Linear::load(l, &format!("{prefix}.out_proj"))?,
            ff1: Linear::load(l, &format!("{prefix}.ff1"))?,
            ff2: Linear::load(l, &format!("{prefix}.ff2"))?,
            ln1: Norm::load(l, &format!("{prefix}.ln1"), d, eps)?,
            ln2: Norm::load(l, &format!("{prefix}.ln2"), d, eps)?,
            heads,
            act,
        })
    }

    /// `x`: `[B, S, D]`; `key_mask`: `u32 [B, S]`, 0 for padding that must not be attended to.
    pub fn forward(&self, be: &mut B, x: &B::Tensor, key_mask: Option<&B::Tensor>) -> Result<B::Tensor> {
        let qkv = self.qkv.forward(be, x, Activation::None)?;
        let a = be.attention(&qkv, self.heads, key_mask)?;
        let a = self.out.forward(be, &a, Activation::None)?;
        let x = self.ln1.forward(be, &a, Some(x))?;
        let h = self.ff1.forward(be, &x, self.act)?;
        let h = self.ff2.forward(be, &h, Activation::None)?;
        self.ln2.forward(be, &h, Some(&x))
    }
}

/// Loads `{prefix}.0`, `{prefix}.1`, ... until the first missing index.
pub fn load_stack<B: Backend>(
    l: &Loader<B>,
    prefix: &str,
    heads: usize,
    act: Activation,
    eps: f32,
) -> Result<Vec<EncoderLayer<B>>> {
    let mut layers = Vec::new();
    while l.has(&format!("{prefix}.{}.in_proj.weight", layers.len())) {
        layers.push(EncoderLayer::load(l, &format!("{prefix}.{}", layers.len()), heads, act, eps)?);
    }
    if layers.is_empty() {
        return Err(Error::Model(format!("model file has no '{prefix}.0.*' layers")));
    }
    Ok(layers)
}
