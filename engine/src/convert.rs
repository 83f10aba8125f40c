//! Checkpoint -> model file: keeps the two towers, folds BatchNorm into the convs, fuses BERT's
//! Q, K and V into one projection, renames to the engine's names and quantises the matrices
//! (with `q8`, the backbone's 1x1 convs are f16, see [`Store::NotQ8`]).
//!
//! Engine names (what `models::brivl` loads):
//! `image.stem`, `image.blocks.S.B.{expand,dw,se_reduce,se_expand,project}`, `image.head`,
//! `image.box_proj`, `image.att.L.{in_proj,out_proj,ff1,ff2,ln1,ln2}`, `image.fc1/fc2`,
//! `text.embeddings.{word,position_type,ln}`, `text.bert.L.*`, `text.att.L.*`, `text.fc1/fc2`.

use std::cell::RefCell;
use std::collections::BTreeSet;

use crate::model_file::{self, WriteTensor};
use crate::models::brivl::batch_norm::fold_batch_norm;
use crate::models::brivl::BrivlConfig;
use crate::{DType, Error, Result};

/// BatchNorm epsilon of the TensorFlow-ported EfficientNet.
const BN_EPS: f32 = 1e-3;

/// Where tensors come from: a PyTorch checkpoint, or anything else with the released names.
pub trait Source {
    fn names(&self) -> Vec<String>;
    /// Shape and f32 values; `None` when absent.
    fn tensor(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>>;
}

impl Source for crate::checkpoint::Checkpoint<'_> {
    fn names(&self) -> Vec<String> {
        crate::checkpoint::Checkpoint::names(self).map(str::to_string).collect()
    }

    fn tensor(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let Some(t) = self.get(name) else { return Ok(None) };
        let values = t.to_f32().map_err(|e| Error::Model(format!("tensor '{name}': {e}")))?;
        Ok(Some((t.shape().to_vec(), values.into_owned())))
    }
}

/// The released checkpoint is `{'learnable': state_dict}`; a bare state dict is taken as it is.
pub fn state_dict<'a>(ckpt: &crate::checkpoint::Checkpoint<'a>) -> crate::checkpoint::Checkpoint<'a> {
    if ckpt.names().any(|n| n.starts_with("learnable.")) {
        ckpt.subtree("learnable")
    } else {
        ckpt.clone()
    }
}

#[derive(Debug)]
pub struct Converted {
    pub bytes: Vec<u8>,
    pub content_hash: String,
    pub tensors: usize,
    pub parameters: usize,
}

/// How a weight is stored.
#[derive(Clone, Copy, PartialEq)]
enum Store {
    /// f32: biases, norms, the stem and depthwise convs, BERT's position rows.
    F32,
    /// A matrix in the file's quantisation.
    Quant,
    /// A matrix in the file's quantisation, but f16 where that is q8: the backbone's 1x1 convs
    /// carry most of the image tower's int8 error while holding 8% of the int8 weights (worst
    /// full-size image cosine 0.9954 with them in q8; `tests/reference/quant_sensitivity.py`).
    NotQ8,
}

struct Ctx<'a, S: Source> {
    src: &'a S,
    used: RefCell<BTreeSet<String>>,
    missing: RefCell<Vec<String>>,
    out: RefCell<Vec<WriteTensor>>,
    quant: DType,
}

impl<S: Source> Ctx<'_, S> {
    fn get(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let t = self.src.tensor(name)?;
        if t.is_some() {
            self.used.borrow_mut().insert(name.to_string());
        } else {
            self.missing.borrow_mut().push(name.to_string());
        }
        Ok(t)
    }

    fn has(&self, name: &str) -> bool {
        self.src.names().iter().any(|n| n == name)
    }

    fn emit(&self, name: String, shape: Vec<usize>, values: Vec<f32>, store: Store) {
        let dtype = match store {
            Store::F32 => DType::F32,
            Store::NotQ8 if self.quant == DType::Q8 => DType::F16,
            _ => self.quant,
        };
        self.out.borrow_mut().push(WriteTensor { name, shape, values, dtype });
    }

    /// A conv (any kernel) followed by BatchNorm -> folded weight and bias.
    /// `store` other than F32: a 1x1 conv stored as `[out, in]` for the matmul kernel.
    fn conv_bn(&self, conv: &str, bn: &str, to: &str, store: Store) -> Result<()> {
        let (Some((shape, mut w)), Some((_, g)), Some((_, b)), Some((_, m)), Some((_, v))) = (
            self.get(&format!("{conv}.weight"))?,
            self.get(&format!("{bn}.weight"))?,
            self.get(&format!("{bn}.bias"))?,
            self.get(&format!("{bn}.running_mean"))?,
            self.get(&format!("{bn}.running_var"))?,
        ) else {
            return Ok(());
        };
        self.used.borrow_mut().insert(format!("{bn}.num_batches_tracked"));
        let bias = fold_batch_norm(&mut w, None, shape[0], &g, &b, &m, &v, BN_EPS)
            .map_err(|e| Error::Model(format!("folding {bn} into {conv}: {e}")))?;
        let shape = if store == Store::F32 { shape } else { pointwise_shape(conv, &shape)? };
        self.emit(format!("{to}.bias"), vec![bias.len()], bias, Store::F32);
        self.emit(format!("{to}.weight"), shape, w, store);
        Ok(())
    }

    /// A linear (or 1x1 conv with bias) copied under a new name.
    fn linear(&self, from: &str, to: &str) -> Result<()> {
        if let Some((shape, w)) = self.get(&format!("{from}.weight"))? {
            let shape = if shape.len() == 4 { pointwise_shape(from, &shape)? } else { shape };
            self.emit(format!("{to}.weight"), shape, w, Store::Quant);
        }
        if let Some((shape, b)) = self.get(&format!("{from}.bias"))? {
            self.emit(format!("{to}.bias"), shape, b, Store::F32);
        }
        Ok(())
    }

    fn copy(&self, from: &str, to: &str) -> Result<()> {
        if let Some((shape, v)) = self.get(from)? {
            self.emit(to.to_string(), shape, v, Store::F32);
        }
        Ok(())
    }

    /// An `nn.TransformerEncoderLayer` stack.
    fn torch_encoder(&self, from: &str, to: &str) -> Result<()> {
        for l in 0..count_indexed(&self.src.names(), &format!("{from}.layers.")) {
            let (f, t) = (format!("{from}.layers.{l}"), format!("{to}.{l}"));
            if let Some((shape, w)) = self.get(&format!("{f}.self_attn.in_proj_weight"))? {
                self.emit(format!("{t}.in_proj.weight"), shape, w, Store::Quant);
            }
            self.copy(&format!("{f}.self_attn.in_proj_bias"), &format!("{t}.in_proj.bias"))?;
            self.linear(&format!("{f}.self_attn.out_proj"), &format!("{t}.out_proj"))?;
            self.linear(&format!("{f}.linear1"), &format!("{t}.ff1"))?;
            self.linear(&format!("{f}.linear2"), &format!("{t}.ff2"))?;
            for (n, m) in [("norm1", "ln1"), ("norm2", "ln2")] {
                self.copy(&format!("{f}.{n}.weight"), &format!("{t}.{m}.weight"))?;
                self.copy(&format!("{f}.{n}.bias"), &format!("{t}.{m}.bias"))?;
            }
        }
        Ok(())
    }
}

fn pointwise_shape(name: &str, shape: &[usize]) -> Result<Vec<usize>> {
    match shape {
        [o, i, 1, 1] => Ok(vec![*o, *i]),
        [o, i] => Ok(vec![*o, *i]),
        _ => Err(Error::Model(format!("'{name}.weight' is {shape:?}, expected a 1x1 conv [out, in, 1, 1]"))),
    }
}

/// How many `prefix{N}.` indices exist (0..N contiguous).
fn count_indexed(names: &[String], prefix: &str) -> usize {
    let idx: BTreeSet<usize> =
        names.iter().filter_map(|n| n.strip_prefix(prefix)?.split('.').next()?.parse().ok()).collect();
    (0..).take_while(|i| idx.contains(i)).count()
}

/// Checkpoint keys that inference never reads.
fn ignorable(name: &str) -> bool {
    name.starts_with("imgencoder_mom.")
        || name.starts_with("textencoder_mom.")
        || name.starts_with("imgencoder.backbone.classifier.")
        || name.starts_with("textencoder.backbone.bert.pooler.")
        || name.ends_with("embeddings.position_ids")
        || name.ends_with("num_batches_tracked")
        || !(name.starts_with("imgencoder.") || name.starts_with("textencoder."))
}

/// Converts the released checkpoint layout (the `learnable` state dict) into a model file.
pub fn convert(src: &impl Source, vocab: &str, config: &BrivlConfig, quant: DType) -> Result<Converted> {
    config.validate()?;
    if matches!(quant, DType::U32) {
        return Err(Error::Model("quantisation must be f32, f16 or q8".into()));
    }
    let cx = Ctx { src, used: Default::default(), missing: Default::default(), out: Default::default(), quant };
    let names = src.names();

    // Image backbone.
    let bb = "imgencoder.backbone";
    cx.conv_bn(&format!("{bb}.conv_stem"), &format!("{bb}.bn1"), "image.stem", Store::F32)?;
    let stages = count_indexed(&names, &format!("{bb}.blocks."));
    if stages == 0 {
        cx.missing.borrow_mut().push(format!("{bb}.blocks.*"));
    } else if stages != config.stage_strides.len() {
        return Err(Error::Model(format!(
            "checkpoint has {stages} EfficientNet stages, the config's stage strides name {}",
            config.stage_strides.len()
        )));
    }
    for s in 0..stages {
        for b in 0..count_indexed(&names, &format!("{bb}.blocks.{s}.")) {
            let (f, t) = (format!("{bb}.blocks.{s}.{b}"), format!("image.blocks.{s}.{b}"));
            if cx.has(&format!("{f}.conv_pwl.weight")) {
                cx.conv_bn(&format!("{f}.conv_pw"), &format!("{f}.bn1"), &format!("{t}.expand"), Store::NotQ8)?;
                cx.conv_bn(&format!("{f}.conv_dw"), &format!("{f}.bn2"), &format!("{t}.dw"), Store::F32)?;
                cx.conv_bn(&format!("{f}.conv_pwl"), &format!("{f}.bn3"), &format!("{t}.project"), Store::NotQ8)?;
            } else {
                cx.conv_bn(&format!("{f}.conv_dw"), &format!("{f}.bn1"), &format!("{t}.dw"), Store::F32)?;
                cx.conv_bn(&format!("{f}.conv_pw"), &format!("{f}.bn2"), &format!("{t}.project"), Store::NotQ8)?;
            }
            cx.linear(&format!("{f}.se.conv_reduce"), &format!("{t}.se_reduce"))?;
            cx.linear(&format!("{f}.se.conv_expand"), &format!("{t}.se_expand"))?;
        }
    }
    cx.conv_bn(&format!("{bb}.conv_head"), &format!("{bb}.bn2"), "image.head", Store::Quant)?;
    cx.linear("imgencoder.learnable.max_pool.0", "image.box_proj")?;
    cx.torch_encoder("imgencoder.learnable.imgAtt", "image.att")?;
    cx.linear("imgencoder.learnable.imgFC.fc1", "image.fc1")?;
    cx.linear("imgencoder.learnable.imgFC.fc2", "image.fc2")?;

    // Text: BERT.
    let bert = "textencoder.backbone.bert";
    if let Some((shape, w)) = cx.get(&format!("{bert}.embeddings.word_embeddings.weight"))? {
        validate_vocab(vocab, shape[0])?;
        cx.emit("text.embeddings.word.weight".into(), shape, w, Store::Quant);
    }
    if let (Some((pshape, mut pos)), Some((_, typ))) = (
        cx.get(&format!("{bert}.embeddings.position_embeddings.weight"))?,
        cx.get(&format!("{bert}.embeddings.token_type_embeddings.weight"))?,
    ) {
        // Token type is always 0: fold its row into every position.
        let h = pshape[1];
        for row in pos.chunks_exact_mut(h) {
            row.iter_mut().zip(&typ[..h]).for_each(|(p, t)| *p += t);
        }
        cx.emit("text.embeddings.position_type.weight".into(), pshape, pos, Store::F32);
    }
    cx.copy(&format!("{bert}.embeddings.LayerNorm.weight"), "text.embeddings.ln.weight")?;
    cx.copy(&format!("{bert}.embeddings.LayerNorm.bias"), "text.embeddings.ln.bias")?;
    for l in 0..count_indexed(&names, &format!("{bert}.encoder.layer.")) {
        let (f, t) = (format!("{bert}.encoder.layer.{l}"), format!("text.bert.{l}"));
        let (mut ws, mut bs, mut shape) = (Vec::new(), Vec::new(), Vec::new());
        for p in ["query", "key", "value"] {
            if let (Some((s, w)), Some((_, b))) =
                (cx.get(&format!("{f}.attention.self.{p}.weight"))?, cx.get(&format!("{f}.attention.self.{p}.bias"))?)
            {
                shape = s;
                ws.extend(w);
                bs.extend(b);
            }
        }
        if !shape.is_empty() {
            cx.emit(format!("{t}.in_proj.weight"), vec![3 * shape[0], shape[1]], ws, Store::Quant);
            cx.emit(format!("{t}.in_proj.bias"), vec![bs.len()], bs, Store::F32);
        }
        cx.linear(&format!("{f}.attention.output.dense"), &format!("{t}.out_proj"))?;
        cx.linear(&format!("{f}.intermediate.dense"), &format!("{t}.ff1"))?;
        cx.linear(&format!("{f}.output.dense"), &format!("{t}.ff2"))?;
        for (n, m) in [("attention.output.LayerNorm", "ln1"), ("output.LayerNorm", "ln2")] {
            cx.copy(&format!("{f}.{n}.weight"), &format!("{t}.{m}.weight"))?;
            cx.copy(&format!("{f}.{n}.bias"), &format!("{t}.{m}.bias"))?;
        }
    }
    cx.torch_encoder("textencoder.learnable.textAtt", "text.att")?;
    cx.linear("textencoder.learnable.textFC.fc1", "text.fc1")?;
    cx.linear("textencoder.learnable.textFC.fc2", "text.fc2")?;

    let missing = cx.missing.into_inner();
    let used = cx.used.into_inner();
    let unexpected: Vec<&String> = names.iter().filter(|n| !used.contains(*n) && !ignorable(n)).collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(Error::Model(format!(
            "checkpoint does not have BriVL's layout: {} missing tensor(s){}{}; {} unexpected tensor(s){}{}",
            missing.len(),
            if missing.is_empty() { "" } else { ": " },
            missing.join(", "),
            unexpected.len(),
            if unexpected.is_empty() { "" } else { ": " },
            unexpected.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let out = cx.out.into_inner();
    let parameters = out.iter().map(|t| t.values.len()).sum();
    let (bytes, content_hash) = model_file::write(&out, &config.to_json(), vocab)?;
    Ok(Converted { bytes, content_hash, tensors: out.len(), parameters })
}

/// The vocabulary must be BERT WordPiece lines with the special tokens where BriVL expects them.
pub fn validate_vocab(vocab: &str, embedding_rows: usize) -> Result<()> {
    let lines: Vec<&str> = vocab.lines().collect();
    if lines.len() != embedding_rows {
        return Err(Error::Model(format!(
            "vocabulary has {} entries, the word embeddings have {embedding_rows} rows",
            lines.len()
        )));
    }
    for (id, tok) in [(0, "[PAD]"), (100, "[UNK]"), (101, "[CLS]"), (102, "[SEP]")] {
        if lines.get(id) != Some(&tok) {
            return Err(Error::Model(format!("vocabulary line {} should be {tok}, found {:?}", id + 1, lines.get(id))));
        }
    }
    Ok(())
}
