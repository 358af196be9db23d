//! The `curl | sh` installer, `scripts/install.sh`, run for real: piped into
//! busybox sh, dash and bash as `sh -s -- ...`, installing into a staging
//! root (`--root`) from a small HTTP server on loopback that serves a release
//! directory holding the debug agent under its release name. A stub
//! `systemctl` and a stand-in OpenWrt `/etc/rc.common`
//! (`packaging/openwrt/test/rc.common`) record the service calls.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const SERVER: &str = "ws://relay.test:3001";
const TOKEN: &str = "tok-3cr3t-Zq8Lx";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn agent_binary() -> Vec<u8> {
    fs::read(env!("CARGO_BIN_EXE_vstats-agent")).unwrap()
}

/// A program on the test's PATH, or a panic saying how to get it.
fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| panic!("{program} is not installed: run scripts/setup-dev.sh"))
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn write_executable(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A release directory: `vstats-agent-linux-<arch>` for each entry, and
/// `SHA256SUMS` over them in sha256sum's format.
fn write_dist(dir: &Path, binaries: &[(&str, &[u8])]) {
    fs::create_dir_all(dir).unwrap();
    let mut sums = String::new();
    for (arch, bytes) in binaries {
        let name = format!("vstats-agent-linux-{arch}");
        fs::write(dir.join(&name), bytes).unwrap();
        sums += &format!("{}  {name}\n", common::sha256_hex(bytes));
    }
    fs::write(dir.join("SHA256SUMS"), sums).unwrap();
}

/// Serves the files of one flat directory on 127.0.0.1: GET only, HTTP/1.0,
/// one thread a connection, for the life of the test process.
fn serve(dir: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let dir = dir.clone();
            thread::spawn(move || {
                let _ = respond(&dir, stream);
            });
        }
    });
    url
}

fn respond(dir: &Path, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut words = request.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let name = target
        .split('?')
        .next()
        .unwrap_or("")
        .trim_start_matches('/');
    let body = (!name.is_empty() && !name.contains('/') && name != "..")
        .then(|| fs::read(dir.join(name)).ok())
        .flatten();
    let (status, body) = match (method, body) {
        ("GET", Some(body)) => ("200 OK", body),
        ("GET", None) => ("404 Not Found", b"not found\n".to_vec()),
        _ => ("405 Method Not Allowed", Vec::new()),
    };
    write!(
        stream,
        "HTTP/1.0 {status}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    stream.flush()
}

/// Every path under a directory with its mode and content (a symlink's
/// target), to compare a whole tree before and after.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, tree: &mut BTreeMap<PathBuf, (u32, Vec<u8>)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let content = if meta.file_type().is_symlink() {
                fs::read_link(&path)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if meta.is_file() {
                fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            let relative = path.strip_prefix(base).unwrap().to_path_buf();
            tree.insert(relative, (meta.mode(), content));
            if meta.is_dir() {
                walk(base, &path, tree);
            }
        }
    }
    let mut tree = BTreeMap::new();
    walk(dir, dir, &mut tree);
    tree
}

#[derive(Clone, Copy, Debug)]
enum Shell {
    Busybox,
    Dash,
    Bash,
}

impl Shell {
    fn command(self) -> Command {
        match self {
            Shell::Busybox => {
                let mut command = Command::new(which("busybox"));
                command.arg("sh");
                command
            }
            Shell::Dash => Command::new(which("dash")),
            Shell::Bash => Command::new(which("bash")),
        }
    }
}

/// What a staging root looks like before the installer runs.
#[derive(Clone, Copy, PartialEq)]
enum Host {
    /// systemd runs it (`/run/systemd/system`), `systemctl` is a stub.
    Systemd,
    /// OpenWrt: `/etc/openwrt_release`, the stand-in `/etc/rc.common`, and a
    /// PATH of busybox applets only (so downloads go through busybox wget).
    OpenWrt,
    /// Neither: the installer is told so with VSTATS_INSTALL_INIT=none.
    Plain,
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    fn assert_ok(&self) {
        assert!(self.status.success(), "installer failed: {self}");
    }

    fn assert_failed(&self) {
        assert_eq!(self.status.code(), Some(1), "expected exit 1: {self}");
    }

    fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let (status, stdout, stderr) = (self.status, &self.stdout, &self.stderr);
        write!(f, "{status}\n--- stdout\n{stdout}--- stderr\n{stderr}")
    }
}

struct Sandbox {
    tmp: tempfile::TempDir,
    root: PathBuf,
    /// Every service call the stubs saw, one a line.
    calls: PathBuf,
    /// The installer's TMPDIR: empty again after every run.
    tmpdir: PathBuf,
    path: String,
}

impl Sandbox {
    fn new(host: Host) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let calls = tmp.path().join("calls.log");
        let tmpdir = tmp.path().join("tmp");
        let stubs = tmp.path().join("stubs");
        for dir in [&root, &tmpdir, &stubs] {
            fs::create_dir_all(dir).unwrap();
        }
        // The directories every such host has; the installer must leave them.
        let dirs: &[&str] = match host {
            Host::Systemd => &["usr/local/bin", "etc/systemd/system", "run/systemd/system"],
            Host::OpenWrt => &["usr/bin", "etc/init.d", "etc/config"],
            Host::Plain => &["usr/local/bin", "etc"],
        };
        for dir in dirs {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        let path = match host {
            Host::OpenWrt => {
                fs::write(root.join("etc/openwrt_release"), "DISTRIB_ID='OpenWrt'\n").unwrap();
                fs::copy(
                    repo().join("packaging/openwrt/test/rc.common"),
                    root.join("etc/rc.common"),
                )
                .unwrap();
                busybox_applets(&stubs);
                stubs.display().to_string()
            }
            Host::Systemd | Host::Plain => {
                let stub = format!(
                    "#!/bin/sh\nprintf 'systemctl %s\\n' \"$*\" >>'{}'\n",
                    calls.display()
                );
                write_executable(&stubs.join("systemctl"), &stub);
                format!("{}:/usr/local/bin:/usr/bin:/bin", stubs.display())
            }
        };
        Sandbox {
            tmp,
            root,
            calls,
            tmpdir,
            path,
        }
    }

    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.tmp.path().join(name);
        fs::write(&path, content).unwrap();
        path
    }

    /// `install.sh` piped into `shell -s -- args`, as `curl | sh` runs it.
    fn install(&self, shell: Shell, args: &[&str], env: &[(&str, &str)]) -> Run {
        let root = self.root.to_str().unwrap();
        let (out, err) = (self.tmp.path().join("out"), self.tmp.path().join("err"));
        let mut child = shell
            .command()
            .args(["-s", "--", "--root", root])
            .args(args)
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", self.tmp.path())
            .env("TMPDIR", &self.tmpdir)
            .env("VSTATS_INSTALL_ARCH", "x86_64")
            .env("FAKE_OPENWRT_LOG", &self.calls)
            .env("UCI_CONFIG_DIR", self.root.join("etc/config"))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let script = fs::read(repo().join("scripts/install.sh")).unwrap();
        // A shell that stops early closes the pipe: that shows in its status.
        let _ = child.stdin.take().unwrap().write_all(&script);
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("installer still running after 120 s");
            }
            thread::sleep(Duration::from_millis(20));
        };
        let run = Run {
            status,
            stdout: fs::read_to_string(out).unwrap(),
            stderr: fs::read_to_string(err).unwrap(),
        };
        let left: Vec<_> = fs::read_dir(&self.tmpdir).unwrap().collect();
        assert!(left.is_empty(), "temporary files left: {left:?}\n{run}");
        assert!(
            !run.output().contains(TOKEN),
            "the token was printed: {run}"
        );
        run
    }

    fn calls(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.calls).unwrap_or_default();
        let root = self.root.to_str().unwrap();
        text.lines()
            .map(|line| line.replace(root, "<root>"))
            .collect()
    }

    fn read(&self, path: &str) -> String {
        fs::read_to_string(self.root.join(path)).unwrap()
    }
}

/// A directory of busybox applets, the whole toolset of an OpenWrt router.
fn busybox_applets(dir: &Path) {
    let busybox = which("busybox");
    let list = Command::new(&busybox).arg("--list").output().unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    for applet in list.lines().chain(["busybox"]) {
        symlink(&busybox, dir.join(applet)).unwrap();
    }
}

#[test]
fn without_curl_wget_or_sha256sum_it_uses_uclient_fetch_and_openssl() {
    let mut sandbox = Sandbox::new(Host::Plain);
    let tools = sandbox.tmp.path().join("tools");
    fs::create_dir(&tools).unwrap();
    busybox_applets(&tools);
    for missing in ["wget", "sha256sum"] {
        fs::remove_file(tools.join(missing)).unwrap();
    }
    symlink(which("openssl"), tools.join("openssl")).unwrap();
    // OpenWrt's uclient-fetch takes wget's -q and -O.
    let fetch = format!(
        "#!/bin/sh\nexec {} wget \"$@\"\n",
        which("busybox").display()
    );
    write_executable(&tools.join("uclient-fetch"), &fetch);
    sandbox.path = tools.display().to_string();
    let dist = sandbox.tmp.path().join("dist");
    write_dist(&dist, &[("x86_64", b"agent stand-in")]);
    let url = serve(dist.clone());
    let args = ["--server", SERVER, "--token", TOKEN, "--base-url", &url];
    let none = [("VSTATS_INSTALL_INIT", "none")];

    sandbox.install(Shell::Busybox, &args, &none).assert_ok();
    assert_eq!(sandbox.read("usr/local/bin/vstats-agent"), "agent stand-in");

    fs::write(dist.join("vstats-agent-linux-x86_64"), b"tampered").unwrap();
    let run = sandbox.install(Shell::Busybox, &args, &none);
    run.assert_failed();
    assert!(run.stderr.contains("checksum mismatch"), "{run}");
    assert_eq!(sandbox.read("usr/local/bin/vstats-agent"), "agent stand-in");
}

fn packaging(path: &str) -> String {
    fs::read_to_string(repo().join("packaging").join(path)).unwrap()
}

/// Install, upgrade while the agent runs, uninstall: on a systemd host.
fn systemd_cycle(shell: Shell) {
    let sandbox = Sandbox::new(Host::Systemd);
    let agent = agent_binary();
    let dist = sandbox.tmp.path().join("dist");
    write_dist(&dist, &[("x86_64", &agent)]);
    let url = serve(dist.clone());
    let pem = b"-----BEGIN CERTIFICATE-----\nstand-in\n-----END CERTIFICATE-----\n";
    let ca = sandbox.file("ca.pem", pem);
    let before = snapshot(&sandbox.root);

    let args = [
        "--server",
        SERVER,
        "--token",
        TOKEN,
        "--interval",
        "2",
        "--interfaces",
        "eth0,wan",
        "--ca-file",
        ca.to_str().unwrap(),
        "--base-url",
        &url,
    ];
    sandbox.install(shell, &args, &[]).assert_ok();

    let bin = sandbox.root.join("usr/local/bin/vstats-agent");
    assert_eq!(fs::read(&bin).unwrap(), agent);
    assert_eq!(mode(&bin), 0o755);
    let version = Command::new(&bin).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("vstats-agent "));
    assert_eq!(mode(&sandbox.root.join("etc/vstats/agent.env")), 0o600);
    assert_eq!(
        sandbox.read("etc/vstats/agent.env"),
        format!(
            "# vstats-agent settings (see vstats-agent --help), written by install.sh.\n\
             # Read by systemd's EnvironmentFile=; holds the token: keep it mode 0600.\n\
             VSTATS_SERVER='{SERVER}'\nVSTATS_TOKEN='{TOKEN}'\nVSTATS_INTERVAL='2'\n\
             VSTATS_NET_INTERFACES='eth0,wan'\nVSTATS_CA_FILE='/etc/vstats/ca.pem'\n"
        )
    );
    assert_eq!(
        fs::read(sandbox.root.join("etc/vstats/ca.pem")).unwrap(),
        pem
    );
    assert_eq!(mode(&sandbox.root.join("etc/vstats/ca.pem")), 0o644);
    let unit = "etc/systemd/system/vstats-agent.service";
    assert_eq!(
        sandbox.read(unit),
        packaging("systemd/vstats-agent.service")
    );
    assert_eq!(mode(&sandbox.root.join(unit)), 0o644);
    assert_eq!(
        sandbox.calls(),
        [
            "systemctl daemon-reload",
            "systemctl enable --now vstats-agent"
        ]
    );

    // Upgrade to a newer release while the installed agent runs; with no
    // --server or --token the settings stay as they are.
    let mut running = Command::new(&bin)
        .args(["--server", "ws://127.0.0.1:9", "--log-level", "off"])
        .env("VSTATS_TOKEN", "running")
        .spawn()
        .unwrap();
    let mut newer = agent.clone();
    newer.extend_from_slice(b"\0a newer release");
    write_dist(&dist, &[("x86_64", &newer)]);
    let settings = sandbox.read("etc/vstats/agent.env");
    let old_inode = fs::metadata(&bin).unwrap().ino();
    let run = sandbox.install(shell, &["--base-url", &url], &[]);
    running.kill().unwrap();
    running.wait().unwrap();
    run.assert_ok();
    assert_eq!(fs::read(&bin).unwrap(), newer);
    assert_ne!(
        fs::metadata(&bin).unwrap().ino(),
        old_inode,
        "not replaced by rename"
    );
    assert!(
        Command::new(&bin)
            .arg("--version")
            .output()
            .unwrap()
            .status
            .success()
    );
    assert_eq!(sandbox.read("etc/vstats/agent.env"), settings);
    assert_eq!(
        sandbox.calls()[2..],
        [
            "systemctl daemon-reload",
            "systemctl enable --now vstats-agent",
            "systemctl restart vstats-agent"
        ]
    );

    sandbox.install(shell, &["--uninstall"], &[]).assert_ok();
    assert_eq!(
        sandbox.calls()[5..],
        [
            "systemctl disable --now vstats-agent",
            "systemctl daemon-reload"
        ]
    );
    assert_eq!(
        snapshot(&sandbox.root),
        before,
        "uninstall left the root changed"
    );
}

#[test]
fn systemd_install_upgrade_uninstall_under_busybox_sh() {
    systemd_cycle(Shell::Busybox);
}

#[test]
fn systemd_install_upgrade_uninstall_under_dash() {
    systemd_cycle(Shell::Dash);
}

#[test]
fn systemd_install_upgrade_uninstall_under_bash() {
    systemd_cycle(Shell::Bash);
}

#[test]
fn openwrt_install_with_busybox_tools_only() {
    let sandbox = Sandbox::new(Host::OpenWrt);
    let agent = agent_binary();
    let dist = sandbox.tmp.path().join("dist");
    write_dist(&dist, &[("x86_64", &agent)]);
    let url = serve(dist);
    let before = snapshot(&sandbox.root);

    let args = [
        "--server",
        SERVER,
        "--token",
        TOKEN,
        "--interval",
        "5",
        "--interfaces",
        "br-lan,wan",
        "--base-url",
        &url,
    ];
    sandbox.install(Shell::Busybox, &args, &[]).assert_ok();

    let bin = sandbox.root.join("usr/bin/vstats-agent");
    assert_eq!(fs::read(&bin).unwrap(), agent);
    assert_eq!(mode(&bin), 0o755);
    assert_eq!(mode(&sandbox.root.join("etc/config/vstats")), 0o600);
    assert_eq!(
        sandbox.read("etc/config/vstats"),
        format!(
            "# vstats-agent settings, read by /etc/init.d/vstats-agent; written by install.sh.\n\
             config agent 'agent'\n\toption enabled '1'\n\toption server '{SERVER}'\n\
             \toption token '{TOKEN}'\n\toption interval '5'\n\toption interfaces 'br-lan,wan'\n"
        )
    );
    let init = "etc/init.d/vstats-agent";
    assert_eq!(
        sandbox.read(init),
        packaging("openwrt/files/vstats-agent.init")
    );
    assert_eq!(mode(&sandbox.root.join(init)), 0o755);
    let env = format!(
        "procd_set_param env VSTATS_SERVER={SERVER} VSTATS_TOKEN={TOKEN} \
         VSTATS_INTERVAL=5 VSTATS_NET_INTERFACES=br-lan,wan"
    );
    assert_eq!(
        sandbox.calls(),
        [
            "rc.common <root>/etc/init.d/vstats-agent enable",
            "rc.common <root>/etc/init.d/vstats-agent restart",
            "procd_kill vstats-agent",
            "procd_open_service vstats-agent",
            "config_load vstats",
            "procd_open_instance",
            "procd_set_param command /usr/bin/vstats-agent",
            &env,
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

    sandbox
        .install(Shell::Busybox, &["--uninstall"], &[])
        .assert_ok();
    assert_eq!(
        sandbox.calls()[17..],
        [
            "rc.common <root>/etc/init.d/vstats-agent stop",
            "procd_kill vstats-agent",
            "rc.common <root>/etc/init.d/vstats-agent disable",
        ]
    );
    assert_eq!(
        snapshot(&sandbox.root),
        before,
        "uninstall left the root changed"
    );
}

#[test]
fn without_a_service_manager_it_says_how_to_run_the_agent() {
    let sandbox = Sandbox::new(Host::Plain);
    let dist = sandbox.tmp.path().join("dist");
    write_dist(&dist, &[("x86_64", b"agent stand-in")]);
    let url = serve(dist);
    let token_file = sandbox.file("token", format!("{TOKEN}\n").as_bytes());
    let before = snapshot(&sandbox.root);
    let none = [("VSTATS_INSTALL_INIT", "none")];

    let args = [
        "--server",
        SERVER,
        "--token-file",
        token_file.to_str().unwrap(),
        "--base-url",
        &url,
    ];
    let run = sandbox.install(Shell::Dash, &args, &none);
    run.assert_ok();
    assert!(
        run.stdout
            .contains("sh -c 'set -a; . /etc/vstats/agent.env; exec /usr/local/bin/vstats-agent'"),
        "{run}"
    );
    assert!(
        sandbox
            .read("etc/vstats/agent.env")
            .contains(&format!("\nVSTATS_TOKEN='{TOKEN}'\n"))
    );
    assert!(!sandbox.root.join("etc/systemd").exists());
    assert_eq!(sandbox.calls(), Vec::<String>::new());

    sandbox
        .install(Shell::Dash, &["--uninstall"], &none)
        .assert_ok();
    assert_eq!(snapshot(&sandbox.root), before);
}

#[test]
fn a_checksum_mismatch_installs_nothing() {
    let sandbox = Sandbox::new(Host::Systemd);
    let dist = sandbox.tmp.path().join("dist");
    write_dist(&dist, &[("x86_64", b"the released agent")]);
    fs::write(dist.join("vstats-agent-linux-x86_64"), b"a tampered agent").unwrap();
    let url = serve(dist);
    let before = snapshot(&sandbox.root);

    let args = ["--server", SERVER, "--token", TOKEN, "--base-url", &url];
    let run = sandbox.install(Shell::Dash, &args, &[]);
    run.assert_failed();
    assert!(
        run.stderr
            .contains("vstats-install: checksum mismatch for vstats-agent-linux-x86_64 (expected ")
            && run.stderr.contains("refusing to install"),
        "{run}"
    );
    assert_eq!(snapshot(&sandbox.root), before);
    assert_eq!(sandbox.calls(), Vec::<String>::new());
}

#[test]
fn a_binary_missing_from_sha256sums_installs_nothing() {
    let sandbox = Sandbox::new(Host::Systemd);
    let dist = sandbox.tmp.path().join("dist");
    write_dist(&dist, &[("aarch64", b"another agent")]);
    fs::write(dist.join("vstats-agent-linux-x86_64"), b"an unlisted agent").unwrap();
    let url = serve(dist);
    let before = snapshot(&sandbox.root);

    let args = ["--server", SERVER, "--token", TOKEN, "--base-url", &url];
    let run = sandbox.install(Shell::Busybox, &args, &[]);
    run.assert_failed();
    assert!(
        run.stderr
            .contains("vstats-agent-linux-x86_64 is not listed in"),
        "{run}"
    );
    assert_eq!(snapshot(&sandbox.root), before);
}

/// Every release binary, each `agent for <arch>`.
const ARCHES: [&str; 7] = [
    "x86_64", "aarch64", "armv7", "armv7sf", "armv6", "mipsel", "mips",
];

/// A release directory holding a distinct stand-in for every architecture,
/// served; returns the base URL.
fn serve_every_arch(sandbox: &Sandbox) -> String {
    let dist = sandbox.tmp.path().join("dist");
    let contents = ARCHES.map(|arch| (arch, format!("agent for {arch}")));
    let binaries: Vec<_> = contents
        .iter()
        .map(|(arch, text)| (*arch, text.as_bytes()))
        .collect();
    write_dist(&dist, &binaries);
    serve(dist)
}

/// An OpenWrt `/etc/openwrt_release` of DISTRIB_ARCH `arch`.
fn openwrt_release(arch: &str) -> String {
    format!(
        "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='23.05.3'\nDISTRIB_REVISION='r23809-234f1a2efa'\n\
         DISTRIB_TARGET='bcm53xx/generic'\nDISTRIB_ARCH='{arch}'\n\
         DISTRIB_DESCRIPTION='OpenWrt 23.05.3 r23809-234f1a2efa'\nDISTRIB_TAINTS=''\n"
    )
}

/// The first bytes of an ELF program: EI_CLASS `class` (1 32-bit, 2 64-bit)
/// and EI_DATA `data` (1 little, 2 big endian), the rest of the header zero.
fn elf(class: u8, data: u8) -> Vec<u8> {
    let mut bytes = vec![0x7f, b'E', b'L', b'F', class, data, 1];
    bytes.resize(52, 0);
    bytes
}

/// A `/proc/cpuinfo` with one `name : value` line among others.
fn cpuinfo(name: &str, value: &str) -> String {
    format!(
        "system type\t\t: Stand-in SoC\nmachine\t\t\t: Stand-in board\nprocessor\t\t: 0\n\
         BogoMIPS\t\t: 1594.16\n{name}\t\t: {value}\nCPU revision\t: 0\n\n"
    )
}

impl Sandbox {
    /// Writes `path` under the root, creating its directories.
    fn put(&self, path: &str, content: &[u8]) {
        let path = self.root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    /// Removes `path` under the root, if there.
    fn remove(&self, path: &str) {
        let path = self.root.join(path);
        if fs::symlink_metadata(&path).is_ok() {
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                fs::remove_dir_all(path).unwrap();
            } else {
                fs::remove_file(path).unwrap();
            }
        }
    }

    /// A symlink `path` under the root to `target`, replacing what is there.
    fn link(&self, path: &str, target: &str) {
        self.remove(path);
        let path = self.root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        symlink(target, path).unwrap();
    }

    /// The root's `/etc/openwrt_release` (DISTRIB_ARCH) and `/proc/cpuinfo`
    /// (`name : value`) for the next run, or none.
    fn describe(&self, openwrt: Option<&str>, cpu: Option<(&str, &str)>) {
        match openwrt {
            Some(arch) => self.put("etc/openwrt_release", openwrt_release(arch).as_bytes()),
            None => self.remove("etc/openwrt_release"),
        }
        match cpu {
            Some((name, value)) => self.put("proc/cpuinfo", cpuinfo(name, value).as_bytes()),
            None => self.remove("proc/cpuinfo"),
        }
    }

    /// Installs for `uname -m` `machine` from `url` (no service) and
    /// returns the binary installed: one of `agent for <arch>`.
    fn install_for(&self, shell: Shell, machine: &str, url: &str) -> String {
        let bin = "usr/local/bin/vstats-agent";
        self.remove(bin);
        let args = ["--server", SERVER, "--token", TOKEN, "--base-url", url];
        let env = [
            ("VSTATS_INSTALL_ARCH", machine),
            ("VSTATS_INSTALL_INIT", "none"),
        ];
        self.install(shell, &args, &env).assert_ok();
        self.read(bin)
    }

    /// Runs the installer for `uname -m` `machine`, which must refuse it
    /// with exactly `message` on stderr and change nothing in the root.
    fn assert_refused(&self, shell: Shell, machine: &str, message: &str) {
        let before = snapshot(&self.root);
        // Nothing is listening there: the machine is refused before any download.
        let args = [
            "--server",
            SERVER,
            "--token",
            TOKEN,
            "--base-url",
            "http://127.0.0.1:9",
        ];
        let env = [
            ("VSTATS_INSTALL_ARCH", machine),
            ("VSTATS_INSTALL_INIT", "none"),
        ];
        let run = self.install(shell, &args, &env);
        run.assert_failed();
        assert_eq!(run.stderr, format!("{message}\n"), "{run}");
        assert_eq!(run.stdout, "", "{run}");
        assert_eq!(snapshot(&self.root), before, "{machine}: the root changed");
    }
}

/// Use busybox's applets only, as on OpenWrt or a busybox-based firmware,
/// less `missing`.
fn busybox_only(sandbox: &mut Sandbox, missing: &[&str]) {
    let tools = sandbox.tmp.path().join("busybox-tools");
    if !tools.exists() {
        fs::create_dir(&tools).unwrap();
        busybox_applets(&tools);
    }
    for applet in missing {
        let _ = fs::remove_file(tools.join(applet));
    }
    sandbox.path = tools.display().to_string();
}

const SUPPORTED: &str = "vstats-agent is built for x86_64 (amd64), aarch64 (arm64), armv7 \
     (armv7l, armv8l; hard or soft float), armv6 (hard float: Raspberry Pi Zero/1) and \
     32-bit MIPS release 2 (mips, mipsel)";

#[test]
fn each_machine_name_gets_its_release_binary() {
    let sandbox = Sandbox::new(Host::Plain);
    let url = serve_every_arch(&sandbox);
    let machines = [
        ("x86_64", None, "x86_64"),
        ("amd64", None, "x86_64"),
        ("aarch64", None, "aarch64"),
        ("arm64", None, "aarch64"),
        ("armv7l", None, "armv7"),
        ("armv8l", None, "armv7"),
        ("armv7l", Some("arm_cortex-a7_neon-vfpv4"), "armv7"),
        ("armv7l", Some("arm_cortex-a9"), "armv7sf"),
        ("armv6l", None, "armv6"),
        ("armv6l", Some("arm_arm1176jzf-s_vfp"), "armv6"),
        ("mips", Some("mipsel_24kc"), "mipsel"),
        ("mips", Some("mips_24kc"), "mips"),
    ];
    // The --option=value form too.
    let (server, token, base_url) = (
        format!("--server={SERVER}"),
        format!("--token={TOKEN}"),
        format!("--base-url={url}"),
    );
    let args = [server.as_str(), &token, &base_url];
    for (machine, openwrt, arch) in machines {
        sandbox.describe(openwrt, None);
        let env = [
            ("VSTATS_INSTALL_ARCH", machine),
            ("VSTATS_INSTALL_INIT", "none"),
        ];
        sandbox.install(Shell::Dash, &args, &env).assert_ok();
        assert_eq!(
            sandbox.read("usr/local/bin/vstats-agent"),
            format!("agent for {arch}"),
            "uname -m {machine}, DISTRIB_ARCH {openwrt:?}"
        );
    }
}

#[test]
fn an_unknown_architecture_names_the_supported_ones() {
    let sandbox = Sandbox::new(Host::Systemd);
    for machine in ["riscv64", "i686", "armv5tel", "mips64", "ppc"] {
        sandbox.assert_refused(
            Shell::Dash,
            machine,
            &format!("vstats-install: unsupported architecture {machine}: {SUPPORTED}"),
        );
    }
}

/// On OpenWrt, DISTRIB_ARCH tells the byte order (and wins over /bin/sh).
#[test]
fn mips_byte_order_comes_from_openwrt_release() {
    let sandbox = Sandbox::new(Host::OpenWrt);
    let url = serve_every_arch(&sandbox);
    let args = ["--server", SERVER, "--token", TOKEN, "--base-url", &url];
    let cases = [
        ("mipsel_24kc", elf(1, 2), "mipsel"),
        ("mips_24kc", elf(1, 1), "mips"),
        ("mips_4kec", elf(1, 1), "mips"),
        ("mipsel_74kc", elf(1, 2), "mipsel"),
    ];
    for (openwrt, sh, arch) in cases {
        sandbox.describe(
            Some(openwrt),
            Some(("isa", "mips1 mips2 mips32r1 mips32r2")),
        );
        // A /bin/sh of the other byte order: DISTRIB_ARCH decides.
        sandbox.put("bin/sh", &sh);
        sandbox
            .install(Shell::Busybox, &args, &[("VSTATS_INSTALL_ARCH", "mips")])
            .assert_ok();
        assert_eq!(
            sandbox.read("usr/bin/vstats-agent"),
            format!("agent for {arch}"),
            "DISTRIB_ARCH {openwrt}"
        );
    }
}

/// Without DISTRIB_ARCH, the ELF header of the root's /bin/sh tells the
/// byte order, through symlinks that stay inside the root.
#[test]
fn mips_byte_order_comes_from_the_elf_header_of_bin_sh() {
    let mut sandbox = Sandbox::new(Host::Plain);
    let url = serve_every_arch(&sandbox);
    // How /bin/sh leads to the program.
    type Setup = fn(&Sandbox, &[u8]);
    let plain: Setup = |sandbox, program| sandbox.put("bin/sh", program);
    let relative: Setup = |sandbox, program| {
        sandbox.put("bin/busybox", program);
        sandbox.link("bin/sh", "busybox");
    };
    // Absolute: /bin/busybox of the root, not of the machine running the test
    // (whose /bin/sh and /bin/busybox are 64-bit x86_64 programs).
    let absolute: Setup = |sandbox, program| {
        sandbox.put("bin/busybox", program);
        sandbox.link("bin/sh", "/bin/busybox");
    };
    // Merged /usr, with an absolute link for the directory too.
    let merged: Setup = |sandbox, program| {
        sandbox.put("usr/bin/busybox", program);
        sandbox.link("usr/bin/sh", "../../usr/bin/./busybox");
        sandbox.link("bin", "/usr/bin");
    };
    let setups = [
        ("plain", plain),
        ("relative", relative),
        ("absolute", absolute),
        ("merged", merged),
    ];
    // The machine's own tools, then busybox's without od or hexdump.
    for busybox in [false, true] {
        if busybox {
            busybox_only(&mut sandbox, &["od", "hexdump"]);
        }
        for (name, setup) in setups {
            for (program, arch) in [(elf(1, 1), "mipsel"), (elf(1, 2), "mips")] {
                sandbox.remove("bin");
                sandbox.remove("usr/bin/busybox");
                sandbox.remove("usr/bin/sh");
                setup(&sandbox, &program);
                assert_eq!(
                    sandbox.install_for(Shell::Dash, "mips", &url),
                    format!("agent for {arch}"),
                    "/bin/sh {name}, busybox tools {busybox}"
                );
            }
        }
    }
}

#[test]
fn mips32r1_and_mips64_are_refused_with_the_supported_list() {
    let sandbox = Sandbox::new(Host::Plain);
    let refused =
        |why: &str| format!("vstats-install: unsupported architecture mips: {why}; {SUPPORTED}");
    sandbox.put("bin/sh", &elf(1, 1));
    for openwrt in ["mips_mips32", "mipsel_mips32"] {
        sandbox.describe(Some(openwrt), None);
        sandbox.assert_refused(
            Shell::Bash,
            "mips",
            &refused(&format!(
                "MIPS32 release 1 (OpenWrt mips_mips32/mipsel_mips32; DISTRIB_ARCH is {openwrt}) \
                 is not supported"
            )),
        );
    }
    for isa in [
        "mips1 mips2 mips32r1",
        "mips32r6",
        "mips1 mips2 mips3 mips4 mips5 mips64r1",
    ] {
        sandbox.describe(None, Some(("isa", isa)));
        sandbox.assert_refused(
            Shell::Bash,
            "mips",
            &refused(&format!(
                "this CPU does not run MIPS32 release 2 code (isa: {isa}); MIPS32 release 1 \
                 (OpenWrt mips_mips32/mipsel_mips32) and release 6 are not supported"
            )),
        );
    }
    sandbox.describe(Some("mips64_octeonplus"), None);
    sandbox.assert_refused(
        Shell::Bash,
        "mips",
        &refused("a 64-bit MIPS userland (OpenWrt mips64_octeonplus) is not supported"),
    );
    sandbox.describe(None, None);
    sandbox.put("bin/sh", &elf(2, 2));
    let sh = sandbox.root.join("bin/sh");
    sandbox.assert_refused(
        Shell::Bash,
        "mips",
        &refused(&format!(
            "{} is a 64-bit program: 64-bit MIPS userlands are not supported",
            sh.display()
        )),
    );
    sandbox.assert_refused(
        Shell::Bash,
        "mips64",
        &format!("vstats-install: unsupported architecture mips64: {SUPPORTED}"),
    );
    // Neither DISTRIB_ARCH nor an ELF /bin/sh: no guess.
    sandbox.put("bin/sh", b"#!/bin/busybox sh\n");
    sandbox.assert_refused(
        Shell::Bash,
        "mips",
        &format!(
            "vstats-install: cannot tell whether this mips machine is big or little endian: \
             no DISTRIB_ARCH in {root}/etc/openwrt_release, and {root}/bin/sh is not a \
             readable ELF file",
            root = sandbox.root.display()
        ),
    );
}

#[test]
fn fpu_less_armv7_gets_the_soft_float_build() {
    let mut sandbox = Sandbox::new(Host::Plain);
    busybox_only(&mut sandbox, &[]);
    let url = serve_every_arch(&sandbox);
    // Broadcom Northstar (BCM4708/4709): Cortex-A9 without VFP.
    let northstar = "half thumb fastmult edsp tls";
    let cases = [
        ("armv7l", Some("arm_cortex-a9"), None, "armv7sf"),
        // DISTRIB_ARCH wins over /proc/cpuinfo.
        (
            "armv7l",
            Some("arm_cortex-a9"),
            Some(("Features", "half thumb fastmult vfp edsp vfpv3 tls")),
            "armv7sf",
        ),
        ("armv7l", Some("arm_cortex-a15"), None, "armv7sf"),
        ("armv7l", Some("arm_cortex-a9_vfpv3-d16"), None, "armv7"),
        (
            "armv7l",
            Some("arm_cortex-a7_neon-vfpv4"),
            Some(("Features", northstar)),
            "armv7",
        ),
        ("armv7l", Some("arm_cortex-a5_vfpv4"), None, "armv7"),
        ("armv7l", None, Some(("Features", northstar)), "armv7sf"),
        (
            "armv7l",
            None,
            Some((
                "Features",
                "half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt",
            )),
            "armv7",
        ),
        ("armv7l", None, None, "armv7"),
        // A 32-bit program on an arm64 kernel; that kernel lists fp, asimd
        // to a 64-bit one.
        (
            "armv8l",
            None,
            Some((
                "Features",
                "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid",
            )),
            "armv7",
        ),
        (
            "armv8l",
            None,
            Some((
                "Features",
                "half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt lpae evtstrm",
            )),
            "armv7",
        ),
    ];
    for (machine, openwrt, cpu, arch) in cases {
        sandbox.describe(openwrt, cpu);
        assert_eq!(
            sandbox.install_for(Shell::Busybox, machine, &url),
            format!("agent for {arch}"),
            "{machine}, DISTRIB_ARCH {openwrt:?}, {cpu:?}"
        );
    }
}

#[test]
fn armv6l_gets_armv6() {
    let sandbox = Sandbox::new(Host::Plain);
    let url = serve_every_arch(&sandbox);
    let pi = "half thumb fastmult vfp edsp java tls";
    let cases = [
        (None, None),
        (Some("arm_arm1176jzf-s_vfp"), None),
        (None, Some(("Features", pi))),
    ];
    for (openwrt, cpu) in cases {
        sandbox.describe(openwrt, cpu);
        assert_eq!(
            sandbox.install_for(Shell::Dash, "armv6l", &url),
            "agent for armv6",
            "DISTRIB_ARCH {openwrt:?}, {cpu:?}"
        );
    }
    // ARMv6 without an FPU: no build.
    let refused = |why: &str| {
        format!(
            "vstats-install: unsupported architecture armv6l: ARMv6 without an FPU {why} is not \
             supported, the armv6 build needs VFP (arm1176jzf-s); {SUPPORTED}"
        )
    };
    sandbox.describe(Some("arm_mpcore"), Some(("Features", pi)));
    sandbox.assert_refused(Shell::Dash, "armv6l", &refused("(OpenWrt arm_mpcore)"));
    sandbox.describe(
        None,
        Some(("Features", "swp half thumb fastmult edsp java")),
    );
    sandbox.assert_refused(Shell::Dash, "armv6l", &refused("(no vfp in /proc/cpuinfo)"));
}

#[test]
fn bad_options_are_refused_before_anything_happens() {
    let sandbox = Sandbox::new(Host::Systemd);
    let before = snapshot(&sandbox.root);
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "unknown option --bogus"),
        // Neither echoes what may be a token.
        (
            &[&format!("--tokn={TOKEN}")],
            "unknown option --tokn (see --help)",
        ),
        (&[TOKEN], "unexpected argument"),
        (&["--server"], "--server needs a value"),
        (&["--token", TOKEN], "--server is required with --token"),
        (&[], "--server and --token are required"),
        (
            &["--server", "http://relay", "--token", TOKEN],
            "must start with ws://",
        ),
        (
            &["--server", SERVER, "--token", "it's"],
            "--token must not contain a quote",
        ),
        (
            &["--server", SERVER, "--token", TOKEN, "--interval", "5s"],
            "--interval must be",
        ),
    ];
    for (args, message) in cases {
        // Nothing is listening there: options are checked before any download.
        let args = [&["--base-url", "http://127.0.0.1:9"], *args].concat();
        let run = sandbox.install(Shell::Busybox, &args, &[]);
        run.assert_failed();
        assert!(
            run.stderr.starts_with("vstats-install: ") && run.stderr.contains(message),
            "{args:?}: {run}"
        );
    }
    assert_eq!(snapshot(&sandbox.root), before);

    let run = sandbox.install(Shell::Dash, &["--help"], &[]);
    run.assert_ok();
    assert!(
        run.stdout
            .starts_with("Usage: install.sh --server URL --token TOKEN")
    );
}

/// One relay is a LAN's whole install source: `--dist-dir` serves
/// `install.sh` and the release files the installer then downloads.
#[test]
fn installs_from_a_relay_serving_its_dist_dir() {
    let sandbox = Sandbox::new(Host::Systemd);
    let agent = agent_binary();
    let dist = sandbox.tmp.path().join("dist");
    write_dist(&dist, &[("x86_64", &agent)]);
    let script = fs::read(repo().join("scripts/install.sh")).unwrap();
    fs::write(dist.join("install.sh"), &script).unwrap();
    let relay = common::relay::Relay::start(&["--dist-dir", dist.to_str().unwrap()]);

    let (status, served) = relay.get("/install.sh");
    assert_eq!((status, served.as_bytes()), (200, script.as_slice()));
    assert_eq!(relay.get("/dl/../state.json").0, 404);
    assert_eq!(relay.get("/dl/missing").0, 404);

    let base = format!("http://{}/dl", relay.addr);
    let args = ["--server", SERVER, "--token", TOKEN, "--base-url", &base];
    sandbox.install(Shell::Busybox, &args, &[]).assert_ok();
    let bin = sandbox.root.join("usr/local/bin/vstats-agent");
    assert_eq!(fs::read(bin).unwrap(), agent);
}
