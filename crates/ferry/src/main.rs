use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use ferry::cli::{Cli, Command, SyncArgs};
use ferry::endpoint::local::LocalEndpoint;
use ferry::endpoint::{IgnoreSpec, Side, WatchEvent};
use ferry::engine::{Engine, Finish, RunError, wake_channel};
use ferry::output::Printer;
use ferry::state::Session;

/// The design's exit codes.
#[derive(Clone, Copy)]
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
    }
}

fn sync(args: SyncArgs) -> Exit {
    let (Some(alpha_s), Some(beta_s)) = (args.alpha.to_str(), args.beta.to_str()) else {
        eprintln!("ferry: endpoint paths must be valid UTF-8");
        return Exit::Usage;
    };
    if let Err(e) = state_dir_outside(&args.alpha, &args.beta) {
        eprintln!("ferry: {e}");
        return Exit::Usage;
    }
    let session = match Session::open(alpha_s, beta_s) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferry: {e}");
            return Exit::Failed;
        }
    };
    if args.create_beta {
        if let Err(e) = std::fs::create_dir(&args.beta) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                eprintln!("ferry: cannot create beta '{}': {e}", args.beta.display());
                return Exit::Failed;
            }
        }
    }
    let spec = IgnoreSpec {
        vcs: args.settings.ignore_vcs,
        patterns: args.settings.ignores.clone(),
    };
    let endpoints = LocalEndpoint::new(Side::Alpha, args.alpha.clone(), &session.dir, &spec)
        .and_then(|a| {
            Ok((
                a,
                LocalEndpoint::new(Side::Beta, args.beta.clone(), &session.dir, &spec)?,
            ))
        });
    let (alpha, beta) = match endpoints {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ferry: {e}");
            return Exit::Failed;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = wake_channel();
    {
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
            return Exit::Failed;
        }
    }
    let printer = Printer::new(args.json);
    let mut engine = match Engine::new(
        Box::new(alpha),
        Box::new(beta),
        session,
        args.settings,
        printer,
        stop,
    ) {
        Ok(e) => e,
        Err(e) => return report(e),
    };
    let code = match engine.run(Some((tx, rx))) {
        Ok(Finish::InSync) => Exit::Ok,
        Ok(Finish::Conflicts) => Exit::Conflicts,
        Ok(Finish::Errors) => Exit::Failed,
        Err(e) => report(e),
    };
    // The process ends right after: freeing the session's trees one by one would only cost time.
    std::mem::forget(engine);
    code
}

/// clap's reason on one line: the text before its usage block, lines joined.
fn one_line(msg: &str) -> String {
    msg.lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches("error: ")
        .to_owned()
}

/// Refuses a state directory inside a root: it would be synced (backups included) and every
/// archive save would trigger another cycle.
fn state_dir_outside(alpha: &std::path::Path, beta: &std::path::Path) -> Result<(), String> {
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
    for (which, r) in [("alpha", alpha), ("beta", beta)] {
        if canon.starts_with(r) {
            return Err(format!(
                "the state directory {} is inside {which} ({}); set XDG_STATE_HOME to a directory outside both",
                canon.display(),
                r.display()
            ));
        }
    }
    Ok(())
}

fn report(e: RunError) -> Exit {
    eprintln!("ferry: {e}");
    match e {
        RunError::Ignore(_) => Exit::Usage,
        _ => Exit::Failed,
    }
}
