//! The layers of `src/` (ARCHITECTURE.md): `core` ← `adapters` ← `controller` ←
//! `app`, with `telemetry` a leaf. Dependencies point one way, and the pure core
//! uses nothing that talks to the world. Read from the sources' `use` lines and
//! paths, so a new file or a new import is checked without listing it here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The code of a file without its comments and its test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module path of a source file (`core/zone/model.rs` → `core/zone/model`).
fn module(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Every path the code names after `prefix` (e.g. `kube::`), with a braced
/// group kept whole: `kube::{Api, Client}` gives `{Api, Client}`.
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        let start = at + prefix.len();
        rest = &rest[start..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = if rest.starts_with('{') {
            rest.find('}').map_or(rest.len(), |e| e + 1)
        } else {
            rest.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len())
        };
        out.push(&rest[..end]);
    }
    out
}

/// What the layer of `module` may not use, as (crate prefix, forbidden words):
/// a path after the prefix containing one of the words is a violation; an empty
/// word list forbids the prefix altogether.
fn forbidden(module: &[String]) -> Vec<(&'static str, &'static [&'static str])> {
    const ANY: &[&str] = &[];
    match module.first().map(String::as_str) {
        Some("core") => vec![
            ("crate::", &["adapters", "controller", "app", "telemetry"]),
            ("kube::", &["Api", "Client", "runtime", "api"]),
            ("clap::", ANY),
            ("tokio::", &["net", "spawn", "task"]),
            ("hickory_server::", ANY),
            ("hickory_resolver::", ANY),
            ("hickory_net::", ANY),
            ("hickory_proto::", ANY),
            ("axum::", ANY),
            ("prometheus_client::", ANY),
        ],
        Some("telemetry") => vec![("crate::", ANY)],
        Some("adapters") => vec![("crate::", &["controller", "app"]), ("clap::", ANY)],
        Some("controller") => vec![("crate::", &["app"]), ("clap::", ANY)],
        _ => vec![],
    }
}

/// The violations of the layer rules in one file's code.
fn violations(module: &[String], code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (prefix, words) in forbidden(module) {
        for path in paths_after(code, prefix) {
            let named: Vec<&str> = path
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty())
                .collect();
            let hit = if words.is_empty() {
                true
            } else if prefix == "crate::" {
                // Only the first component is the layer.
                named.first().is_some_and(|first| words.contains(first))
            } else {
                named.iter().any(|w| words.contains(w))
            };
            if hit {
                out.push(format!("{prefix}{path}"));
            }
        }
    }
    out
}

/// Module-level dependencies (units: the first two path components, as the
/// layers go), from `crate::` paths.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let files = sources(src);
    let unit = |parts: &[String]| parts.iter().take(2).cloned().collect::<Vec<_>>().join("/");
    let units: BTreeSet<String> = files
        .iter()
        .map(|f| module(src, f))
        .filter(|m| !m.is_empty() && m[0] != "lib" && m[0] != "main")
        .map(|m| unit(&m))
        .collect();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let m = module(src, f);
        if m.is_empty() || m[0] == "lib" || m[0] == "main" {
            continue;
        }
        let me = unit(&m);
        let text = code(&std::fs::read_to_string(f).unwrap());
        for path in paths_after(&text, "crate::") {
            let parts: Vec<String> = path
                .split("::")
                .take(2)
                .map(|p| {
                    p.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .to_string()
                })
                .collect();
            let two = parts.join("/");
            let target = if units.contains(&two) {
                two
            } else {
                parts[0].clone()
            };
            if units.contains(&target)
                && target != me
                && !me.starts_with(&format!("{target}/"))
                && !target.starts_with(&format!("{me}/"))
            {
                g.entry(me.clone()).or_default().insert(target);
            }
        }
    }
    g
}

/// The cycles of a graph (each as its sorted members).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Whether `to` is reachable from `from`.
    let reaches = |from: &str, to: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(n) = todo.pop() {
            for next in g.get(&n).into_iter().flatten() {
                if next == to {
                    return true;
                }
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        false
    };
    let mut out: Vec<Vec<String>> = Vec::new();
    for (a, targets) in g {
        for b in targets {
            if reaches(b, a) {
                let mut pair = vec![a.clone(), b.clone()];
                pair.sort();
                if !out.contains(&pair) {
                    out.push(pair);
                }
            }
        }
    }
    out
}

#[test]
fn every_layer_depends_only_downward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    let mut checked = 0;
    for file in sources(&src) {
        let m = module(&src, &file);
        let text = code(&std::fs::read_to_string(&file).unwrap());
        checked += 1;
        for v in violations(&m, &text) {
            bad.push(format!(
                "{}: {v}",
                file.strip_prefix(&src).unwrap().display()
            ));
        }
    }
    assert!(
        checked > 20,
        "only {checked} files found under {}",
        src.display()
    );
    assert!(
        bad.is_empty(),
        "imports against the layering:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_module_depends_on_itself_through_others() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    assert!(
        g.contains_key("app/run") && g["app/run"].contains("controller"),
        "{g:#?}"
    );
    let c = cycles(&g);
    assert!(c.is_empty(), "module cycles: {c:?}");
}

/// The checks themselves catch what they are for.
#[test]
fn the_checks_catch_upward_imports_and_cycles() {
    let core = vec!["core".to_string(), "zone".to_string()];
    assert_eq!(violations(&core, "use kube::Api;"), ["kube::Api"]);
    assert_eq!(
        violations(&core, "use kube::{CustomResource, runtime::watcher};"),
        ["kube::{CustomResource, runtime::watcher}"]
    );
    assert!(violations(&core, "use kube::CustomResource;").is_empty());
    assert_eq!(violations(&core, "use hickory_proto::rr::Name;").len(), 1);
    assert_eq!(
        violations(&core, "let x = crate::adapters::http::serve;").len(),
        1
    );
    assert!(violations(&core, "use crate::core::naming;").is_empty());
    let adapters = vec!["adapters".to_string()];
    assert_eq!(
        violations(&adapters, "use crate::controller::Context;").len(),
        1
    );
    assert!(violations(&adapters, "use crate::core::api;").is_empty());
    let telemetry = vec!["telemetry".to_string()];
    assert_eq!(violations(&telemetry, "use crate::core::vocab;").len(), 1);
    // Comments and tests do not count.
    assert!(violations(&core, &code("// use kube::Api;\nfn f() {}")).is_empty());

    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    assert!(cycles(&g).is_empty());
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert!(!cycles(&g).is_empty());
}
