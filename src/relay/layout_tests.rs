//! The relay's layout, held by tests: which modules may read a clock, and
//! which may import which (docs/ARCHITECTURE.md says why). They read the
//! source files themselves, so a change that breaks a rule fails here
//! with the file and line that broke it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn relay_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/relay")
}

/// A source file's text up to its unit tests, which may read clocks and
/// import what they like.
fn production_code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let end = [
        "\n#[cfg(test)]\nmod tests",
        "\n#[cfg(test)]\npub(crate) mod tests",
    ]
    .iter()
    .filter_map(|start| text.find(start))
    .min();
    match end {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

/// The relay's modules that are files beside `mod.rs` (its tests apart).
fn relay_modules() -> BTreeSet<String> {
    std::fs::read_dir(relay_dir())
        .unwrap()
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let module = name.strip_suffix(".rs")?;
            (module != "mod" && !module.ends_with("_tests")).then(|| module.to_owned())
        })
        .collect()
}

/// The modules that make decisions and must take the time as an input:
/// the engine and every state it keeps, and the building of frames.
const CLOCKLESS: &[&str] = &[
    "src/relay/engine.rs",
    "src/relay/hub.rs",
    "src/relay/presence.rs",
    "src/relay/lean.rs",
    "src/relay/alerts.rs",
    "src/relay/history.rs",
    "src/relay/rollup.rs",
    "src/relay/hush.rs",
    "src/relay/rate.rs",
    "src/relay/budget.rs",
    "src/relay/outbox.rs",
    "src/relay/compat.rs",
    "src/relay/shared.rs",
    "src/relay/notice.rs",
    "src/relay/timers.rs",
    "src/agent/lean.rs",
    "src/protocol.rs",
    "src/protocol/patch.rs",
    "src/protocol/limits.rs",
];

#[test]
fn the_engine_and_what_it_keeps_read_no_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    for file in CLOCKLESS {
        let path = root.join(file);
        if !path.exists() {
            continue; // not split out (yet, or any more)
        }
        for (number, line) in production_code(&path).lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("SystemTime::now") || code.contains("Instant::now") {
                found.push(format!("{file}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the time must come in with the input (or from the injected WallClock):\n{}",
        found.join("\n")
    );
}

/// Each relay module's imports of its siblings, from `super::NAME` and
/// `crate::relay::NAME` paths in its production code.
fn sibling_imports() -> BTreeMap<String, BTreeMap<String, usize>> {
    let modules = relay_modules();
    let mut graph = BTreeMap::new();
    for module in &modules {
        let code = production_code(&relay_dir().join(format!("{module}.rs")));
        let mut edges = BTreeMap::new();
        for (number, line) in code.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for prefix in ["super::", "crate::relay::"] {
                for (at, _) in code.match_indices(prefix) {
                    let rest = &code[at + prefix.len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '{')
                        .collect();
                    edges.entry(name).or_insert(number + 1);
                }
            }
        }
        graph.insert(module.clone(), edges);
    }
    graph
}

#[test]
fn relay_modules_import_only_their_siblings_and_never_their_parent() {
    let modules = relay_modules();
    let mut wrong = Vec::new();
    for (module, edges) in sibling_imports() {
        for (name, line) in edges {
            if !modules.contains(&name) {
                wrong.push(format!(
                    "src/relay/{module}.rs:{line}: `{name}` is not a sibling module \
                     (an import from mod.rs, or a grouped `super::{{..}}`)"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn relay_modules_import_each_other_without_a_cycle() {
    let graph = sibling_imports();
    // Depth-first, keeping the path: a module met again on it closes a
    // cycle.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeMap<String, usize>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == module) {
            let mut cycle = path[start..].to_vec();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if !done.insert(module.to_owned()) {
            return None;
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flat_map(|edges| edges.keys()) {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = visit(module, &graph, &mut Vec::new(), &mut done) {
            panic!("an import cycle: {}", cycle.join(" -> "));
        }
    }
}
