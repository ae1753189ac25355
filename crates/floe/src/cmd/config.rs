//! `floe config check FILE`: validates a configuration file the way `floe serve`, `floe turn` or
//! `floe signal` would at start, without binding anything. Every problem is printed with the line
//! of the key it is about; a valid file prints the effective configuration (defaults filled in,
//! secrets redacted) as a config file that reads back.
//!
//! A syntax error or a key of the wrong type or name stops the check at the first one (what
//! follows cannot be trusted); a bad value does not: the key is set aside and the check goes on,
//! so one run lists every bad value.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use floe_signal_server::SignalConfig;
use floe_turn_server::config::{ConfigError as TurnError, TurnPlan};
use floe_turn_server::config_check::{KeyPath, REDACTED};

use crate::admin::{AdminArgs, AdminConfig};
use crate::config::FileConfig;

/// Arguments of `floe config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Check a configuration file; print every problem with its line, or the effective
    /// configuration (defaults filled in, secrets redacted).
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The TOML configuration file.
    file: PathBuf,
    /// The command the file is for: its sections and rules are checked.
    #[arg(long, value_enum, default_value = "serve")]
    role: Role,
}

/// Which command's view of the file to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Role {
    /// `floe serve`: every section, TURN and signalling tied together.
    Serve,
    /// `floe turn`: the listening keys and `[turn]`.
    Turn,
    /// `floe signal`: `[signal]`.
    Signal,
}

/// One problem, located.
#[derive(Debug)]
struct Problem {
    /// 1-based line, when the problem is about a key found in the file.
    line: Option<usize>,
    /// `key` or `section.key`.
    key: Option<String>,
    message: String,
}

/// Runs `floe config`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Action::Check(args) = args.action;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading config file {}", args.file.display()))?;
    match check(&text, args.role) {
        Ok(effective) => {
            println!(
                "# {}: valid for `floe {}`. Effective configuration (defaults filled in, secrets redacted):",
                args.file.display(),
                role_name(args.role)
            );
            print!("{effective}");
            Ok(ExitCode::SUCCESS)
        }
        Err(mut problems) => {
            problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
            for p in &problems {
                eprintln!("{}", describe(&args.file, p));
            }
            eprintln!(
                "floe: {} problem{} in {}",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                args.file.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Serve => "serve",
        Role::Turn => "turn",
        Role::Signal => "signal",
    }
}

fn describe(file: &Path, p: &Problem) -> String {
    let place = match p.line {
        Some(line) => format!("{}:{line}", file.display()),
        None => file.display().to_string(),
    };
    match &p.key {
        Some(key) => format!("{place}: {key}: {}", p.message),
        None => format!("{place}: {}", p.message),
    }
}

/// Checks `text` for `role`: the effective configuration, or every problem found.
fn check(text: &str, role: Role) -> Result<String, Vec<Problem>> {
    let lines = LineIndex::new(text);
    // Syntax, unknown keys and wrong types: serde stops at the first, with its position.
    if let Err(e) = toml::from_str::<FileConfig>(text) {
        return Err(vec![Problem {
            line: e.span().map(|s| lines.line_of(s.start)),
            key: None,
            message: e.message().trim().to_owned(),
        }]);
    }
    let spans = KeySpans::parse(text);
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        vec![Problem {
            line: None,
            key: None,
            message: e.message().to_owned(),
        }]
    })?;
    let mut problems = Vec::new();
    // Each round finds at most one problem per part; its key is set aside (back to its
    // default) and the check runs again, so independent problems all show up. Bounded: every
    // round removes a key or stops.
    for _ in 0..64 {
        let file: FileConfig = match toml::Value::Table(table.clone()).try_into() {
            Ok(f) => f,
            Err(e) => {
                problems.push(Problem {
                    line: None,
                    key: None,
                    message: e.to_string(),
                });
                break;
            }
        };
        match effective(file, role) {
            Ok(out) if problems.is_empty() => return Ok(out),
            Ok(_) => break,
            Err(found) => {
                let mut removed = false;
                for (path, message) in found {
                    let line = path.as_ref().and_then(|p| spans.line(p, &lines));
                    let key = path.as_ref().map(|p| p.join("."));
                    if let Some(p) = &path {
                        removed |= remove(&mut table, p);
                    }
                    problems.push(Problem { line, key, message });
                }
                if !removed {
                    break;
                }
            }
        }
    }
    Err(problems)
}

/// The effective configuration printed for a valid file, or this round's problems (key path,
/// message).
type Found = Vec<(Option<Vec<String>>, String)>;

fn effective(file: FileConfig, role: Role) -> Result<String, Found> {
    let listen = file.listen();
    let mut found: Found = Vec::new();
    let turn = |file: &FileConfig, generate| -> Result<TurnPlan, Found> {
        file.turn
            .shell_config(&listen, generate)
            .map_err(|e| vec![turn_problem(&e)])
    };
    let signal_check = |signal: &SignalConfig| -> Result<(), Found> {
        signal
            .hub_config()
            .map(|_| ())
            .map_err(|e| vec![(e.key().map(|k| path(&["signal", k])), e.to_string())])
    };
    let mut out = toml::Table::new();
    let log = file
        .log
        .as_deref()
        .unwrap_or(crate::logging::DEFAULT_FILTER);
    match crate::logging::parse(log) {
        Ok(_) => {
            out.insert("log".into(), log.into());
        }
        Err(e) => found.push((Some(path(&["log"])), format!("{e:#}"))),
    }
    // Every command runs the operations listener.
    match AdminArgs::default().resolve(file.admin.clone()) {
        Ok(admin) => {
            out.insert("admin".into(), admin_table(&admin));
        }
        Err(e) => found.push((admin_key(&e), format!("{e:#}"))),
    }
    match role {
        Role::Signal => {
            signal_check(&file.signal).map_err(|e| [found.clone(), e].concat())?;
            if !found.is_empty() {
                return Err(found);
            }
            out.insert("signal".into(), value(&file.signal.redacted()));
        }
        Role::Turn => {
            let plan = turn(&file, false).map_err(|e| [found.clone(), e].concat())?;
            if !found.is_empty() {
                return Err(found);
            }
            put_listen(&mut out, &plan);
            out.insert("turn".into(), value(&file.turn.effective(&plan)));
        }
        Role::Serve => {
            // The TURN and signalling parts are checked independently, so that a problem in
            // one does not hide those of the other.
            let turn_result = turn(&file, true);
            if let Err(e) = signal_check(&file.signal) {
                found.extend(e);
            }
            if let Err(e) = &turn_result {
                found.extend(e.iter().cloned());
            }
            if !found.is_empty() {
                return Err(found);
            }
            let section = file.turn.clone();
            let stun = file.stun.clone();
            let plan = file
                .serve_plan(&listen)
                .map_err(|e| vec![(None, format!("{e:#}"))])?;
            put_listen(&mut out, &plan.turn);
            let binding = &plan.turn.shell.turn.binding;
            let mut stun_out = stun;
            stun_out.software = Some(binding.software.clone().unwrap_or_default());
            stun_out.max_padding = Some(binding.max_padding);
            out.insert("stun".into(), value(&stun_out));
            out.insert("turn".into(), value(&section.effective(&plan.turn)));
            out.insert("signal".into(), value(&plan.signal.redacted()));
        }
    }
    toml::to_string(&out).map_err(|e| vec![(None, format!("printing the configuration: {e}"))])
}

/// The `[admin]` section as it runs (the token redacted).
fn admin_table(admin: &AdminConfig) -> toml::Value {
    let mut t = toml::Table::new();
    let listen = admin.listen.map_or("off".to_owned(), |a| a.to_string());
    t.insert("listen".into(), listen.into());
    if admin.token.is_some() {
        t.insert("token".into(), REDACTED.into());
    }
    t.insert("ready_max_load".into(), admin.max_load.into());
    let int = |n: u64| toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    t.insert("ready_max_bps".into(), int(admin.max_bps));
    t.insert(
        "drain_timeout_secs".into(),
        int(admin.drain_timeout.as_secs()),
    );
    t.insert(
        "term_drain_timeout_secs".into(),
        int(admin.term_drain_timeout.as_secs()),
    );
    t.insert(
        "alternate_server".into(),
        toml::Value::Array(
            admin
                .alternates
                .iter()
                .map(|a| a.to_string().into())
                .collect(),
        ),
    );
    toml::Value::Table(t)
}

/// The `[admin]` key an error of [`AdminArgs::resolve`] is about (its messages name the flag).
fn admin_key(e: &anyhow::Error) -> Option<Vec<String>> {
    let text = format!("{e:#}");
    let key = if text.contains("--admin:") {
        "listen"
    } else if text.contains("token") {
        "token"
    } else if text.contains("--ready-max-load") {
        "ready_max_load"
    } else {
        return None;
    };
    Some(path(&["admin", key]))
}

/// The top-level listening keys as they run.
fn put_listen(out: &mut toml::Table, plan: &TurnPlan) {
    let strings = |v: Vec<String>| toml::Value::Array(v.into_iter().map(Into::into).collect());
    let shell = &plan.shell;
    out.insert(
        "listen".into(),
        strings(shell.listen.iter().map(ToString::to_string).collect()),
    );
    out.insert(
        "alternate_ip".into(),
        strings(
            shell
                .alternate_ips
                .iter()
                .map(ToString::to_string)
                .collect(),
        ),
    );
    out.insert(
        "workers".into(),
        toml::Value::Integer(i64::try_from(shell.workers).unwrap_or(i64::MAX)),
    );
}

fn value<T: serde::Serialize>(v: &T) -> toml::Value {
    // Serialising a plain struct of strings, numbers and lists to a TOML value cannot fail;
    // an empty table stands in should it ever.
    toml::Value::try_from(v).unwrap_or_else(|_| toml::Value::Table(toml::Table::new()))
}

fn path(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

fn turn_problem(e: &TurnError) -> (Option<Vec<String>>, String) {
    let key = e.key().map(|k| match k {
        KeyPath::Top(k) => path(&[k]),
        KeyPath::Turn(k) => path(&["turn", k]),
    });
    (key, e.to_string())
}

/// Removes the key at `path` from `table`; whether it was there.
fn remove(table: &mut toml::Table, path: &[String]) -> bool {
    match path {
        [] => false,
        [key] => table.remove(key).is_some(),
        [section, rest @ ..] => match table.get_mut(section) {
            Some(toml::Value::Table(t)) => remove(t, rest),
            _ => false,
        },
    }
}

/// Byte offset to 1-based line.
struct LineIndex(Vec<usize>);

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex(starts)
    }

    fn line_of(&self, offset: usize) -> usize {
        self.0.partition_point(|&start| start <= offset)
    }
}

/// Where each key of the file is (from toml_edit's spans); `None` should toml_edit refuse a text
/// serde accepted (`check` parses with serde first): the problems then print without lines.
struct KeySpans(Option<toml_edit::ImDocument<String>>);

impl KeySpans {
    fn parse(text: &str) -> KeySpans {
        KeySpans(toml_edit::ImDocument::parse(text.to_owned()).ok())
    }

    fn span(&self, path: &[String]) -> Option<Range<usize>> {
        let mut table: &dyn toml_edit::TableLike = self.0.as_ref()?.as_table();
        let (last, sections) = path.split_last()?;
        for s in sections {
            table = table.get(s)?.as_table_like()?;
        }
        let (key, _) = table.get_key_value(last)?;
        key.span()
    }

    fn line(&self, path: &[String], lines: &LineIndex) -> Option<usize> {
        self.span(path).map(|s| lines.line_of(s.start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str, role: Role) -> Vec<String> {
        check(text, role)
            .expect_err("problems expected")
            .iter()
            .map(|p| describe(Path::new("f.toml"), p))
            .collect()
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let p = problems("[turn]\nrealm = \"x\"\nmax_bps = \n", Role::Serve);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("f.toml:3: "), "{p:?}");
    }

    #[test]
    fn an_unknown_key_names_its_line() {
        let p = problems("[turn]\n\nrelay_portz = \"1-2\"\n", Role::Serve);
        assert!(
            p[0].starts_with("f.toml:3: ") && p[0].contains("relay_portz"),
            "{p:?}"
        );
    }

    #[test]
    fn every_bad_value_is_listed_with_its_line() {
        let text = "listen = [\"127.0.0.1:3478\"]\n\
                    [turn]\n\
                    users = [\"alice:pw\"]\n\
                    relay_ports = \"9000-10\"\n\
                    allow_peers = [\"10.0.0.1/8\"]\n\
                    auth_rate = 0\n\
                    [signal]\n\
                    max_rooms = 0\n\
                    redis_url = \"not a url\"\n\
                    [admin]\n\
                    ready_max_load = 2.0\n";
        let p = problems(text, Role::Serve);
        let want = [
            "f.toml:11: admin.ready_max_load:",
            "f.toml:4: turn.relay_ports:",
            "f.toml:5: turn.allow_peers:",
            "f.toml:6: turn.auth_rate:",
            "f.toml:8: signal.max_rooms:",
            "f.toml:9: signal.redis_url:",
        ];
        for w in want {
            assert!(
                p.iter().any(|l| l.starts_with(w)),
                "{w} missing from {p:#?}"
            );
        }
        assert_eq!(p.len(), want.len(), "{p:#?}");
        // The error names the problem, never a secret value.
        assert!(p.iter().all(|l| !l.contains("alice:pw")), "{p:#?}");
    }

    #[test]
    fn a_valid_file_prints_an_effective_configuration_that_reads_back() {
        let text = "listen = [\"127.0.0.1:3478\"]\n\
                    [turn]\n\
                    users = [\"alice:hunter2\"]\n\
                    auth_secrets = [\"rest-s3cret\"]\n\
                    [signal]\n\
                    jwt_secret = \"jwt-s3cret\"\n\
                    [admin]\n\
                    token = \"admin-s3cret\"\n";
        let out = check(text, Role::Serve).unwrap();
        assert!(out.contains("token = \"<redacted>\""), "{out}");
        assert!(out.contains("listen = \"127.0.0.1:9642\""), "{out}");
        assert!(!out.contains("hunter2") && !out.contains("s3cret"), "{out}");
        assert!(out.contains("relay_ports = \"49152-65535\""), "{out}");
        assert!(out.contains("max_rooms = "), "{out}");
        assert!(out.contains("workers = 0"), "{out}");
        // The output is a config file: checked again, it is valid and prints the same.
        assert_eq!(check(&out, Role::Serve).unwrap(), out);
    }

    #[test]
    fn roles_check_only_their_sections() {
        // `floe turn` needs credentials; `floe serve` generates a secret without them.
        let p = problems("[turn]\nrealm = \"x\"\n", Role::Turn);
        assert!(p[0].contains("turn.users"), "{p:?}");
        assert!(check("[turn]\nrealm = \"x\"\n", Role::Serve).is_ok());
        // `floe signal` does not look at [turn].
        let out = check("[turn]\nrelay_ports = \"9-1\"\n", Role::Signal).unwrap();
        assert!(out.contains("[signal]") && !out.contains("[turn]"), "{out}");
    }
}
