//! `fashion-mnist-placed`: each item pasted at a seeded position on a larger canvas, with its
//! box recorded, so that a heatmap's localisation can be scored against ground truth.
//!
//! The placement depends only on the source data set and the split, never on the run's seed:
//! every run and every engine sees the same canvases. Each canvas is light uniform noise in
//! [0, [`NOISE`]); the item is laid on it with a per-pixel maximum, so that its own black
//! background does not draw a visible square around it.

use ndarray::{Array4, Axis, s};
use rand::SeedableRng;
use rand::rngs::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{DataError, Dataset, bounded};

/// The canvas's height and width.
pub const CANVAS: usize = 64;

/// The noise's upper bound, in the [0, 1] pixel range.
pub const NOISE: f32 = 0.1;

/// The salt of the placement stream ("PLACED01"); the test split adds 1.
const PLACEMENT_SALT: u64 = 0x504C_4143_4544_3031;

/// A rectangle in pixel coordinates: rows `top..top + height`, columns `left..left + width`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundingBox {
    /// The first row.
    pub top: usize,
    /// The first column.
    pub left: usize,
    /// Rows covered.
    pub height: usize,
    /// Columns covered.
    pub width: usize,
}

impl BoundingBox {
    /// One past the last row.
    pub fn bottom(&self) -> usize {
        self.top + self.height
    }

    /// One past the last column.
    pub fn right(&self) -> usize {
        self.left + self.width
    }

    /// Whether the pixel at (`row`, `column`) lies inside.
    pub fn contains(&self, row: usize, column: usize) -> bool {
        (self.top..self.bottom()).contains(&row) && (self.left..self.right()).contains(&column)
    }
}

/// Which split a placed data set is made from; each has its own placement stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training set.
    Train,
    /// The test set.
    Test,
}

/// `source`'s items placed on `CANVAS`×`CANVAS` canvases, with their boxes, in the source's
/// order. The data set is named `<source name>-placed`.
///
/// Fails when an item is larger than the canvas.
pub fn place(source: &Dataset, split: Split) -> Result<(Dataset, Vec<BoundingBox>), DataError> {
    let [channels, height, width] = source.image_shape();
    if height > CANVAS || width > CANVAS {
        return Err(DataError::InvalidDataset {
            name: source.name().to_string(),
            reason: format!("items of {height}×{width} do not fit a {CANVAS}×{CANVAS} canvas"),
        });
    }
    let salt = PLACEMENT_SALT + u64::from(split == Split::Test);
    let mut rng = ChaCha8Rng::seed_from_u64(salt);
    let mut images = Array4::<f32>::zeros((source.len(), channels, CANVAS, CANVAS));
    let mut boxes = Vec::with_capacity(source.len());
    for (mut canvas, item) in images
        .axis_iter_mut(Axis(0))
        .zip(source.images().axis_iter(Axis(0)))
    {
        // Integer noise levels keep the stream portable: 1,000 levels below NOISE.
        canvas.mapv_inplace(|_| bounded(&mut rng, 1000) as f32 * (NOISE / 1000.0));
        let top = bounded(&mut rng, (CANVAS - height + 1) as u32) as usize;
        let left = bounded(&mut rng, (CANVAS - width + 1) as u32) as usize;
        canvas
            .slice_mut(s![.., top..top + height, left..left + width])
            .zip_mut_with(&item, |pixel, &value| *pixel = pixel.max(value));
        boxes.push(BoundingBox {
            top,
            left,
            height,
            width,
        });
    }
    let name = format!("{}-placed", source.name());
    let dataset = Dataset::new(
        name,
        images,
        source.labels().to_owned(),
        source.class_names().to_vec(),
    )?;
    Ok((dataset, boxes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array1;

    fn items() -> Dataset {
        let images = Array4::<f32>::ones((3, 1, 28, 28));
        Dataset::new(
            "items",
            images,
            Array1::from(vec![0, 1, 0]),
            vec!["a".into(), "b".into()],
        )
        .unwrap()
    }

    #[test]
    fn items_sit_inside_their_boxes_on_light_noise() {
        let (placed, boxes) = place(&items(), Split::Train).unwrap();
        assert_eq!(placed.image_shape(), [1, CANVAS, CANVAS]);
        for (image, bbox) in placed.images().outer_iter().zip(&boxes) {
            let plane = image.index_axis(Axis(0), 0);
            for ((row, column), &value) in plane.indexed_iter() {
                if bbox.contains(row, column) {
                    assert_eq!(value, 1.0);
                } else {
                    assert!((0.0..NOISE).contains(&value));
                }
            }
        }
        // The box covers 784 / 4096 ≈ 19% of the canvas.
        assert_eq!(boxes[0].height * boxes[0].width, 784);
    }

    #[test]
    fn placement_is_fixed_per_split_and_differs_between_splits() {
        let (_, train) = place(&items(), Split::Train).unwrap();
        let (_, again) = place(&items(), Split::Train).unwrap();
        let (_, test) = place(&items(), Split::Test).unwrap();
        assert_eq!(train, again);
        assert_ne!(train, test);
    }
}
