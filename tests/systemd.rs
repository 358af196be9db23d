//! The systemd units and the installer under a real systemd: a Debian
//! bookworm root (made once by mmdebstrap, then reused from the target
//! directory) boots in `systemd-nspawn` with a private network, and its
//! `ci.service` runs `packaging/systemd/test/in-container.sh`: the relay unit
//! with `--dist-dir`, `curl .../install.sh | sh`, a `kill -9` of the agent, a
//! reload, a token rotation, `systemd-analyze security` and `--uninstall`.
//! The container's exit code is the script's.
//!
//! Needs root, `systemd-nspawn` (systemd-container) and mmdebstrap, which
//! `scripts/setup-dev.sh` installs. Without them the test says so and passes,
//! except under CI (`CI` set), where it fails instead.

use crate::common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The whole boot, test and shutdown; it takes about 40 s.
const BOOT_LIMIT: Duration = Duration::from_secs(300);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Why this machine cannot boot a container, if it cannot.
fn missing_prerequisite() -> Option<String> {
    // /proc/self belongs to the effective user.
    if fs::metadata("/proc/self").map_or(true, |meta| meta.uid() != 0) {
        return Some("not root".into());
    }
    ["systemd-nspawn", "mmdebstrap"]
        .into_iter()
        .find(|tool| {
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .map_or(true, |status| !status.success())
        })
        .map(|tool| format!("no {tool} (scripts/setup-dev.sh installs it)"))
}

/// The Debian mirror this machine's apt already uses, so the root is built
/// from where packages are known to come from here.
fn debian_mirror() -> String {
    let deb822 = fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let one_line = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    let from_deb822 = deb822
        .lines()
        .filter_map(|line| line.strip_prefix("URIs:"))
        .flat_map(str::split_whitespace);
    let from_one_line = one_line
        .lines()
        .filter_map(|line| line.strip_prefix("deb "))
        .filter_map(|rest| rest.split_whitespace().find(|word| word.contains("://")));
    from_deb822
        .chain(from_one_line)
        .find(|uri| !uri.contains("security"))
        .unwrap_or("http://deb.debian.org/debian")
        .to_owned()
}

/// A minimal bookworm with systemd, dbus and curl, built on first use
/// (20-50 s) and kept beside the build for the next run.
fn base_root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nspawn-bookworm");
    let root = dir.join("root");
    if root.join("usr/lib/systemd/systemd").exists() {
        return root;
    }
    let partial = dir.join("partial");
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&dir).unwrap();
    let started = Instant::now();
    let output = Command::new("mmdebstrap")
        .args([
            "--variant=minbase",
            "--include=systemd,systemd-sysv,dbus,curl",
            "bookworm",
        ])
        .arg(&partial)
        .arg(debian_mirror())
        .output()
        .expect("mmdebstrap");
    assert!(
        output.status.success(),
        "mmdebstrap: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // Renamed only when whole, so an interrupted build is never reused.
    fs::rename(&partial, &root).unwrap();
    eprintln!("built the bookworm root in {:.0?}", started.elapsed());
    root
}

fn copy_executable(from: &str, to: &Path) {
    fs::copy(from, to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).unwrap();
}

/// `/vstats-ci` in the container: binaries, certificates, the relay's unit,
/// a release directory for the installer, the test script and `ci.service`.
fn stage(root: &Path, ca: &common::TestCa) {
    let ci = root.join("vstats-ci");
    let dist = ci.join("dist");
    fs::create_dir_all(&dist).unwrap();
    copy_executable(env!("CARGO_BIN_EXE_vstats-relay"), &ci.join("vstats-relay"));
    for (from, name) in [
        (&ca.ca_pem, "ca.pem"),
        (&ca.cert_pem, "cert.pem"),
        (&ca.key_pem, "key.pem"),
    ] {
        fs::copy(from, ci.join(name)).unwrap();
    }
    let repo = repo();
    fs::copy(
        repo.join("packaging/systemd/vstats-relay.service"),
        ci.join("vstats-relay.service"),
    )
    .unwrap();
    fs::copy(
        repo.join("packaging/systemd/test/in-container.sh"),
        ci.join("in-container.sh"),
    )
    .unwrap();
    fs::copy(repo.join("scripts/install.sh"), dist.join("install.sh")).unwrap();
    let agent = fs::read(env!("CARGO_BIN_EXE_vstats-agent")).unwrap();
    let name = "vstats-agent-linux-x86_64";
    fs::write(dist.join(name), &agent).unwrap();
    fs::write(
        dist.join("SHA256SUMS"),
        format!("{}  {name}\n", common::sha256_hex(&agent)),
    )
    .unwrap();

    let units = root.join("etc/systemd/system");
    fs::write(
        units.join("ci.service"),
        "[Unit]\n\
         Description=vstats: units and installer under systemd\n\
         After=basic.target\n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart=/bin/sh -c '/bin/sh /vstats-ci/in-container.sh; systemctl --no-block exit $$?'\n\
         StandardOutput=journal+console\n\
         StandardError=journal+console\n\
         [Install]\n\
         WantedBy=multi-user.target\n",
    )
    .unwrap();
    let wants = units.join("multi-user.target.wants");
    fs::create_dir_all(&wants).unwrap();
    symlink("/etc/systemd/system/ci.service", wants.join("ci.service")).unwrap();
}

#[test]
fn units_and_installer_work_under_a_real_systemd() {
    if let Some(why) = missing_prerequisite() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must boot the container, but: {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let base = base_root();
    let run = tempfile::tempdir().unwrap();
    let root = run.path().join("root");
    let copied = Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(&base)
        .arg(&root)
        .status()
        .unwrap();
    assert!(copied.success(), "copying the root");
    let ca = common::TestCa::new();
    stage(&root, &ca);

    let started = Instant::now();
    let mut child = Command::new("systemd-nspawn")
        .args([
            "-q",
            "-b",
            "--register=no",
            "--keep-unit",
            "--private-network",
        ])
        .arg("-D")
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-nspawn");
    // Drained on threads, so a chatty boot cannot fill a pipe and stall.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > BOOT_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = format!("{}{}", stdout.join().unwrap(), stderr.join().unwrap());
    let passed = status.is_some_and(|status| status.success()) && output.contains("== all passed");
    if passed {
        // The steps, without the boot's and the shutdown's chatter.
        for line in output.lines().filter(|line| line.contains("== ")) {
            eprintln!("{line}");
        }
    } else {
        eprintln!("{output}");
    }
    eprintln!("the container ran {:.1?}", started.elapsed());
    let status = status.unwrap_or_else(|| panic!("the container ran past {BOOT_LIMIT:?}"));
    assert!(
        status.success(),
        "the test in the container failed: {status}"
    );
    assert!(passed, "the test did not finish");
}
