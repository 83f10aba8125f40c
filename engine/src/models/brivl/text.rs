//! Text tower: BERT over all L positions with no attention mask (as released), L2 per token,
//! textAtt with a key-padding mask, mean over real tokens, textFC.

use super::encoder::{load_stack, EncoderLayer};
use super::loader::{Linear, Loader, Norm};
use super::BrivlConfig;
use crate::backend::Backend;
use crate::ops::Activation;
use crate::{Error, Result};

pub struct TextTower<B: Backend> {
    word: B::Weight,
    /// Position embeddings with token type 0 added, `[max_positions, H]`.
    position_type: B::Weight,
    ln: Norm<B>,
    bert: Vec<EncoderLayer<B>>,
    att: Vec<EncoderLayer<B>>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    /// Rows of the word table: the tokenizer's ids must stay below it.
    vocab: usize,
    max_positions: usize,
}

impl<B: Backend> TextTower<B> {
    pub fn load(l: &Loader<B>, c: &BrivlConfig) -> Result<Self> {
        c.validate()?;
        let &[vocab, hidden] = l.shape("text.embeddings.word.weight")? else {
            return Err(Error::Model("'text.embeddings.word.weight' must be [vocab, hidden]".into()));
        };
        let &[max_positions, h2] = l.shape("text.embeddings.position_type.weight")? else {
            return Err(Error::Model("'text.embeddings.position_type.weight' must be [positions, hidden]".into()));
        };
        if h2 != hidden || max_positions < c.max_text_len {
            return Err(Error::Model(format!(
                "position table [{max_positions}, {h2}] does not fit hidden {hidden} and {} tokens",
                c.max_text_len
            )));
        }
        let bert = load_stack(l, "text.bert", c.bert_heads, Activation::Gelu, 1e-12)?;
        let att = load_stack(l, "text.att", c.text_heads, Activation::Relu, 1e-5)?;
        let (fc1, fc2) = (Linear::load(l, "text.fc1")?, Linear::load(l, "text.fc2")?);
        let d = att[0].width();
        if bert[0].width() != hidden || d != hidden || fc1.inp != d || fc2.inp != fc1.out {
            return Err(Error::Model(format!(
                "text embeddings -> BERT -> textAtt -> fc1 -> fc2 widths {hidden} -> {} -> {d} -> [{}, {}] -> [{}, {}] \
                 do not chain",
                bert[0].width(),
                fc1.out,
                fc1.inp,
                fc2.out,
                fc2.inp
            )));
        }
        Ok(Self {
            word: l.get("text.embeddings.word.weight")?,
            position_type: l.get("text.embeddings.position_type.weight")?,
            ln: Norm::load(l, "text.embeddings.ln", hidden, 1e-12)?,
            bert,
            att,
            fc1,
            fc2,
            vocab,
            max_positions,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// Width of the embeddings this tower gives.
    pub fn embedding_dim(&self) -> usize {
        self.fc2.out
    }

    /// `ids`, `mask`: `u32 [B, L]` (mask 1 for real tokens) -> L2-normalised embeddings `[B, E]`.
    pub fn forward(&self, be: &mut B, ids: &B::Tensor, mask: &B::Tensor) -> Result<B::Tensor> {
        let shape = B::shape(ids);
        if shape.len() != 2 || shape[1] > self.max_positions {
            return Err(Error::Shape(format!("token ids must be [B, L <= {}], got {shape:?}", self.max_positions)));
        }
        let x = be.embedding(ids, &self.word, Some(&self.position_type))?;
        let mut x = self.ln.forward(be, &x, None)?;
        for layer in &self.bert {
            x = layer.forward(be, &x, None)?;
        }
        x = be.l2_normalize(&x)?;
        for layer in &self.att {
            x = layer.forward(be, &x, Some(mask))?;
        }
        let m = be.masked_mean(&x, Some(mask))?;
        let h = self.fc1.forward(be, &m, Activation::Relu)?;
        let e = self.fc2.forward(be, &h, Activation::None)?;
        be.l2_normalize(&e)
    }
}
