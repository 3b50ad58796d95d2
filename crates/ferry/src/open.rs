//! Opening a session the way `ferry sync` does: the pair's state (its lock taken), both
//! endpoints, and the [`Engine`] over them. `ferry sync`, `ferry resolve` and the daemon's
//! sessions all come through [`open`], so there is one way to set a session up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};

use crate::cli::Place;
use crate::endpoint::local::LocalEndpoint;
use crate::endpoint::renamed::{Names, Renamed};
use crate::endpoint::{Endpoint, IgnoreSpec, Side, WatchEvent};
use crate::engine::{Engine, RunError, Settings, wake_channel};
use crate::output::Printer;
use crate::remote::Location;
use crate::remote::client::RemoteEndpoint;
use crate::state::{Retention, Session, StateError};

/// Why a session could not be opened: one line, and whether it is the user's input (exit 2)
/// or a failure (exit 1).
#[derive(Debug, Clone)]
pub struct OpenFailure {
    pub message: String,
    pub usage: bool,
}

impl OpenFailure {
    pub fn usage(message: String) -> Self {
        OpenFailure {
            message,
            usage: true,
        }
    }

    pub fn failed(message: String) -> Self {
        OpenFailure {
            message,
            usage: false,
        }
    }

    /// An engine that refused to start: bad ignore rules and refusals are the user's input.
    pub fn from_run(e: &RunError) -> Self {
        OpenFailure {
            message: e.to_string(),
            usage: matches!(e, RunError::Ignore(_) | RunError::Refused(_)),
        }
    }
}

pub type Wake = (SyncSender<WatchEvent>, Receiver<WatchEvent>);

/// Opens the pair's session (its lock taken) and both endpoints, and (with `signals`) installs
/// the SIGINT/SIGTERM handler that stops the engine. `resolving` words a locked session for
/// `ferry resolve`.
#[allow(clippy::too_many_arguments)]
pub fn open(
    signals: bool,
    alpha: &Place,
    beta: &Place,
    settings: Settings,
    retention: Retention,
    printer: Printer,
    resolving: bool,
) -> Result<(Engine, Wake, Arc<AtomicBool>), OpenFailure> {
    let (Some(alpha_key), Some(beta_key)) = (alpha.key(), beta.key()) else {
        return Err(OpenFailure::usage(
            "endpoint paths must be valid UTF-8".into(),
        ));
    };
    for (which, place) in [("alpha", alpha), ("beta", beta)] {
        if let Place::Local { root, .. } = place {
            state_dir_outside(which, root).map_err(OpenFailure::usage)?;
        }
    }
    // A file synced under another name is a mapping of its own beside a session of the same
    // two directories (`COPY . /app` and `COPY app.prod.json /app/app.json`): keyed apart.
    let alpha_key = if settings.alpha_names.is_empty() {
        alpha_key
    } else {
        let names: Vec<String> = settings
            .alpha_names
            .iter()
            .map(|(disk, session)| format!("{disk}={session}"))
            .collect();
        format!("{alpha_key}#as:{}", names.join(","))
    };
    let session = match Session::open(&alpha_key, &beta_key) {
        Ok(s) => s,
        Err(StateError::Locked(dir)) if resolving => {
            return Err(OpenFailure::failed(format!(
                "a ferry is syncing this pair right now (state {}); stop it (Ctrl-C lists \
                 its conflicts), then resolve",
                dir.display()
            )));
        }
        Err(e) => return Err(OpenFailure::failed(e.to_string())),
    };
    let spec = settings.ignore_spec(settings.ignores.clone());
    // A run that fails before anything is saved (a bad container, an unreachable host)
    // leaves no trace: an empty session directory would only puzzle whoever looks.
    let dir = session.dir.clone();
    let opened = endpoint(Side::Alpha, alpha, &session, &spec, retention)
        .and_then(|a| endpoint(Side::Beta, beta, &session, &spec, retention).map(|b| (a, b)));
    let opened = opened.and_then(|(a, b)| {
        if settings.alpha_names.is_empty() {
            return Ok((a, b));
        }
        let names = Names::new(&settings.alpha_names).map_err(OpenFailure::usage)?;
        let a = Renamed::new(a, Side::Alpha, names, &spec)
            .map_err(|e| OpenFailure::failed(e.to_string()))?;
        Ok((Box::new(a) as Box<dyn Endpoint>, b))
    });
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
    if signals {
        let stop = stop.clone();
        let tx = tx.clone();
        let handler = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                // A second signal: the user insists. What was applied is on disk; the archive
                // may lag, which the next run's pending-paths journal accounts for.
                std::process::exit(1);
            }
            let _ = tx.try_send(WatchEvent::Stop);
        });
        if let Err(e) = handler {
            return Err(OpenFailure::failed(format!(
                "cannot install the signal handler: {e}"
            )));
        }
    }
    match Engine::new(alpha, beta, session, settings, printer, stop.clone()) {
        Ok(e) => Ok((e, (tx, rx), stop)),
        Err(e) => Err(OpenFailure::from_run(&e)),
    }
}

/// Opens one side: a local directory (created if it is a new beta), or a connection to an
/// agent.
fn endpoint(
    side: Side,
    place: &Place,
    session: &Session,
    spec: &IgnoreSpec,
    retention: Retention,
) -> Result<Box<dyn Endpoint>, OpenFailure> {
    match place {
        Place::Local { root, create } => {
            if *create {
                if let Err(e) = std::fs::create_dir(root) {
                    if e.kind() != std::io::ErrorKind::AlreadyExists {
                        return Err(OpenFailure::failed(format!(
                            "cannot create {} '{}': {e}",
                            side.as_str(),
                            root.display()
                        )));
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
                .map_err(|e| OpenFailure::failed(e.to_string()))
        }
        Place::Remote(loc) => {
            let fail = |usage: bool, message: String| OpenFailure {
                message: name_side(side, loc, &one_line(&message)),
                usage,
            };
            let transport = crate::remote::transport::for_location(loc)
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
pub fn one_line(msg: &str) -> String {
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
    let root = crate::state::state_root().map_err(|e| e.to_string())?;
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
