//! The source tree's shape, checked: no `src` file imports a module that imports it back
//! (directly or through others), and no file holds more than about 600 lines of
//! non-test code unless its header says why (a line starting `//! Length:`).
//!
//! An import is any `crate::`, `super::` or `self::` path in non-test code (before the
//! first `#[cfg(test)]`), resolved to the deepest module file it names; declaring a
//! child module (`mod x;`) is not an import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Non-test lines a source file may hold without a `//! Length:` reason in its header.
const MAX_LINES: usize = 650;

type Module = Vec<String>;

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` are module `a::b`; `lib.rs` is the crate root.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

fn non_test_code(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts at `crate`, `super` or `self`, with `{a, b::c}` groups
/// expanded one level.
fn import_paths(code: &str, module: &Module) -> Vec<Module> {
    let mut paths = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if !(chars[i].is_ascii_alphabetic()) || (i > 0 && is_ident(chars[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let base: Module = match word.as_str() {
            "crate" => Vec::new(),
            "super" => module[..module.len().saturating_sub(1)].to_vec(),
            "self" => module.clone(),
            _ => continue,
        };
        let mut path = base;
        while chars.get(i) == Some(&':') && chars.get(i + 1) == Some(&':') {
            i += 2;
            if chars.get(i) == Some(&'{') {
                let end = chars[i..]
                    .iter()
                    .position(|&c| c == '}')
                    .map_or(chars.len(), |p| i + p);
                let group: String = chars[i + 1..end].iter().collect();
                for item in group.split(',') {
                    let mut full = path.clone();
                    full.extend(item.trim().split("::").map(|s| s.trim().to_owned()));
                    paths.push(full);
                }
                i = end;
                break;
            }
            let seg_start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            path.push(chars[seg_start..i].iter().collect());
        }
        paths.push(path);
    }
    paths
}

#[test]
fn no_src_file_imports_a_module_that_imports_it_back() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let modules: BTreeMap<Module, PathBuf> = files
        .iter()
        .filter(|f| !f.ends_with("main.rs"))
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    let resolve = |path: &Module| -> Option<Module> {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|prefix| modules.contains_key(prefix))
    };
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in &modules {
        let deps = edges.entry(module.clone()).or_default();
        if module.is_empty() {
            continue; // lib.rs only declares and re-exports
        }
        let code = non_test_code(&std::fs::read_to_string(file).unwrap());
        for path in import_paths(&code, module) {
            if let Some(target) = resolve(&path).filter(|t| t != module && !t.is_empty()) {
                deps.insert(target);
            }
        }
    }
    // A depth-first search for a back edge; the stack is the cycle.
    fn visit(
        node: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        stack: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(at) = stack.iter().position(|m| m == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, &edges, &mut Vec::new(), &mut done) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            panic!("import cycle: {}", names.join(" -> "));
        }
    }
    assert!(edges.len() > 20, "found only {} modules", edges.len());
}

#[test]
fn no_source_file_is_long_without_a_reason() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    source_files(&root.join("src"), &mut files);
    for entry in std::fs::read_dir(root.join("public/js")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let mut long = Vec::new();
    // A `tests.rs` is compiled only under its parent's `#[cfg(test)] mod tests;`.
    files.retain(|f| !f.ends_with("tests.rs"));
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines = text.split("#[cfg(test)]").next().unwrap().lines().count();
        let explained = text
            .lines()
            .take_while(|l| l.starts_with("//"))
            .any(|l| l.trim_start_matches(['/', '!', ' ']).starts_with("Length:"));
        if lines > MAX_LINES && !explained {
            long.push(format!("{} ({lines} lines)", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "long files with no `//! Length:` reason: {long:?}"
    );
}
