//! The integration tests, built as one binary: each file beside this one is
//! a module of it, so the library and its dependencies are linked once
//! rather than once per file (`autotests = false` in Cargo.toml). One
//! file's tests: `cargo test --test integration relay_hostile::`.
//!
//! A new test file must be declared here; `every_test_file_is_a_module`
//! fails on one that is not, rather than letting its tests never run.

mod common;

mod agent;
mod alerts;
mod browser;
mod collect_host;
mod cross;
mod fuzz_corpora;
mod golden;
mod install;
mod packaging;
mod prometheus;
mod protocol;
mod registry_cli;
mod relay;
mod relay_dist;
mod relay_fairness;
mod relay_history;
mod relay_history_db;
mod relay_hostile;
mod relay_limits;
mod systemd;
mod vstats_agent;
mod vstats_server;

#[test]
fn every_test_file_is_a_module() {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let root = include_str!("integration.rs");
    let mut missing: Vec<String> = std::fs::read_dir(&tests)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter_map(|name| Some(name.strip_suffix(".rs")?.to_owned()))
        .filter(|module| {
            module != "integration" && !root.lines().any(|line| line == format!("mod {module};"))
        })
        .collect();
    missing.sort();
    assert!(
        missing.is_empty(),
        "in tests/ but not modules of tests/integration.rs, so never built: {missing:?}"
    );
}
