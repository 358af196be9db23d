//! The packaging in `packaging/` and `scripts/build-ipk.sh`: the systemd
//! units pass `systemd-analyze verify`, the `.ipk` has OpenWrt's layout, the
//! procd init script makes the right procd calls (run under busybox sh with
//! the stand-in `packaging/openwrt/test/rc.common`), and every shell script
//! passes shellcheck.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn agent_binary() -> Vec<u8> {
    fs::read(env!("CARGO_BIN_EXE_vstats-agent")).unwrap()
}

/// Runs a command, panicking with its output (and a hint when the tool is
/// missing) unless it succeeds.
fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|err| {
        panic!("{command:?}: {err} (scripts/setup-dev.sh installs the tools)")
    });
    assert!(
        output.status.success(),
        "{command:?}: {}",
        describe(&output)
    );
    output
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// ---- systemd ---------------------------------------------------------------

/// A root for `systemd-analyze --root`: systemd's own units (for the targets
/// ours name), our units, and an executable at each path they run. verify
/// checks that ExecStart's binary exists under the root, and neither binary is
/// installed on a test machine; any executable file stands in (the relay's
/// does not exist yet).
fn systemd_root(dir: &Path) {
    fs::create_dir_all(dir.join("usr/lib/systemd")).unwrap();
    run(Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system")
        .arg(dir.join("usr/lib/systemd")));
    fs::create_dir_all(dir.join("etc/systemd/system")).unwrap();
    for unit in ["vstats-agent.service", "vstats-relay.service"] {
        let from = repo().join("packaging/systemd").join(unit);
        fs::copy(from, dir.join("etc/systemd/system").join(unit)).unwrap();
    }
    let stand_in = env!("CARGO_BIN_EXE_vstats-agent");
    for binary in [
        "usr/local/bin/vstats-agent",
        "usr/local/bin/vstats-relay",
        "bin/sh",
    ] {
        fs::create_dir_all(dir.join(binary).parent().unwrap()).unwrap();
        fs::copy(stand_in, dir.join(binary)).unwrap();
    }
}

fn systemd_analyze(root: &Path, args: &[&str]) -> Output {
    Command::new("systemd-analyze")
        .arg(format!("--root={}", root.display()))
        .args(args)
        .output()
        .expect("systemd-analyze (package systemd): run scripts/setup-dev.sh")
}

#[test]
fn systemd_units_pass_verify() {
    let tmp = tempfile::tempdir().unwrap();
    systemd_root(tmp.path());
    let units = ["vstats-agent.service", "vstats-relay.service"];
    let output = systemd_analyze(tmp.path(), &[&["verify"], &units[..]].concat());
    // Unknown keys and bad values are only warnings: any output is a failure.
    assert!(
        output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
        "{}",
        describe(&output)
    );

    // Exposure 0 (locked down) to 10; both are about 1.5 now.
    let threshold = ["security", "--offline=true", "--threshold=25"];
    let output = systemd_analyze(tmp.path(), &[&threshold[..], &units[..]].concat());
    assert!(output.status.success(), "{}", describe(&output));

    // The check is real: without the relay's binary, verify fails.
    fs::remove_file(tmp.path().join("usr/local/bin/vstats-relay")).unwrap();
    let output = systemd_analyze(tmp.path(), &["verify", "vstats-relay.service"]);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("/usr/local/bin/vstats-relay"),
        "{}",
        describe(&output)
    );
}

fn unit_lines(name: &str) -> Vec<String> {
    let text = fs::read_to_string(repo().join("packaging/systemd").join(name)).unwrap();
    text.lines().map(str::to_owned).collect()
}

#[test]
fn the_agent_unit_is_locked_down_but_still_sees_the_host() {
    let lines = unit_lines("vstats-agent.service");
    for wanted in [
        "EnvironmentFile=/etc/vstats/agent.env",
        "ExecStart=/usr/local/bin/vstats-agent",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "MemoryMax=32M",
        "Restart=always",
        "RestartSec=5",
    ] {
        assert!(lines.iter().any(|line| line == wanted), "missing {wanted}");
    }
    // Each would hide what the agent reports: other processes, /proc files,
    // the host's interfaces, a separate /home disk.
    for hiding in [
        "ProtectProc=",
        "ProcSubset=",
        "PrivateNetwork=",
        "PrivatePIDs=",
        "ProtectHome=yes",
        "ProtectHome=tmpfs",
    ] {
        assert!(
            !lines.iter().any(|line| line.starts_with(hiding)),
            "{hiding} present"
        );
    }
}

#[test]
fn the_relay_unit_keeps_its_state_and_reloads_on_hup() {
    let lines = unit_lines("vstats-relay.service");
    for wanted in [
        "Environment=VSTATS_STATE=/var/lib/vstats-relay/vstats-relay.json \
         VSTATS_LISTEN=0.0.0.0:3001",
        "EnvironmentFile=-/etc/vstats/relay.env",
        "ExecStart=/usr/local/bin/vstats-relay $VSTATS_RELAY_ARGS",
        "StateDirectory=vstats-relay",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "Restart=always",
    ] {
        assert!(lines.iter().any(|line| line == wanted), "missing {wanted}");
    }
}

#[test]
fn the_relay_units_reload_signals_the_relay_without_procps() {
    let line = unit_lines("vstats-relay.service")
        .into_iter()
        .find_map(|line| line.strip_prefix("ExecReload=").map(str::to_owned))
        .expect("an ExecReload line");
    let script = line
        .strip_prefix("/bin/sh -c '")
        .and_then(|rest| rest.strip_suffix('\''))
        .unwrap_or_else(|| panic!("not a /bin/sh -c '...' command: {line}"));
    // As systemd runs it: `$$` is a literal `$`, MAINPID is in the
    // environment; and no PATH, so no /bin/kill either, only the shell's.
    let script = script.replace("$$", "$");
    let relay = common::relay::Relay::start(&[]);
    let output = run(Command::new("/bin/sh")
        .args(["-c", &script])
        .env_clear()
        .env("MAINPID", relay.process.pid().to_string()));
    assert!(output.stderr.is_empty(), "{}", describe(&output));
    relay
        .process
        .wait_for_log(std::time::Duration::from_secs(10), "SIGHUP: reloading");
}

// ---- ipk -------------------------------------------------------------------

/// One member of a tar archive.
#[derive(Debug)]
struct Member {
    path: String,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    data: Vec<u8>,
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), bytes).unwrap();
    run(Command::new("gzip").arg("-dc").arg(tmp.path())).stdout
}

/// Reads a ustar or GNU tar stream, checking each header's checksum.
fn untar(bytes: &[u8]) -> Vec<Member> {
    let text = |field: &[u8]| {
        let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        String::from_utf8(field[..end].to_vec()).unwrap()
    };
    let octal = |field: &[u8]| u64::from_str_radix(text(field).trim(), 8).unwrap();
    let mut members = Vec::new();
    let mut long_name = None;
    let mut at = 0;
    while at + 512 <= bytes.len() && bytes[at..at + 512].iter().any(|&b| b != 0) {
        let header = &bytes[at..at + 512];
        let sum: u64 = (header.iter().enumerate())
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        assert_eq!(sum, octal(&header[148..156]), "header checksum at {at}");
        let size = usize::try_from(octal(&header[124..136])).unwrap();
        let data = bytes[at + 512..at + 512 + size].to_vec();
        at += 512 + size.div_ceil(512) * 512;
        if header[156] == b'L' {
            long_name = Some(text(&data));
            continue;
        }
        let mut path = text(&header[..100]);
        if &header[257..263] == b"ustar\0" && header[345] != 0 {
            path = format!("{}/{path}", text(&header[345..500]));
        }
        members.push(Member {
            path: long_name.take().unwrap_or(path),
            mode: u32::try_from(octal(&header[100..108])).unwrap(),
            uid: octal(&header[108..116]),
            gid: octal(&header[116..124]),
            mtime: octal(&header[136..148]),
            data,
        });
    }
    members
}

fn member<'a>(members: &'a [Member], path: &str) -> &'a Member {
    (members.iter().find(|m| m.path == path)).unwrap_or_else(|| panic!("no {path}"))
}

/// The release names (`cross/targets`), x86_64 first.
const RELEASE_ARCHES: [&str; 7] = [
    "x86_64", "aarch64", "armv7", "armv7sf", "armv6", "mipsel", "mips",
];

/// Each OpenWrt package architecture and the release binary its package holds.
const OPENWRT_ARCHES: [(&str, &str); 21] = [
    ("aarch64_cortex-a53", "aarch64"),
    ("aarch64_cortex-a72", "aarch64"),
    ("aarch64_cortex-a76", "aarch64"),
    ("aarch64_generic", "aarch64"),
    ("arm_arm1176jzf-s_vfp", "armv6"),
    ("arm_cortex-a15_neon-vfpv4", "armv7"),
    ("arm_cortex-a53_neon-vfpv4", "armv7"),
    ("arm_cortex-a5_vfpv4", "armv7"),
    ("arm_cortex-a7", "armv7sf"),
    ("arm_cortex-a7_neon-vfpv4", "armv7"),
    ("arm_cortex-a7_vfpv4", "armv7"),
    ("arm_cortex-a8_vfpv3", "armv7"),
    ("arm_cortex-a9", "armv7sf"),
    ("arm_cortex-a9_neon", "armv7"),
    ("arm_cortex-a9_vfpv3-d16", "armv7"),
    ("mips_24kc", "mips"),
    ("mips_4kec", "mips"),
    ("mipsel_24kc", "mipsel"),
    ("mipsel_24kc_24kf", "mipsel"),
    ("mipsel_74kc", "mipsel"),
    ("x86_64", "x86_64"),
];

/// A release directory with the debug agent as the x86_64 binary and small
/// stand-ins (their release names) for the others, with SHA256SUMS.
fn write_dist(dir: &Path, x86_64: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    let mut sums = String::new();
    let stand_ins = RELEASE_ARCHES[1..]
        .iter()
        .map(|arch| (*arch, arch.as_bytes()));
    for (arch, bytes) in [("x86_64", x86_64)].into_iter().chain(stand_ins) {
        let name = format!("vstats-agent-linux-{arch}");
        fs::write(dir.join(&name), bytes).unwrap();
        sums += &format!("{}  {name}\n", common::sha256_hex(bytes));
    }
    fs::write(dir.join("SHA256SUMS"), sums).unwrap();
}

fn build_ipk(dist: &Path, out: &Path) -> Output {
    Command::new("sh")
        .arg(repo().join("scripts/build-ipk.sh"))
        .arg("--dist")
        .arg(dist)
        .arg("--out")
        .arg(out)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

fn ipk_name(arch: &str) -> String {
    format!("vstats-agent_{}_{arch}.ipk", env!("CARGO_PKG_VERSION"))
}

fn control_fields(text: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(more) = line.strip_prefix(' ') {
            let last = fields.last_mut().unwrap();
            last.1 = format!("{}\n{more}", last.1);
        } else {
            let (key, value) = line.split_once(": ").unwrap();
            fields.push((key.into(), value.into()));
        }
    }
    fields
}

#[test]
fn ipk_has_openwrt_layout_and_control_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = agent_binary();
    let dist = tmp.path().join("dist");
    write_dist(&dist, &agent);
    let out = tmp.path().join("out");
    let output = build_ipk(&dist, &out);
    assert!(output.status.success(), "{}", describe(&output));

    let mut built: Vec<_> = fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    built.sort();
    let mut expected: Vec<_> = OPENWRT_ARCHES
        .iter()
        .map(|(owrt, _)| ipk_name(owrt))
        .collect();
    expected.push("SHA256SUMS".to_owned());
    expected.sort();
    assert_eq!(built, expected);
    // Each package holds its binary under its own architecture's name, and
    // the output's SHA256SUMS lists it.
    let sums = fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    for (owrt, release) in OPENWRT_ARCHES {
        let ipk = fs::read(out.join(ipk_name(owrt))).unwrap();
        let line = format!("{}  {}", common::sha256_hex(&ipk), ipk_name(owrt));
        assert!(sums.lines().any(|l| l == line), "{line} not in\n{sums}");
        let outer = untar(&gunzip(&ipk));
        let data = untar(&gunzip(&member(&outer, "./data.tar.gz").data));
        let binary = &member(&data, "./usr/bin/vstats-agent").data;
        if release != "x86_64" {
            assert_eq!(binary, release.as_bytes(), "{owrt}");
        }
        let control = untar(&gunzip(&member(&outer, "./control.tar.gz").data));
        let text = String::from_utf8(member(&control, "./control").data.clone()).unwrap();
        assert!(
            text.contains(&format!("\nArchitecture: {owrt}\n")),
            "{text}"
        );
    }

    let ipk_path = out.join(ipk_name("x86_64"));
    let ipk = fs::read(&ipk_path).unwrap();
    let outer = untar(&gunzip(&ipk));
    let names: Vec<_> = outer.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(
        names,
        ["./debian-binary", "./data.tar.gz", "./control.tar.gz"]
    );
    assert_eq!(member(&outer, "./debian-binary").data, b"2.0\n");

    let data = untar(&gunzip(&member(&outer, "./data.tar.gz").data));
    let layout: Vec<_> = data.iter().map(|m| (m.path.as_str(), m.mode)).collect();
    assert_eq!(
        layout,
        [
            ("./", 0o755),
            ("./etc/", 0o755),
            ("./etc/config/", 0o755),
            ("./etc/config/vstats", 0o600),
            ("./etc/init.d/", 0o755),
            ("./etc/init.d/vstats-agent", 0o755),
            ("./usr/", 0o755),
            ("./usr/bin/", 0o755),
            ("./usr/bin/vstats-agent", 0o755),
        ]
    );
    let shipped = |path: &str| fs::read(repo().join("packaging/openwrt/files").join(path));
    assert_eq!(member(&data, "./usr/bin/vstats-agent").data, agent);
    let init = &member(&data, "./etc/init.d/vstats-agent").data;
    assert_eq!(*init, shipped("vstats-agent.init").unwrap());
    let config = &member(&data, "./etc/config/vstats").data;
    assert_eq!(*config, shipped("vstats.config").unwrap());

    let control = untar(&gunzip(&member(&outer, "./control.tar.gz").data));
    let scripts: Vec<_> = control.iter().map(|m| (m.path.as_str(), m.mode)).collect();
    assert_eq!(
        scripts,
        [
            ("./", 0o755),
            ("./conffiles", 0o644),
            ("./control", 0o644),
            ("./postinst", 0o755),
            ("./prerm", 0o755),
        ]
    );
    assert_eq!(
        member(&control, "./conffiles").data,
        b"/etc/config/vstats\n"
    );
    let fields = control_fields(std::str::from_utf8(&member(&control, "./control").data).unwrap());
    let keys: Vec<_> = fields.iter().map(|(key, _)| key.as_str()).collect();
    // No Depends: the binary is static, it needs not even libc.
    let expected_keys = [
        "Package",
        "Version",
        "Architecture",
        "Maintainer",
        "License",
        "Section",
        "Installed-Size",
        "Description",
    ];
    assert_eq!(keys, expected_keys);
    let field = |key: &str| fields.iter().find(|(k, _)| k == key).unwrap().1.clone();
    assert_eq!(field("Package"), "vstats-agent");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(field("Architecture"), "x86_64");
    assert_eq!(field("License"), "MIT");
    let installed: usize = data.iter().map(|m| m.data.len()).sum();
    assert_eq!(field("Installed-Size"), installed.to_string());

    // Reproducible: owner 0, fixed mtimes, and byte-identical on a rebuild.
    for member in outer.iter().chain(&data).chain(&control) {
        assert_eq!(
            (member.uid, member.gid, member.mtime),
            (0, 0, 0),
            "{}",
            member.path
        );
    }
    let again = tmp.path().join("again");
    assert!(build_ipk(&dist, &again).status.success());
    assert!(
        fs::read(again.join(ipk_name("x86_64"))).unwrap() == ipk,
        "not reproducible"
    );

    // opkg on a router unpacks with busybox's tar.
    let unpacked = tmp.path().join("unpacked");
    fs::create_dir(&unpacked).unwrap();
    run(Command::new("busybox")
        .args(["tar", "-xzf"])
        .arg(&ipk_path)
        .arg("-C")
        .arg(&unpacked));
    run(Command::new("busybox")
        .args(["tar", "-tzf"])
        .arg(unpacked.join("data.tar.gz")));
}

#[test]
fn ipk_maintainer_scripts_do_nothing_in_an_image_build() {
    let tmp = tempfile::tempdir().unwrap();
    let dist = tmp.path().join("dist");
    write_dist(&dist, b"x86_64 stand-in");
    let out = tmp.path().join("out");
    run(Command::new("sh")
        .arg(repo().join("scripts/build-ipk.sh"))
        .args([
            "--dist".as_ref(),
            dist.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ])
        .arg("x86_64"));
    let outer = untar(&gunzip(&fs::read(out.join(ipk_name("x86_64"))).unwrap()));
    let control = untar(&gunzip(&member(&outer, "./control.tar.gz").data));
    for script in ["postinst", "prerm"] {
        let path = tmp.path().join(script);
        fs::write(&path, &member(&control, &format!("./{script}")).data).unwrap();
        shellcheck(&path, &[]);
        // /etc/init.d/vstats-agent does not exist here: touching it would fail.
        run(Command::new("busybox")
            .arg("sh")
            .arg(&path)
            .env("IPKG_INSTROOT", tmp.path()));
    }
}

#[test]
fn build_ipk_refuses_a_binary_that_does_not_match_sha256sums() {
    let tmp = tempfile::tempdir().unwrap();
    let dist = tmp.path().join("dist");
    write_dist(&dist, b"x86_64 stand-in");
    fs::write(dist.join("vstats-agent-linux-x86_64"), b"changed since").unwrap();
    let out = tmp.path().join("out");
    let output = build_ipk(&dist, &out);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("build-ipk: vstats-agent-linux-x86_64 does not match"),
        "{stderr}"
    );
    // The mismatch is found before any package is made, even those of
    // binaries that do match.
    let made: Vec<_> = fs::read_dir(&out)
        .map(|dir| dir.map(|entry| entry.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(made.is_empty(), "{made:?}");
}

/// `packaging/openwrt/Makefile`, stamped by `scripts/openwrt-feed.sh`, read
/// by GNU make with stand-ins for the SDK's rules.mk and package.mk that
/// print what the package would fetch for `arch_packages`.
fn sdk_package(feed: &Path, arch_packages: &str, extra: &[&str]) -> Output {
    let sdk = feed.join("sdk");
    fs::create_dir_all(&sdk).unwrap();
    fs::write(sdk.join("rules.mk"), "").unwrap();
    fs::write(
        sdk.join("package.mk"),
        "define BuildPackage\nvstats-print:\n\t@echo $$(VSTATS_ARCH) $$(PKG_HASH) \
         $$(PKG_SOURCE) $$(PKG_VERSION)-r$$(PKG_RELEASE)\nendef\n",
    )
    .unwrap();
    Command::new("make")
        .arg("-s")
        .arg("-f")
        .arg(feed.join("vstats-agent/Makefile"))
        .arg(format!("TOPDIR={}", sdk.display()))
        .arg(format!("INCLUDE_DIR={}", sdk.display()))
        .arg(format!("ARCH_PACKAGES={arch_packages}"))
        .args(extra)
        .arg("vstats-print")
        .output()
        .unwrap()
}

/// `scripts/openwrt-feed.sh --dist DIST OUT`.
fn openwrt_feed(dist: &Path, out: &Path) -> Command {
    let mut command = Command::new("sh");
    command
        .arg(repo().join("scripts/openwrt-feed.sh"))
        .arg("--dist")
        .arg(dist)
        .arg(out);
    command
}

#[test]
fn openwrt_makefile_fetches_the_binary_build_ipk_packs_for_each_arch() {
    let tmp = tempfile::tempdir().unwrap();
    let dist = tmp.path().join("dist");
    write_dist(&dist, b"x86_64 stand-in");
    let feed = tmp.path().join("feed");
    run(&mut openwrt_feed(&dist, &feed));
    for (owrt, release) in OPENWRT_ARCHES {
        let output = sdk_package(&feed, owrt, &[]);
        assert!(output.status.success(), "{owrt}: {}", describe(&output));
        let binary = fs::read(dist.join(format!("vstats-agent-linux-{release}"))).unwrap();
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!(
                "{release} {} vstats-agent-linux-{release} {version}-r1\n",
                common::sha256_hex(&binary)
            ),
            "{owrt}"
        );
    }
    // No binary: a clear stop when built, but the metadata scan (DUMP=1)
    // that reads every package for every target must still pass.
    for owrt in [
        "mips_mips32",
        "mipsel_mips32",
        "mips64_octeonplus",
        "arm_arm926ej-s",
    ] {
        let output = sdk_package(&feed, owrt, &[]);
        assert!(!output.status.success(), "{owrt}: {}", describe(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("vstats-agent: no release binary for {owrt}")),
            "{stderr}"
        );
        let scan = sdk_package(&feed, owrt, &["DUMP=1"]);
        assert!(scan.status.success(), "{owrt}: {}", describe(&scan));
    }
}

#[test]
fn openwrt_feed_refuses_a_release_missing_a_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let dist = tmp.path().join("dist");
    write_dist(&dist, b"x86_64 stand-in");
    let sums = fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    let without_mips: String = sums
        .lines()
        .filter(|line| !line.ends_with("-linux-mips"))
        .map(|line| format!("{line}\n"))
        .collect();
    fs::write(dist.join("SHA256SUMS"), without_mips).unwrap();
    let output = openwrt_feed(&dist, &tmp.path().join("feed"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("vstats-agent-linux-mips is not listed"),
        "{}",
        describe(&output)
    );
}

// ---- procd -----------------------------------------------------------------

/// Runs an action of the procd init script under busybox sh with the
/// stand-in rc.common, with `/etc/config/vstats` holding `config`; returns
/// the recorded calls.
fn procd(config: &str, action: &str) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let (etc_config, log) = (tmp.path().join("config"), tmp.path().join("calls.log"));
    fs::create_dir(&etc_config).unwrap();
    fs::write(etc_config.join("vstats"), config).unwrap();
    // Named as installed: rc.common takes the service name from the file name.
    let init = tmp.path().join("vstats-agent");
    fs::copy(
        repo().join("packaging/openwrt/files/vstats-agent.init"),
        &init,
    )
    .unwrap();
    run(Command::new("busybox")
        .arg("sh")
        .arg(repo().join("packaging/openwrt/test/rc.common"))
        .arg(&init)
        .arg(action)
        .env("UCI_CONFIG_DIR", &etc_config)
        .env("FAKE_OPENWRT_LOG", &log));
    let text = fs::read_to_string(log).unwrap();
    let init = init.to_str().unwrap();
    text.lines()
        .map(|line| line.replace(init, "INIT"))
        .collect()
}

#[test]
fn procd_init_passes_the_settings_in_the_environment() {
    let config = "config agent 'agent'\n\
        \toption enabled '1'\n\
        \toption server 'wss://relay.example:3001'\n\
        \toption token \"t0k-en\"\n\
        \toption token_in_query '1'\n\
        \toption interval '2.5'\n\
        \toption interfaces 'eth0,wan'\n\
        \toption ca_file '/etc/vstats/ca.pem'\n\
        \toption log_level 'debug'\n";
    assert_eq!(
        procd(config, "start"),
        [
            "rc.common INIT start",
            "procd_open_service vstats-agent",
            "config_load vstats",
            "procd_open_instance",
            "procd_set_param command /usr/bin/vstats-agent",
            "procd_set_param env VSTATS_SERVER=wss://relay.example:3001 VSTATS_TOKEN=t0k-en \
             VSTATS_TOKEN_IN_QUERY=1 VSTATS_INTERVAL=2.5 VSTATS_NET_INTERFACES=eth0,wan \
             VSTATS_CA_FILE=/etc/vstats/ca.pem VSTATS_LOG_LEVEL=debug",
            "procd_set_param respawn",
            "procd_set_param stdout 1",
            "procd_set_param stderr 1",
            "procd_set_param file /etc/config/vstats",
            "procd_close_instance",
            "procd_open_trigger",
            "procd_add_reload_trigger vstats",
            "procd_close_trigger",
            "procd_close_service",
        ]
    );
    // Only the two required settings: no empty variables.
    let minimal = "config agent 'agent'\n\toption enabled 'yes'\n\
        \toption server 'ws://10.0.0.1:3001'\n\toption token 'x'\n";
    let calls = procd(minimal, "start");
    assert!(
        calls.contains(
            &"procd_set_param env VSTATS_SERVER=ws://10.0.0.1:3001 VSTATS_TOKEN=x".into()
        ),
        "{calls:#?}"
    );
}

#[test]
fn procd_init_starts_nothing_until_enabled_and_configured() {
    let not_started = |calls: &[String], why: &str| {
        assert!(
            !calls.iter().any(|c| c.starts_with("procd_open_instance")),
            "{calls:#?}"
        );
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("logger -t vstats-agent") && c.contains(why)),
            "{calls:#?}"
        );
        // The reload trigger still goes in, so enabling it later takes effect.
        assert!(
            calls.contains(&"procd_add_reload_trigger vstats".into()),
            "{calls:#?}"
        );
    };
    let shipped = fs::read_to_string(repo().join("packaging/openwrt/files/vstats.config")).unwrap();
    not_started(&procd(&shipped, "start"), "disabled");
    let no_token = "config agent 'agent'\n\toption enabled '1'\n\
        \toption server 'wss://relay:3001'\n\toption token ''\n";
    not_started(
        &procd(no_token, "start"),
        "option server and option token must be set",
    );
    not_started(&procd("", "start"), "disabled");
}

// ---- shellcheck ------------------------------------------------------------

fn shellcheck(path: &Path, excludes: &[&str]) {
    let mut command = Command::new("shellcheck");
    // -x from the repository: scripts that source scripts/release-lib.sh
    // are checked together with it.
    command
        .args(["--shell=sh", "--severity=style", "--external-sources"])
        .current_dir(repo());
    if !excludes.is_empty() {
        command.arg(format!("--exclude={}", excludes.join(",")));
    }
    run(command.arg(path));
}

#[test]
fn shell_scripts_pass_shellcheck() {
    let mut scripts: Vec<PathBuf> = fs::read_dir(repo().join("scripts"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "sh"))
        .collect();
    scripts.push(repo().join(".ci/run"));
    scripts.push(repo().join("packaging/openwrt/test/rc.common"));
    scripts.push(repo().join("packaging/systemd/test/in-container.sh"));
    for script in scripts {
        shellcheck(&script, &[]);
    }
    // The init script is sourced by /etc/rc.common under busybox ash only:
    // SC2034, USE_PROCD, START and STOP look unused but rc.common reads them;
    // SC3043, `local` is not POSIX but ash has it, as every OpenWrt init
    // script relies on.
    shellcheck(
        &repo().join("packaging/openwrt/files/vstats-agent.init"),
        &["SC2034", "SC3043"],
    );
}
