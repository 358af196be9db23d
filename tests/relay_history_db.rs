//! The history database in the real relay process: long ranges served
//! from it, a person's `sqlite3` reading it while the relay writes, a
//! `kill -9` that loses at most the minute in progress and corrupts
//! nothing, a corrupt file put aside, a full disk that stops history and
//! nothing else, a removed server's rows deleted, an old history file
//! imported, and reads beyond the queue refused.

use crate::common;

use common::relay::Relay;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

const SOON: Duration = Duration::from_secs(10);

fn db_of(relay: &Relay) -> PathBuf {
    relay.state.with_extension("db")
}

/// `sqlite3 DB SQL`, as a person would run it: its output, trimmed.
fn sqlite3(db: &Path, sql: &str) -> String {
    let output = Command::new("sqlite3")
        .arg(db)
        .arg(sql)
        .output()
        .expect("sqlite3 (scripts/setup-dev.sh installs it)");
    assert!(output.status.success(), "{sql}: {output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn history(relay: &Relay, id: &str, query: &str) -> Value {
    let (status, body) = relay.get(&format!("/api/servers/{id}/history?{query}"));
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The values of one series of a history answer that are not gaps.
fn known(history: &Value, part: &str, series: &str) -> Vec<f64> {
    history[part][series]
        .as_array()
        .unwrap_or_else(|| panic!("no {part}.{series} in {history}"))
        .iter()
        .filter_map(Value::as_f64)
        .collect()
}

fn send_cpu(relay: &Relay, token: &str, cpus: &[f64]) {
    let mut agent = relay.fake_agent(token);
    for cpu in cpus {
        agent.send_metrics(json!({"hostname": "h", "cpu": {"usage": cpu}}));
    }
    // Each sample is stored before the relay reads the next frame; a
    // dashboard's snapshot after them is a barrier.
    std::thread::sleep(Duration::from_millis(200));
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Waits until the wall clock is `seconds` past a whole minute that is at
/// least `at_least` seconds from now; returns that minute's start.
fn wait_into_next_minute(seconds: u64, at_least: u64) -> u64 {
    let now = unix_now();
    let mut minute = now - now % 60 + 60;
    while minute < now + at_least {
        minute += 60;
    }
    while unix_now() < minute + seconds {
        std::thread::sleep(Duration::from_millis(100));
    }
    minute
}

#[test]
fn long_ranges_come_from_the_database_which_a_person_can_read_with_sqlite3() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("pi", "");
    send_cpu(&relay, &token, &[12.5, 37.5]);
    // A stop hands the minute in progress to the database, and rolls up
    // its quarter, hour and day.
    let relay = relay.restart(&[]);
    let day = history(&relay, &id, "range=24h");
    assert_eq!(
        (day["range"].as_str(), day["step"].as_u64()),
        (Some("24h"), Some(120))
    );
    assert_eq!(day["series"]["cpu"].as_array().unwrap().len(), 720);
    let means = known(&day, "series", "cpu");
    assert_eq!(means.len(), 1, "{means:?}");
    assert!((12.5..=37.5).contains(&means[0]), "{means:?}");
    assert_eq!(known(&day, "max", "cpu"), [37.5]);
    for (range, step) in [("7d", 900), ("30d", 2700), ("1y", 32_400)] {
        let long = history(&relay, &id, &format!("range={range}"));
        assert_eq!(long["step"], step, "{range}");
        assert_eq!(known(&long, "max", "cpu"), [37.5], "{range}");
    }
    // A span of unix seconds, and the CSV export.
    let from = unix_now() - 7200;
    let span = history(&relay, &id, &format!("from={from}"));
    assert_eq!(
        (span["range"].as_str(), span["step"].as_u64()),
        (Some("custom"), Some(60))
    );
    let (status, csv) = relay.get(&format!("/api/servers/{id}/history?range=30d&format=csv"));
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 961, "a header and 960 points");
    assert!(
        lines[0].starts_with("time,unix,cpu,cpu_max,"),
        "{}",
        lines[0]
    );
    assert_eq!(
        lines.iter().filter(|line| line.contains(",37.5,")).count(),
        1
    );
    // What is wrong is refused with the reason.
    for (query, why) in [
        ("range=2d", "range must be one of"),
        ("from=noon", "from must be a time in unix seconds"),
        ("from=2000000000&to=1900000000", "from is later than to"),
        ("from=1000", "older than the history kept"),
    ] {
        let (status, body) = relay.get(&format!("/api/servers/{id}/history?{query}"));
        assert_eq!(status, 400, "{query}");
        assert!(body.contains(why), "{query}: {body}");
    }
    // A person's sqlite3, while the relay runs: the views decode the
    // stored code, and the file is sound.
    let db = db_of(&relay);
    let row = sqlite3(
        &db,
        &format!("SELECT cpu_max, memory FROM hours_readable WHERE server = '{id}'"),
    );
    assert_eq!(row, "37.5|");
    assert_eq!(sqlite3(&db, "PRAGMA integrity_check"), "ok");
    assert_eq!(sqlite3(&db, "PRAGMA journal_mode"), "wal");
    // And a read held open by a person does not stop the relay writing.
    let mut reader = Command::new("sqlite3")
        .arg(&db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdin = reader.stdin.as_mut().unwrap();
    writeln!(stdin, "BEGIN; SELECT count(*) FROM minutes;").unwrap();
    send_cpu(&relay, &token, &[50.0]);
    let relay = relay.restart(&[]);
    drop(reader.stdin.take());
    let _ = reader.wait();
    let day = history(&relay, &id, "range=24h");
    assert!(known(&day, "max", "cpu").contains(&50.0), "{day}");
}

#[test]
fn an_old_history_file_is_imported_into_the_database_once() {
    // A relay without a database keeps its day in NAME.history.
    let relay = Relay::start(&["--history-db", "off"]);
    let (id, token) = relay.add_server("pi", "");
    send_cpu(&relay, &token, &[64.0]);
    assert!(!db_of(&relay).exists());
    let relay = relay.restart(&[]);
    relay
        .process
        .wait_for_log(SOON, "imported from the history file");
    // The day's 5 min step as five minutes, in points of 2 up to now: one
    // to three of them.
    let imported = known(&history(&relay, &id, "range=24h"), "series", "cpu");
    assert!((1..=3).contains(&imported.len()), "{imported:?}");
    assert!(imported.iter().all(|cpu| *cpu == 64.0), "{imported:?}");
    let relay = relay.restart(&[]);
    relay.process.wait_for_log(SOON, "listening on");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !relay.process.log().contains("imported"),
        "{}",
        relay.process.log()
    );
    let again = known(&history(&relay, &id, "range=24h"), "series", "cpu");
    assert_eq!(again, imported);
}

#[test]
fn a_kill_during_an_import_leaves_a_sound_database_that_finishes_it() {
    // 400 servers' days in a history file: 600,000 minutes to import, in
    // transactions of 100 servers, killed partway.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let mut registry = vstats::relay::Registry::empty();
    let ids: Vec<String> = (0..400)
        .map(|i| registry.add(&format!("s{i}"), "").unwrap().0.id)
        .collect();
    registry.save(&state).unwrap();
    let now = unix_now();
    let mut day = vstats::relay::History::default();
    for ago in (0..86_400u32).step_by(300).rev().map(u64::from) {
        let mut reading = vstats::relay::Reading::default();
        reading.values[0] = Some((ago % 100) as f64);
        day.record(now - ago, &reading);
    }
    let file = vstats::relay::history_to_file(ids.iter().map(|id| (id.as_str(), &day)));
    std::fs::write(state.with_extension("history"), file).unwrap();

    let relay = Relay::start_with_state(dir, state, &[]);
    relay.process.wait_for_log(SOON, "listening on");
    std::thread::sleep(Duration::from_millis(300));
    let mut process = relay.process;
    let imported_before_the_kill = process.log().contains("imported from the history file");
    nix::sys::signal::kill(process.pid(), nix::sys::signal::Signal::SIGKILL).unwrap();
    process.wait(SOON);
    let db = relay.dir.path().join("state.db");
    assert_eq!(sqlite3(&db, "PRAGMA integrity_check"), "ok");
    let count = |sql: &str| sqlite3(&db, sql).parse::<u64>().unwrap();
    let partial = count("SELECT count(*) FROM minutes");

    let relay = Relay::start_with_state(relay.dir, relay.state, &[]);
    relay
        .process
        .wait_for_log(Duration::from_secs(60), "imported from the history file");
    let relay = relay.restart(&[]);
    assert_eq!(sqlite3(&db, "PRAGMA integrity_check"), "ok");
    let servers = count("SELECT count(DISTINCT server) FROM minutes");
    assert_eq!(
        servers, 400,
        "killed after the import: {imported_before_the_kill}"
    );
    // A day of 5 min steps, each as five minutes, for every server alike;
    // the kill left whole transactions only.
    let per_server = count("SELECT count(*) FROM minutes WHERE server = 1");
    assert!(per_server >= 1435, "{per_server}");
    assert_eq!(count("SELECT count(*) FROM minutes"), 400 * per_server);
    assert_eq!(
        partial % (100 * per_server),
        0,
        "{partial} of {per_server} a server"
    );
    let one = history(&relay, &ids[399], "range=24h");
    assert!(known(&one, "series", "cpu").len() > 600, "{one}");
}

#[test]
fn a_kill_loses_at_most_the_minute_in_progress() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("pi", "");
    let mut agent = relay.fake_agent(&token);
    // Samples every 200 ms until 2 s into the next minute: the relay hands
    // a minute to the database just after it ends.
    let deadline = {
        let now = unix_now();
        now - now % 60 + 60 + 2
    };
    while unix_now() < deadline {
        agent.send_metrics(json!({"hostname": "h", "cpu": {"usage": 20.0}}));
        std::thread::sleep(Duration::from_millis(200));
    }
    let finished = deadline - 2 - 60;
    let mut process = relay.process;
    nix::sys::signal::kill(process.pid(), nix::sys::signal::Signal::SIGKILL).unwrap();
    process.wait(SOON);
    let db = relay.dir.path().join("state.db");
    assert_eq!(sqlite3(&db, "PRAGMA integrity_check"), "ok");
    let minutes = sqlite3(
        &db,
        &format!(
            "SELECT time FROM minutes JOIN servers ON servers.id = server \
             WHERE name = '{id}' ORDER BY time"
        ),
    );
    let minutes: Vec<u64> = minutes.lines().map(|t| t.parse().unwrap()).collect();
    // The minute that ended is there; the one in progress at the kill is
    // lost, and no more.
    assert_eq!(minutes, [finished]);
}

#[test]
fn a_corrupt_database_is_put_aside_and_the_relay_starts_a_new_one() {
    let relay = Relay::start(&[]);
    let (id, token) = relay.add_server("pi", "");
    let relay = relay.restart_with(
        |state| {
            let db = state.with_extension("db");
            let mut bytes = std::fs::read(&db).unwrap();
            bytes[..16].copy_from_slice(b"not a database!!");
            std::fs::write(&db, bytes).unwrap();
        },
        &[],
    );
    relay.process.wait_for_log(SOON, "starting a new one");
    let aside: Vec<String> = std::fs::read_dir(relay.dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("state.db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(relay.get("/healthz").0, 200);
    send_cpu(&relay, &token, &[33.0]);
    let relay = relay.restart(&[]);
    assert_eq!(
        known(&history(&relay, &id, "range=7d"), "max", "cpu"),
        [33.0]
    );
}

#[test]
fn a_full_disk_stops_history_and_nothing_else_until_there_is_room() {
    // The database alone on a small tmpfs of its own.
    let mount = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(mount.path())
        .status()
        .unwrap();
    assert!(status.success(), "mount a tmpfs (the tests run as root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.path().to_owned());
    let db = mount.path().join("history.db");
    let relay = Relay::start(&["--history-db", db.to_str().unwrap()]);
    let (id, token) = relay.add_server("pi", "");
    // The database is made; then the disk fills.
    let started = Instant::now();
    while !db.exists() {
        assert!(started.elapsed() < SOON);
        std::thread::sleep(Duration::from_millis(20));
    }
    let filler = mount.path().join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    while file.write_all(&[0xa5; 4096]).is_ok() {}
    drop(file);

    // Live samples, dashboards and the API go on through the next minute's
    // write, which fails.
    let mut dashboard = relay.dashboard();
    let mut agent = relay.fake_agent(&token);
    agent.send_metrics(json!({"hostname": "h", "cpu": {"usage": 11.0}}));
    wait_into_next_minute(3, 2);
    agent.send_metrics(json!({"hostname": "h", "cpu": {"usage": 77.0}}));
    // A dashboard sees samples with the disk full.
    dashboard.wait_for(SOON, "the sample of 77 %", |frame| {
        common::relay::is(frame, "metrics", &id) && frame["data"]["metrics"]["cpu"]["usage"] == 77.0
    });
    relay.process.wait_for_log(SOON, "cannot write");
    assert_eq!(relay.get("/healthz").0, 200);
    assert_eq!(relay.get("/api/servers").0, 200);
    let (status, metrics) = relay.get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("vstats_relay_history_write_errors_total "),
        "{metrics}"
    );
    assert!(
        !metrics.contains("vstats_relay_history_write_errors_total 0\n"),
        "{metrics}"
    );
    // Room again: the minutes that waited are written within a retry.
    std::fs::remove_file(&filler).unwrap();
    relay
        .process
        .wait_for_log(Duration::from_secs(15), "writing to");
    let log = relay.process.log();
    assert_eq!(
        log.matches("cannot write").count(),
        1,
        "one line a minute:\n{log}"
    );
    let written = sqlite3(&db, "SELECT count(*) FROM minutes");
    assert!(written.parse::<u64>().unwrap() >= 1, "{written}");
    drop(agent);
    drop(dashboard);
    drop(relay);
}

#[test]
fn a_removed_servers_rows_are_deleted_while_the_relay_runs() {
    let relay = Relay::start(&[]);
    let (kept, kept_token) = relay.add_server("kept", "");
    let (gone, gone_token) = relay.add_server("gone", "");
    send_cpu(&relay, &kept_token, &[1.0]);
    send_cpu(&relay, &gone_token, &[2.0]);
    let relay = relay.restart(&[]);
    let db = db_of(&relay);
    let rows = |name: &str| {
        sqlite3(
            &db,
            &format!(
                "SELECT (SELECT count(*) FROM minutes JOIN servers ON servers.id = server \
                 WHERE name = '{name}') + (SELECT count(*) FROM hours JOIN servers \
                 ON servers.id = server WHERE name = '{name}')"
            ),
        )
        .parse::<u64>()
        .unwrap()
    };
    assert_eq!((rows(&kept), rows(&gone)), (2, 2));
    let output = relay.cli(&["remove", &gone]);
    assert!(output.status.success(), "{output:?}");
    let started = Instant::now();
    while rows(&gone) > 0 {
        assert!(
            started.elapsed() < SOON,
            "the rows of {gone} are still there"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(rows(&kept), 2);
    relay.process.wait_for_log(SOON, "rows of removed server");
}

#[test]
fn history_reads_past_the_queue_are_refused_and_the_loop_stays_quick() {
    let relay = Relay::start(&[]);
    let (id, _) = relay.add_server("pi", "");
    // 300 requests for a year at once: each answered, 200 or 503, and
    // /healthz meanwhile at once.
    let request =
        format!("GET /api/servers/{id}/history?range=1y HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let mut sockets: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut socket = TcpStream::connect(relay.addr).unwrap();
            socket.write_all(request.as_bytes()).unwrap();
            socket
        })
        .collect();
    let started = Instant::now();
    assert_eq!(relay.get("/healthz").0, 200);
    let healthz = started.elapsed();
    let mut statuses = std::collections::BTreeMap::new();
    for socket in &mut sockets {
        socket.set_read_timeout(Some(SOON)).unwrap();
        let mut response = Vec::new();
        socket.read_to_end(&mut response).unwrap();
        let text = String::from_utf8_lossy(&response);
        let status: u16 = text.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
        *statuses.entry(status).or_insert(0) += 1;
    }
    let answered: u32 = statuses
        .iter()
        .filter(|(status, _)| [200, 503].contains(*status))
        .map(|(_, count)| count)
        .sum();
    assert_eq!(answered, 300, "{statuses:?}");
    assert!(healthz < Duration::from_secs(2), "{healthz:?}");
}
