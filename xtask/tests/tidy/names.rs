//! Where backends' names appear: the string literals of non-test code that name a backend
//! (alone or in a comma-separated list), outside the backend's adapter crate and the registry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Where the test command's acceptance scenarios live: like integration tests, each names the
/// backends it exercises (`compare --backends burn,tch,tf`, a deliberately failing tch run), so
/// its names are not places an engine must be added to. (Tidy itself lives in `xtask/tests`,
/// which is not scanned.)
const SCENARIOS: &[&str] = &["xtask/src/commands/test"];

/// One place a backend is named: the file, relative to the repository, and the literal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    /// The file.
    pub file: PathBuf,
    /// The literal's text.
    pub literal: String,
}

/// For each backend of the registry, the places outside its adapter crate and the registry
/// where non-test code names it, in the Rust sources under `sources` (paths relative to `root`).
pub fn places(root: &Path, sources: &[PathBuf]) -> BTreeMap<&'static str, Vec<Place>> {
    let mut found: BTreeMap<&'static str, Vec<Place>> = parallax_registry::BACKENDS
        .iter()
        .map(|entry| (entry.name, Vec::new()))
        .collect();
    for dir in sources {
        for path in super::rust_files(&root.join(dir)) {
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            if relative.starts_with("crates/registry")
                || SCENARIOS.iter().any(|dir| relative.starts_with(dir))
            {
                continue;
            }
            let text = super::read(&path);
            let tree = syn::parse_file(&text)
                .unwrap_or_else(|error| panic!("{} does not parse: {error}", path.display()));
            let mut literals = Literals::default();
            literals.visit_file(&tree);
            for literal in literals.0 {
                for entry in parallax_registry::BACKENDS {
                    let own = format!("crates/{}", entry.adapter.trim_start_matches("parallax-"));
                    if relative.starts_with(&own) {
                        continue;
                    }
                    if literal.split(',').any(|item| item.trim() == entry.name) {
                        found.entry(entry.name).or_default().push(Place {
                            file: relative.clone(),
                            literal: literal.clone(),
                        });
                    }
                }
            }
        }
    }
    found
}

/// The string literals of a file, leaving out `#[cfg(test)]` items.
#[derive(Default)]
struct Literals(Vec<String>);

impl<'ast> Visit<'ast> for Literals {
    fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
        if !super::circles::is_test_only(&module.attrs) {
            syn::visit::visit_item_mod(self, module);
        }
    }

    fn visit_item_fn(&mut self, function: &'ast syn::ItemFn) {
        if !super::circles::is_test_only(&function.attrs) {
            syn::visit::visit_item_fn(self, function);
        }
    }

    fn visit_item_impl(&mut self, block: &'ast syn::ItemImpl) {
        if !super::circles::is_test_only(&block.attrs) {
            syn::visit::visit_item_impl(self, block);
        }
    }

    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {
        // Doc comments and attributes describe; they construct nothing.
    }

    fn visit_lit_str(&mut self, literal: &'ast syn::LitStr) {
        self.0.push(literal.value());
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        // Macro arguments (`format!`, `bail!`) are tokens to syn; read them as expressions,
        // so that their literals count too.
        let parser = syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated;
        if let Ok(arguments) = mac.parse_body_with(parser) {
            for argument in &arguments {
                self.visit_expr(argument);
            }
        }
    }
}
