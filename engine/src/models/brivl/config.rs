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
    /// Tokens per text, `[CLS]` and `[SEP]` included (32 in the release, at most 80).
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

    /// Every value bounded to what the towers can run: a hostile config must be refused here,
    /// not abort on an allocation sized by it.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Model(format!("bad model config: {m}")));
        let within = |name: &str, v: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                bad(format!("{name} {v} is outside {lo}..={hi}"))
            }
        };
        within("image_size", self.image_size, 32, MAX_IMAGE_SIZE)?;
        within("box_grid", self.box_grid, 1, MAX_GRID)?;
        within("pool_grid", self.pool_grid, 1, MAX_GRID)?;
        within("img_heads", self.img_heads, 1, MAX_HEADS)?;
        within("text_heads", self.text_heads, 1, MAX_HEADS)?;
        within("bert_heads", self.bert_heads, 1, MAX_HEADS)?;
        within("max_text_len", self.max_text_len, 2, MAX_TEXT_LEN)?;
        within("the number of stage_strides", self.stage_strides.len(), 1, MAX_STAGES)?;
        if let Some(s) = self.stage_strides.iter().find(|&&s| s != 1 && s != 2) {
            return bad(format!("stage stride {s} is not 1 or 2"));
        }
        let side = self.feature_size();
        if side < 2 {
            return bad(format!(
                "image_size {} leaves a {side}x{side} feature map after the strides; the box pooling needs 2x2",
                self.image_size
            ));
        }
        Ok(())
    }

    /// Side of the backbone's last feature map: the stem's stride 2, then each stage's.
    pub fn feature_size(&self) -> usize {
        self.stage_strides.iter().fold(self.image_size.div_ceil(2), |s, &st| s.div_ceil(st.max(1)))
    }
}

/// Largest square input side.
pub const MAX_IMAGE_SIZE: usize = 2048;
/// Largest box grid and pool grid side: `box_grid^2 + 1` boxes must fit one attention sequence.
pub const MAX_GRID: usize = 16;
pub const MAX_HEADS: usize = 64;
/// Longest text, in tokens: one attention sequence.
pub const MAX_TEXT_LEN: usize = crate::ops::attention::MAX_SEQ;
pub const MAX_STAGES: usize = 16;
