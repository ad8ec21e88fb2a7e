//! The crate's top-level modules form a DAG: no module reaches, directly or through others,
//! back to itself. Read from the source (every `crate::<module>` outside comments and test
//! modules), so a new cycle fails CI rather than waiting for a reviewer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level module a file under `src/` belongs to (None for lib.rs and main.rs).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// `crate::<name>` references in code (not comments), before any `#[cfg(test)]`.
fn references(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut found = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        for part in line.split("crate::").skip(1) {
            let name: String =
                part.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn collect(src: &Path, dir: &Path, graph: &mut Graph) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(src, &path, graph);
            continue;
        }
        let Some(module) = top_module(src, &path) else { continue };
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let deps = graph.entry(module.clone()).or_default();
        deps.extend(references(&text).into_iter().filter(|d| *d != module));
    }
}

/// A cycle through `node`, if there is one, as the path that closes it.
fn cycle_from(graph: &Graph, node: &str, path: &mut Vec<String>) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|n| n == node) {
        let mut cycle = path[at..].to_vec();
        cycle.push(node.to_string());
        return Some(cycle);
    }
    path.push(node.to_string());
    for next in graph.get(node).into_iter().flatten() {
        if let Some(c) = cycle_from(graph, next, path) {
            return Some(c);
        }
    }
    path.pop();
    None
}

#[test]
fn top_level_modules_have_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = Graph::new();
    collect(&src, &src, &mut graph);
    assert!(graph.contains_key("gateway") && graph.contains_key("hub"), "read {graph:?}");
    for module in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, module, &mut Vec::new()) {
            panic!("module cycle: {}\ngraph: {graph:#?}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_hub_and_outbox_do_not_know_the_gateway() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = Graph::new();
    collect(&src, &src, &mut graph);
    for module in ["hub", "outbox", "node", "protocol"] {
        let deps = graph.get(module).cloned().unwrap_or_default();
        assert!(!deps.contains("gateway"), "{module} imports the gateway: {deps:?}");
        assert!(!deps.contains("broker"), "{module} imports the broker: {deps:?}");
    }
}
