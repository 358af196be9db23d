//! Compresses the dashboard page at build time, so the relay can serve it
//! gzipped without carrying a compressor (the page is the same bytes for
//! everyone; only clients that accept gzip get this copy).

use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;
use std::path::PathBuf;

fn main() {
    let page = "src/relay/dashboard.html";
    println!("cargo::rerun-if-changed={page}");
    let html = std::fs::read(page).expect("the dashboard page");
    let mut gzip = GzEncoder::new(Vec::new(), Compression::best());
    gzip.write_all(&html).expect("gzip in memory");
    let compressed = gzip.finish().expect("gzip in memory");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("dashboard.html.gz"), compressed).expect("writing OUT_DIR");
}
