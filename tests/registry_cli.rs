//! `vstats-relay server ...` end to end against a state file in a temp dir,
//! through `server_command` in-process (the binary only forwards to it).

use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use vstats::relay::{Registry, server_command};

struct Output {
    code: u8,
    out: String,
    err: String,
}

fn server(state: &Path, args: &[&str]) -> Output {
    let mut full: Vec<OsString> = args.iter().map(OsString::from).collect();
    full.extend(["--state".into(), state.into()]);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = server_command(full, &mut out, &mut err);
    Output {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

fn json(output: &Output) -> Value {
    assert_eq!(output.code, 0, "{}", output.err);
    serde_json::from_str(&output.out).unwrap_or_else(|e| panic!("{e}: {}", output.out))
}

fn state_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vstats-relay.json");
    (dir, path)
}

#[test]
fn add_prints_a_token_that_authenticates() {
    let (_dir, state) = state_file();
    let added = json(&server(
        &state,
        &["add", "--name", "pi", "--location", "上海", "--json"],
    ));
    let object = added.as_object().unwrap();
    let mut keys: Vec<_> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["id", "location", "name", "token"]);
    assert_eq!(added["name"], "pi");
    assert_eq!(added["location"], "上海");

    let registry = Registry::load(&state).unwrap();
    let token = added["token"].as_str().unwrap();
    let server = registry
        .authenticate(token)
        .expect("the printed token works");
    assert_eq!(server.id, added["id"].as_str().unwrap());
}

#[test]
fn add_in_text_gives_a_ready_to_paste_agent_command() {
    let (_dir, state) = state_file();
    let output = server(
        &state,
        &["add", "--name", "nas", "--url", "wss://relay.example:3001"],
    );
    assert_eq!(output.code, 0, "{}", output.err);
    assert!(output.out.contains("only this once"), "{}", output.out);
    let command = output
        .out
        .lines()
        .find_map(|line| line.trim().strip_prefix("VSTATS_TOKEN="))
        .expect("an agent command");
    let (token, rest) = command.split_once(' ').unwrap();
    assert_eq!(rest, "vstats-agent --server wss://relay.example:3001");
    assert!(
        Registry::load(&state)
            .unwrap()
            .authenticate(token)
            .is_some()
    );

    let output = server(&state, &["add", "--name", "router"]);
    assert!(output.out.contains("--server wss://"), "{}", output.out);
    assert!(output.out.contains(":3001\n"), "{}", output.out);
}

#[test]
fn list_shows_servers_but_never_tokens() {
    let (_dir, state) = state_file();
    let pi = json(&server(
        &state,
        &["add", "--name", "pi", "--location", "上海", "--json"],
    ));
    let nas = json(&server(&state, &["add", "--name", "nas", "--json"]));
    let token_hashes: Vec<String> = Registry::load(&state)
        .unwrap()
        .servers()
        .iter()
        .map(|s| s.token_sha256.iter().map(|b| format!("{b:02x}")).collect())
        .collect();

    let table = server(&state, &["list"]);
    assert_eq!(table.code, 0, "{}", table.err);
    let lines: Vec<_> = table.out.lines().collect();
    assert_eq!(lines.len(), 3, "{}", table.out);
    assert!(lines[0].starts_with("ID") && lines[0].ends_with("CREATED"));
    for (line, added) in lines[1..].iter().zip([&pi, &nas]) {
        assert!(line.starts_with(added["id"].as_str().unwrap()), "{line}");
        assert!(line.contains(added["name"].as_str().unwrap()), "{line}");
    }
    assert!(lines[1].contains("上海"));

    let listed = json(&server(&state, &["list", "--json"]));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["id"], pi["id"]);
    assert_eq!(listed[0]["location"], "上海");
    assert_eq!(listed[1]["name"], "nas");
    for entry in listed {
        let mut keys: Vec<_> = entry.as_object().unwrap().keys().collect();
        keys.sort_unstable();
        assert_eq!(keys, ["created", "id", "location", "name"]);
    }

    for output in [&table.out, &server(&state, &["list", "--json"]).out] {
        for secret in [&pi["token"], &nas["token"]] {
            assert!(!output.contains(secret.as_str().unwrap()));
        }
        for hash in &token_hashes {
            assert!(!output.contains(hash.as_str()));
        }
    }
}

#[test]
fn remove_and_rotate_token() {
    let (_dir, state) = state_file();
    let pi = json(&server(&state, &["add", "--name", "pi", "--json"]));
    let nas = json(&server(&state, &["add", "--name", "nas", "--json"]));
    let (pi_id, nas_id) = (pi["id"].as_str().unwrap(), nas["id"].as_str().unwrap());

    let rotated = json(&server(&state, &["rotate-token", nas_id, "--json"]));
    assert_eq!(rotated["id"], nas_id);
    let new_token = rotated["token"].as_str().unwrap();
    let registry = Registry::load(&state).unwrap();
    assert!(
        registry
            .authenticate(nas["token"].as_str().unwrap())
            .is_none()
    );
    assert_eq!(registry.authenticate(new_token).unwrap().id, nas_id);

    let text = server(&state, &["rotate-token", nas_id]);
    assert_eq!(text.code, 0, "{}", text.err);
    assert!(text.out.contains("only this once"), "{}", text.out);

    let removed = server(&state, &["remove", pi_id]);
    assert_eq!(removed.code, 0, "{}", removed.err);
    assert!(removed.out.contains(pi_id));
    let registry = Registry::load(&state).unwrap();
    assert!(registry.get(pi_id).is_none());
    assert!(
        registry
            .authenticate(pi["token"].as_str().unwrap())
            .is_none()
    );
    assert_eq!(registry.servers().len(), 1);
}

#[test]
fn failures_exit_1_with_one_line() {
    let (dir, state) = state_file();
    for args in [&["remove", "0123456789ab"][..], &["rotate-token", "nope"]] {
        let output = server(&state, args);
        assert_eq!(output.code, 1);
        assert!(output.out.is_empty());
        assert!(
            output.err.starts_with("vstats-relay: no server with id"),
            "{}",
            output.err
        );
    }

    let corrupt = "{\"version\": 1, \"servers\": [oops]}";
    std::fs::write(&state, corrupt).unwrap();
    let output = server(&state, &["list"]);
    assert_eq!(output.code, 1);
    assert_eq!(output.err.lines().count(), 1);
    let expected = format!("vstats-relay: {}: ", state.display());
    assert!(output.err.starts_with(&expected), "{}", output.err);
    assert!(output.err.contains("line 1 column"), "{}", output.err);
    let output = server(&state, &["add", "--name", "pi"]);
    assert_eq!(output.code, 1);
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        corrupt,
        "left as it was"
    );

    let output = server(
        &dir.path().join("missing-dir/state.json"),
        &["add", "--name", "pi"],
    );
    assert_eq!(output.code, 1);
    assert!(output.err.contains("missing-dir"), "{}", output.err);

    let (_dir, state) = state_file();
    let output = server(&state, &["add", "--name", "tab\there"]);
    assert_eq!(output.code, 1);
    assert!(output.err.contains("control character"), "{}", output.err);
}

#[test]
fn usage_errors_exit_2() {
    let (_dir, state) = state_file();
    for args in [
        &["explode"][..],
        &["add"],
        &["list", "--nope"],
        &["add", "--name"],
    ] {
        let output = server(&state, args);
        assert_eq!(output.code, 2, "{args:?}");
        assert!(output.err.starts_with("vstats-relay: "), "{}", output.err);
        assert_eq!(output.err.lines().count(), 1, "{}", output.err);
    }
    assert!(!state.exists(), "usage errors touch nothing");
}

#[test]
fn help_prints_usage() {
    let (_dir, state) = state_file();
    let output = server(&state, &["--help"]);
    assert_eq!(output.code, 0);
    assert!(output.out.contains("rotate-token"));
    assert!(output.err.is_empty());
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort_unstable();
    names
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .unwrap()
        .file_type()
        .is_symlink()
}

#[test]
fn add_through_a_symlink_keeps_the_link_and_writes_the_target() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    let (link, target) = (
        dir.path().join("link.json"),
        dir.path().join("real/state.json"),
    );
    // Dangling at first: the first add creates the target.
    std::os::unix::fs::symlink("real/state.json", &link).unwrap();
    let pi = json(&server(&link, &["add", "--name", "pi", "--json"]));
    let nas = json(&server(&link, &["add", "--name", "nas", "--json"]));

    assert!(is_symlink(&link), "the link was replaced by a file");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("real/state.json")
    );
    let registry = Registry::load(&target).unwrap();
    for added in [&pi, &nas] {
        let token = added["token"].as_str().unwrap();
        assert_eq!(
            registry.authenticate(token).unwrap().id,
            added["id"].as_str().unwrap()
        );
    }
    // The lock and any temp file live beside the target, not the link.
    assert_eq!(names_in(dir.path()), ["link.json", "real"]);
    assert_eq!(
        names_in(&dir.path().join("real")),
        ["state.json", "state.json.lock"]
    );
    let listed = json(&server(&link, &["list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 2);
}

#[test]
fn concurrent_adds_through_the_link_and_the_target_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (link, target) = (dir.path().join("link.json"), dir.path().join("state.json"));
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let path = if writer % 2 == 0 { &link } else { &target }.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    let name = format!("w{writer}-{i}");
                    let output = server(&path, &["add", "--name", &name, "--json"]);
                    assert_eq!(output.code, 0, "{}", output.err);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    assert!(is_symlink(&link));
    assert_eq!(Registry::load(&target).unwrap().servers().len(), 40);
}

#[test]
fn a_killed_writers_temp_file_is_removed_by_the_next_add() {
    let (dir, state) = state_file();
    json(&server(&state, &["add", "--name", "pi", "--json"]));
    // A pid that was alive a moment ago and is not any more.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let leftover = dir.path().join(format!(".vstats-relay.json.tmp.{dead}"));
    std::fs::write(&leftover, "{\"version\": 1, \"serv").unwrap();
    // Not this state file's: left alone.
    let other = dir.path().join(".other.json.tmp.1");
    std::fs::write(&other, "").unwrap();

    json(&server(&state, &["add", "--name", "nas", "--json"]));
    assert_eq!(
        names_in(dir.path()),
        [
            ".other.json.tmp.1",
            "vstats-relay.json",
            "vstats-relay.json.lock"
        ]
    );
    assert_eq!(Registry::load(&state).unwrap().servers().len(), 2);
}
