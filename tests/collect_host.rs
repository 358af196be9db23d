//! The collector on the machine running the tests, checked against the
//! same files read directly.

use serde_json::Value;
use std::fs;
use vstats::agent::collect::{Collector, Paths};

fn sample_json() -> (vstats::protocol::Metrics, Value) {
    let sample = Collector::new(Paths::default(), None).sample();
    let json = serde_json::to_value(&sample).unwrap();
    (sample, json)
}

#[test]
fn agrees_with_proc() {
    let (sample, _) = sample_json();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
    let mem_total_kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(sample.memory.unwrap().total, mem_total_kib * 1024);

    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(sample.hostname, hostname.trim());

    let stat = fs::read_to_string("/proc/stat").unwrap();
    let cores = stat
        .lines()
        .filter(|line| {
            line.starts_with("cpu") && line.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
        })
        .count();
    let cpu = sample.cpu.unwrap();
    assert_eq!(cpu.cores as usize, cores);
    assert_eq!(cpu.per_core.len(), cores);
    assert!((0.0..=100.0).contains(&cpu.usage));
}

/// Every field of PROTOCOL.md's `metrics` table.
#[test]
fn serializes_every_protocol_field() {
    let (_, json) = sample_json();
    let fields = [
        "/timestamp",
        "/hostname",
        "/os/name",
        "/os/version",
        "/os/kernel",
        "/os/arch",
        "/cpu/brand",
        "/cpu/cores",
        "/cpu/usage",
        "/cpu/per_core",
        "/memory/total",
        "/memory/used",
        "/memory/available",
        "/memory/usage_percent",
        "/memory/swap_total",
        "/memory/swap_used",
        "/disks",
        "/disk_io/read_rate",
        "/disk_io/write_rate",
        "/network/rx",
        "/network/tx",
        "/network/rx_total",
        "/network/tx_total",
        "/network/interfaces",
        "/uptime",
        "/load_average/one",
        "/load_average/five",
        "/load_average/fifteen",
        "/temperatures",
        "/sockets/tcp",
        "/sockets/udp",
        "/processes",
    ];
    let missing: Vec<_> = fields
        .iter()
        .filter(|field| json.pointer(field).is_none())
        .collect();
    assert!(missing.is_empty(), "missing {missing:?} in {json:#}");

    let items = |array: &str, keys: &[&str]| {
        for item in json.pointer(array).unwrap().as_array().unwrap() {
            for key in keys {
                assert!(
                    item.get(key).is_some(),
                    "{array} item without {key}: {item}"
                );
            }
        }
    };
    items(
        "/disks",
        &["name", "mount", "fs_type", "total", "used", "usage_percent"],
    );
    items(
        "/network/interfaces",
        &["name", "rx", "tx", "rx_total", "tx_total"],
    );
    items("/temperatures", &["name", "celsius"]);
}
