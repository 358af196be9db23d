//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) and the
//! inputs of fixed crashes (`fuzz/regressions/<target>/`) through the same
//! functions the cargo-fuzz targets call, on stable: what fuzzing once
//! covered keeps not panicking. `scripts/fuzz.sh` grows the corpora.

use std::path::Path;

/// Runs every input of `fuzz/<kind>/<target>/` through `target`; how many.
fn replay(kind: &str, target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut count = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let input = std::fs::read(&path).unwrap();
        // A panic names the input it came from.
        let outcome = std::panic::catch_unwind(|| run(&input));
        assert!(outcome.is_ok(), "{} panicked", path.display());
        count += 1;
    }
    count
}

/// The corpus must hold inputs, or this would silently test nothing; the
/// regressions directory may hold none yet.
fn corpus_and_regressions(target: &str, run: fn(&[u8])) {
    let corpus = replay("corpus", target, run);
    assert!(corpus > 0, "fuzz/corpus/{target} is empty");
    let regressions = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    if regressions.exists() {
        replay("regressions", target, run);
    }
}

#[test]
fn proc_files() {
    corpus_and_regressions("proc_files", vstats::fuzzing::proc_files);
}

#[test]
fn http_head() {
    corpus_and_regressions("http_head", vstats::fuzzing::http_head);
}

#[test]
fn relay_frames() {
    corpus_and_regressions("relay_frames", vstats::fuzzing::relay_frames);
}

#[test]
fn registry() {
    corpus_and_regressions("registry", vstats::fuzzing::registry);
}

#[test]
fn agent_config() {
    corpus_and_regressions("agent_config", vstats::fuzzing::agent_config);
}

#[test]
fn relay_config() {
    corpus_and_regressions("relay_config", vstats::fuzzing::relay_config);
}
