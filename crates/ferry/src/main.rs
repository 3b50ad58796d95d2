use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

mod up;

use clap::Parser;
use std::io::{IsTerminal, Write};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

use ferry::cli::{Cli, Command, Keep, Place, ResolveArgs, SyncArgs};
use ferry::endpoint::local::LocalEndpoint;
use ferry::endpoint::{Endpoint, IgnoreSpec, Side, WatchEvent};
use ferry::engine::{Engine, Finish, Resolving, RunError, Settings, wake_channel};
use ferry::output::Printer;
use ferry::remote::Location;
use ferry::remote::client::RemoteEndpoint;
use ferry::state::{Retention, Session, StateError};
use ferry_core::Mode;

/// The design's exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    Conflicts = 3,
}

/// Scans, reconciliation and the archive codec recurse once per directory level; a legal path
/// can be 2,000 levels deep. Virtual memory only: untouched stack costs nothing.
const STACK: usize = 256 << 20;

fn main() -> ! {
    let code = std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(run)
        .map_err(|e| eprintln!("ferry: cannot start: {e}"))
        .and_then(|h| {
            h.join()
                .map_err(|_| eprintln!("ferry: internal error (panic)"))
        })
        .unwrap_or(Exit::Failed);
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // Exit without tearing down the session's large trees: the OS reclaims them faster.
    std::process::exit(code as i32)
}

fn run() -> Exit {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    return Exit::Ok;
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    eprintln!(
                        "ferry: missing command (for example 'ferry sync ALPHA BETA'; see 'ferry --help')"
                    );
                    return Exit::Usage;
                }
                _ => {}
            }
            eprintln!("ferry: {} (see 'ferry --help')", one_line(&e.to_string()));
            return Exit::Usage;
        }
    };
    match cli.command {
        Command::Sync(flags) => match flags.check() {
            Ok(args) => sync(args),
            Err(e) => {
                eprintln!("ferry: {e}");
                Exit::Usage
            }
        },
        Command::Resolve(flags) => match flags.check() {
            Ok(args) => resolve(args),
            Err(e) => {
                eprintln!("ferry: {e}");
                Exit::Usage
            }
        },
        Command::Up(flags) => up::run(flags),
        Command::Agent => match ferry::remote::agent::run() {
            0 => Exit::Ok,
            _ => Exit::Failed,
        },
    }
}

fn sync(args: SyncArgs) -> Exit {
    let mut printer = Printer::new(args.json);
    printer.set_verbose(args.verbose);
    let json = args.json;
    let opened = open(
        &args.alpha,
        &args.beta,
        args.settings,
        args.retention,
        printer,
        false,
        true,
    );
    let (mut engine, wake, stop) = match opened {
        Ok(o) => o,
        Err(code) => return code,
    };
    // A first sync that would merge into alpha asks the person at the terminal, if there is one.
    if !json && std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        engine.set_confirm(Box::new(move || ask("merge both ways? [y/N] ", &stop)));
    }
    let code = match engine.run(Some(wake)) {
        Ok(f) => finish_code(f),
        Err(e) => report(e),
    };
    // The process ends right after: freeing the session's trees one by one would only cost time.
    std::mem::forget(engine);
    code
}

fn resolve(args: ResolveArgs) -> Exit {
    let mut printer = Printer::new(args.json);
    printer.set_verbose(args.verbose);
    let settings = Settings {
        mode: Mode::TwoWaySafe,
        ignore_vcs: true,
        default_ignores: true,
        ignores: Vec::new(),
        once: true,
        accept_wipe: false,
        reset: false,
        debounce: Duration::ZERO,
        rescan_interval: None,
        yes: true,
        meta: Default::default(),
    };
    let opened = open(
        &args.alpha,
        &args.beta,
        settings,
        Retention::default(),
        printer,
        true,
        true,
    );
    let (mut engine, _, _) = match opened {
        Ok(o) => o,
        Err(code) => return code,
    };
    let keep = match args.keep {
        Keep::Alpha => Side::Alpha,
        Keep::Beta => Side::Beta,
    };
    let code = match engine.resolve(Resolving {
        paths: args.paths,
        keep,
    }) {
        Ok(f) => finish_code(f),
        Err(e) => report(e),
    };
    std::mem::forget(engine);
    code
}

type Wake = (SyncSender<WatchEvent>, Receiver<WatchEvent>);

/// Opens the pair's session (its lock taken) and both endpoints, and installs the signal
/// handler. Failures are reported here; `Err` is the exit code.
fn open(
    alpha: &Place,
    beta: &Place,
    settings: Settings,
    retention: Retention,
    printer: Printer,
    resolving: bool,
    signals: bool,
) -> Result<(Engine, Wake, Arc<AtomicBool>), Exit> {
    // Under `ferry up` several sessions share the terminal: their errors name the service.
    let tag = printer
        .service()
        .map_or_else(String::new, |s| format!("{s} | "));
    let (Some(alpha_key), Some(beta_key)) = (alpha.key(), beta.key()) else {
        eprintln!("ferry: endpoint paths must be valid UTF-8");
        return Err(Exit::Usage);
    };
    for (which, place) in [("alpha", alpha), ("beta", beta)] {
        if let Place::Local { root, .. } = place {
            if let Err(e) = state_dir_outside(which, root) {
                eprintln!("ferry: {e}");
                return Err(Exit::Usage);
            }
        }
    }
    let session = match Session::open(&alpha_key, &beta_key) {
        Ok(s) => s,
        Err(StateError::Locked(dir)) if resolving => {
            eprintln!(
                "ferry: a ferry is syncing this pair right now (state {}); stop it (Ctrl-C lists \
                 its conflicts), then resolve",
                dir.display()
            );
            return Err(Exit::Failed);
        }
        Err(e) => {
            eprintln!("ferry: {e}");
            return Err(Exit::Failed);
        }
    };
    let spec = IgnoreSpec {
        vcs: settings.ignore_vcs,
        editor_temps: settings.default_ignores,
        patterns: settings.ignores.clone(),
        meta: settings.meta,
    };
    // A run that fails before anything is saved (a bad container, an unreachable host)
    // leaves no trace: an empty session directory would only puzzle whoever looks.
    let dir = session.dir.clone();
    let opened = endpoint(Side::Alpha, alpha, &session, &spec, retention, &tag)
        .and_then(|a| endpoint(Side::Beta, beta, &session, &spec, retention, &tag).map(|b| (a, b)));
    let (alpha, beta) = match opened {
        Ok(ab) => ab,
        Err(code) => {
            drop(session);
            remove_if_unused(&dir);
            return Err(code);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = wake_channel();
    // `ferry up` handles signals itself, for all its sessions.
    if signals {
        let stop = stop.clone();
        let tx = tx.clone();
        let handler = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                // A second signal: the user insists. What was applied is on disk; the archive
                // may lag, which the next run's pending-paths journal accounts for.
                std::process::exit(Exit::Failed as i32);
            }
            let _ = tx.try_send(WatchEvent::Stop);
        });
        if let Err(e) = handler {
            eprintln!("ferry: cannot install the signal handler: {e}");
            return Err(Exit::Failed);
        }
    }
    match Engine::new(alpha, beta, session, settings, printer, stop.clone()) {
        Ok(e) => Ok((e, (tx, rx), stop)),
        Err(e) => Err(report_as(&tag, e)),
    }
}

fn finish_code(f: Finish) -> Exit {
    match f {
        Finish::InSync => Exit::Ok,
        Finish::Conflicts => Exit::Conflicts,
        Finish::Errors => Exit::Failed,
    }
}

/// Asks `question` on the terminal; true for "y" or "yes". Reading happens on a thread, so a
/// signal (`stop`) counts as "no" instead of waiting for a line.
fn ask(question: &str, stop: &AtomicBool) -> bool {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = tx.send(std::io::stdin().read_line(&mut line).map(|_| line));
    });
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(line)) => {
                let answer = line.trim().to_ascii_lowercase();
                return answer == "y" || answer == "yes";
            }
            Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => return false,
            Err(RecvTimeoutError::Timeout) => {
                if stop.load(Ordering::SeqCst) {
                    eprintln!();
                    return false;
                }
            }
        }
    }
}

/// Opens one side: a local directory (created if it is a new beta), or a connection to an
/// agent. Failures are reported here; `Err` is the exit code.
fn endpoint(
    side: Side,
    place: &Place,
    session: &Session,
    spec: &IgnoreSpec,
    retention: Retention,
    tag: &str,
) -> Result<Box<dyn Endpoint>, Exit> {
    match place {
        Place::Local { root, create } => {
            if *create {
                if let Err(e) = std::fs::create_dir(root) {
                    if e.kind() != std::io::ErrorKind::AlreadyExists {
                        eprintln!(
                            "{tag}ferry: cannot create {} '{}': {e}",
                            side.as_str(),
                            root.display()
                        );
                        return Err(Exit::Failed);
                    }
                }
            }
            // The session's per-side files follow the order the pair was first named in.
            let stored = session.stored_side(side);
            LocalEndpoint::new_stored_as(side, stored, root.clone(), &session.dir, spec)
                .map(|mut e| {
                    e.set_retention(retention);
                    Box::new(e) as Box<dyn Endpoint>
                })
                .map_err(|e| {
                    eprintln!("{tag}ferry: {e}");
                    Exit::Failed
                })
        }
        Place::Remote(loc) => {
            let fail = |usage: bool, message: String| {
                eprintln!("{tag}ferry: {}", name_side(side, loc, &one_line(&message)));
                if usage { Exit::Usage } else { Exit::Failed }
            };
            let transport = ferry::remote::transport::for_location(loc)
                .map_err(|e| fail(e.usage, format!("{}: {}", loc.url(), e.message)))?;
            let path = match loc {
                Location::Docker { path, .. }
                | Location::Ssh { path, .. }
                | Location::K8s { path, .. } => path.clone(),
                Location::Local(p) => p.clone(),
            };
            let key = session
                .dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("0")
                .to_owned();
            RemoteEndpoint::open(
                side,
                loc.url(),
                transport,
                path,
                side == Side::Beta,
                key,
                spec,
            )
            .map_err(|e| fail(e.usage, e.message))
            .and_then(|mut e| match e.set_retention(retention) {
                Ok(()) => Ok(Box::new(e) as Box<dyn Endpoint>),
                Err(err) => Err(fail(false, err.to_string())),
            })
        }
    }
}

/// Removes a session directory holding nothing but its lock, the record of its sides' order
/// (`pair`) and empty directories.
fn remove_if_unused(dir: &std::path::Path) {
    fn only_empty_dirs(d: &std::path::Path, top: bool) -> bool {
        let Ok(entries) = std::fs::read_dir(d) else {
            return false;
        };
        entries.into_iter().all(|e| {
            let Ok(e) = e else { return false };
            match e.file_type() {
                Ok(t) if t.is_dir() => only_empty_dirs(&e.path(), false),
                Ok(t) if t.is_file() => top && (e.file_name() == "lock" || e.file_name() == "pair"),
                _ => false,
            }
        })
    }
    if only_empty_dirs(dir, true) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Prefixes an endpoint's message with its side, unless the message names the side itself
/// (the agent's "beta '/srv/app' does not exist": there the path becomes the whole URL).
fn name_side(side: Side, loc: &Location, message: &str) -> String {
    let side = side.as_str();
    if message.starts_with(&format!("{side}:")) {
        return message.to_owned();
    }
    let path = match loc {
        Location::Docker { path, .. }
        | Location::Ssh { path, .. }
        | Location::K8s { path, .. }
        | Location::Local(path) => path,
    };
    let named = format!("{side} '{path}'");
    if message.contains(&named) {
        return message.replacen(&named, &format!("{side} '{}'", loc.url()), 1);
    }
    format!("{side}: {message}")
}

/// clap's reason on one line: the text before its usage block, lines joined.
/// clap's message on one line; its tips (`a similar subcommand exists: 'sync'`) kept in
/// parentheses, as they are the fix.
fn one_line(msg: &str) -> String {
    msg.lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.strip_prefix("tip: ") {
            Some(tip) => format!("({tip})"),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches("error: ")
        .to_owned()
}

/// Refuses a state directory inside a root: it would be synced (backups included) and every
/// archive save would trigger another cycle.
fn state_dir_outside(which: &str, r: &std::path::Path) -> Result<(), String> {
    let root = ferry::state::state_root().map_err(|e| e.to_string())?;
    // Canonicalise the part that exists (the rest is created later, below it).
    let mut existing = root.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut canon = existing.canonicalize().unwrap_or(existing);
    canon.extend(rest.iter().rev());
    if canon.starts_with(r) {
        return Err(format!(
            "the state directory {} is inside {which} ({}); set XDG_STATE_HOME to a directory outside both",
            canon.display(),
            r.display()
        ));
    }
    Ok(())
}

fn report(e: RunError) -> Exit {
    report_as("", e)
}

/// Reports `e` (prefixed by `tag`, "web | " under `ferry up`); the exit code.
fn report_as(tag: &str, e: RunError) -> Exit {
    eprintln!("{tag}ferry: {e}");
    match e {
        RunError::Ignore(_) | RunError::Refused(_) => Exit::Usage,
        _ => Exit::Failed,
    }
}
