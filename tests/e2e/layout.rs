//! The code's shape, checked: no module of a crate imports a module that imports it back
//! (issue 15). A module is a source file; it imports what its `crate::` and `super::` paths
//! (outside comments and its `#[cfg(test)] mod tests`) name. A parent's `mod child;` is not an
//! import, so a parent that declares a child the child uses freely; one that also `use`s the
//! child's items while the child `use`s the parent's is a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every `.rs` file under `src`, by module path.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("source dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src").with_extension("");
            let mut module: Module = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                module.pop();
            }
            out.insert(module, path);
        }
    }
    out
}

/// The module a path names: its longest prefix that is a module.
fn resolve(modules: &BTreeMap<Module, PathBuf>, path: &[String]) -> Option<Module> {
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|m| modules.contains_key(m))
}

/// Each module's imports of other modules.
fn imports(modules: &BTreeMap<Module, PathBuf>) -> BTreeSet<(Module, Module)> {
    let mut edges = BTreeSet::new();
    for (module, file) in modules {
        let text = std::fs::read_to_string(file).expect("readable source");
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
        for line in code.lines() {
            let line = line.split("//").next().unwrap_or("");
            for (at, _) in line.match_indices("crate::").chain(line.match_indices("super::")) {
                // `super::super::x`: count the hops; `crate::x`: from the root.
                let rest = &line[at..];
                let mut base: Module = if rest.starts_with("crate::") { Vec::new() } else { module.clone() };
                let mut tail = rest;
                if let Some(t) = tail.strip_prefix("crate::") {
                    tail = t;
                }
                while let Some(t) = tail.strip_prefix("super::") {
                    base.pop();
                    tail = t;
                }
                let segs = tail
                    .split("::")
                    .map(|s| s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>())
                    .take_while(|s| !s.is_empty());
                base.extend(segs);
                if let Some(target) = resolve(modules, &base) {
                    if &target != module {
                        edges.insert((module.clone(), target));
                    }
                }
            }
        }
    }
    edges
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cycles = Vec::new();
    for krate in ["agent", "engine", "firmware-sim", "wire"] {
        let edges = imports(&modules(&root.join(krate).join("src")));
        assert!(!edges.is_empty(), "{krate}: no imports found; is the checker reading the sources?");
        for (a, b) in &edges {
            if a < b && edges.contains(&(b.clone(), a.clone())) {
                cycles.push(format!("{krate}: {} <-> {}", a.join("::"), b.join("::")));
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("lib.rs"), "mod a;\nmod b;\n").expect("write");
    std::fs::write(dir.path().join("a.rs"), "use crate::b::B;\npub struct A;\n").expect("write");
    std::fs::write(dir.path().join("b.rs"), "use super::a::A; // the way back\npub struct B;\n").expect("write");
    let edges = imports(&modules(dir.path()));
    let (a, b) = (vec!["a".to_owned()], vec!["b".to_owned()]);
    assert!(edges.contains(&(a.clone(), b.clone())) && edges.contains(&(b, a)), "{edges:?}");
}
