//! Links tch and tensorflow into one test binary, runs a small computation in each, and checks
//! that the libraries are libtorch 2.9.0 and TensorFlow 2.21.0.

use std::path::Path;

use tensorflow::{Scope, Session, SessionOptions, SessionRunArgs, Tensor, ops};

/// `[[1, 2], [3, 4]] × [[5, 6], [7, 8]]`, row-major.
const PRODUCT: [f32; 4] = [19.0, 22.0, 43.0, 50.0];

#[test]
fn tch_multiplies_matrices_on_libtorch_2_9_0() {
    let a = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([2, 2]);
    let b = tch::Tensor::from_slice(&[5.0f32, 6.0, 7.0, 8.0]).reshape([2, 2]);
    let product = Vec::<f32>::try_from(a.matmul(&b).flatten(0, -1)).unwrap();
    assert_eq!(product, PRODUCT);

    let loaded = native_smoke::loaded_library("libtorch_cpu.so")
        .unwrap()
        .expect("libtorch_cpu.so is loaded");
    let lib_dir = loaded.parent().unwrap();
    println!("libtorch_cpu.so loaded from {}", loaded.display());
    // The library at run time is the one torch-sys compiled and linked against.
    let linked = Path::new(env!("NATIVE_SMOKE_LIBTORCH_LIB"));
    assert_eq!(
        lib_dir.canonicalize().unwrap(),
        linked.canonicalize().unwrap()
    );
    assert_eq!(native_smoke::libtorch_version(lib_dir).unwrap(), "2.9.0");
    // A CUDA tree (`cargo xtask setup --cuda`) must give tch its CUDA backend, GPU or not.
    let cuda_tree = lib_dir.join("libtorch_cuda.so").exists();
    assert_eq!(
        tch::utils::has_cudart(),
        cuda_tree,
        "CUDA backend loaded iff the tree has it"
    );
    println!(
        "CUDA backend: {cuda_tree}; GPUs visible: {}",
        tch::Cuda::device_count()
    );
}

#[test]
fn tensorflow_runs_a_session_on_2_21_0() {
    assert_eq!(tensorflow::version().unwrap(), "2.21.0");

    let mut scope = Scope::new_root_scope();
    let a = Tensor::new(&[2, 2])
        .with_values(&[1.0f32, 2.0, 3.0, 4.0])
        .unwrap();
    let b = Tensor::new(&[2, 2])
        .with_values(&[5.0f32, 6.0, 7.0, 8.0])
        .unwrap();
    let a = ops::constant(a, &mut scope).unwrap();
    let b = ops::constant(b, &mut scope).unwrap();
    let product = ops::mat_mul(a, b, &mut scope).unwrap();
    let session = Session::new(&SessionOptions::new(), &scope.graph()).unwrap();
    let mut run = SessionRunArgs::new();
    let fetch = run.request_fetch(&product, 0);
    session.run(&mut run).unwrap();
    let result: Tensor<f32> = run.fetch(fetch).unwrap();
    assert_eq!(&result[..], PRODUCT);

    let loaded = native_smoke::loaded_library("libtensorflow_cc.so.2").unwrap();
    println!(
        "libtensorflow_cc.so.2 loaded from {}",
        loaded.expect("TensorFlow is loaded").display()
    );
}
