//! The example spec files in `specs/` parse and resolve, so the commands the docs show with
//! them work.

use std::path::Path;

use parallax_core::ModelSpec;

#[test]
fn every_example_spec_resolves() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("specs/") {
        let path = entry.expect("entry").path();
        let spec = ModelSpec::from_file(&path).unwrap_or_else(|error| panic!("{error}"));
        let model = spec
            .resolve()
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert!(model.classes() > 0);
        seen += 1;
    }
    assert!(seen >= 1, "no spec in {}", dir.display());
}
