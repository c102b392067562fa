//! The shape of the house, checked: dependencies between tend's modules run one way.
//!
//! Reads every file under `src/`, finds the modules each one refers to (`crate::a::b`
//! paths, `use crate::{a, b}` groups, `super::x` paths), and checks two things:
//!
//! 1. **No cycle** between files: no module reaches, through the modules it uses, a
//!    module that uses it back.
//! 2. **Layers**: a module uses only its own layer and the ones below it (transports on the
//!    vocabulary on the core on the mechanisms on the base; see `ARCHITECTURE.md`).
//!
//! `cargo test --test architecture -- --nocapture` also prints the graph, one line per
//! top-level module with what it uses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first. A module may use modules of its own layer or any layer below.
const LAYERS: &[(&str, &[&str])] = &[
    ("base", &["error", "record", "service", "home", "config"]),
    (
        "mechanisms",
        &["store", "process", "logs", "logwriter", "probe"],
    ),
    ("core", &["policy", "state", "supervisor"]),
    ("vocabulary", &["api", "fleet", "json", "metrics"]),
    ("transports", &["cli", "app", "daemon", "pg"]),
];

fn layer_of(module: &str) -> Option<usize> {
    let top = module.split("::").next()?;
    LAYERS.iter().position(|(_, mods)| mods.contains(&top))
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("dir entry").path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/daemon/server.rs` -> `daemon::server`; `src/daemon/mod.rs` -> `daemon`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file
        .strip_prefix(src)
        .expect("under src")
        .with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    if parts.is_empty() {
        "crate".into()
    } else {
        parts.join("::")
    }
}

/// The code of a file without its `#[cfg(test)]` module and without comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `a::b` -> `a`; a top-level module's parent is `crate`.
fn parent_of(m: &str) -> Option<&str> {
    match m.rsplit_once("::") {
        Some((p, _)) => Some(p),
        None if m != "crate" => Some("crate"),
        None => None,
    }
}

/// The longest known module that `path` (`a::b::c`) names.
fn resolve(mods: &BTreeSet<String>, path: &[&str]) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| mods.contains(m))
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Paths that follow `prefix` in `code`, as segment lists (`crate::a::b::C` -> [a, b, C]).
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(is_ident) {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a, b::c}`: each item is a path of its own.
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let segs: Vec<&str> = item
                    .trim()
                    .split("::")
                    .map(|s| s.trim_matches(|c: char| !is_ident(c)))
                    .filter(|s| !s.is_empty())
                    .collect();
                if !segs.is_empty() {
                    out.push(segs);
                }
            }
            continue;
        }
        let end = rest
            .find(|c: char| !(is_ident(c) || c == ':'))
            .unwrap_or(rest.len());
        let segs: Vec<&str> = rest[..end].split("::").filter(|s| !s.is_empty()).collect();
        if !segs.is_empty() {
            out.push(segs);
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let texts: BTreeMap<String, String> = all
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("read a source file");
            (module_of(&src, f), code(&text))
        })
        .collect();
    let mods: BTreeSet<String> = texts.keys().cloned().collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in &texts {
        let mut deps = BTreeSet::new();
        for p in paths_after(text, "crate::") {
            deps.extend(resolve(&mods, &p));
        }
        // `super::x` from `a::b` (file b.rs) is `a::x`; from `a` (a/mod.rs) it is the
        // parent of `a`.
        let parent: Vec<&str> = m.split("::").collect();
        let base = &parent[..parent.len().saturating_sub(1)];
        for p in paths_after(text, "super::") {
            let mut full: Vec<&str> = base.to_vec();
            full.extend(p);
            deps.extend(resolve(&mods, &full));
        }
        // A parent names its children without a prefix (`server::accept`, `self::x`).
        for child in mods.iter().filter(|c| parent_of(c) == Some(m.as_str())) {
            let last = child.rsplit("::").next().unwrap_or(child);
            let named = paths_after(text, &format!("{last}::"))
                .into_iter()
                .next()
                .is_some()
                || text.contains(&format!("use {last}::"));
            if named {
                deps.insert(child.clone());
            }
        }
        deps.remove(m);
        deps.remove("crate");
        edges.insert(m.clone(), deps);
    }
    edges
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(lw));
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                c.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                c.sort();
                t.out.push(c);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_module_uses_a_module_that_uses_it_back() {
    let g = graph();
    let mut tops: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let top = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    for (m, deps) in &g {
        let e = tops.entry(top(m)).or_default();
        e.extend(deps.iter().map(|d| top(d)).filter(|d| *d != top(m)));
    }
    println!("module graph (top level; `cargo test --test architecture -- --nocapture`):");
    for (m, deps) in &tops {
        let list: Vec<&str> = deps.iter().map(String::as_str).collect();
        println!("  {m:<11} -> {}", list.join(", "));
    }
    let c = cycles(&g);
    assert!(c.is_empty(), "module cycles: {c:?}");
}

#[test]
fn layers_run_one_way() {
    let g = graph();
    let mut wrong = Vec::new();
    for (m, deps) in &g {
        let Some(lm) = layer_of(m) else {
            if m != "crate" {
                wrong.push(format!(
                    "{m} is in no layer (add it to LAYERS and ARCHITECTURE.md)"
                ));
            }
            continue;
        };
        for d in deps {
            match layer_of(d) {
                Some(ld) if ld <= lm => {}
                Some(ld) => wrong.push(format!(
                    "{m} ({}) uses {d} ({})",
                    LAYERS[lm].0, LAYERS[ld].0
                )),
                None => wrong.push(format!("{m} uses {d}, which is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
