//! BriVL's pooling boxes: the image is cut into `box_grid x box_grid` tiles plus the whole
//! image (37 boxes at the release's 6), each pooled from the backbone's feature map by
//! `grid_sample` with the affine theta that maps the output grid onto the box.

use crate::{Error, Result};

/// BriVL's 37 pooling boxes (for `box_grid` 6) as affine thetas for `grid_sample` on an
/// `feat_h x feat_w` map of an `image_size`-pixel square image: the `box_grid x box_grid`
/// tiles, `i` (x) outer and `j` (y) inner, then the whole image.
pub(crate) fn box_thetas(image_size: f32, feat_h: usize, feat_w: usize, box_grid: usize) -> Result<Vec<[f32; 6]>> {
    // The thetas divide by the map's size - 1 (align_corners=False pixel centres).
    if feat_h < 2 || feat_w < 2 || box_grid == 0 {
        return Err(Error::Model(format!(
            "{box_grid}x{box_grid} boxes on a {feat_h}x{feat_w} feature map: need at least one box and a 2x2 map"
        )));
    }
    let size = image_size as f64;
    let s = size / box_grid as f64;
    let mut boxes = Vec::with_capacity(box_grid * box_grid + 1);
    for i in 0..box_grid {
        for j in 0..box_grid {
            let (i, j) = (i as f64, j as f64);
            boxes.push([i * s, j * s, (i + 1.0) * s, (j + 1.0) * s]);
        }
    }
    boxes.push([0.0, 0.0, size, size]);
    // The release divides both axes by the same ratio, taken from the feature map's height.
    let r = size / feat_h as f64;
    let (wm1, hm1) = (feat_w as f64 - 1.0, feat_h as f64 - 1.0);
    Ok(boxes
        .iter()
        .map(|bx| {
            let [x1, y1, x2, y2] = bx.map(|v| v / r);
            [(x2 - x1) / wm1, 0.0, (x1 + x2 - wm1) / wm1, 0.0, (y2 - y1) / hm1, (y1 + y2 - hm1) / hm1].map(|v| v as f32)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::grid_sample::{grid_sample, grid_sample_cpu, GridSampleGeometry};
    use crate::testing::{assert_close, gpu_test, random};
    use crate::{Pass, Tensor};

    #[test]
    fn brivl_thetas_follow_the_spec() {
        let t = box_thetas(456.0, 15, 15, 6).unwrap();
        assert_eq!(t.len(), 37);
        // r = 456/15 = 30.4, s = 76: each tile is 2.5 feature pixels wide.
        // Box 1 is i = 0, j = 1: x in [0, 2.5], y in [2.5, 5].
        let want1 = [2.5 / 14.0, 0.0, (2.5 - 14.0) / 14.0, 0.0, 2.5 / 14.0, (7.5 - 14.0) / 14.0];
        // Box 6 is i = 1, j = 0.
        let want6 = [2.5 / 14.0, 0.0, (7.5 - 14.0) / 14.0, 0.0, 2.5 / 14.0, (2.5 - 14.0) / 14.0];
        // The whole image: (0, 0, 15, 15).
        let want36 = [15.0 / 14.0, 0.0, 1.0 / 14.0, 0.0, 15.0 / 14.0, 1.0 / 14.0];
        for (got, want) in [(t[1], want1), (t[6], want6), (t[36], want36)] {
            assert_close(&got, &want, 1e-7, 1e-6, "BriVL theta");
        }
        assert!(box_thetas(456.0, 1, 15, 6).is_err() && box_thetas(456.0, 15, 15, 0).is_err());
    }

    gpu_test!(the_37_boxes_sample_alike_on_gpu_and_cpu, |gpu| {
        let thetas = box_thetas(456.0, 15, 15, 6).unwrap();
        let shape = [1, 15, 15, 37];
        let x = random(shape.iter().product(), 44, 1.0);
        let xt = Tensor::from_f32(gpu, &shape, &x).unwrap();
        let tt = Tensor::from_f32(gpu, &[37, 6], thetas.as_flattened()).unwrap();
        let mut pass = Pass::new(gpu);
        let y = grid_sample(&mut pass, &xt, &tt, 4).unwrap();
        pass.submit().unwrap();
        // As in grid_sample's own tests: the same f32 formulas, up to fused multiply-adds.
        let g = GridSampleGeometry { b: 1, h: 15, w: 15, c: 37, boxes: 37, grid: 4 };
        let want = grid_sample_cpu(&x, &g, thetas.as_flattened());
        assert_close(&y.read_f32(gpu).await.unwrap(), &want, 1e-5, 1e-5, "37 boxes");
    });
}
