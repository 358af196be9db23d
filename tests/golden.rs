//! Golden samples: for every machine tree in `tests/fixtures/`, the first
//! sample of a collector rooted there must equal `tests/golden/<tree>.json`.
//! `VSTATS_BLESS=1 cargo test --test integration golden::` rewrites the
//! golden files.

use std::fs;
use std::path::Path;
use vstats::agent::collect::{Collector, Paths};
use vstats::protocol::Metrics;

/// Blanks what depends on the machine running the test, not on the tree:
/// the clock, uname's machine (procfs has no file for it), and disk sizes
/// (statvfs on the tree measures the filesystem holding the checkout).
fn mask(sample: &mut Metrics) {
    sample.timestamp = "<masked>".into();
    sample.os.arch = "<masked>".into();
    for disk in &mut sample.disks {
        (disk.total, disk.used, disk.usage_percent) = (0, 0, 0.0);
    }
}

#[test]
fn fixture_trees_match_golden_samples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let bless = std::env::var_os("VSTATS_BLESS").is_some_and(|value| value == "1");
    let mut trees: Vec<_> = fs::read_dir(root.join("fixtures"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    trees.sort();
    assert!(trees.len() >= 4, "fixture trees missing");

    let mut stale = Vec::new();
    for tree in trees {
        let name = tree.file_name().unwrap().to_string_lossy().into_owned();
        let mut sample = Collector::new(Paths::under(&tree), None).sample();
        mask(&mut sample);
        let actual = serde_json::to_string_pretty(&sample).unwrap() + "\n";
        let golden = root.join("golden").join(format!("{name}.json"));
        if bless {
            fs::write(&golden, &actual).unwrap();
        } else if fs::read_to_string(&golden).ok().as_deref() != Some(actual.as_str()) {
            eprintln!("--- {name}: actual sample\n{actual}");
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "golden samples differ for {stale:?}; if the change is intended, rerun with VSTATS_BLESS=1 and review the diff"
    );
}
