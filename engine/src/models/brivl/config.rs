use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What the weights don't determine. Every width, depth and kernel size is read from the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BrivlConfig {
    /// Square input side in pixels (456 in the release).
    pub image_size: usize,
    /// Boxes per side of the patch grid (6 -> 36 boxes + the whole image).
    pub box_grid: usize,
    /// Bilinear samples per side inside each box (4).
    pub pool_grid: usize,
    pub img_heads: usize,
    pub text_heads: usize,
    pub bert_heads: usize,
    /// Tokens per text, [CLS] and [SEP] included (32 in the release, at most 80).
    pub max_text_len: usize,
    /// Stride of the first block of each EfficientNet stage.
    pub stage_strides: Vec<usize>,
}

impl Default for BrivlConfig {
    fn default() -> Self {
        Self {
            image_size: 456,
            box_grid: 6,
            pool_grid: 4,
            img_heads: 4,
            text_heads: 4,
            bert_heads: 12,
            max_text_len: 32,
            stage_strides: vec![1, 2, 2, 2, 1, 2, 1],
        }
    }
}

impl BrivlConfig {
    pub fn from_json(json: &str) -> Result<Self> {
        let c: Self = serde_json::from_str(json).map_err(|e| Error::Model(format!("bad model config: {e}")))?;
        c.validate()?;
        Ok(c)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("config serialises")
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Model(m));
        if self.image_size < 32 || self.image_size > 2048 {
            return bad(format!("image_size {} is outside 32..=2048", self.image_size));
        }
        if self.box_grid == 0 || self.pool_grid == 0 {
            return bad("box_grid and pool_grid must be positive".into());
        }
        if self.img_heads == 0 || self.text_heads == 0 || self.bert_heads == 0 {
            return bad("head counts must be positive".into());
        }
        if !(2..=512).contains(&self.max_text_len) {
            return bad(format!("max_text_len {} is outside 2..=512", self.max_text_len));
        }
        Ok(())
    }
}
