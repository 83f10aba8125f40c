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
            Loaded::Cpu(..) => "CPU".to_string(),
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
        match &mut self.loaded {
            Loaded::Gpu(be, m) => images_on(be, m, images).await,
            Loaded::Cpu(be, m) => images_on(be, m, images).await,
        }
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
        match &mut self.loaded {
            Loaded::Gpu(be, m) => texts_on(be, m, texts.len(), len, &ids, &mask).await,
            Loaded::Cpu(be, m) => texts_on(be, m, texts.len(), len, &ids, &mask).await,
        }
    }
}

fn rows(flat: Vec<f32>, n: usize) -> Vec<Vec<f32>> {
    let d = flat.len() / n.max(1);
    flat.chunks_exact(d.max(1)).map(<[f32]>::to_vec).collect()
}

async fn images_on<B: Backend>(be: &mut B, m: &Brivl<B>, images: &[Pixels]) -> Result<Vec<Vec<f32>>> {
    if images.is_empty() {
        return Ok(Vec::new());
    }
    let photos: Vec<Photo> = images.iter().map(|p| Photo { height: p.height, width: p.width, rgba: &p.rgba }).collect();
    let e = m.image.forward(be, &photos)?;
    Ok(rows(be.read(&e).await?, images.len()))
}

async fn texts_on<B: Backend>(
    be: &mut B,
    m: &Brivl<B>,
    n: usize,
    len: usize,
    ids: &[u32],
    mask: &[u32],
) -> Result<Vec<Vec<f32>>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let ids = be.tensor_u32(&[n, len], ids)?;
    let mask = be.tensor_u32(&[n, len], mask)?;
    let e = m.text.forward(be, &ids, &mask)?;
    Ok(rows(be.read(&e).await?, n))
}
