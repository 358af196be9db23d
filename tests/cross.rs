//! The cross-built release binaries (`scripts/build-release.sh`, into
//! `dist/`) on their own architectures, emulated by qemu user mode with the
//! CPU models of the boards they are for (`cross/targets`): every foreign
//! agent streams to an x86_64 relay over `wss://` with a private CA (the
//! big-endian `mips` one too), the foreign relays answer, `--once` works on
//! every architecture, and a binary built for a newer CPU is shown to die on
//! an older one, so the CPU models are known to matter.
//!
//! `scripts/test.sh` builds `dist/` first; `VSTATS_DIST` points elsewhere.

use crate::common;

use common::relay::{Relay, is};
use common::{Process, TestCa};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

/// One line of `cross/targets`.
#[derive(Clone, Debug)]
struct Target {
    triple: String,
    /// The release name: `dist/vstats-agent-linux-<name>`.
    name: String,
    /// The qemu user-mode runner, none for x86_64.
    runner: Option<String>,
    /// qemu's `-cpu` model: the board's real core.
    cpu: Option<String>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn targets() -> Vec<Target> {
    let text = std::fs::read_to_string(repo().join("cross/targets")).unwrap();
    let dash = |word: &str| (word != "-").then(|| word.to_owned());
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words.len(), 4, "cross/targets: {line}");
            Target {
                triple: words[0].to_owned(),
                name: words[1].to_owned(),
                runner: dash(words[2]),
                cpu: dash(words[3]),
            }
        })
        .collect()
}

fn target(name: &str) -> Target {
    targets()
        .into_iter()
        .find(|target| target.name == name)
        .unwrap_or_else(|| panic!("{name} is not in cross/targets"))
}

/// What `uname -m` says, and so the sample's `os.arch`, where each runs.
fn machine(name: &str) -> &'static str {
    match name {
        "x86_64" => "x86_64",
        "aarch64" => "aarch64",
        "armv7" | "armv7sf" => "armv7l",
        "armv6" => "armv6l",
        // The kernel says `mips` for both byte orders.
        "mipsel" | "mips" => "mips",
        other => panic!("no machine name known for {other}"),
    }
}

/// The release directory: `dist/`, or `VSTATS_DIST`.
fn dist_dir() -> PathBuf {
    std::env::var("VSTATS_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("dist"))
}

fn dist(binary: &str, name: &str) -> PathBuf {
    let path = dist_dir().join(format!("{binary}-linux-{name}"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-release.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// The release binary `name`, under `target`'s runner and CPU model when
/// foreign. The two differ only to run one target's binary on another's CPU.
fn command_on(binary: &str, name: &str, target: &Target) -> Command {
    let path = dist(binary, name);
    let mut command = match &target.runner {
        Some(runner) => {
            let runner_path = PathBuf::from("/usr/bin").join(runner);
            assert!(
                runner_path.exists(),
                "{} is missing: run scripts/setup-dev.sh (Debian package qemu-user-static)",
                runner_path.display()
            );
            let mut command = Command::new(runner_path);
            if let Some(cpu) = &target.cpu {
                command.args(["-cpu", cpu]);
            }
            command.arg(path);
            command
        }
        None => Command::new(path),
    };
    command.env_clear();
    command
}

fn command(binary: &str, target: &Target) -> Command {
    command_on(binary, &target.name, target)
}

fn once(command: &mut Command) -> Output {
    command
        .args(["--once", "--interval", "0.2"])
        .output()
        .unwrap()
}

#[test]
fn once_prints_a_sample_on_every_arch() {
    for target in targets() {
        let name = &target.name;
        let output = once(&mut command("vstats-agent", &target));
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let sample: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(sample["os"]["arch"], machine(name), "{name}");
        assert!(sample["memory"]["total"].as_u64().unwrap() > 0, "{name}");
        assert!(sample["cpu"]["cores"].as_u64().unwrap() > 0, "{name}");
        assert!(
            !sample["cpu"]["brand"].as_str().unwrap().is_empty(),
            "{name}"
        );
    }
}

#[test]
fn foreign_agents_stream_to_an_x86_64_relay() {
    let ca = TestCa::new();
    let relay = Relay::start_tls(&ca);
    let mut dashboard = relay.dashboard();
    let mut agents: Vec<(String, String, Process)> = Vec::new();
    for target in targets().into_iter().filter(|t| t.runner.is_some()) {
        let (id, token) = relay.add_server(&target.name, "qemu");
        let mut agent = command("vstats-agent", &target);
        agent
            .args([
                "--server",
                &relay.url(),
                "--ca-file",
                ca.ca_pem.to_str().unwrap(),
            ])
            .env("VSTATS_TOKEN", &token);
        agents.push((id, target.name, Process::spawn(agent)));
    }
    assert!(agents.len() >= 6, "foreign targets: {}", agents.len());
    for (id, name, agent) in &agents {
        // Several emulated TLS handshakes share two cores: allow for that.
        let frame = dashboard.wait_for(Duration::from_secs(90), "a foreign agent's sample", |f| {
            is(f, "metrics", id)
        });
        assert_eq!(
            frame["data"]["metrics"]["os"]["arch"],
            machine(name),
            "{name}, log: {}",
            agent.log()
        );
        assert!(
            frame["data"]["metrics"]["memory"]["total"]
                .as_u64()
                .unwrap()
                > 0,
            "{name}"
        );
    }
}

#[test]
fn foreign_relays_start_and_answer_healthz() {
    for target in targets() {
        let name = &target.name;
        let relay = Relay::start_binary(command("vstats-relay", &target), &[]);
        assert_eq!(relay.get("/healthz"), (200, "ok\n".to_owned()), "{name}");
        let (_, token) = relay.add_server("pi", "");
        let mut agent = relay.fake_agent(&token);
        agent.send_metrics(serde_json::json!({"hostname": name}));
        let mut dashboard = relay.dashboard();
        dashboard.wait_for(
            Duration::from_secs(30),
            "a sample through the foreign relay",
            |f| f["type"] == "metrics" && f["data"]["metrics"]["hostname"] == name.as_str(),
        );
    }
}

/// On `board`'s CPU model, the `too_new` build dies of an illegal
/// instruction (qemu reports the guest's SIGILL, as a user would see it)
/// and the board's own build runs.
fn only_its_own_build_runs(board: &Target, too_new: &str) {
    let name = &board.name;
    let output = once(&mut command_on("vstats-agent", too_new, board));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "{too_new} ran on {name}'s CPU: {stderr}"
    );
    assert!(
        stderr.contains("Illegal instruction") || stderr.contains("signal 4"),
        "{too_new} failed otherwise on {name}'s CPU: {:?} {stderr}",
        output.status
    );
    let output = once(&mut command("vstats-agent", board));
    assert!(
        output.status.success(),
        "{name} on its own CPU: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn armv7_binary_dies_on_a_pi_zero_and_armv6_runs_there() {
    let pi_zero = target("armv6");
    assert_eq!(pi_zero.cpu.as_deref(), Some("arm1176"));
    only_its_own_build_runs(&pi_zero, "armv7");
}

#[test]
fn hard_float_binary_dies_without_an_fpu_and_soft_float_runs() {
    // Broadcom Northstar (BCM4708/4709): Cortex-A9 cores without VFP.
    let northstar = target("armv7sf");
    let cpu = northstar.cpu.as_deref().unwrap();
    assert!(cpu.contains("vfp=off"), "{cpu}");
    only_its_own_build_runs(&northstar, "armv7");
}

/// `readelf -W <flag>` of `path`.
fn readelf(flag: &str, path: &std::path::Path) -> String {
    let output = Command::new("readelf")
        .args([flag, "-W"])
        .arg(path)
        .output()
        .unwrap();
    assert!(output.status.success(), "readelf {flag} {}", path.display());
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn release_binaries_are_static_and_stripped() {
    for target in targets() {
        for binary in ["vstats-agent", "vstats-relay"] {
            let path = dist(binary, &target.name);
            assert!(
                !readelf("-l", &path).contains("INTERP"),
                "{} has an interpreter",
                path.display()
            );
            assert!(
                !readelf("-d", &path).contains("NEEDED"),
                "{} needs shared libraries",
                path.display()
            );
            let sections = readelf("-S", &path);
            // .pdr: MIPS procedure descriptors, 10 % of the file, never read.
            for section in [".symtab", ".pdr", ".comment"] {
                assert!(
                    !sections.contains(&format!(" {section} ")),
                    "{} keeps {section}",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn mips_binaries_are_static_executables_not_static_pie() {
    // A static-pie from the MIPS musl target segfaults before main: it must
    // be built with +crt-static (.cargo/config.toml), which gives EXEC.
    for target in targets().iter().filter(|t| t.triple.starts_with("mips")) {
        for binary in ["vstats-agent", "vstats-relay"] {
            let path = dist(binary, &target.name);
            let header = readelf("-h", &path);
            assert!(
                header.contains("EXEC (Executable file)"),
                "{}: {header}",
                path.display()
            );
            assert!(header.contains("mips32r2"), "{}: {header}", path.display());
        }
    }
}

/// The agent inside an OpenWrt package of `dist/`.
fn agent_in_ipk(ipk: &std::path::Path, into: &std::path::Path) {
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"tar -xzOf "$1" ./data.tar.gz | tar -xzOf - ./usr/bin/vstats-agent >"$2""#)
        .arg("sh")
        .arg(ipk)
        .arg(into)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}: {output:?}", ipk.display());
}

#[test]
fn each_openwrt_package_holds_a_binary_its_cpu_runs() {
    // Judged from the OpenWrt architecture name alone, against the ELF
    // header and attributes of the binary in the package: the mapping in
    // scripts/build-ipk.sh is not consulted.
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(dist_dir()).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        let Some(arch) = file
            .strip_prefix("vstats-agent_")
            .and_then(|rest| rest.strip_suffix(".ipk"))
            .and_then(|rest| rest.split_once('_'))
            .map(|(_version, arch)| arch.to_owned())
        else {
            continue;
        };
        let binary = tmp.path().join(&arch);
        agent_in_ipk(&path, &binary);
        let header = readelf("-h", &binary);
        let attributes = readelf("-A", &binary);
        let has = |text: &str, needle: &str| {
            assert!(text.contains(needle), "{arch}: no {needle:?} in\n{text}");
        };
        let (family, _cpu) = arch.split_once('_').unwrap_or((arch.as_str(), ""));
        match family {
            "x86" => has(&header, "X86-64"),
            "aarch64" => has(&header, "AArch64"),
            "arm" => {
                has(&header, "Machine:                           ARM");
                if arch.contains("vfp") || arch.contains("neon") {
                    has(&header, "hard-float ABI");
                } else {
                    // No FPU suffix: OpenWrt builds these soft-float. (The
                    // attributes still name VFP: ring's assembly has NEON
                    // paths, taken only where the kernel reports NEON; the
                    // qemu test without an FPU is the proof.)
                    has(&header, "soft-float ABI");
                }
                if arch.contains("arm1176") {
                    has(&attributes, "Tag_CPU_arch: v6");
                } else {
                    has(&attributes, "Tag_CPU_arch: v7");
                }
            }
            "mips" | "mipsel" => {
                let order = if family == "mips" {
                    "big endian"
                } else {
                    "little endian"
                };
                has(&header, order);
                has(&header, "mips32r2");
            }
            other => panic!("{file}: unexpected architecture family {other}"),
        }
        checked.push(arch);
    }
    checked.sort();
    for expected in [
        "mips_24kc",
        "mipsel_24kc",
        "arm_cortex-a9",
        "arm_arm1176jzf-s_vfp",
        "aarch64_cortex-a53",
        "x86_64",
    ] {
        assert!(
            checked.iter().any(|a| a == expected),
            "no package for {expected}: {checked:?}"
        );
    }
}
