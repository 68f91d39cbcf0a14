//! How much of a libtorch training epoch the harness around the framework takes: gathering each
//! batch from the data set (what the runner's batch iterator does) and copying it into a
//! libtorch tensor (what `train_step` does first), against the epoch as a whole.
//!
//! ```sh
//! cargo run --release -p parallax-tch --example harness_overhead -- [mlp|cnn] [DATA_DIR] [THREADS]
//! ```
//!
//! The data directory defaults to Debian's `/usr/share/datasets/fashion-mnist`.

use std::path::PathBuf;
use std::time::Instant;

use parallax_core::data::builtin::{BuiltinDataset, load_dir};
use parallax_core::data::{Normalization, epoch_order};
use parallax_core::spec::presets;
use parallax_core::{Backend, CpuSettings, Device, OptimizerConfig, init};
use parallax_tch::TchBackend;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model_name = args.next().unwrap_or_else(|| "mlp".into());
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "/usr/share/datasets/fashion-mnist".into()),
    );
    let threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(2);
    let (train, _) = load_dir(
        BuiltinDataset::FashionMnist,
        &dir,
        &Normalization::UnitRange,
    )?;
    let spec = match model_name.as_str() {
        "cnn" => presets::cnn([1, 28, 28], 10),
        _ => presets::mlp([1, 28, 28], 10),
    };
    let model = spec.resolve()?;
    let backend = TchBackend::new(Device::Cpu, CpuSettings::new(threads))?;
    let mut net = backend.build(&model, Some(&init::canonical(&model, 42)))?;
    let order = epoch_order(train.len(), 42, 0);

    // The harness alone: gather every batch, then copy it into a libtorch tensor.
    let (mut gather, mut copy) = (0.0, 0.0);
    let mut batches = train.batches(&order, 64);
    loop {
        let before = Instant::now();
        let Some(batch) = batches.next() else { break };
        let gathered = Instant::now();
        let slice = batch.images.as_slice().ok_or("batch is not contiguous")?;
        let tensor = tch::Tensor::f_from_slice(slice)?.f_reshape([-1, 1, 28, 28])?;
        drop(std::hint::black_box(tensor));
        gather += (gathered - before).as_secs_f64();
        copy += gathered.elapsed().as_secs_f64();
    }

    // The whole epoch through the model's own loop.
    let mut batches = train.batches(&order, 64);
    let stats = net.train_epoch(&mut batches, &OptimizerConfig::adam(1e-3), &mut |_| {})?;
    let harness = gather + copy;
    println!(
        "{model_name}: epoch {:.2} s; batch gathering {:.3} s, copy into libtorch {:.3} s: harness {:.2}% of the epoch",
        stats.seconds,
        gather,
        copy,
        100.0 * harness / stats.seconds
    );
    Ok(())
}
