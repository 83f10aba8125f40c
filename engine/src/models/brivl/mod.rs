//! BriVL (Fei et al., Nature Communications 2022): two towers into one embedding space.
//! The mathematics is `../shared/BRIVL_SPEC.md`; names of the converted weights are in `convert.rs`.

pub(crate) mod batch_norm;
mod boxes;
mod config;
mod encoder;
mod image;
mod loader;
mod text;

pub use config::BrivlConfig;
use image::ImageTower;
use loader::Loader;
use text::TextTower;

use crate::backend::Backend;
use crate::model_file::ModelFile;
use crate::{Error, Result};

/// Both towers, loaded onto one backend.
pub(crate) struct Brivl<B: Backend> {
    pub config: BrivlConfig,
    pub image: ImageTower<B>,
    pub text: TextTower<B>,
}

impl<B: Backend> Brivl<B> {
    pub fn load(backend: &B, file: &ModelFile) -> Result<Self> {
        let config = BrivlConfig::from_json(&file.config_json)?;
        let loader = Loader::new(backend, file);
        Ok(Self { image: ImageTower::load(&loader, &config)?, text: TextTower::load(&loader, &config)?, config })
    }
}

/// The width of the embeddings a model file gives: the output rows of its image projection.
pub fn embedding_dim(file: &ModelFile) -> Result<usize> {
    match *file.shape("image.fc2.weight")? {
        [rows, _] if rows > 0 => Ok(rows),
        ref shape => Err(Error::Model(format!("image.fc2.weight is {shape:?}, expected [width, inputs]"))),
    }
}
