//! `vstats-relay server add|list|remove|rotate-token`: edit the state file.
//!
//! Each command runs against the file alone, so it works whether or not a
//! relay is running; a running relay notices the change on its next poll,
//! or at once when an agent presents a token it does not know yet.

use super::registry::{self, DEFAULT_STATE_FILE, Registry, RegistryError};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;

pub const USAGE: &str = "\
vstats-relay server: edit the relay's registry of servers (agents)

Usage: vstats-relay server add --name NAME [--location LOC] [--url URL] [--json]
       vstats-relay server list [--json]
       vstats-relay server remove ID
       vstats-relay server rotate-token ID [--json]

Commands:
  add             register a server; prints its id, its token (shown only
                  this once) and the command that starts its agent
  list            the registered servers (never their tokens)
  remove          unregister a server; a running relay disconnects its agent
  rotate-token    give a server a new token; the old one stops working

Options:
      --name NAME       the server's name, 1-64 characters
      --location LOC    where it is, up to 64 characters (e.g. 上海)
      --url URL         the relay URL in the printed agent command
                        (default wss://<this host's name>:3001)
      --state FILE      the state file (default ./vstats-relay.json)
                                                         [VSTATS_STATE]
      --json            print JSON instead of text
  -h, --help            print this help
";

/// Runs `vstats-relay server ARGS...` (`args` excludes `server`), printing
/// results to `out` and failures to `err`. Returns the exit code: 0 done,
/// 1 failed (I/O, corrupt state file, unknown id), 2 wrong usage.
pub fn server_command(args: Vec<OsString>, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    run(args, std::env::var_os("VSTATS_STATE"), out, err)
}

fn run(
    args: Vec<OsString>,
    state_from_env: Option<OsString>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let result = parse(args, state_from_env).and_then(|invocation| execute(invocation, out));
    match result {
        Ok(()) => 0,
        Err(failure) => {
            let _ = writeln!(err, "vstats-relay: {failure}");
            if failure.is_usage() { 2 } else { 1 }
        }
    }
}

/// Why a `server` command failed. The usage mistakes exit with 2, the
/// rest with 1.
#[derive(Debug)]
enum CommandError {
    /// The arguments do not parse: an unknown option, an option without
    /// its value, text that is not UTF-8.
    Args(lexopt::Error),
    /// No command word.
    MissingCommand,
    /// A command word other than add, list, remove and rotate-token.
    UnknownCommand(String),
    /// The command does not take this flag.
    FlagNotTaken { command: String, flag: &'static str },
    /// `remove` or `rotate-token` without its server ID.
    MissingId(String),
    /// `add` without `--name`.
    MissingName,
    /// A word past what the command takes.
    Unexpected(String),
    /// The state file could not be read, changed or written.
    Registry(RegistryError),
    /// Writing to stdout failed (a closed pipe, a full disk).
    Output(io::Error),
}

impl CommandError {
    fn is_usage(&self) -> bool {
        !matches!(self, CommandError::Registry(_) | CommandError::Output(_))
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Args(e) => write!(f, "{e}"),
            CommandError::MissingCommand => {
                f.write_str("missing command: add, list, remove or rotate-token")
            }
            CommandError::UnknownCommand(command) => write!(f, "unknown command '{command}'"),
            CommandError::FlagNotTaken { command, flag } => {
                write!(f, "'{command}' does not take {flag}")
            }
            CommandError::MissingId(command) => write!(f, "'{command}' needs a server ID"),
            CommandError::MissingName => f.write_str("'add' needs --name NAME"),
            CommandError::Unexpected(argument) => write!(f, "unexpected argument '{argument}'"),
            CommandError::Registry(e) => return write!(f, "{e}"),
            CommandError::Output(e) => return write!(f, "writing the output: {e}"),
        }?;
        f.write_str(" (try 'vstats-relay server --help')")
    }
}

impl std::error::Error for CommandError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CommandError::Args(e) => Some(e),
            CommandError::Registry(e) => Some(e),
            CommandError::Output(e) => Some(e),
            _ => None,
        }
    }
}

impl From<lexopt::Error> for CommandError {
    fn from(e: lexopt::Error) -> Self {
        CommandError::Args(e)
    }
}

impl From<RegistryError> for CommandError {
    fn from(e: RegistryError) -> Self {
        CommandError::Registry(e)
    }
}

impl From<io::Error> for CommandError {
    fn from(e: io::Error) -> Self {
        CommandError::Output(e)
    }
}

enum Command {
    Help,
    Add {
        name: String,
        location: String,
        url: Option<String>,
    },
    List,
    Remove(String),
    RotateToken(String),
}

struct Invocation {
    command: Command,
    state: PathBuf,
    json: bool,
}

fn parse(
    args: Vec<OsString>,
    state_from_env: Option<OsString>,
) -> Result<Invocation, CommandError> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let (mut command, mut id, mut name, mut location, mut url) = (None, None, None, None, None);
    let mut state = state_from_env.filter(|s| !s.is_empty()).map(PathBuf::from);
    let mut json = false;
    // Flags are accepted in any order and checked against the command after.
    let mut given = Vec::new();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => {
                return Ok(Invocation {
                    command: Command::Help,
                    state: PathBuf::new(),
                    json,
                });
            }
            Long("state") => state = Some(PathBuf::from(parser.value()?)),
            Long("json") => {
                json = true;
                given.push("--json");
            }
            Long("name") => {
                name = Some(parser.value()?.string()?);
                given.push("--name");
            }
            Long("location") => {
                location = Some(parser.value()?.string()?);
                given.push("--location");
            }
            Long("url") => {
                url = Some(parser.value()?.string()?);
                given.push("--url");
            }
            Value(value) if command.is_none() => command = Some(value.string()?),
            Value(value) if id.is_none() => id = Some(value.string()?),
            Value(extra) => {
                return Err(CommandError::Unexpected(
                    extra.to_string_lossy().into_owned(),
                ));
            }
            _ => return Err(arg.unexpected().into()),
        }
    }
    let Some(command) = command else {
        return Err(CommandError::MissingCommand);
    };
    let (allowed, takes_id): (&[&str], bool) = match command.as_str() {
        "add" => (&["--name", "--location", "--url", "--json"], false),
        "list" => (&["--json"], false),
        "remove" => (&[], true),
        "rotate-token" => (&["--json"], true),
        _ => return Err(CommandError::UnknownCommand(command)),
    };
    if let Some(&flag) = given.iter().find(|flag| !allowed.contains(flag)) {
        return Err(CommandError::FlagNotTaken { command, flag });
    }
    let id = match (id, takes_id) {
        (Some(id), true) => id,
        (None, true) => return Err(CommandError::MissingId(command)),
        (Some(extra), false) => return Err(CommandError::Unexpected(extra)),
        (None, false) => String::new(),
    };
    let command = match command.as_str() {
        "add" => Command::Add {
            name: name.ok_or(CommandError::MissingName)?,
            location: location.unwrap_or_default(),
            url,
        },
        "list" => Command::List,
        "remove" => Command::Remove(id),
        _ => Command::RotateToken(id),
    };
    Ok(Invocation {
        command,
        state: state.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_FILE)),
        json,
    })
}

fn execute(invocation: Invocation, out: &mut dyn Write) -> Result<(), CommandError> {
    let Invocation {
        command,
        state,
        json,
    } = invocation;
    match command {
        Command::Help => out.write_all(USAGE.as_bytes())?,
        Command::Add {
            name,
            location,
            url,
        } => {
            let (server, token) =
                registry::update(&state, |registry| registry.add(&name, &location))?;
            if json {
                let added = serde_json::json!({
                    "id": server.id,
                    "name": server.name,
                    "location": server.location,
                    "token": token,
                });
                writeln!(out, "{added}")?;
            } else {
                let url = url.unwrap_or_else(default_url);
                writeln!(out, "Added server {} ({}).", server.id, server.name)?;
                writeln!(out, "Its token is shown only this once; keep it secret:")?;
                writeln!(out, "  {token}")?;
                writeln!(out, "Start its agent with:")?;
                writeln!(out, "  VSTATS_TOKEN={token} vstats-agent --server {url}")?;
                writeln!(out, "Or, for a vStats agent, in its vstats-agent.json:")?;
                writeln!(
                    out,
                    "  \"dashboard_url\": \"{}\",",
                    vstats_dashboard_url(&url)
                )?;
                writeln!(out, "  \"server_id\": \"{}\",", server.id)?;
                writeln!(out, "  \"agent_token\": \"{token}\"")?;
            }
        }
        Command::List => print_list(&Registry::load(&state)?, json, out)?,
        Command::Remove(id) => {
            let server = registry::update(&state, |registry| registry.remove(&id))?;
            writeln!(out, "Removed server {} ({}).", server.id, server.name)?;
        }
        Command::RotateToken(id) => {
            let token = registry::update(&state, |registry| registry.rotate_token(&id))?;
            if json {
                writeln!(out, "{}", serde_json::json!({"id": id, "token": token}))?;
            } else {
                writeln!(
                    out,
                    "New token for server {id}; the old one no longer works."
                )?;
                writeln!(out, "It is shown only this once; keep it secret:")?;
                writeln!(out, "  {token}")?;
            }
        }
    }
    Ok(())
}

fn default_url() -> String {
    let host = nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "RELAY-HOST".to_owned());
    format!("wss://{host}:3001")
}

/// The `dashboard_url` a vStats agent needs to reach this relay: the
/// relay's URL as http(s), under `/compat` (the agent adds `/ws/agent`).
fn vstats_dashboard_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    let http = if let Some(rest) = url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        url.to_owned()
    };
    format!("{http}/compat")
}

fn print_list(registry: &Registry, json: bool, out: &mut dyn Write) -> io::Result<()> {
    let servers = registry.servers();
    if json {
        let listed: Vec<_> = servers
            .iter()
            .map(|server| {
                serde_json::json!({
                    "id": server.id,
                    "name": server.name,
                    "location": server.location,
                    "created": server.created,
                })
            })
            .collect();
        return writeln!(out, "{}", serde_json::Value::Array(listed));
    }
    let width = |header: &str, field: fn(&registry::Server) -> &str| {
        servers
            .iter()
            .map(|server| field(server).chars().count())
            .fold(header.len(), usize::max)
    };
    let id_width = width("ID", |server| &server.id);
    let name_width = width("NAME", |server| &server.name);
    let location_width = width("LOCATION", |server| &server.location);
    writeln!(
        out,
        "{:id_width$}  {:name_width$}  {:location_width$}  CREATED",
        "ID", "NAME", "LOCATION"
    )?;
    for server in servers {
        writeln!(
            out,
            "{:id_width$}  {:name_width$}  {:location_width$}  {}",
            server.id, server.name, server.location, server.created
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with_env(args: &[&str], env: Option<&str>) -> (u8, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let args = args.iter().map(OsString::from).collect();
        let code = run(args, env.map(OsString::from), &mut out, &mut err);
        let text = |bytes| String::from_utf8(bytes).unwrap();
        (code, text(out), text(err))
    }

    #[test]
    fn state_comes_from_the_flag_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let from_env = dir.path().join("env.json");
        let from_flag = dir.path().join("flag.json");
        let env = from_env.to_str();

        let (code, _, _) = run_with_env(&["add", "--name", "a", "--json"], env);
        assert_eq!(code, 0);
        let flag = from_flag.to_str().unwrap();
        let (code, _, _) = run_with_env(&["--state", flag, "add", "--name", "b"], env);
        assert_eq!(code, 0);

        let names = |path| {
            let registry = Registry::load(path).unwrap();
            registry
                .servers()
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&from_env), ["a"]);
        assert_eq!(names(&from_flag), ["b"]);
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        for (args, expected) in [
            (&[][..], "missing command"),
            (&["frobnicate"], "unknown command 'frobnicate'"),
            (&["add"], "'add' needs --name NAME"),
            (&["add", "--name"], "missing argument for option '--name'"),
            (&["list", "--name", "x"], "'list' does not take --name"),
            (&["list", "extra"], "unexpected argument 'extra'"),
            (&["remove"], "'remove' needs a server ID"),
            (&["remove", "a", "--json"], "'remove' does not take --json"),
            (&["rotate-token", "a", "b"], "unexpected argument 'b'"),
            (&["list", "--bogus"], "invalid option '--bogus'"),
        ] {
            let (code, out, err) = run_with_env(args, Some("/nonexistent/state.json"));
            assert_eq!(code, 2, "{args:?}");
            assert!(out.is_empty());
            assert!(err.starts_with("vstats-relay: "), "{err}");
            assert!(err.contains(expected), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }

    #[test]
    fn help_wins_wherever_it_is() {
        for args in [&["--help"][..], &["add", "-h"], &["frobnicate", "--help"]] {
            let (code, out, err) = run_with_env(args, None);
            assert_eq!((code, out.as_str(), err.as_str()), (0, USAGE, ""));
        }
    }

    #[test]
    fn add_prints_a_vstats_agents_settings_after_ours() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.json");
        let args = [
            "add",
            "--name",
            "pi",
            "--url",
            "wss://relay.lan:3001/",
            "--state",
            state.to_str().unwrap(),
        ];
        let (code, out, _) = run_with_env(&args, None);
        assert_eq!(code, 0);
        let registry = Registry::load(&state).unwrap();
        let server = &registry.servers()[0];
        let token = out.lines().nth(2).unwrap().trim();
        let tail: Vec<&str> = out.lines().skip(5).collect();
        assert_eq!(
            tail,
            [
                "Or, for a vStats agent, in its vstats-agent.json:",
                "  \"dashboard_url\": \"https://relay.lan:3001/compat\",",
                &format!("  \"server_id\": \"{}\",", server.id),
                &format!("  \"agent_token\": \"{token}\""),
            ]
        );
    }

    #[test]
    fn vstats_dashboard_urls_are_http_under_compat() {
        for (ours, theirs) in [
            ("ws://10.0.0.2:3001", "http://10.0.0.2:3001/compat"),
            ("wss://relay.lan:3001", "https://relay.lan:3001/compat"),
            (
                "https://relay.lan/vstats/",
                "https://relay.lan/vstats/compat",
            ),
        ] {
            assert_eq!(vstats_dashboard_url(ours), theirs);
        }
    }

    #[test]
    fn default_url_names_this_host() {
        let url = default_url();
        assert!(url.starts_with("wss://") && url.ends_with(":3001"), "{url}");
    }
}
