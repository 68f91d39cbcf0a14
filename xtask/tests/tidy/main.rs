//! Tidy checks: the architecture's invariants that a test can check, run as `#[test]`s in the
//! style of rust-analyzer's `xtask/src/tidy.rs`, as an integration test of xtask. Each failure
//! says what to change.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root: the parent of xtask's manifest directory.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the repository")
        .to_path_buf()
}

mod circles;
mod names;

/// The engine crates and the adapters over them, which core must never depend on.
const ENGINE_CRATES: &[&str] = &[
    "tch",
    "torch-sys",
    "tensorflow",
    "tensorflow-sys",
    "burn",
    "burn-tch",
    "cubecl",
];

/// The adapter crates, by directory, which all split their code the same way.
const ADAPTERS: &[&str] = &["crates/burn", "crates/tch", "crates/tf", "crates/python"];

/// The adapter that runs the frameworks' own Python code: its network and optimizer are the
/// frameworks' own, written in one Python module per framework (`src/python/<framework>.py`,
/// the backend's name up to a `-`: keras-torch runs keras.py) rather than in `net.rs` and
/// `optim.rs`.
const PYTHON_ADAPTER: &str = "crates/python";

/// The files every adapter has, one per concern.
const ADAPTER_FILES: &[&str] = &["lib.rs", "backend.rs", "model.rs", "convert.rs"];

/// The files of every adapter that drives its engine from Rust.
const ENGINE_ADAPTER_FILES: &[&str] = &["net.rs", "optim.rs"];

/// The packages in `package`'s normal dependency tree, from `cargo tree`.
fn dependency_tree(package: &str) -> Vec<String> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(repo_root())
        .args([
            "tree", "--frozen", "-p", package, "-e", "normal", "--prefix", "none", "--format",
            "{p}",
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Whether a package is an engine or one of its parts.
fn is_engine(name: &str) -> bool {
    ENGINE_CRATES.contains(&name) || name.starts_with("burn-") || name.starts_with("cubecl")
}

#[test]
fn core_depends_on_no_engine_and_xtask_on_no_adapter() {
    let core = dependency_tree("parallax-core");
    // Core names no framework, and so depends on no other parallax crate: not even the
    // registry, which does.
    let engines: Vec<&String> = core
        .iter()
        .filter(|name| is_engine(name) || name.starts_with("parallax-") && *name != "parallax-core")
        .collect();
    assert!(
        engines.is_empty(),
        "parallax-core must name no framework, but depends on {engines:?}"
    );
    // xtask and the library drive each engine through a worker process: neither builds one.
    let adapters = [
        "parallax-burn",
        "parallax-tch",
        "parallax-tf",
        "parallax-python",
        "parallax-runner",
    ];
    for krate in ["xtask", "parallax"] {
        let engines: Vec<String> = dependency_tree(krate)
            .into_iter()
            .filter(|name| is_engine(name) || adapters.contains(&name.as_str()))
            .collect();
        assert!(
            engines.is_empty(),
            "{krate} must build before any engine, but depends on {engines:?}"
        );
    }
    // The library is what downstream crates reuse: of parallax's own crates, it builds on
    // core, the registry and provisioning alone.
    let own: Vec<String> = dependency_tree("parallax")
        .into_iter()
        .filter(|name| {
            name.starts_with("parallax-")
                && !["parallax-core", "parallax-registry", "parallax-provision"]
                    .contains(&name.as_str())
        })
        .collect();
    assert!(
        own.is_empty(),
        "the parallax library depends on core, the registry and provisioning only, but also on {own:?}"
    );
    for source in rust_files(&repo_root().join("crates/core")) {
        let text = read(&source);
        for engine in ["tch::", "tensorflow::", "burn::"] {
            assert!(
                !text.contains(engine),
                "{} uses {engine}; core never names a framework",
                source.display()
            );
        }
    }
}

/// The serialised fields of `pub struct name` in a Rust source, from its `pub field:` lines;
/// a `#[serde(flatten)]` field is left out, since its own fields are what is serialised.
fn struct_fields(source: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("pub struct {name} {{"))
        .unwrap_or_else(|| panic!("no struct {name}"));
    let body = &source[start..];
    let end = body.find("\n}").expect("the struct ends");
    let mut fields = Vec::new();
    let mut flattened = false;
    for line in body[..end].lines().map(str::trim) {
        if line.starts_with("#[serde(flatten)]") {
            flattened = true;
        } else if let Some((field, _)) = line
            .strip_prefix("pub ")
            .and_then(|line| line.split_once(':'))
        {
            if !flattened && !field.contains(' ') {
                fields.push(field.trim().to_string());
            }
            flattened = false;
        }
    }
    fields
}

#[test]
fn every_run_record_field_is_documented() {
    let root = repo_root();
    let source = read(&root.join("crates/core/src/record.rs"));
    let doc = read(&root.join("docs/run-record.md"));
    for structure in ["RunRecord", "EpochRecord", "RunRequest", "RunId"] {
        for field in struct_fields(&source, structure) {
            assert!(
                doc.contains(&format!("`{field}`")),
                "{structure}::{field} is not in docs/run-record.md; document it there"
            );
        }
    }
    let data = read(&root.join("crates/core/src/data/request.rs"));
    for field in struct_fields(&data, "DataRequest") {
        assert!(
            doc.contains(&format!("`{field}`")),
            "DataRequest::{field} (a run request's field) is not in docs/run-record.md"
        );
    }
}

/// Records round-trip every value they hold: each `f64` field of the record's types is written
/// through `parallax_core::float`, so NaN and the infinities read back.
#[test]
fn every_float_of_a_record_reads_back() {
    let root = repo_root();
    for file in [
        "crates/core/src/record.rs",
        "crates/core/src/metrics.rs",
        "crates/core/src/peak.rs",
    ] {
        let source = read(&root.join(file));
        let lines: Vec<&str> = source.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            let field = line.trim_start();
            if field.starts_with("pub ") && field.ends_with(": f64,") {
                let attribute = lines[..index]
                    .iter()
                    .rev()
                    .find(|previous| !previous.trim_start().starts_with("///"))
                    .map(|previous| previous.trim());
                assert_eq!(
                    attribute,
                    Some(r#"#[serde(with = "crate::float")]"#),
                    "{file}:{}: `{field}` is written without `crate::float`, so NaN would not read back",
                    index + 1
                );
            }
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let missing: Vec<PathBuf> = rust_files(&repo_root())
        .into_iter()
        .filter(|path| !read(path).starts_with("//!"))
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` line saying what they are: {missing:?}"
    );
}

/// docs/ARCHITECTURE.md: commands do not import each other; what two commands share lives
/// beside them (`report/`, `workers.rs`, `provision/`), and a command that needs another's
/// work runs it as a process.
#[test]
fn commands_do_not_import_each_other() {
    let commands = repo_root().join("xtask/src/commands");
    let mut crossings = Vec::new();
    for path in rust_files(&commands) {
        let relative = path.strip_prefix(&commands).unwrap();
        let own = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_string();
        let text = read(&path);
        for (at, _) in text.match_indices("crate::commands::") {
            let other: String = text[at + "crate::commands::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if other != own {
                crossings.push(format!("{} uses commands::{other}", relative.display()));
            }
        }
    }
    assert!(
        crossings.is_empty(),
        "commands import each other; move what they share beside them: {crossings:?}"
    );
}

/// docs/ARCHITECTURE.md: no module imports one that imports it back, in any crate of the
/// workspace, except a trait beside its wrapper (`circles::ALLOWED`).
#[test]
fn no_module_imports_one_that_imports_it_back() {
    let root = repo_root();
    let mut sources = vec![root.join("xtask/src"), root.join("benches/src")];
    for entry in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        sources.push(entry.path().join("src"));
    }
    let mut found = Vec::new();
    for src in sources.iter().filter(|src| src.is_dir()) {
        for circle in circles::circles(src) {
            found.push(format!(
                "{}: {circle}",
                src.strip_prefix(&root).unwrap().display()
            ));
        }
    }
    assert!(
        found.is_empty(),
        "modules import each other; move what they share to one side, or below both:\n{}",
        found.join("\n")
    );
}

/// docs/ARCHITECTURE.md, "Adding an engine": an engine is its crate and one registry row, so
/// non-test code names a backend in at most the stated number of places outside its adapter
/// crate and the registry (each named in `names::places`' terms). The number is read from the
/// document, so that the two cannot disagree.
#[test]
fn a_backend_is_named_in_few_places_outside_its_crate_and_the_registry() {
    let root = repo_root();
    let architecture = read(&root.join("docs/ARCHITECTURE.md"));
    let marker = "names a backend in at most ";
    let stated: usize = architecture
        .split(marker)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("docs/ARCHITECTURE.md must say \"{marker}N places\""));
    let mut sources = vec![
        PathBuf::from("xtask/src"),
        PathBuf::from("benches/src"),
        PathBuf::from("benches/benches"),
    ];
    for entry in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        sources.push(PathBuf::from("crates").join(entry.file_name()).join("src"));
    }
    let places = names::places(&root, &sources);
    let over: Vec<String> = places
        .iter()
        .filter(|(_, places)| places.len() > stated)
        .map(|(name, places)| {
            let list: Vec<String> = places
                .iter()
                .map(|place| format!("{} ({:?})", place.file.display(), place.literal))
                .collect();
            format!("{name} in {} places: {}", places.len(), list.join(", "))
        })
        .collect();
    let counts: Vec<String> = places
        .iter()
        .map(|(name, places)| format!("{name} {}", places.len()))
        .collect();
    eprintln!("backends named outside their crates: {}", counts.join(", "));
    assert!(
        over.is_empty(),
        "a backend is named in more than the {stated} places docs/ARCHITECTURE.md allows outside its crate and the registry; read the name from the registry instead:\n{}",
        over.join("\n")
    );
}

#[test]
fn the_readme_library_example_is_compiled() {
    let root = repo_root();
    let readme = read(&root.join("README.md"));
    assert!(
        readme.contains("```rust"),
        "README.md lost its library example"
    );
    let burn = read(&root.join("crates/burn/src/lib.rs"));
    assert!(
        burn.contains("#[cfg(doctest)]") && burn.contains("include_str!(\"../../../README.md\")"),
        "crates/burn/src/lib.rs must compile the README's examples as doctests"
    );
}

/// The README opens with its quick start, stays short (at most 1,200 words outside code
/// blocks), and every image and document it links to exists.
#[test]
fn the_readme_is_a_first_screen() {
    let root = repo_root();
    let readme = read(&root.join("README.md"));
    let first_section = readme.lines().find(|line| line.starts_with("## "));
    assert_eq!(
        first_section,
        Some("## Quick start"),
        "README.md must open with its quick start"
    );
    let prose: String = readme.split("```").step_by(2).collect::<Vec<_>>().join(" ");
    let words = prose.split_whitespace().count();
    assert!(
        words <= 1200,
        "README.md has {words} words outside code blocks, more than 1,200"
    );
    for (at, _) in readme.match_indices("](") {
        let target: String = readme[at + 2..].chars().take_while(|c| *c != ')').collect();
        if target.starts_with("http") || target.starts_with('#') {
            continue;
        }
        assert!(
            root.join(&target).exists(),
            "README.md links to {target}, which does not exist"
        );
    }
}

#[test]
fn adapters_read_alike() {
    let root = repo_root();
    for adapter in ADAPTERS {
        let src = root.join(adapter).join("src");
        let engine_files = if *adapter == PYTHON_ADAPTER {
            &[][..]
        } else {
            ENGINE_ADAPTER_FILES
        };
        for file in ADAPTER_FILES.iter().chain(engine_files) {
            assert!(
                src.join(file).is_file(),
                "{adapter} has no src/{file}; every adapter splits its code the same way (docs/ARCHITECTURE.md)"
            );
        }
        // One integration-test binary per backend the crate implements, named after it; a
        // backend tested through a feature of another's binary (burn-tch) has none of its own.
        let crate_name = format!("parallax-{}", adapter.trim_start_matches("crates/"));
        let backends: Vec<&str> = parallax_registry::BACKENDS
            .iter()
            .filter(|entry| entry.adapter == crate_name && entry.test_features.is_empty())
            .map(|entry| entry.name)
            .collect();
        if *adapter == PYTHON_ADAPTER {
            for backend in &backends {
                // One module per framework: keras-torch runs keras.py on another Keras backend.
                let module = backend.split('-').next().unwrap_or(backend);
                assert!(
                    src.join("python").join(format!("{module}.py")).is_file(),
                    "{adapter} has no src/python/{module}.py, the module of the {backend} backend"
                );
            }
        }
        let lib = read(&src.join("lib.rs"));
        assert!(
            lib.starts_with("//! An implementation of `parallax-core`'s [`Backend`]"),
            "{adapter}/src/lib.rs must open by saying which trait it implements for which engine"
        );
        // Cargo's test binaries: `tests/*.rs` and `tests/*/main.rs`; a folder without a
        // `main.rs` is a module the binaries share (`tests/support/`).
        let mut tests: Vec<String> = std::fs::read_dir(root.join(adapter).join("tests"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|entry| {
                        let path = entry.path();
                        !path.is_dir() || path.join("main.rs").is_file()
                    })
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        tests.sort();
        let mut expected: Vec<String> = backends
            .iter()
            .map(|backend| format!("{backend}.rs"))
            .collect();
        expected.sort();
        assert_eq!(
            tests, expected,
            "{adapter} must have one integration-test binary per backend, named after it"
        );
        for source in rust_files(&src) {
            let text = read(&source);
            for (pattern, why) in [
                (
                    ".weight\"",
                    "builds a parameter name; take it from the op's ParamInfo",
                ),
                (
                    ".bias\"",
                    "builds a parameter name; take it from the op's ParamInfo",
                ),
                (
                    "downsample",
                    "spells a PyTorch name; take it from the op's ParamInfo",
                ),
                (
                    "_ => {}",
                    "has a catch-all arm; match every case so that new ones fail to compile",
                ),
                (
                    "fn same_padding",
                    "defines same_padding again; use parallax_core::spec::same_padding",
                ),
                ("check_input", "checks its input itself; core's Net does"),
            ] {
                assert!(
                    !text.contains(pattern),
                    "{} {why} ({pattern:?})",
                    source.display()
                );
            }
        }
    }
}

#[test]
fn every_crate_is_in_the_architecture_code_map() {
    let root = repo_root();
    let architecture = read(&root.join("docs/ARCHITECTURE.md"));
    for entry in std::fs::read_dir(root.join("crates"))
        .expect("crates/")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            architecture.contains(&format!("### `crates/{name}`")),
            "crates/{name} has no section in docs/ARCHITECTURE.md's code map"
        );
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Every `.rs` file under `dir`, leaving out build output and git's own files.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                if !matches!(
                    name.to_str(),
                    Some("target" | ".git" | "out" | ".whl" | ".gl")
                ) {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
