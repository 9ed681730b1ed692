//! Tidy: the boundary between the ledger and the server stays sealed. Storage is the
//! `ledger` crate's: the server reaches it through `Store`, `Snapshot` and the table
//! interface, never through redb (issue 14).

use std::path::Path;

#[test]
fn the_server_does_not_depend_on_redb() {
    let direct = fixtures::cargo_tree("fleet-ledger", "normal,dev", &["--depth", "1"]);
    assert!(
        !direct.lines().any(|l| l.starts_with("redb ")),
        "fleet-ledger depends on redb directly:\n{direct}"
    );
}

#[test]
fn no_redb_type_appears_in_the_server() {
    let mut offenders = Vec::new();
    for dir in ["src", "tests"] {
        visit(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
            &mut offenders,
        );
    }
    assert!(offenders.is_empty(), "redb named in {offenders:?}");
}

fn visit(dir: &Path, offenders: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, offenders);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tidy.rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.contains("redb::") || text.contains("use redb") {
                offenders.push(path.display().to_string());
            }
        }
    }
}

/// The workspace's library sources, by crate.
const CRATES: &[&str] = &[
    "ledger",
    "projections",
    "planner",
    "wire",
    "engine",
    "server",
];

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A file's code outside its `#[cfg(test)]` module, without comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rooms with visible doors (issue 27): a file names what it takes from another module; no
/// `use super::*` or `use crate::*` outside tests. (The domain-events facade, `pub use
/// crate::domain_events::*` in `ledger::event`, is the one re-export of a whole module.)
#[test]
fn no_glob_imports_outside_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    for krate in CRATES {
        let mut files = Vec::new();
        sources(&root.join(krate).join("src"), &mut files);
        for f in files {
            for line in code(&f).lines() {
                let l = line.trim();
                if l.starts_with("use ") && l.ends_with("::*;") {
                    offenders.push(format!("{}: {l}", f.display()));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "glob imports: {offenders:#?}");
}

/// No import circles between the top-level modules of a crate: the module graph of each
/// crate (`crate::x` named in the code of module `y`) has no cycle.
#[test]
fn no_module_imports_a_module_that_imports_it() {
    use std::collections::{BTreeMap, BTreeSet};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in CRATES {
        let src = root.join(krate).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for f in &files {
            let rel = f.strip_prefix(&src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = code(f);
            for (i, _) in text.match_indices("crate::") {
                let name: String = text[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                if !name.is_empty() && name != top {
                    deps.entry(top.clone()).or_default().insert(name);
                }
            }
        }
        // A cycle is a module that reaches itself.
        for start in deps.keys() {
            let mut seen = BTreeSet::new();
            let mut todo: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
            while let Some((m, path)) = todo.pop() {
                for next in deps.get(&m).into_iter().flatten() {
                    if next == start {
                        panic!("{krate}: import circle {} -> {start}", path.join(" -> "));
                    }
                    if seen.insert(next.clone()) {
                        let mut p = path.clone();
                        p.push(next.clone());
                        todo.push((next.clone(), p));
                    }
                }
            }
        }
    }
}
