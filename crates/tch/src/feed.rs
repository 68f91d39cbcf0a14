//! An epoch's input inside libtorch: the data set viewed in place, gathered batch by batch.
//!
//! Gathering a shuffled batch means reading 64 scattered images; done on the host and then
//! copied into a fresh tensor, as the default loop does, it moves every image twice and
//! allocates a tensor per step, which costs about a tenth of a small model's epoch. Here the
//! data set's images become one libtorch tensor that borrows core's memory (no copy), and
//! each step's images are gathered by libtorch's `index_select` straight into a staging tensor
//! that every step reuses, so they are copied once, into memory the step is about to read.

use std::marker::PhantomData;

use parallax_core::{Dataset, EpochPlan};
use tch::{Kind, TchError, Tensor};

/// One epoch's batches as libtorch tensors, valid while the epoch's data set is borrowed.
pub(crate) struct EpochFeed<'a> {
    /// Every image of the data set, `[N, C, H, W]` f32 on the CPU, in core's memory.
    images: Tensor,
    /// The epoch's example indices, in order (int64).
    order: Tensor,
    /// The labels in the epoch's order (int64).
    labels: Tensor,
    /// Where each full batch's images are gathered; partial batches use its first rows.
    staging: Tensor,
    batch_size: i64,
    examples: i64,
    /// `images` reads the data set's memory, so the feed must not outlive the borrow.
    _data: PhantomData<&'a Dataset>,
}

impl<'a> EpochFeed<'a> {
    /// Prepares `plan`'s epoch: views the images, and writes the order and the labels in
    /// order once, so that a step only gathers its images.
    pub(crate) fn new(plan: &EpochPlan<'a>) -> Result<Self, TchError> {
        let data = plan.data();
        let images = view_images(data)?;
        let order: Vec<i64> = plan.order().iter().map(|&index| i64::from(index)).collect();
        let labels = data.labels();
        let labels_in_order: Vec<i64> = plan
            .order()
            .iter()
            .map(|&index| i64::from(labels[index as usize]))
            .collect();
        let [c, h, w] = data.image_shape().map(|d| d as i64);
        let batch_size = plan.batch_size() as i64;
        Ok(EpochFeed {
            images,
            order: Tensor::f_from_slice(&order)?,
            labels: Tensor::f_from_slice(&labels_in_order)?,
            staging: Tensor::f_empty([batch_size, c, h, w], (Kind::Float, tch::Device::Cpu))?,
            batch_size,
            examples: order.len() as i64,
            _data: PhantomData,
        })
    }

    /// The images and labels of batch `step` (0-based), or `None` past the last one.
    ///
    /// The images tensor is the staging tensor (or its first rows): it is overwritten by the
    /// next call, so a step must be done with it before asking for the next batch.
    pub(crate) fn batch(&self, step: usize) -> Result<Option<(Tensor, Tensor)>, TchError> {
        let start = step as i64 * self.batch_size;
        if start >= self.examples {
            return Ok(None);
        }
        let len = self.batch_size.min(self.examples - start);
        let indices = self.order.f_narrow(0, start, len)?;
        let images = if len == self.batch_size {
            self.staging.shallow_clone()
        } else {
            self.staging.f_narrow(0, 0, len)?
        };
        // The result is `images` itself, written in place.
        let _gathered = self.images.f_index_select_out(&images, 0, &indices)?;
        Ok(Some((images, self.labels.f_narrow(0, start, len)?)))
    }
}

/// The data set's images as a `[N, C, H, W]` f32 CPU tensor that reads core's memory in place.
#[allow(unsafe_code)]
fn view_images(data: &Dataset) -> Result<Tensor, TchError> {
    let images = data.images();
    let shape: Vec<i64> = images.shape().iter().map(|&d| d as i64).collect();
    let Some(values) = images.as_slice() else {
        // `Dataset` keeps its images in standard layout, so this copy is a safety net only.
        return Tensor::f_from_slice(&images.iter().copied().collect::<Vec<f32>>())?
            .f_reshape(shape.as_slice());
    };
    // SAFETY: `values` is `shape`'s product of initialised, aligned f32s in row-major order
    // (empty strides mean row-major), borrowed from the data set for as long as the
    // `EpochFeed` that keeps this tensor, which cannot outlive that borrow (`PhantomData`). The
    // tensor is private to the feed and only read: `index_select_out` writes into the staging
    // tensor, never into its source, and no view of it escapes. libtorch does not own the
    // memory (no deleter), so dropping the tensor frees nothing.
    unsafe {
        Tensor::f_from_blob(
            values.as_ptr().cast::<u8>(),
            &shape,
            &[],
            Kind::Float,
            tch::Device::Cpu,
        )
    }
}
