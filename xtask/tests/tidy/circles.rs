//! Import circles: no module imports one that imports it back, read from the syntax trees of
//! every crate's sources.
//!
//! Modules are compared with their siblings: `a::x` using `b::y` is an edge from `a` to `b`
//! under their common parent, and a set of siblings that reach each other is a circle. A parent
//! and its own children are not siblings: a `mod.rs` that re-exports its children while they
//! use its items is one module's inside. Names re-exported with `pub use` are followed to the
//! module that defines them, so `crate::Error` counts as a use of `error`. Code under
//! `#[cfg(test)]` is left out: a test may reach anywhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// The circles a reader should accept: a trait beside the wrapper that callers hold, each
/// naming the other in its docs and signatures (`Backend::build` returns a `Net`, `Net` holds a
/// `Model`). Each entry is a crate's source directory and the sorted members of the circle.
pub const ALLOWED: &[(&str, &[&str])] = &[("crates/core/src", &["backend", "net"])];

/// A module's path from its crate's root: `["stats", "verdict"]`; the root is empty.
type ModulePath = Vec<String>;

/// One use of another module: the file and the path it names, as evidence for a message.
#[derive(Clone, Debug)]
struct Use {
    file: PathBuf,
    path: String,
}

/// The circles among the modules of the crate whose sources are under `src`, each as its
/// members (`parent::a ⇄ parent::b`) followed by one use per edge, sorted.
pub fn circles(src: &Path) -> Vec<String> {
    let files = module_files(src);
    let known: BTreeSet<ModulePath> = files.iter().map(|(module, _)| module.clone()).collect();
    let mut parsed = Vec::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let tree = syn::parse_file(&text)
            .unwrap_or_else(|error| panic!("{} does not parse: {error}", path.display()));
        parsed.push((module.clone(), path.clone(), tree));
    }
    // What each module re-exports: a name and the absolute path it stands for.
    let mut reexports: HashMap<ModulePath, HashMap<String, ModulePath>> = HashMap::new();
    for (module, _, tree) in &parsed {
        for item in &tree.items {
            if let syn::Item::Use(used) = item
                && !matches!(used.vis, syn::Visibility::Inherited)
                && !is_test_only(&used.attrs)
            {
                for (path, name) in expand_use(&used.tree) {
                    if let Some(absolute) = absolute(module, &path, &known)
                        && name != "*"
                    {
                        reexports
                            .entry(module.clone())
                            .or_default()
                            .insert(name, absolute);
                    }
                }
            }
        }
    }
    // Edges between siblings, each with the first use that makes it.
    let mut edges: BTreeMap<(ModulePath, ModulePath), Use> = BTreeMap::new();
    for (module, file, tree) in &parsed {
        let mut collector = Collector::default();
        collector.visit_file(tree);
        for path in collector.paths {
            let Some(absolute) = absolute(module, &path, &known) else {
                continue;
            };
            let target = target_module(&absolute, &known, &reexports);
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common < module.len() && common < target.len() {
                edges
                    .entry((module[..=common].to_vec(), target[..=common].to_vec()))
                    .or_insert_with(|| Use {
                        file: file.strip_prefix(src).unwrap_or(file).to_path_buf(),
                        path: path.join("::"),
                    });
            }
        }
    }
    let allowed: Vec<BTreeSet<ModulePath>> = ALLOWED
        .iter()
        .filter(|(dir, _)| src.ends_with(dir))
        .map(|(_, members)| members.iter().map(|m| vec![m.to_string()]).collect())
        .collect();
    let mut found = Vec::new();
    for component in strongly_connected(&edges) {
        if component.len() < 2 || allowed.contains(&component) {
            continue;
        }
        let names: Vec<String> = component.iter().map(|m| m.join("::")).collect();
        let evidence: Vec<String> = edges
            .iter()
            .filter(|((from, to), _)| component.contains(from) && component.contains(to))
            .map(|((from, to), used)| {
                format!(
                    "{} → {} ({} uses {})",
                    from.join("::"),
                    to.join("::"),
                    used.file.display(),
                    used.path
                )
            })
            .collect();
        found.push(format!("{}: {}", names.join(" ⇄ "), evidence.join("; ")));
    }
    found
}

/// Every `.rs` file of a crate's module tree under `src`, with its module path (`a.rs` and
/// `a/mod.rs` are `a`; `lib.rs` and `main.rs` the root). Binaries under `src/bin/` are crates
/// of their own and are left out.
fn module_files(src: &Path) -> Vec<(ModulePath, PathBuf)> {
    let mut files = Vec::new();
    for path in super::rust_files(src) {
        let relative = path.strip_prefix(src).unwrap_or(&path);
        if relative.starts_with("bin") {
            continue;
        }
        let mut module: ModulePath = relative
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if module.len() == 1 && matches!(module[0].as_str(), "lib" | "main") {
            module.clear();
        } else if module.last().is_some_and(|last| last == "mod") {
            module.pop();
        }
        files.push((module, path));
    }
    files
}

/// Whether an item's attributes put it under `#[cfg(test)]`.
pub(super) fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Meta>()
                .is_ok_and(|meta| meta.path().is_ident("test"))
    })
}

/// A `use` tree's paths, each with the name it brings in (`*` for a glob).
fn expand_use(tree: &syn::UseTree) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    expand_into(tree, &mut Vec::new(), &mut out);
    out
}

fn expand_into(
    tree: &syn::UseTree,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, String)>,
) {
    match tree {
        syn::UseTree::Path(path) => {
            prefix.push(path.ident.to_string());
            expand_into(&path.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(name) => {
            let ident = name.ident.to_string();
            if ident == "self" {
                let last = prefix.last().cloned().unwrap_or_default();
                out.push((prefix.clone(), last));
            } else {
                let mut path = prefix.clone();
                path.push(ident.clone());
                out.push((path, ident));
            }
        }
        syn::UseTree::Rename(rename) => {
            let mut path = prefix.clone();
            path.push(rename.ident.to_string());
            out.push((path, rename.rename.to_string()));
        }
        syn::UseTree::Glob(_) => out.push((prefix.clone(), "*".to_string())),
        syn::UseTree::Group(group) => {
            for tree in &group.items {
                expand_into(tree, prefix, out);
            }
        }
    }
}

/// A path as seen from `module`, made absolute: `crate::`, `super::` and `self::` resolved, and
/// a path that starts with a child module's name taken as relative; `None` for another crate's.
fn absolute(
    module: &ModulePath,
    path: &[String],
    known: &BTreeSet<ModulePath>,
) -> Option<ModulePath> {
    let (first, rest) = path.split_first()?;
    let mut base = match first.as_str() {
        "crate" => Vec::new(),
        "self" => module.clone(),
        "super" => {
            let mut base = module.clone();
            base.pop();
            let mut rest = rest;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            return Some(base);
        }
        _ => {
            let mut child = module.clone();
            child.push(first.clone());
            if !known.contains(&child) {
                return None;
            }
            return Some(child.into_iter().chain(rest.iter().cloned()).collect());
        }
    };
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The module an absolute path lands in: its longest known prefix, and where the next segment
/// is a name that module re-exports, the module that defines it.
fn target_module(
    path: &ModulePath,
    known: &BTreeSet<ModulePath>,
    reexports: &HashMap<ModulePath, HashMap<String, ModulePath>>,
) -> ModulePath {
    let mut path = path.clone();
    // Re-exports chain rarely; a bound keeps a `pub use self::x as x` from looping.
    for _ in 0..8 {
        let depth = (0..=path.len())
            .rev()
            .find(|depth| known.contains(&path[..*depth]))
            .unwrap_or(0);
        let module = path[..depth].to_vec();
        let Some(next) = path.get(depth) else {
            return module;
        };
        match reexports.get(&module).and_then(|names| names.get(next)) {
            Some(source) if source != &path[..=depth] => {
                let mut redirected = source.clone();
                redirected.extend(path[depth + 1..].iter().cloned());
                path = redirected;
            }
            _ => return module,
        }
    }
    path
}

/// The paths a file names, from its `use` items and its code, leaving out `#[cfg(test)]`.
#[derive(Default)]
struct Collector {
    paths: Vec<Vec<String>>,
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item_use(&mut self, used: &'ast syn::ItemUse) {
        if !is_test_only(&used.attrs) {
            self.paths
                .extend(expand_use(&used.tree).into_iter().map(|(path, _)| path));
        }
    }

    fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
        if !is_test_only(&module.attrs) {
            syn::visit::visit_item_mod(self, module);
        }
    }

    fn visit_item_fn(&mut self, function: &'ast syn::ItemFn) {
        if !is_test_only(&function.attrs) {
            syn::visit::visit_item_fn(self, function);
        }
    }

    fn visit_item_impl(&mut self, block: &'ast syn::ItemImpl) {
        if !is_test_only(&block.attrs) {
            syn::visit::visit_item_impl(self, block);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments
            .first()
            .is_some_and(|first| matches!(first.as_str(), "crate" | "super" | "self"))
        {
            self.paths.push(segments);
        }
        syn::visit::visit_path(self, path);
    }
}

/// The strongly connected components of the edges' graph (Tarjan's algorithm), each sorted.
fn strongly_connected(
    edges: &BTreeMap<(ModulePath, ModulePath), Use>,
) -> Vec<BTreeSet<ModulePath>> {
    let mut nodes: BTreeSet<&ModulePath> = BTreeSet::new();
    let mut next: BTreeMap<&ModulePath, Vec<&ModulePath>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        nodes.insert(from);
        nodes.insert(to);
        next.entry(from).or_default().push(to);
    }
    struct State<'a> {
        index: BTreeMap<&'a ModulePath, usize>,
        low: BTreeMap<&'a ModulePath, usize>,
        stack: Vec<&'a ModulePath>,
        on_stack: BTreeSet<&'a ModulePath>,
        components: Vec<BTreeSet<ModulePath>>,
    }
    fn visit<'a>(
        node: &'a ModulePath,
        next: &BTreeMap<&'a ModulePath, Vec<&'a ModulePath>>,
        state: &mut State<'a>,
    ) {
        let index = state.index.len();
        state.index.insert(node, index);
        state.low.insert(node, index);
        state.stack.push(node);
        state.on_stack.insert(node);
        for &to in next.get(node).map(Vec::as_slice).unwrap_or_default() {
            if !state.index.contains_key(to) {
                visit(to, next, state);
                let low = state.low[node].min(state.low[to]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(to) {
                let low = state.low[node].min(state.index[to]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = BTreeSet::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.insert(member.clone());
                if member == node {
                    break;
                }
            }
            state.components.push(component);
        }
    }
    let mut state = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for node in nodes {
        if !state.index.contains_key(node) {
            visit(node, &next, &mut state);
        }
    }
    state.components
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate written into a temporary directory: (relative path, text) per file.
    fn crate_of(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn a_circle_through_a_reexport_and_a_nested_module_is_found() {
        let dir = crate_of(&[
            ("lib.rs", "mod a; mod b; mod c; pub use c::Thing;"),
            ("a.rs", "use crate::b::inner::f; pub struct A;"),
            ("b/mod.rs", "pub mod inner;"),
            (
                "b/inner.rs",
                "pub fn f() -> crate::Thing { crate::c::Thing }",
            ),
            ("c.rs", "pub struct Thing; fn g(_: super::a::A) {}"),
        ]);
        let found = circles(dir.path());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("a ⇄ b ⇄ c:"), "{}", found[0]);
        assert!(
            found[0].contains("b/inner.rs uses crate::Thing"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn a_parent_and_its_children_tests_and_other_crates_make_no_circle() {
        let dir = crate_of(&[
            ("lib.rs", "mod a; mod b; pub use a::child::X;"),
            (
                "a/mod.rs",
                "pub mod child; pub struct Shared; fn f(_: child::X) {}",
            ),
            (
                "a/child.rs",
                "use super::Shared; use std::fmt; pub struct X(Shared);",
            ),
            (
                "b.rs",
                "use crate::a::Shared;\n#[cfg(test)] mod tests { use crate::a::Shared; }",
            ),
        ]);
        assert_eq!(circles(dir.path()), Vec::<String>::new());
        let dir = crate_of(&[
            ("lib.rs", "mod a; mod b;"),
            ("a.rs", "use crate::b::B; pub struct A;"),
            (
                "b.rs",
                "pub struct B;\n#[cfg(test)]\nfn t(_: crate::a::A) {}",
            ),
        ]);
        assert_eq!(circles(dir.path()), Vec::<String>::new());
    }
}
