//! Fuzzing of every reader of outside files: the IDX reader, the spec parser (JSON and TOML,
//! then shape inference and the memory estimate), and the weights importers (safetensors,
//! Keras's HDF5, PyTorch's `.pth`).
//!
//! Nightly Rust, which cargo-fuzz's sanitizers need, cannot be installed on these machines, so
//! this is mutation fuzzing on stable Rust with proptest as the generator: each execution takes
//! a file of the committed corpus (`fixtures/fuzz/<target>/`), applies a few random mutations
//! (bit flips, byte runs, header words set to extreme values, cuts, duplicated slices, splices
//! from another corpus file) and hands the bytes to the reader, for a fixed time budget per
//! target (`PARALLAX_FUZZ_SECONDS`, 20 by default; the README's test command uses it). It is
//! not coverage-guided; the corpus and the header-aware mutations stand in for that.
//!
//! A reader may return any error, but must not panic, and must not allocate what a header
//! merely claims: a counting global allocator records each execution's largest single
//! allocation, which must stay within [`ALLOCATION_LIMIT`]; beyond [`ABORT_LIMIT`] the
//! allocation is refused, which aborts the process. The input under test is always on disk at
//! `target/fuzz/<target>/current`, so an abort leaves it behind; a panicking input is copied to
//! `target/fuzz/<target>/panic-<n>`. Each target prints its executions, time, failures and
//! corpus size.
//!
//! `UPDATE_FIXTURES=1 cargo test -p parallax-core --test fuzz corpus_is_fresh` rewrites the
//! corpus files that parallax's own writers make.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parallax_core::data::{
    IdxImages, read_idx_images, read_idx_labels, write_idx_images, write_idx_labels,
};
use parallax_core::spec::ModelSpec;
use parallax_core::weights::Weights;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

/// The largest single allocation an execution may make: far above what any corpus file needs
/// (the HDF5 file is 135 KB; a gzip IDX file may inflate 1032-fold), far below what a header
/// can claim.
const ALLOCATION_LIMIT: usize = 512 << 20;

/// Allocations above this are refused, which aborts: the machine must not be taken down by a
/// reader that believed a header.
const ABORT_LIMIT: usize = 8 << 30;

thread_local! {
    // Const-initialised cells need no allocation, so the allocator may touch them.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, recording the largest allocation of the calling thread.
struct Counting;

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s
// contract; the only addition is a thread-local maximum and a refusal (null, which the
// contract allows) of absurd sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        if layout.size() > ABORT_LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        if layout.size() > ABORT_LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        if new_size > ABORT_LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

thread_local! {
    static LAST_PANIC: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// The panic hook while fuzzing: the message is kept for the report, not printed.
fn remember_panic(info: &std::panic::PanicHookInfo<'_>) {
    let text = info.to_string();
    let _ = LAST_PANIC.try_with(|last| *last.borrow_mut() = text);
}

/// The message of the calling thread's last panic.
fn last_panic() -> String {
    LAST_PANIC.with(|last| last.borrow().clone())
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One mutation of an input.
#[derive(Clone, Debug)]
enum Mutation {
    /// Flip one bit at a position (taken modulo the length).
    FlipBit(usize, u8),
    /// Overwrite a run of bytes with one value.
    Fill(usize, usize, u8),
    /// Set a big-endian (or little-endian) 32- or 64-bit word to an extreme value: where
    /// headers keep their counts, lengths and offsets.
    Word(usize, u64, bool, bool),
    /// Cut the input at a position.
    Truncate(usize),
    /// Remove a range.
    Remove(usize, usize),
    /// Repeat a slice in place.
    Duplicate(usize, usize),
    /// Insert random bytes.
    Insert(usize, Vec<u8>),
    /// Replace the tail with another corpus file's tail.
    Splice(usize, usize),
}

fn extreme() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(0x7fff_ffff),
        Just(0xffff_ffff),
        Just(1_000_000_000_000),
        Just(u64::MAX),
        Just(u64::MAX / 2 + 1),
        any::<u64>(),
        0u64..4096,
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        (any::<usize>(), 1usize..64, any::<u8>()).prop_map(|(at, n, v)| Mutation::Fill(at, n, v)),
        (any::<usize>(), extreme(), any::<bool>(), any::<bool>())
            .prop_map(|(at, v, wide, big)| Mutation::Word(at, v, wide, big)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1usize..256).prop_map(|(at, n)| Mutation::Remove(at, n)),
        (any::<usize>(), 1usize..256).prop_map(|(at, n)| Mutation::Duplicate(at, n)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..32)
        )
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<usize>(), any::<usize>()).prop_map(|(at, other)| Mutation::Splice(at, other)),
    ]
}

/// Applies `mutations` to `input`; `corpus` feeds the splices.
fn mutate(mut input: Vec<u8>, mutations: &[Mutation], corpus: &[Vec<u8>]) -> Vec<u8> {
    for mutation in mutations {
        let len = input.len();
        // Positions are biased towards the start, where the headers are.
        let position = |at: usize| {
            if len == 0 {
                0
            } else if at.is_multiple_of(2) {
                at % len.min(64)
            } else {
                at % len
            }
        };
        match mutation.clone() {
            Mutation::FlipBit(at, bit) if len > 0 => input[position(at)] ^= 1 << bit,
            Mutation::Fill(at, n, value) if len > 0 => {
                let start = position(at);
                let end = (start + n).min(len);
                input[start..end].fill(value);
            }
            Mutation::Word(at, value, wide, big) if len > 0 => {
                let bytes: Vec<u8> = match (wide, big) {
                    (true, true) => value.to_be_bytes().to_vec(),
                    (true, false) => value.to_le_bytes().to_vec(),
                    (false, true) => (value as u32).to_be_bytes().to_vec(),
                    (false, false) => (value as u32).to_le_bytes().to_vec(),
                };
                let start = position(at) & !3;
                for (offset, byte) in bytes.into_iter().enumerate() {
                    if let Some(slot) = input.get_mut(start + offset) {
                        *slot = byte;
                    }
                }
            }
            Mutation::Truncate(at) => input.truncate(if len == 0 { 0 } else { at % len }),
            Mutation::Remove(at, n) if len > 0 => {
                let start = position(at);
                input.drain(start..(start + n).min(len));
            }
            Mutation::Duplicate(at, n) if len > 0 => {
                let start = position(at);
                let slice = input[start..(start + n).min(len)].to_vec();
                input.splice(start..start, slice);
            }
            Mutation::Insert(at, bytes) => {
                let start = if len == 0 { 0 } else { position(at) };
                input.splice(start..start, bytes);
            }
            Mutation::Splice(at, other) if !corpus.is_empty() => {
                let other = &corpus[other % corpus.len()];
                let start = if len == 0 { 0 } else { at % len };
                let from = if other.is_empty() {
                    0
                } else {
                    start.min(other.len())
                };
                input.truncate(start);
                input.extend_from_slice(&other[from..]);
            }
            _ => {}
        }
    }
    input
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn corpus_dir(target: &str) -> PathBuf {
    repo_root().join("fixtures/fuzz").join(target)
}

/// The corpus files of `target`, with their names (which decide their extension).
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading the corpus {}: {error}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&path).expect("a readable corpus file");
            (name, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    files
}

fn budget() -> Duration {
    let seconds = std::env::var("PARALLAX_FUZZ_SECONDS")
        .ok()
        .and_then(|text| text.parse::<f64>().ok())
        .unwrap_or(20.0);
    Duration::from_secs_f64(seconds)
}

/// Fuzzes `read` (which reads the file at the path it is given) over `target`'s corpus for the
/// budget, and fails on any panic or oversized allocation.
fn fuzz(target: &str, read: fn(&Path)) {
    let corpus = corpus(target);
    let bytes: Vec<Vec<u8>> = corpus.iter().map(|(_, bytes)| bytes.clone()).collect();
    let work = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz")
        .join(target);
    std::fs::create_dir_all(&work).expect("a work directory");
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let strategy = (0..corpus.len(), proptest::collection::vec(mutation(), 0..6));
    let (start, budget) = (Instant::now(), budget());
    let (mut executions, mut panics, mut oversized) = (0u64, Vec::new(), Vec::new());
    let mut largest = 0usize;
    // The readers' errors are expected; their panics are caught and counted, not printed.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(remember_panic));
    while start.elapsed() < budget {
        let (index, mutations) = strategy
            .new_tree(&mut runner)
            .expect("a generated case")
            .current();
        let (name, seed) = &corpus[index];
        let input = mutate(seed.clone(), &mutations, &bytes);
        // The reader picks its format by extension, so the input keeps its seed's.
        let path = work.join(format!("current-{name}"));
        std::fs::write(&path, &input).expect("writing the input");
        LARGEST.with(|cell| cell.set(0));
        let outcome = std::panic::catch_unwind(|| read(&path));
        let peak = LARGEST.with(Cell::get);
        largest = largest.max(peak);
        executions += 1;
        if outcome.is_err() {
            let saved = work.join(format!("panic-{}-{name}", panics.len()));
            let _ = std::fs::copy(&path, &saved);
            panics.push(format!("{}: {}", saved.display(), last_panic()));
        } else if peak > ALLOCATION_LIMIT {
            let saved = work.join(format!("oversized-{}-{name}", oversized.len()));
            let _ = std::fs::copy(&path, &saved);
            oversized.push((saved, peak));
        }
    }
    std::panic::set_hook(hook);
    let seconds = start.elapsed().as_secs_f64();
    let corpus_bytes: usize = bytes.iter().map(Vec::len).sum();
    eprintln!(
        "fuzz {target}: {executions} executions in {seconds:.1} s ({:.0}/s), {} panics, {} oversized allocations, largest allocation {:.1} MiB, corpus {} files ({corpus_bytes} bytes)",
        executions as f64 / seconds,
        panics.len(),
        oversized.len(),
        largest as f64 / f64::from(1u32 << 20),
        corpus.len()
    );
    assert!(executions > 0, "no execution within the budget");
    assert!(panics.is_empty(), "{target}: inputs that panic: {panics:?}");
    assert!(
        oversized.is_empty(),
        "{target}: inputs that allocate what a header claims: {oversized:?}"
    );
}

fn read_idx(path: &Path) {
    let name = path.to_string_lossy();
    if name.contains("labels") {
        let _ = read_idx_labels(path);
    } else {
        let _ = read_idx_images(path);
    }
}

fn read_spec(path: &Path) {
    if let Ok(spec) = ModelSpec::from_file(path)
        && let Ok(model) = spec.resolve()
    {
        let adam = parallax_core::OptimizerName::Adam
            .with_lr(1e-3)
            .expect("a valid learning rate");
        let _ = parallax_core::memory::estimate(&model, 64, &adam.kind);
        let _ = parallax_core::flops::count(&model, &adam.kind);
    }
}

fn read_weights(path: &Path) {
    let _ = Weights::load_any(path);
}

#[test]
fn fuzz_idx_reader() {
    fuzz("idx", read_idx);
}

#[test]
fn fuzz_spec_parser() {
    fuzz("spec", read_spec);
}

/// A size from the edges of what a spec may say: zero, one, small, and absurd.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => Just(0u64),
        12 => 1u64..8,
        1 => Just(1_000_000_000),
        1 => Just(u64::from(u32::MAX)),
        1 => Just(u64::MAX / 3),
    ]
}

/// A spec's layer as JSON, of any kind, with sizes from [`size`].
fn layer() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let padding = prop_oneof![
        Just(json!("same")),
        Just(json!("valid")),
        size().prop_map(|n| json!(n)),
        (size(), size(), size(), size()).prop_map(|(a, b, c, d)| json!([a, b, c, d])),
    ];
    prop_oneof![
        (size(), any::<bool>()).prop_map(|(units, bias)| json!({"type": "dense", "units": units, "bias": bias})),
        (size(), size(), size(), padding.clone())
            .prop_map(|(f, k, s, p)| json!({"type": "conv2d", "filters": f, "kernel": k, "stride": s, "padding": p})),
        (size(), size(), padding.clone())
            .prop_map(|(k, s, p)| json!({"type": "max_pool2d", "kernel": k, "stride": s, "padding": p})),
        (size(), size(), padding).prop_map(|(k, s, p)| json!({"type": "avg_pool2d", "kernel": [k, s], "padding": p})),
        Just(json!({"type": "global_avg_pool"})),
        (prop_oneof![Just(0.0), Just(-1.0), Just(1e-5), Just(f64::MAX)])
            .prop_map(|e| json!({"type": "batch_norm", "epsilon": e})),
        Just(json!({"type": "relu"})),
        prop_oneof![Just(0.0), Just(0.5), Just(1.0), Just(-0.5)].prop_map(|r| json!({"type": "dropout", "rate": r})),
        Just(json!({"type": "flatten"})),
        (size(), size()).prop_map(|(p, s)| json!({"type": "basic_block", "planes": p, "stride": s})),
        (size(), size(), any::<bool>()).prop_map(|(p, s, v1)| {
            json!({"type": "bottleneck", "planes": p, "stride": s, "stride_at": if v1 { "conv1" } else { "conv2" }})
        }),
    ]
}

/// Specs that parse, with every layer kind and sizes at the edges, through shape inference,
/// the FLOP count and the memory estimate: the structure a byte mutation of a spec file
/// rarely reaches.
#[test]
fn fuzz_spec_structure() {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        proptest::test_runner::TestRng::deterministic_rng(
            proptest::test_runner::RngAlgorithm::ChaCha,
        ),
    );
    let strategy = (
        (size(), size(), size()),
        proptest::collection::vec(layer(), 0..8),
    );
    let (start, budget) = (Instant::now(), budget());
    let (mut executions, mut resolved, mut panics) = (0u64, 0u64, Vec::new());
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(remember_panic));
    while start.elapsed() < budget {
        let ((c, h, w), layers) = strategy.new_tree(&mut runner).expect("a case").current();
        let value = serde_json::json!({"name": "fuzzed", "input": [c, h, w], "layers": layers});
        LARGEST.with(|cell| cell.set(0));
        let outcome = std::panic::catch_unwind(|| {
            let Ok(spec) = serde_json::from_value::<ModelSpec>(value.clone()) else {
                return false;
            };
            let Ok(model) = spec.resolve() else {
                return false;
            };
            let adam = parallax_core::OptimizerName::Adam
                .with_lr(1e-3)
                .expect("a learning rate");
            let _ = parallax_core::memory::estimate(&model, 64, &adam.kind);
            let _ = parallax_core::flops::count(&model, &adam.kind);
            let _ = model.trainable_count();
            true
        });
        executions += 1;
        assert!(
            LARGEST.with(Cell::get) <= ALLOCATION_LIMIT,
            "a spec made its reader allocate what it claims: {value}"
        );
        match outcome {
            Ok(true) => resolved += 1,
            Ok(false) => {}
            Err(_) => panics.push(format!("{value}: {}", last_panic())),
        }
    }
    std::panic::set_hook(hook);
    eprintln!(
        "fuzz spec structure: {executions} executions in {:.1} s, {resolved} resolved, {} panics",
        start.elapsed().as_secs_f64(),
        panics.len()
    );
    assert!(
        panics.is_empty(),
        "specs that panic: {:?}",
        &panics[..panics.len().min(3)]
    );
}

#[test]
fn fuzz_weights_import() {
    fuzz("weights", read_weights);
}

/// A header that announces 10¹² bytes of images is refused before anything that size is
/// allocated, raw or gzip-compressed.
#[test]
fn an_idx_header_announcing_a_terabyte_is_refused_without_allocating_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // 10⁶ images of 10³×10³ pixels.
    let mut header = Vec::new();
    for word in [0x0000_0803u32, 1_000_000, 1000, 1000] {
        header.extend_from_slice(&word.to_be_bytes());
    }
    header.extend_from_slice(&[7u8; 100]);
    let raw = dir.path().join("train-images-idx3-ubyte");
    std::fs::write(&raw, &header).expect("writing");
    let gz = dir.path().join("train-images-idx3-ubyte.gz");
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut encoder, &header).expect("compressing");
    std::fs::write(&gz, encoder.finish().expect("compressing")).expect("writing");
    for path in [raw, gz] {
        LARGEST.with(|cell| cell.set(0));
        let error = read_idx_images(&path).expect_err("a truncated terabyte");
        let peak = LARGEST.with(Cell::get);
        assert!(error.to_string().contains("truncated IDX file"), "{error}");
        // The file holds 116 bytes (fewer gzipped); a reader needs only fixed buffers (gzip's
        // 32 KiB window, an 8 KiB read buffer). 1 MiB is many times those and a millionth of
        // the 10¹² bytes the header claims, so a reader that trusts the header fails by six
        // orders of magnitude.
        assert!(peak < 1 << 20, "{}: allocated {peak} bytes", path.display());
    }
}

/// The corpus files that parallax's own writers make are what they write today.
#[test]
fn corpus_is_fresh() {
    let images = IdxImages {
        count: 3,
        rows: 4,
        cols: 5,
        pixels: (0..60).map(|value| value as u8 * 4).collect(),
    };
    let dir = corpus_dir("idx");
    let update = std::env::var_os("UPDATE_FIXTURES").is_some();
    let temporary = tempfile::tempdir().expect("a temporary directory");
    let out = if update {
        dir.clone()
    } else {
        temporary.path().to_path_buf()
    };
    std::fs::create_dir_all(&out).expect("the corpus directory");
    write_idx_images(&out.join("images-idx3-ubyte.gz"), &images).expect("writing images");
    write_idx_labels(&out.join("labels-idx1-ubyte.gz"), &[0, 1, 2]).expect("writing labels");
    let mut raw = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5];
    raw.extend_from_slice(&images.pixels);
    std::fs::write(out.join("images-raw-idx3-ubyte"), &raw).expect("writing raw images");
    let mut weights = Weights::new();
    weights.insert(
        "fc.weight",
        ndarray::ArrayD::from_shape_vec(
            ndarray::IxDyn(&[2, 3]),
            vec![0.5, -1.0, 2.0, 0.0, 1e-3, 7.0],
        )
        .expect("a 2×3 tensor"),
    );
    weights.insert(
        "fc.bias",
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[2]), vec![0.25, -0.25]).expect("a vector"),
    );
    let weights_out = if update {
        corpus_dir("weights")
    } else {
        out.clone()
    };
    std::fs::create_dir_all(&weights_out).expect("the corpus directory");
    weights
        .save(&weights_out.join("tiny.safetensors"))
        .expect("writing weights");
    if !update {
        for (dir, name) in [
            ("idx", "images-idx3-ubyte.gz"),
            ("idx", "labels-idx1-ubyte.gz"),
            ("idx", "images-raw-idx3-ubyte"),
            ("weights", "tiny.safetensors"),
        ] {
            let committed = std::fs::read(corpus_dir(dir).join(name)).unwrap_or_default();
            let fresh = std::fs::read(out.join(name)).expect("a fresh file");
            assert!(
                committed == fresh,
                "fixtures/fuzz/{dir}/{name} is stale; rerun with UPDATE_FIXTURES=1"
            );
        }
    }
}
