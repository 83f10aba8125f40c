//! Checkpoint -> model file: keeps the two towers, folds BatchNorm into the convs, fuses BERT's
//! Q, K and V into one projection, renames to the engine's names and quantises the matrices
//! (with `q8`, the backbone's 1x1 convs are f16, see `Store::NotQ8`).
//!
//! Two steps: [`plan`] checks every name and shape and lists the output (so the file's header,
//! and every tensor's place in it, is known before a value is read); [`Plan::write`] then reads
//! the source tensor by tensor and streams the model file out through a
//! [`model_file::StreamWriter`], so memory holds one step's tensors at a time. [`convert`] does
//! both into memory.
//!
//! Engine names (what `models::brivl` loads):
//! `image.stem`, `image.blocks.S.B.{expand,dw,se_reduce,se_expand,project}`, `image.head`,
//! `image.box_proj`, `image.att.L.{in_proj,out_proj,ff1,ff2,ln1,ln2}`, `image.fc1/fc2`,
//! `text.embeddings.{word,position_type,ln}`, `text.bert.L.*`, `text.att.L.*`, `text.fc1/fc2`.

use std::cell::RefCell;
use std::collections::BTreeSet;

use crate::model_file::{self, StreamWriter, TensorSpec, WriteAt, WriteTensor};
use crate::models::brivl::batch_norm::fold_batch_norm;
use crate::models::brivl::BrivlConfig;
use crate::{DType, Error, Result};

/// BatchNorm epsilon of the TensorFlow-ported EfficientNet.
const BN_EPS: f32 = 1e-3;

/// Where tensors come from: a PyTorch checkpoint, or anything else with the released names.
pub trait Source {
    fn names(&self) -> Vec<String>;
    /// The shape, without reading the values; `None` when absent.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// Shape and f32 values; `None` when absent.
    fn tensor(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>>;
    /// Bytes the tensors are stored in, when known: the converter refuses to read more elements
    /// than that (tensors that are views of the same storage could otherwise repeat it without
    /// bound).
    fn stored_bytes(&self) -> Option<usize> {
        None
    }
}

impl Source for crate::checkpoint::Checkpoint<'_> {
    fn names(&self) -> Vec<String> {
        crate::checkpoint::Checkpoint::names(self).map(str::to_string).collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.get(name).map(|t| t.shape().to_vec())
    }

    fn stored_bytes(&self) -> Option<usize> {
        Some(self.file_bytes())
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

/// Makes a step's output values (in the order of its outputs) from the source.
type Make<'a> = Box<dyn Fn() -> Result<Vec<Vec<f32>>> + 'a>;

/// One step of the conversion: the engine tensors it makes (name, shape, stored type) and how.
struct Job<'a> {
    outputs: Vec<(String, Vec<usize>, DType)>,
    make: Make<'a>,
}

struct Ctx<'a, S: Source> {
    src: &'a S,
    names: BTreeSet<String>,
    used: RefCell<BTreeSet<String>>,
    missing: RefCell<Vec<String>>,
    jobs: RefCell<Vec<Job<'a>>>,
    quant: DType,
    /// Elements that may still be read (see [`Source::stored_bytes`]).
    budget: std::cell::Cell<usize>,
}

/// Elements any source may give, whatever its size.
const MIN_ELEMENT_BUDGET: usize = 1 << 20;

/// Reads a planned tensor: it must still have the shape it was planned with.
fn read(src: &impl Source, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let (got, values) = src.tensor(name)?.ok_or_else(|| Error::Model(format!("tensor '{name}' went missing")))?;
    if got != shape || shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(values.len()) {
        return Err(Error::Model(format!("tensor '{name}' is {got:?} but has {} values", values.len())));
    }
    Ok(values)
}

impl<'a, S: Source> Ctx<'a, S> {
    /// The shape of a tensor the conversion reads; charged to the element budget.
    fn shape(&self, name: &str) -> Result<Option<Vec<usize>>> {
        let Some(shape) = self.src.shape(name) else {
            self.missing.borrow_mut().push(name.to_string());
            return Ok(None);
        };
        self.used.borrow_mut().insert(name.to_string());
        if shape.contains(&0) {
            return Err(Error::Model(format!("tensor '{name}' is {shape:?}: an empty dimension")));
        }
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::Model(format!("tensor '{name}' is {shape:?}: too many elements")))?;
        let left = self.budget.get().checked_sub(numel).ok_or_else(|| {
            Error::Model(format!(
                "tensor '{name}': the checkpoint's tensors repeat their storage: more elements than its {} \
                 stored bytes",
                self.src.stored_bytes().unwrap_or(0)
            ))
        })?;
        self.budget.set(left);
        Ok(Some(shape))
    }

    /// A tensor that must have `rank` dimensions (`what` says which, for the message).
    fn shape_rank(&self, name: &str, rank: usize, what: &str) -> Result<Option<Vec<usize>>> {
        let t = self.shape(name)?;
        if let Some(shape) = &t {
            if shape.len() != rank {
                return Err(Error::Model(format!("tensor '{name}' is {shape:?}, expected {what}")));
            }
        }
        Ok(t)
    }

    fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    fn dtype(&self, store: Store) -> DType {
        match store {
            Store::F32 => DType::F32,
            Store::NotQ8 if self.quant == DType::Q8 => DType::F16,
            _ => self.quant,
        }
    }

    fn job(&self, outputs: Vec<(String, Vec<usize>, Store)>, make: Make<'a>) {
        let outputs = outputs.into_iter().map(|(n, s, st)| (n, s, self.dtype(st))).collect();
        self.jobs.borrow_mut().push(Job { outputs, make });
    }

    /// Source tensor `from` (of shape `shape`) stored as `to` with `out_shape` (same elements).
    fn copy_as(&self, from: &str, shape: Vec<usize>, to: String, out_shape: Vec<usize>, store: Store) {
        let (src, from) = (self.src, from.to_string());
        self.job(vec![(to, out_shape, store)], Box::new(move || Ok(vec![read(src, &from, &shape)?])));
    }

    /// A conv (any kernel) followed by BatchNorm -> folded weight and bias.
    /// `store` other than F32: a 1x1 conv stored as `[out, in]` for the matmul kernel.
    fn conv_bn(&self, conv: &str, bn: &str, to: &str, store: Store) -> Result<()> {
        let vector = "a vector [channels]";
        let names = [
            format!("{conv}.weight"),
            format!("{bn}.weight"),
            format!("{bn}.bias"),
            format!("{bn}.running_mean"),
            format!("{bn}.running_var"),
        ];
        let (Some(shape), Some(g), Some(b), Some(m), Some(v)) = (
            self.shape_rank(&names[0], 4, "a conv weight [out, in, kh, kw]")?,
            self.shape_rank(&names[1], 1, vector)?,
            self.shape_rank(&names[2], 1, vector)?,
            self.shape_rank(&names[3], 1, vector)?,
            self.shape_rank(&names[4], 1, vector)?,
        ) else {
            return Ok(());
        };
        self.used.borrow_mut().insert(format!("{bn}.num_batches_tracked"));
        let n = shape[0];
        let folding = format!("folding {bn} {g:?} into {conv}.weight {shape:?}");
        if [g[0], b[0], m[0], v[0]] != [n; 4] {
            return Err(Error::Model(format!("{folding}: the BatchNorm vectors must all have {n} values")));
        }
        let out_shape = if store == Store::F32 { shape.clone() } else { pointwise_shape(conv, &shape)? };
        let src = self.src;
        self.job(
            vec![(format!("{to}.bias"), vec![n], Store::F32), (format!("{to}.weight"), out_shape, store)],
            Box::new(move || {
                let mut w = read(src, &names[0], &shape)?;
                let [g, b, m, v] = [1, 2, 3, 4].map(|i| read(src, &names[i], &[n]));
                let bias = fold_batch_norm(&mut w, None, n, &g?, &b?, &m?, &v?, BN_EPS)
                    .map_err(|e| Error::Model(format!("{folding}: {e}")))?;
                Ok(vec![bias, w])
            }),
        );
        Ok(())
    }

    /// A linear (or 1x1 conv with bias) copied under a new name.
    fn linear(&self, from: &str, to: &str) -> Result<()> {
        let mut out = None;
        let name = format!("{from}.weight");
        if let Some(shape) = self.shape(&name)? {
            let pw = pointwise_shape(from, &shape)?;
            out = Some(pw[0]);
            self.copy_as(&name, shape, format!("{to}.weight"), pw, Store::Quant);
        }
        self.bias(&format!("{from}.bias"), &format!("{to}.bias"), out)
    }

    /// A bias vector, of `out` values when the weight is known.
    fn bias(&self, from: &str, to: &str, out: Option<usize>) -> Result<()> {
        if let Some(shape) = self.shape_rank(from, 1, "a vector [out]")? {
            if out.is_some_and(|o| o != shape[0]) {
                return Err(Error::Model(format!(
                    "tensor '{from}' is {shape:?}, its weight has {} rows",
                    out.unwrap_or(0)
                )));
            }
            self.copy_as(from, shape.clone(), to.to_string(), shape, Store::F32);
        }
        Ok(())
    }

    /// A LayerNorm vector copied under a new name.
    fn copy(&self, from: &str, to: &str) -> Result<()> {
        if let Some(shape) = self.shape_rank(from, 1, "a vector")? {
            self.copy_as(from, shape.clone(), to.to_string(), shape, Store::F32);
        }
        Ok(())
    }

    /// An `nn.TransformerEncoderLayer` stack.
    fn torch_encoder(&self, from: &str, to: &str) -> Result<()> {
        for l in 0..count_indexed(&self.src.names(), &format!("{from}.layers.")) {
            let (f, t) = (format!("{from}.layers.{l}"), format!("{to}.{l}"));
            let name = format!("{f}.self_attn.in_proj_weight");
            let mut out = None;
            if let Some(shape) = self.shape_rank(&name, 2, "[3 x width, width]")? {
                if shape[0] != shape[1].saturating_mul(3) {
                    return Err(Error::Model(format!("tensor '{name}' is {shape:?}, expected [3 x width, width]")));
                }
                out = Some(shape[0]);
                self.copy_as(&name, shape.clone(), format!("{t}.in_proj.weight"), shape, Store::Quant);
            }
            self.bias(&format!("{f}.self_attn.in_proj_bias"), &format!("{t}.in_proj.bias"), out)?;
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

/// A matrix `[out, in]`, or a 1x1 conv `[out, in, 1, 1]` taken as one.
fn pointwise_shape(name: &str, shape: &[usize]) -> Result<Vec<usize>> {
    match shape {
        [o, i, 1, 1] => Ok(vec![*o, *i]),
        [o, i] => Ok(vec![*o, *i]),
        _ => Err(Error::Model(format!(
            "tensor '{name}.weight' is {shape:?}, expected a matrix [out, in] or a 1x1 conv [out, in, 1, 1]"
        ))),
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

/// Converts the released checkpoint layout (the `learnable` state dict) into a model file in
/// memory. The same bytes as [`plan`] + [`Plan::write`].
pub fn convert(src: &impl Source, vocab: &str, config: &BrivlConfig, quant: DType) -> Result<Converted> {
    let plan = plan(src, vocab, config, quant)?;
    let (tensors, parameters) = (plan.tensors(), plan.parameters());
    let out = Vec::with_capacity(usize::try_from(plan.total_bytes()).unwrap_or(0));
    let (bytes, content_hash) = plan.write(out, &mut |_, _| {})?;
    Ok(Converted { bytes, content_hash, tensors, parameters })
}

/// A checked conversion, not yet run: what the model file will hold, and how to make it.
pub struct Plan<'a> {
    jobs: Vec<Job<'a>>,
    specs: Vec<TensorSpec>,
    config_json: String,
    vocab: String,
    total_bytes: u64,
}

impl<'a> Plan<'a> {
    /// Engine tensors in the model (a q8 matrix and its scales count once).
    pub fn tensors(&self) -> usize {
        self.jobs.iter().map(|j| j.outputs.len()).sum()
    }
    pub fn parameters(&self) -> usize {
        self.jobs.iter().flat_map(|j| &j.outputs).map(|(_, s, _)| s.iter().product::<usize>()).sum()
    }
    /// The model file's length.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }
    /// Steps (one or a few tensors each): what `progress` counts.
    pub fn steps(&self) -> usize {
        self.jobs.len()
    }

    /// Runs the steps in order, each read from the source, converted and written at its place
    /// in `out`; `progress(done, steps)` after each. Returns `out` and the content hash.
    pub fn write<W: WriteAt>(self, out: W, progress: &mut dyn FnMut(usize, usize)) -> Result<(W, String)> {
        let mut w = self.start(out)?;
        while w.step()? {
            progress(w.done, w.steps);
        }
        w.finish()
    }

    /// The steps to run one at a time (a caller that must yield between them, as a browser
    /// worker does to collect garbage and hear messages); see [`Plan::write`].
    pub fn start<W: WriteAt>(self, out: W) -> Result<Writing<'a, W>> {
        let steps = self.jobs.len();
        let writer = StreamWriter::new(out, self.specs, &self.config_json, &self.vocab)?;
        Ok(Writing { jobs: self.jobs.into_iter(), writer, done: 0, steps })
    }
}

/// A conversion under way: [`Writing::step`] until it says there is no more, then
/// [`Writing::finish`].
pub struct Writing<'a, W: WriteAt> {
    jobs: std::vec::IntoIter<Job<'a>>,
    writer: StreamWriter<W>,
    done: usize,
    steps: usize,
}

impl<W: WriteAt> Writing<'_, W> {
    /// Reads, converts and writes the next step; false when none was left.
    pub fn step(&mut self) -> Result<bool> {
        let Some(job) = self.jobs.next() else { return Ok(false) };
        let values = (job.make)()?;
        let mut raw = Vec::new();
        for ((name, shape, dtype), values) in job.outputs.into_iter().zip(values) {
            raw.extend(model_file::encode(&WriteTensor { name, shape, values, dtype })?);
        }
        // In name order, so each is hashed as it is written.
        raw.sort_by(|a, b| a.name.cmp(&b.name));
        for t in raw {
            self.writer.put(&t.name, &t.bytes)?;
        }
        self.done += 1;
        Ok(true)
    }

    /// Steps done and in all.
    pub fn progress(&self) -> (usize, usize) {
        (self.done, self.steps)
    }

    /// Writes the header; returns the output and the content hash.
    pub fn finish(self) -> Result<(W, String)> {
        self.writer.finish()
    }
}

/// Checks the released checkpoint layout against `config` and `vocab` (every name and shape,
/// nothing read) and lists the conversion's steps and output.
pub fn plan<'a, S: Source>(src: &'a S, vocab: &str, config: &BrivlConfig, quant: DType) -> Result<Plan<'a>> {
    config.validate()?;
    if matches!(quant, DType::U32) {
        return Err(Error::Model("quantisation must be f32, f16 or q8".into()));
    }
    let names = src.names();
    let budget = src.stored_bytes().map_or(usize::MAX, |b| b.max(MIN_ELEMENT_BUDGET));
    let cx = Ctx {
        src,
        names: names.iter().cloned().collect(),
        used: Default::default(),
        missing: Default::default(),
        jobs: Default::default(),
        quant,
        budget: budget.into(),
    };

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
    let table = "a table [rows, hidden]";
    let word = format!("{bert}.embeddings.word_embeddings.weight");
    let mut hidden = None;
    if let Some(shape) = cx.shape_rank(&word, 2, table)? {
        validate_vocab(vocab, shape[0]).map_err(|e| {
            let msg = match e {
                Error::Model(m) => m,
                e => e.to_string(),
            };
            Error::Model(format!("{msg} ('{word}' is {shape:?})"))
        })?;
        hidden = Some(shape[1]);
        cx.copy_as(&word, shape.clone(), "text.embeddings.word.weight".into(), shape, Store::Quant);
    }
    let (pos_name, typ_name) = (
        format!("{bert}.embeddings.position_embeddings.weight"),
        format!("{bert}.embeddings.token_type_embeddings.weight"),
    );
    if let (Some(pshape), Some(tshape)) = (cx.shape_rank(&pos_name, 2, table)?, cx.shape_rank(&typ_name, 2, table)?) {
        // Token type is always 0: fold its row into every position. (Empty dims were refused.)
        let h = pshape[1];
        if hidden.is_some_and(|w| w != h) || tshape[1] != h || pshape[0] < config.max_text_len {
            return Err(Error::Model(format!(
                "tensors '{pos_name}' {pshape:?} and '{typ_name}' {tshape:?} must be [positions >= {}, {}] and \
                 [types, {0}]",
                config.max_text_len,
                hidden.unwrap_or(h)
            )));
        }
        let out = ("text.embeddings.position_type.weight".to_string(), pshape.clone(), Store::F32);
        cx.job(
            vec![out],
            Box::new(move || {
                let mut pos = read(src, &pos_name, &pshape)?;
                let typ = read(src, &typ_name, &tshape)?;
                for row in pos.chunks_exact_mut(h) {
                    row.iter_mut().zip(&typ[..h]).for_each(|(p, t)| *p += t);
                }
                Ok(vec![pos])
            }),
        );
    }
    cx.copy(&format!("{bert}.embeddings.LayerNorm.weight"), "text.embeddings.ln.weight")?;
    cx.copy(&format!("{bert}.embeddings.LayerNorm.bias"), "text.embeddings.ln.bias")?;
    for l in 0..count_indexed(&names, &format!("{bert}.encoder.layer.")) {
        let (f, t) = (format!("{bert}.encoder.layer.{l}"), format!("text.bert.{l}"));
        let mut parts = Vec::new();
        for p in ["query", "key", "value"] {
            let (wn, bn) = (format!("{f}.attention.self.{p}.weight"), format!("{f}.attention.self.{p}.bias"));
            if let (Some(s), Some(b)) = (
                cx.shape_rank(&wn, 2, "a square matrix [hidden, hidden]")?,
                cx.shape_rank(&bn, 1, "a vector [hidden]")?,
            ) {
                // Square, and as wide as the embeddings, so the three stack into [3 * hidden, hidden].
                if s[0] != s[1] || hidden.is_some_and(|h| h != s[1]) || b[0] != s[0] {
                    return Err(Error::Model(format!(
                        "tensor '{wn}' is {s:?} with a bias of {}: expected [{h}, {h}] and {h}",
                        b[0],
                        h = hidden.unwrap_or(s[1])
                    )));
                }
                hidden = Some(s[1]);
                parts.push((wn, bn, s, b));
            }
        }
        if let (3, Some(h)) = (parts.len(), hidden) {
            cx.job(
                vec![
                    (format!("{t}.in_proj.weight"), vec![3 * h, h], Store::Quant),
                    (format!("{t}.in_proj.bias"), vec![3 * h], Store::F32),
                ],
                Box::new(move || {
                    let (mut ws, mut bs) = (Vec::with_capacity(3 * h * h), Vec::with_capacity(3 * h));
                    for (wn, bn, s, b) in &parts {
                        ws.extend(read(src, wn, s)?);
                        bs.extend(read(src, bn, b)?);
                    }
                    Ok(vec![ws, bs])
                }),
            );
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
    let mut jobs = cx.jobs.into_inner();
    // By first output name: tensors then arrive close to the name order the hash takes them in.
    jobs.sort_by(|a, b| a.outputs.iter().map(|o| &o.0).min().cmp(&b.outputs.iter().map(|o| &o.0).min()));
    let specs: Vec<TensorSpec> = jobs
        .iter()
        .flat_map(|j| &j.outputs)
        .flat_map(|(name, shape, dtype)| model_file::stored_specs(name, shape, *dtype))
        .collect();
    let config_json = config.to_json();
    // Sizes the writer's own checks (names, shapes) before anything is read.
    let total_bytes = StreamWriter::new(Vec::new(), specs.clone(), &config_json, vocab)?.total_bytes();
    Ok(Plan { jobs, specs, config_json, vocab: vocab.to_string(), total_bytes })
}

/// `brivl convert`'s model options from a `config.json` beside a checkpoint (as
/// `tests/fixtures/tiny/config.json` writes them: `image_size`, `box_grid`, `pool_grid`,
/// `img_att_heads`, `text_att_heads`, `bert_heads`, `max_text_len`, `backbone.stage_strides`;
/// `img_heads` and `text_heads` are read too). What it leaves out keeps the release's value.
pub fn options_from_json(json: &str) -> Result<BrivlConfig> {
    let bad = |m: String| Error::Model(format!("bad model config: {m}"));
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let mut c = BrivlConfig::default();
    let number = |keys: &[&str], into: &mut usize| -> Result<()> {
        for k in keys {
            if let Some(x) = v.get(k) {
                *into = x.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| bad(format!("{k} is {x}")))?;
            }
        }
        Ok(())
    };
    number(&["image_size"], &mut c.image_size)?;
    number(&["box_grid"], &mut c.box_grid)?;
    number(&["pool_grid"], &mut c.pool_grid)?;
    number(&["img_heads", "img_att_heads"], &mut c.img_heads)?;
    number(&["text_heads", "text_att_heads"], &mut c.text_heads)?;
    number(&["bert_heads"], &mut c.bert_heads)?;
    number(&["max_text_len"], &mut c.max_text_len)?;
    if let Some(x) = v.get("stage_strides").or_else(|| v.get("backbone").and_then(|b| b.get("stage_strides"))) {
        let list = x.as_array().ok_or_else(|| bad(format!("stage_strides is {x}")))?;
        c.stage_strides = list
            .iter()
            .map(|s| s.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| bad(format!("stage stride {s}"))))
            .collect::<Result<_>>()?;
    }
    c.validate()?;
    Ok(c)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Tensors by name, in insertion order; `bytes` plays the checkpoint's size.
    #[derive(Default)]
    struct Map {
        tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
        bytes: Option<usize>,
    }

    impl Map {
        fn with(mut self, name: &str, shape: &[usize]) -> Self {
            let n = shape.iter().product();
            self.tensors.push((name.to_string(), shape.to_vec(), vec![0.5; n]));
            self
        }
    }

    impl Source for Map {
        fn names(&self) -> Vec<String> {
            self.tensors.iter().map(|t| t.0.clone()).collect()
        }
        fn shape(&self, name: &str) -> Option<Vec<usize>> {
            self.tensors.iter().find(|t| t.0 == name).map(|t| t.1.clone())
        }
        fn tensor(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
            Ok(self.tensors.iter().find(|t| t.0 == name).map(|t| (t.1.clone(), t.2.clone())))
        }
        fn stored_bytes(&self) -> Option<usize> {
            self.bytes
        }
    }

    const BB: &str = "imgencoder.backbone";
    const BERT: &str = "textencoder.backbone.bert.embeddings";

    fn vocab(rows: usize) -> String {
        let mut v: Vec<String> = (0..rows).map(|i| format!("t{i}")).collect();
        for (i, t) in [(0, "[PAD]"), (100, "[UNK]"), (101, "[CLS]"), (102, "[SEP]")] {
            v[i] = t.to_string();
        }
        v.join("\n")
    }

    fn err(src: &Map) -> String {
        match convert(src, &vocab(110), &BrivlConfig::default(), DType::F32) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    fn stem(weight: &[usize], bn: &[usize]) -> Map {
        let mut m = Map::default().with(&format!("{BB}.conv_stem.weight"), weight);
        for p in ["weight", "bias", "running_mean", "running_var"] {
            m = m.with(&format!("{BB}.bn1.{p}"), bn);
        }
        m
    }

    fn embeddings(word: &[usize], pos: &[usize], typ: &[usize]) -> Map {
        Map::default()
            .with(&format!("{BERT}.word_embeddings.weight"), word)
            .with(&format!("{BERT}.position_embeddings.weight"), pos)
            .with(&format!("{BERT}.token_type_embeddings.weight"), typ)
    }

    #[test]
    fn crafted_shapes_are_refused_naming_the_tensor() {
        let stem_w = format!("'{BB}.conv_stem.weight'");
        let cases: Vec<(Map, String)> = vec![
            (stem(&[8], &[8]), format!("{stem_w} is [8], expected a conv weight")),
            (stem(&[], &[8]), format!("{stem_w} is [], expected a conv weight")),
            (stem(&[8, 3, 3, 3], &[]), format!("'{BB}.bn1.weight' is [], expected a vector")),
            (stem(&[8, 3, 3, 3], &[4]), format!("folding {BB}.bn1 [4] into {BB}.conv_stem.weight [8, 3, 3, 3]")),
            (stem(&[0, 3, 3, 3], &[0]), format!("{stem_w} is [0, 3, 3, 3]: an empty dimension")),
            (embeddings(&[110], &[40, 8], &[2, 8]), format!("'{BERT}.word_embeddings.weight' is [110], expected")),
            (embeddings(&[], &[40, 8], &[2, 8]), format!("'{BERT}.word_embeddings.weight' is [], expected")),
            (embeddings(&[110, 8], &[40, 0], &[2, 0]), format!("'{BERT}.position_embeddings.weight' is [40, 0]")),
            (embeddings(&[110, 8], &[40, 8], &[2, 7]), format!("'{BERT}.token_type_embeddings.weight' [2, 7]")),
            (embeddings(&[110, 8], &[40, 8], &[8]), format!("'{BERT}.token_type_embeddings.weight' is [8]")),
            (embeddings(&[110, 8], &[40, 6], &[2, 6]), "must be [positions >= 32, 8]".to_string()),
            (embeddings(&[110, 8], &[20, 8], &[2, 8]), "must be [positions >= 32, 8]".to_string()),
            (embeddings(&[50, 8], &[40, 8], &[2, 8]), "vocabulary has 110 entries, the word embeddings have 50".into()),
        ];
        for (src, want) in cases {
            let e = err(&src);
            assert!(e.contains(&want), "want {want:?} in {e}");
        }
    }

    #[test]
    fn matrices_and_biases_must_fit() {
        let q = "textencoder.backbone.bert.encoder.layer.0.attention.self";
        let bert = |w: &[usize], b: &[usize]| {
            let mut m = embeddings(&[110, 8], &[40, 8], &[2, 8]);
            for p in ["query", "key", "value"] {
                m = m.with(&format!("{q}.{p}.weight"), w).with(&format!("{q}.{p}.bias"), b);
            }
            m
        };
        let att = "imgencoder.learnable.imgAtt.layers.0";
        let fc = "imgencoder.learnable.imgFC.fc1";
        let cases: Vec<(Map, String)> = vec![
            (bert(&[8], &[8]), format!("'{q}.query.weight' is [8], expected a square matrix")),
            (bert(&[8, 9], &[8]), format!("'{q}.query.weight' is [8, 9] with a bias of 8: expected [8, 8]")),
            (bert(&[6, 6], &[6]), format!("'{q}.query.weight' is [6, 6] with a bias of 6: expected [8, 8]")),
            (bert(&[8, 8], &[]), format!("'{q}.query.bias' is [], expected a vector")),
            (
                Map::default().with(&format!("{att}.self_attn.in_proj_weight"), &[12]),
                format!("'{att}.self_attn.in_proj_weight' is [12], expected [3 x width, width]"),
            ),
            (
                Map::default().with(&format!("{att}.self_attn.in_proj_weight"), &[5, 4]),
                format!("'{att}.self_attn.in_proj_weight' is [5, 4], expected [3 x width, width]"),
            ),
            (
                Map::default()
                    .with(&format!("{att}.self_attn.in_proj_weight"), &[12, 4])
                    .with(&format!("{att}.self_attn.in_proj_bias"), &[4]),
                format!("'{att}.self_attn.in_proj_bias' is [4], its weight has 12 rows"),
            ),
            (Map::default().with(&format!("{fc}.weight"), &[]), format!("'{fc}.weight' is [], expected a matrix")),
            (Map::default().with(&format!("{fc}.weight"), &[7]), format!("'{fc}.weight' is [7], expected a matrix")),
            (
                Map::default().with(&format!("{fc}.weight"), &[4, 4, 3, 3]),
                format!("'{fc}.weight' is [4, 4, 3, 3], expected a matrix"),
            ),
            (
                Map::default().with(&format!("{fc}.weight"), &[4, 6]).with(&format!("{fc}.bias"), &[6]),
                format!("'{fc}.bias' is [6], its weight has 4 rows"),
            ),
        ];
        for (src, want) in cases {
            let e = err(&src);
            assert!(e.contains(&want), "want {want:?} in {e}");
        }
    }

    #[test]
    fn options_come_from_a_reference_config_json() {
        let json = r#"{"image_size": 200, "img_att_heads": 2, "text_att_heads": 2, "bert_heads": 2,
            "backbone": {"stage_strides": [1, 2, 2, 2, 1, 2, 1]}, "note": "ignored"}"#;
        let c = options_from_json(json).unwrap();
        let want = BrivlConfig { image_size: 200, img_heads: 2, text_heads: 2, bert_heads: 2, ..Default::default() };
        assert_eq!(c, want);
        assert_eq!(options_from_json("{}").unwrap(), BrivlConfig::default());
        for (json, want) in [
            (r#"{"image_size": -1}"#, "image_size is -1"),
            (r#"{"image_size": 5}"#, "image_size 5 is outside"),
            (r#"{"stage_strides": 3}"#, "stage_strides is 3"),
            ("not json", "bad model config"),
        ] {
            let e = options_from_json(json).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn reading_more_elements_than_the_file_stores_is_refused() {
        // 1M + 880 elements from a "file" of 1,000 bytes (the floor is 1M elements): views that
        // repeat one storage.
        let mut src = embeddings(&[110, 8], &[1 << 17, 8], &[2, 8]);
        src.bytes = Some(1000);
        let e = err(&src);
        assert!(e.contains(&format!("'{BERT}.position_embeddings.weight': the checkpoint's tensors repeat")), "{e}");
        src.bytes = None;
        assert!(!err(&src).contains("repeat"), "no limit without a size");
    }
}
