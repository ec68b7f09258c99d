//! The module layering of `docs/architecture.md`: no module imports one that imports it back,
//! directly or through others, among the crate's top-level modules and among the sibling
//! submodules of every folder; and the report, search and cost modules import nothing that
//! holds or loads a model.
//! Imports are read from the source (`crate::a::b`, `super::x`, `use crate::{a, b}` lists).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every module of `src` (its path from the crate root) with its source, test modules cut.
fn modules(src: &Path) -> BTreeMap<Module, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<Module, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p: PathBuf = entry.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let rel = p.strip_prefix(root).unwrap().with_extension("");
                let mut m: Module = rel.iter().map(|c| c.to_string_lossy().into()).collect();
                if matches!(m.last().map(String::as_str), Some("mod" | "lib")) {
                    m.pop();
                }
                let text = std::fs::read_to_string(&p).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or("");
                let code: String = code
                    .lines()
                    .map(|l| l.split("//").next().unwrap_or(""))
                    .collect::<Vec<_>>()
                    .join("\n");
                if !is_test(&m) {
                    out.insert(m, code);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out
}

/// Whether `m` is a test module (`tests`, `*_tests`), compiled only under `cfg(test)`.
fn is_test(m: &Module) -> bool {
    m.last()
        .is_some_and(|l| l == "tests" || l.ends_with("_tests"))
}

/// The paths a source refers to, from the crate root: `crate::…` (with `{…}` lists) and
/// `super::…` relative to `module`.
fn references(module: &Module, code: &str) -> Vec<Module> {
    let mut out = Vec::new();
    for (anchor, base) in [("crate::", Vec::new()), ("super::", parent(module))] {
        for (at, _) in code.match_indices(anchor) {
            let rest = &code[at + anchor.len()..];
            let ident = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
            let path: String = rest.chars().take_while(|&c| ident(c)).collect();
            let mut m = base.clone();
            m.extend(path.split("::").filter(|s| !s.is_empty()).map(String::from));
            let after = &rest[path.len()..];
            if path.ends_with("::") && after.starts_with('{') {
                let list = &after[1..after.find('}').unwrap_or(after.len())];
                for item in list.split(',') {
                    let mut n = m.clone();
                    n.extend(item.split("::").map(|s| s.trim().to_string()));
                    out.push(n);
                }
            }
            out.push(m);
        }
    }
    out
}

fn parent(m: &Module) -> Module {
    m[..m.len().saturating_sub(1)].to_vec()
}

/// The longest prefix of `path` that is a module.
fn resolve(path: &Module, mods: &BTreeMap<Module, String>) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|k| path[..k].to_vec())
        .find(|m| mods.contains_key(m))
}

/// Edges between the children of `at`: child → the children its code (or its descendants')
/// refers to.
fn edges(mods: &BTreeMap<Module, String>, at: &Module) -> BTreeMap<String, BTreeSet<String>> {
    let mut e: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let child = |m: &Module| (m.len() > at.len() && m.starts_with(at)).then(|| m[at.len()].clone());
    for (m, code) in mods {
        let Some(from) = child(m) else { continue };
        for r in references(m, code) {
            if let Some(to) = resolve(&r, mods).as_ref().and_then(child)
                && to != from
            {
                e.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    e
}

/// A cycle through `start`, if there is one.
fn cycle(e: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in e.get(last).into_iter().flatten() {
            if next == start {
                return Some([path.clone(), vec![start.to_string()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push([path.clone(), vec![next.clone()]].concat());
            }
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mods = modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(mods.len() > 80, "read {} modules", mods.len());
    let folders: BTreeSet<Module> = mods.keys().map(parent).collect();
    let mut found = Vec::new();
    for at in folders {
        let e = edges(&mods, &at);
        for start in e.keys() {
            if let Some(c) = cycle(&e, start) {
                found.push(format!("in crate::{}: {}", at.join("::"), c.join(" -> ")));
            }
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn report_search_and_cost_import_no_model() {
    let mods = modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let top = edges(&mods, &Vec::new());
    for module in ["report", "search", "cost", "plan", "run"] {
        let direct = top.get(module).cloned().unwrap_or_default();
        for forbidden in [
            "model", "onnx", "pipeline", "quant", "zoo", "export", "train",
        ] {
            let allowed = module == "run" && (forbidden == "export" || forbidden == "train")
                || module == "report" && forbidden == "train";
            assert!(
                allowed || !direct.contains(forbidden),
                "{module} imports {forbidden}: {direct:?}"
            );
        }
    }
}
