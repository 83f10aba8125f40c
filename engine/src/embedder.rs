//! The high-level API the CLI and the web app use: a loaded model on the GPU or the CPU, plus
//! its tokenizer; images and texts in, L2-normalised embeddings out.

use crate::backend::{Backend, CpuBackend, GpuBackend};
use crate::model_file::ModelFile;
use crate::models::brivl::{Brivl, BrivlConfig};
use crate::ops::preprocess::Photo;
use crate::tokenizer::TextTokenizer;
use crate::{Error, Gpu, Result};

/// An image as RGBA8 pixels, one `u32` per pixel (R in the low byte).
pub struct Pixels {
    pub width: usize,
    pub height: usize,
    pub rgba: Vec<u32>,
}

// One per process: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Loaded {
    Gpu(GpuBackend, Brivl<GpuBackend>),
    Cpu(CpuBackend, Brivl<CpuBackend>),
}

pub struct Embedder {
    loaded: Loaded,
    tokenizer: TextTokenizer,
    pub config: BrivlConfig,
    pub content_hash: String,
}

impl Embedder {
    /// Loads onto `gpu`, or onto the CPU path when `gpu` is `None`.
    pub fn load(file: &ModelFile, gpu: Option<&Gpu>) -> Result<Self> {
        let tokenizer =
            TextTokenizer::from_vocab_text(&file.vocab).map_err(|e| Error::Model(format!("vocabulary: {e}")))?;
        let loaded = match gpu {
            Some(gpu) => {
                let be = GpuBackend::new(gpu);
                let model = Brivl::load(&be, file)?;
                Loaded::Gpu(be, model)
            }
            None => {
                let be = CpuBackend::default();
                let model = Brivl::load(&be, file)?;
                Loaded::Cpu(be, model)
            }
        };
        let (config, image_dim, text_dim, rows) = match &loaded {
            Loaded::Gpu(_, m) => {
                (m.config.clone(), m.image.embedding_dim(), m.text.embedding_dim(), m.text.vocab_size())
            }
            Loaded::Cpu(_, m) => {
                (m.config.clone(), m.image.embedding_dim(), m.text.embedding_dim(), m.text.vocab_size())
            }
        };
        if image_dim != text_dim {
            return Err(Error::Model(format!(
                "the image tower gives {image_dim}-wide embeddings, the text tower {text_dim}-wide"
            )));
        }
        if tokenizer.vocab_size() > rows {
            return Err(Error::Model(format!(
                "the vocabulary has {} entries, more than the word embeddings' {rows} rows",
                tokenizer.vocab_size()
            )));
        }
        Ok(Self { loaded, tokenizer, config, content_hash: file.content_hash.clone() })
    }

    pub fn backend_name(&self) -> String {
        match &self.loaded {
            Loaded::Gpu(be, _) => format!("GPU: {}", be.gpu().describe()),
            Loaded::Cpu(..) => match crate::parallel::threads() {
                1 => "CPU".to_string(),
                n => format!("CPU, {n} threads"),
            },
        }
    }

    /// The device, on the GPU path (for profiling).
    pub fn gpu(&self) -> Option<&Gpu> {
        match &self.loaded {
            Loaded::Gpu(be, _) => Some(be.gpu()),
            Loaded::Cpu(..) => None,
        }
    }

    /// FLOPs of the dominant ops run so far (matmuls, convolutions, attention).
    pub fn flops(&self) -> u64 {
        match &self.loaded {
            Loaded::Gpu(be, _) => be.flops(),
            Loaded::Cpu(be, _) => be.flops(),
        }
    }

    /// Token ids and mask at `max_len` (the model's default when `None`).
    pub fn tokenize(&self, text: &str, max_len: Option<usize>) -> Result<(Vec<u32>, Vec<u32>)> {
        let e = self
            .tokenizer
            .encode(text, max_len.unwrap_or(self.config.max_text_len))
            .map_err(|e| Error::Model(format!("tokenizer: {e}")))?;
        Ok((e.ids, e.mask))
    }

    /// One embedding per image, in order; one forward pass per call.
    pub async fn embed_images(&mut self, images: &[Pixels]) -> Result<Vec<Vec<f32>>> {
        let batch = self.submit_images(images)?;
        self.finish(batch).await
    }

    /// Starts a forward pass over `images` and returns without waiting for it: on the GPU the
    /// next batch can be decoded and submitted while this one runs, so the device never waits
    /// for the host between batches. [`Embedder::finish`] reads the embeddings.
    pub fn submit_images(&mut self, images: &[Pixels]) -> Result<Submitted> {
        let pending = match &mut self.loaded {
            Loaded::Gpu(be, m) => images_on(be, m, images)?.map(Pending::Gpu),
            Loaded::Cpu(be, m) => crate::parallel::in_pool(|| images_on(be, m, images))?.map(Pending::Cpu),
        };
        Ok(Submitted { rows: images.len(), pending })
    }

    /// The embeddings of a batch from [`Embedder::submit_images`], one per image, in order.
    pub async fn finish(&mut self, batch: Submitted) -> Result<Vec<Vec<f32>>> {
        let flat = match (batch.pending, &mut self.loaded) {
            (None, _) => return Ok(Vec::new()),
            (Some(Pending::Gpu(p)), Loaded::Gpu(be, _)) => be.finish(p).await?,
            (Some(Pending::Cpu(p)), Loaded::Cpu(be, _)) => be.finish(p).await?,
            _ => return Err(Error::Model("a batch finished on another backend than it started on".into())),
        };
        Ok(rows(flat, batch.rows))
    }

    /// One embedding per text, in order, at `max_len` tokens (the model's default when `None`).
    pub async fn embed_texts(&mut self, texts: &[&str], max_len: Option<usize>) -> Result<Vec<Vec<f32>>> {
        let len = max_len.unwrap_or(self.config.max_text_len);
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for t in texts {
            let (i, m) = self.tokenize(t, Some(len))?;
            ids.extend(i);
            mask.extend(m);
        }
        let n = texts.len();
        let flat = match &mut self.loaded {
            Loaded::Gpu(be, m) => match texts_on(be, m, n, len, &ids, &mask)? {
                Some(p) => be.finish(p).await?,
                None => return Ok(Vec::new()),
            },
            Loaded::Cpu(be, m) => match crate::parallel::in_pool(|| texts_on(be, m, n, len, &ids, &mask))? {
                Some(p) => be.finish(p).await?,
                None => return Ok(Vec::new()),
            },
        };
        Ok(rows(flat, n))
    }
}

fn rows(flat: Vec<f32>, n: usize) -> Vec<Vec<f32>> {
    let d = flat.len() / n.max(1);
    flat.chunks_exact(d.max(1)).map(<[f32]>::to_vec).collect()
}

/// A batch of images submitted by [`Embedder::submit_images`], not read yet.
pub struct Submitted {
    rows: usize,
    /// `None` for an empty batch.
    pending: Option<Pending>,
}

enum Pending {
    Gpu(<GpuBackend as Backend>::Pending),
    Cpu(<CpuBackend as Backend>::Pending),
}

fn images_on<B: Backend>(be: &mut B, m: &Brivl<B>, images: &[Pixels]) -> Result<Option<B::Pending>> {
    if images.is_empty() {
        return Ok(None);
    }
    let photos: Vec<Photo> = images.iter().map(|p| Photo { height: p.height, width: p.width, rgba: &p.rgba }).collect();
    let e = m.image.forward(be, &photos)?;
    be.submit_read(&e).map(Some)
}

fn texts_on<B: Backend>(
    be: &mut B,
    m: &Brivl<B>,
    n: usize,
    len: usize,
    ids: &[u32],
    mask: &[u32],
) -> Result<Option<B::Pending>> {
    if n == 0 {
        return Ok(None);
    }
    let ids = be.tensor_u32(&[n, len], ids)?;
    let mask = be.tensor_u32(&[n, len], mask)?;
    let e = m.text.forward(be, &ids, &mask)?;
    be.submit_read(&e).map(Some)
}
