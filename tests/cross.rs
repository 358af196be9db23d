//! The cross-built release binaries (`scripts/build-release.sh`, into
//! `dist/`) on their own architectures, emulated by qemu user mode: aarch64
//! and armv7 agents stream to an x86_64 relay, the foreign relays answer,
//! and `--once` works on every architecture.
//!
//! `scripts/test.sh` builds `dist/` first; `VSTATS_DIST` points elsewhere.

mod common;

use common::relay::{Relay, is};
use common::{Process, TestCa};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Release name, what `uname -m` says there, and the qemu runner.
const ARCHES: [(&str, &str, Option<&str>); 3] = [
    ("x86_64", "x86_64", None),
    ("aarch64", "aarch64", Some("qemu-aarch64-static")),
    ("armv7", "armv7l", Some("qemu-arm-static")),
];

fn dist(binary: &str, arch: &str) -> PathBuf {
    let dir = std::env::var("VSTATS_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dist"));
    let path = dir.join(format!("{binary}-linux-{arch}"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-release.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The release binary for `arch`, under its qemu runner when foreign.
fn command(binary: &str, arch: &str, runner: Option<&str>) -> Command {
    let path = dist(binary, arch);
    let mut command = match runner {
        Some(runner) => {
            let runner_path = PathBuf::from("/usr/bin").join(runner);
            assert!(
                runner_path.exists(),
                "{} is missing: run scripts/setup-dev.sh (Debian package qemu-user-static)",
                runner_path.display()
            );
            let mut command = Command::new(runner_path);
            command.arg(path);
            command
        }
        None => Command::new(path),
    };
    command.env_clear();
    command
}

#[test]
fn once_prints_a_sample_on_every_arch() {
    for (arch, machine, runner) in ARCHES {
        let output = command("vstats-agent", arch, runner)
            .args(["--once", "--interval", "0.2"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{arch}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let sample: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(sample["os"]["arch"], machine, "{arch}");
        assert!(sample["memory"]["total"].as_u64().unwrap() > 0, "{arch}");
        assert!(sample["cpu"]["cores"].as_u64().unwrap() > 0, "{arch}");
    }
}

#[test]
fn foreign_agents_stream_to_an_x86_64_relay() {
    let ca = TestCa::new();
    let relay = Relay::start_tls(&ca);
    let mut dashboard = relay.dashboard();
    let mut agents: Vec<(String, &str, Process)> = Vec::new();
    for (arch, machine, runner) in ARCHES.into_iter().skip(1) {
        let (id, token) = relay.add_server(arch, "qemu");
        let mut agent = command("vstats-agent", arch, runner);
        agent
            .args([
                "--server",
                &relay.url(),
                "--ca-file",
                ca.ca_pem.to_str().unwrap(),
            ])
            .env("VSTATS_TOKEN", &token);
        agents.push((id, machine, Process::spawn(agent)));
    }
    for (id, machine, agent) in &agents {
        let frame = dashboard.wait_for(Duration::from_secs(60), "a foreign agent's sample", |f| {
            is(f, "metrics", id)
        });
        assert_eq!(
            frame["data"]["metrics"]["os"]["arch"],
            *machine,
            "log: {}",
            agent.log()
        );
    }
}

#[test]
fn foreign_relays_start_and_answer_healthz() {
    for (arch, _, runner) in ARCHES {
        let relay = Relay::start_binary(command("vstats-relay", arch, runner), &[]);
        assert_eq!(relay.get("/healthz"), (200, "ok\n".to_owned()), "{arch}");
        let (_, token) = relay.add_server("pi", "");
        let mut agent = relay.fake_agent(&token);
        agent.send_metrics(serde_json::json!({"hostname": arch}));
        let mut dashboard = relay.dashboard();
        dashboard.wait_for(
            Duration::from_secs(30),
            "a sample through the foreign relay",
            |f| f["type"] == "metrics" && f["data"]["metrics"]["hostname"] == arch,
        );
    }
}

#[test]
fn release_binaries_are_static_and_stripped() {
    for (arch, _, _) in ARCHES {
        for binary in ["vstats-agent", "vstats-relay"] {
            let path = dist(binary, arch);
            let readelf = |flag: &str| {
                let output = Command::new("readelf")
                    .args([flag, "-W"])
                    .arg(&path)
                    .output()
                    .unwrap();
                assert!(output.status.success(), "readelf {flag} {}", path.display());
                String::from_utf8_lossy(&output.stdout).into_owned()
            };
            assert!(
                !readelf("-l").contains("INTERP"),
                "{} has an interpreter",
                path.display()
            );
            assert!(
                !readelf("-d").contains("NEEDED"),
                "{} needs shared libraries",
                path.display()
            );
            assert!(
                !readelf("-S").contains(".symtab"),
                "{} is not stripped",
                path.display()
            );
        }
    }
}
