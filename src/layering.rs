//! Tests that keep docs/ARCHITECTURE.md's statements about who may depend on whom true.
//!
//! Owns: reading the dependency table (the ```` ```deps ```` block of docs/ARCHITECTURE.md)
//! and checking the code against it: each library module names (`crate::NAME`) only the
//! modules its line allows; only `catalog` names `rusqlite`; only `store` names
//! `object_store`; nothing in the library prints; and the library package's normal
//! dependencies include none of the CLI's or the FUSE layer's crates (`cargo tree`). A
//! change that breaks one of these fails here, and the fix is either the code or the page.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir` (or `dir` itself when it is a file).
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    if dir.is_file() {
        return vec![dir.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The lines of a file that are code (comment lines dropped), with their numbers.
fn code_lines(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

/// The library's top-level modules: `src/NAME.rs` or `src/NAME/`, with their files.
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("src")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if ["lib", "layering", "golden"].contains(&name.as_str())
            || !(path.is_dir() || path.extension().is_some_and(|e| e == "rs"))
        {
            continue;
        }
        out.insert(name, rust_files(&path));
    }
    out
}

/// The ```deps block of docs/ARCHITECTURE.md: `module → a, b, c` per line.
fn documented_deps() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let block = doc
        .split("```deps\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/ARCHITECTURE.md has a ```deps block");
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (module, deps) = l
                .split_once('→')
                .unwrap_or_else(|| panic!("deps line without →: {l:?}"));
            let deps = deps
                .split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty() && *d != "nothing");
            (module.trim().to_string(), deps.map(str::to_string).collect())
        })
        .collect()
}

/// The modules a file names as `crate::NAME`.
fn named_modules(path: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (n, line) in code_lines(path) {
        assert!(
            !line.contains("crate::{"),
            "{}:{n}: write one `crate::module::…` path per `use`, so the layering test can read it",
            path.display()
        );
        for (at, _) in line.match_indices("crate::") {
            let before = line[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `dsvault_crate::` or similar, not ours
            }
            let name: String = line[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

#[test]
fn each_module_depends_only_on_what_architecture_md_allows() {
    let allowed = documented_deps();
    let mut problems = Vec::new();
    for (module, files) in modules() {
        let Some(ok) = allowed.get(&module) else {
            problems.push(format!(
                "module {module} has no line in the ```deps block of docs/ARCHITECTURE.md"
            ));
            continue;
        };
        for file in files {
            for dep in named_modules(&file) {
                if dep != module && !ok.contains(&dep) {
                    problems.push(format!(
                        "{} names crate::{dep}, but docs/ARCHITECTURE.md says {module} → {}",
                        file.strip_prefix(root()).unwrap().display(),
                        ok.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
    }
    for module in allowed.keys() {
        if !modules().contains_key(module) {
            problems.push(format!(
                "docs/ARCHITECTURE.md lists module {module}, which does not exist"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Files outside `only` (under src/, cli/src/, fuse/src/) whose code names `word`.
fn named_outside(word: &str, only: &str) -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["src", "cli/src", "fuse/src"] {
        for file in rust_files(&root().join(dir)) {
            let rel = file.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
            if rel.starts_with(only) || rel == "src/layering.rs" || rel == "src/golden.rs" {
                continue;
            }
            for (n, line) in code_lines(&file) {
                if line.contains(word) {
                    out.push(format!("{rel}:{n}: {}", line.trim()));
                }
            }
        }
    }
    out
}

#[test]
fn only_the_catalog_names_rusqlite() {
    let found = named_outside("rusqlite", "src/catalog/");
    assert!(found.is_empty(), "SQL belongs in src/catalog/:\n{}", found.join("\n"));
}

#[test]
fn only_the_store_names_object_store() {
    let found = named_outside("object_store", "src/store/");
    assert!(
        found.is_empty(),
        "object_store belongs in src/store/:\n{}",
        found.join("\n")
    );
}

#[test]
fn nothing_in_the_library_prints() {
    let mut found = Vec::new();
    for file in rust_files(&root().join("src")) {
        let rel = file.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
        // The crash point's one line before aborting is documented (tests only).
        if rel == "src/crashpoint.rs" || rel == "src/layering.rs" {
            continue;
        }
        for (n, line) in code_lines(&file) {
            if ["println!", "print!(", "eprintln!", "eprint!(", "dbg!("]
                .iter()
                .any(|m| line.contains(m))
            {
                found.push(format!("{rel}:{n}: {}", line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the library reports, the CLI prints:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_library_builds_without_the_cli_and_fuse_crates() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(root())
        .args(["tree", "-p", "dsvault", "-e", "normal", "--prefix", "none", "--offline"])
        .output()
        .expect("running cargo tree");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: BTreeSet<&str> = tree.lines().filter_map(|l| l.split(' ').next()).collect();
    assert!(
        crates.contains("rusqlite"),
        "cargo tree listed no rusqlite; is this the library?\n{tree}"
    );
    let forbidden = [
        "clap",
        "anyhow",
        "indicatif",
        "tracing-subscriber",
        "directories",
        "fuser",
        "dsvault-fuse",
        "dsvault-cli",
    ];
    let found: Vec<_> = forbidden.iter().filter(|c| crates.contains(*c)).collect();
    assert!(
        found.is_empty(),
        "the library depends on {found:?}; those belong to cli/ or fuse/"
    );
}
