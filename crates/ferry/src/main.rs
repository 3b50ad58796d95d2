use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

mod up;

use clap::Parser;
use std::io::{IsTerminal, Write};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use ferry::cli::{
    Cli, Command, CreateFlags, DaemonOp, FlushFlags, Keep, Place, Resolve, ResolveArgs, SyncArgs,
    Target,
};
use ferry::endpoint::Side;
use ferry::engine::{Engine, Finish, Resolving, RunError, Settings};
use ferry::open::{OpenFailure, Wake, one_line};
use ferry::output::Printer;
use ferry::state::Retention;
use serde_json::{Value, json};

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
            Ok(Resolve::Pair(args)) => resolve(*args),
            Ok(Resolve::Session {
                name,
                paths,
                keep,
                json,
            }) => resolve_session(name, paths, keep, json),
            Ok(Resolve::Selected {
                selector,
                paths,
                keep,
                json,
            }) => match select(&Target {
                name: None,
                label_selector: Some(selector),
                json,
            }) {
                Ok(names) => worst(
                    names
                        .into_iter()
                        .map(|n| resolve_session(n, paths.clone(), keep, json)),
                ),
                Err(code) => code,
            },
            Err(e) => {
                eprintln!("ferry: {e}");
                Exit::Usage
            }
        },
        Command::Daemon { op } => daemon(op),
        Command::Mcp => match ferry::mcp::run() {
            Ok(()) => Exit::Ok,
            Err(e) => {
                eprintln!("ferry mcp: {e}");
                Exit::Failed
            }
        },
        Command::Create(flags) => create(flags),
        Command::List { json } => list(json),
        Command::Status(t) => status(t),
        Command::Monitor {
            name,
            label_selector,
            json,
        } => monitor(name, label_selector, json),
        Command::Conflicts(t) => conflicts(t),
        Command::Pause(t) => act("pause", t),
        Command::Resume(t) => act("resume", t),
        Command::Terminate(t) => act("terminate", t),
        Command::Flush(f) => flush(f),
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
    let (mut settings, retention) = match args.options.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ferry: {e}");
            return Exit::Usage;
        }
    };
    settings.once = true;
    settings.yes = true;
    settings.debounce = Duration::ZERO;
    settings.rescan_interval = None;
    let opened = open(
        &args.alpha,
        &args.beta,
        settings,
        retention,
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

/// `ferry::open::open`, its failure reported (named with the compose service under `ferry up`:
/// "web | ferry: ..."). `signals`: install the Ctrl-C handler (`ferry up` has one for all its
/// sessions).
#[allow(clippy::too_many_arguments)]
fn open(
    alpha: &Place,
    beta: &Place,
    settings: Settings,
    retention: Retention,
    printer: Printer,
    resolving: bool,
    signals: bool,
) -> Result<(Engine, Wake, Arc<AtomicBool>), Exit> {
    let tag = printer
        .service()
        .map_or_else(String::new, |s| format!("{s} | "));
    ferry::open::open(
        signals, alpha, beta, settings, retention, printer, resolving,
    )
    .map_err(|f| report_failure(&tag, f))
}

fn fail(f: OpenFailure) -> Exit {
    report_failure("", f)
}

fn report_failure(tag: &str, f: OpenFailure) -> Exit {
    eprintln!("{tag}ferry: {}", f.message);
    if f.usage { Exit::Usage } else { Exit::Failed }
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

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn daemon(op: DaemonOp) -> Exit {
    match op {
        DaemonOp::Run => match ferry::daemon::run() {
            Ok(()) => Exit::Ok,
            Err(e) => {
                eprintln!("ferry: {e}");
                Exit::Failed
            }
        },
        DaemonOp::Start { json } => match ferry::sessions::start() {
            Ok(v) => {
                let pid = v.get("pid").and_then(Value::as_u64).unwrap_or(0);
                if json {
                    println!("{}", json!({"running": true, "pid": pid}));
                } else {
                    println!("ferry daemon running (pid {pid})");
                }
                Exit::Ok
            }
            Err(f) => fail(f),
        },
        DaemonOp::Stop { json } => match ferry::sessions::request(json!({"op": "stop"}), false) {
            Ok(stopped) => {
                if json {
                    println!("{}", json!({"stopped": stopped.is_some()}));
                } else if stopped.is_some() {
                    println!("ferry daemon stopped (its sessions resume at the next start)");
                } else {
                    println!("no ferry daemon is running");
                }
                Exit::Ok
            }
            Err(f) => fail(f),
        },
        DaemonOp::Status { json } => match ferry::sessions::request(json!({"op": "status"}), false)
        {
            Ok(Some(v)) => {
                if json {
                    println!("{v}");
                } else {
                    println!(
                        "ferry daemon running: pid {}, {} sessions, socket {}",
                        v.get("pid").and_then(Value::as_u64).unwrap_or(0),
                        v.get("sessions").and_then(Value::as_u64).unwrap_or(0),
                        v.get("socket").and_then(Value::as_str).unwrap_or("?")
                    );
                }
                Exit::Ok
            }
            Ok(None) => {
                if json {
                    println!("{}", json!({"running": false}));
                } else {
                    println!("no ferry daemon is running");
                }
                Exit::Failed
            }
            Err(f) => fail(f),
        },
    }
}

/// Sends `req`, starting the daemon if needed.
fn ask_daemon(req: Value) -> Result<Value, Exit> {
    match ferry::sessions::request(req, true) {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(fail(OpenFailure::failed(
            "the ferry daemon did not start".into(),
        ))),
        Err(f) => Err(fail(f)),
    }
}

fn create(flags: CreateFlags) -> Exit {
    let usage = |e: String| {
        eprintln!("ferry: {e}");
        Exit::Usage
    };
    let spec = match ferry::sessions::spec(
        &flags.name,
        &flags.alpha,
        &flags.beta,
        flags.options,
        &flags.labels,
    ) {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    match ask_daemon(json!({"op": "create", "spec": spec})) {
        Ok(v) => {
            if flags.json {
                println!("{}", v.get("session").unwrap_or(&Value::Null));
            } else {
                println!("created session '{}'", flags.name);
            }
            Exit::Ok
        }
        Err(code) => code,
    }
}

fn list(json: bool) -> Exit {
    match ask_daemon(json!({"op": "list"})) {
        Ok(v) => {
            let empty = Vec::new();
            let sessions = v
                .get("sessions")
                .and_then(Value::as_array)
                .unwrap_or(&empty);
            if json {
                println!("{}", json!({ "sessions": sessions }));
            } else {
                println!("{}", ferry::sessions::table(sessions, now()));
            }
            Exit::Ok
        }
        Err(code) => code,
    }
}

/// pause, resume, terminate: by NAME or --label-selector.
fn act(op: &str, t: Target) -> Exit {
    let mut req = json!({ "op": op });
    if let Some(n) = &t.name {
        req["name"] = n.as_str().into();
    }
    if let Some(s) = &t.label_selector {
        req["selector"] = s.as_str().into();
    }
    match ask_daemon(req) {
        Ok(v) => {
            let empty = Vec::new();
            let done = v
                .get("sessions")
                .and_then(Value::as_array)
                .unwrap_or(&empty);
            if t.json {
                println!("{}", json!({ "sessions": done }));
                return Exit::Ok;
            }
            for s in done {
                let name = s.get("name").and_then(Value::as_str).unwrap_or("?");
                println!(
                    "{name}: {}",
                    s.get("state").and_then(Value::as_str).unwrap_or("?")
                );
            }
            Exit::Ok
        }
        Err(code) => code,
    }
}

/// The sessions a NAME or a `--label-selector` names (the daemon's own rule, `targets`).
fn select(t: &Target) -> Result<Vec<String>, Exit> {
    let mut req = json!({ "op": "select" });
    if let Some(n) = &t.name {
        req["name"] = n.as_str().into();
    }
    if let Some(s) = &t.label_selector {
        req["selector"] = s.as_str().into();
    }
    let v = ask_daemon(req)?;
    Ok(v.get("names")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default())
}

/// The exit code of several commands: a failure first, then conflicts.
fn worst(codes: impl Iterator<Item = Exit>) -> Exit {
    codes
        .max_by_key(|c| match c {
            Exit::Failed => 3,
            Exit::Usage => 2,
            Exit::Conflicts => 1,
            _ => 0,
        })
        .unwrap_or(Exit::Ok)
}

/// `ferry status NAME` (one object), or `--label-selector` (`{"sessions": [...]}`).
fn status(t: Target) -> Exit {
    let names = match select(&t) {
        Ok(n) => n,
        Err(code) => return code,
    };
    let mut all = Vec::new();
    for name in names {
        match ask_daemon(json!({"op": "status", "name": name})) {
            Ok(v) => all.push(v.get("session").cloned().unwrap_or(Value::Null)),
            Err(code) => return code,
        }
    }
    if t.json {
        match (&t.name, all.first()) {
            (Some(_), Some(s)) => println!("{s}"),
            _ => println!("{}", json!({ "sessions": all })),
        }
    } else {
        for s in &all {
            println!("{}", ferry::sessions::describe(s, now()));
        }
    }
    Exit::Ok
}

/// `ferry conflicts NAME` (or `--label-selector`): exit code 3 when there are any.
fn conflicts(t: Target) -> Exit {
    let names = match select(&t) {
        Ok(n) => n,
        Err(code) => return code,
    };
    let mut all = Vec::new();
    let mut any = false;
    for name in names {
        let v = match ask_daemon(json!({"op": "conflicts", "name": name})) {
            Ok(v) => v,
            Err(code) => return code,
        };
        let list = v.get("conflicts").cloned().unwrap_or_else(|| json!([]));
        any |= list.as_array().is_some_and(|l| !l.is_empty());
        if !t.json {
            let empty = Vec::new();
            let l = list.as_array().unwrap_or(&empty);
            println!("{}", ferry::sessions::conflicts_text(&name, l, now()));
        }
        all.push(json!({ "name": name, "conflicts": list }));
    }
    if t.json {
        match (&t.name, all.first()) {
            (Some(_), Some(one)) => println!("{one}"),
            _ => println!("{}", json!({ "sessions": all })),
        }
    }
    if any { Exit::Conflicts } else { Exit::Ok }
}

/// The exit code of a cycle's reply: 1 with errors, 3 with conflicts left, else 0.
fn cycle_code(v: &Value) -> Exit {
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    if n("errors") > 0 {
        Exit::Failed
    } else if n("conflicts") > 0 {
        Exit::Conflicts
    } else {
        Exit::Ok
    }
}

/// `ferry flush NAME [PATH...] [--exclude P]...` (or every session matching a selector).
fn flush(f: FlushFlags) -> Exit {
    let mut paths = Vec::new();
    for p in &f.paths {
        match ferry::cli::relative_path(p, &[]) {
            Ok(r) => paths.push(r.to_string()),
            Err(e) => {
                eprintln!("ferry: {e}");
                return Exit::Usage;
            }
        }
    }
    let mut req = json!({ "op": "flush", "exclude": f.exclude });
    if !paths.is_empty() {
        req["paths"] = json!(paths);
    }
    if let Some(n) = &f.target.name {
        req["name"] = n.as_str().into();
    }
    if let Some(s) = &f.target.label_selector {
        req["selector"] = s.as_str().into();
    }
    let v = match ask_daemon(req) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let done: Vec<Value> = match v.get("sessions").and_then(Value::as_array) {
        Some(list) => list.clone(),
        None => {
            let mut one = v.clone();
            if let Some(o) = one.as_object_mut() {
                o.remove("ok");
                o.remove("version");
            }
            vec![one]
        }
    };
    if f.target.json {
        match &f.target.name {
            Some(_) => println!("{}", done.first().unwrap_or(&Value::Null)),
            None => println!("{}", json!({ "sessions": done })),
        }
    } else {
        for s in &done {
            let name = s.get("name").and_then(Value::as_str).unwrap_or("?");
            let way = |k: &str| {
                s.get("changed")
                    .and_then(|c| c.get(k))
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len) as u64
            };
            let n = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
            println!(
                "{name}: flushed ({} to beta, {} to alpha, {}, {})",
                way("alpha_to_beta"),
                way("beta_to_alpha"),
                ferry::output::count(n("conflicts"), "conflict", "conflicts"),
                ferry::output::count(n("errors"), "error", "errors"),
            );
        }
    }
    worst(done.iter().map(cycle_code))
}

/// `ferry resolve NAME [PATH...|--all] --keep SIDE`: the session's daemon resolves.
fn resolve_session(name: String, paths: Option<Vec<String>>, keep: Keep, json: bool) -> Exit {
    let keep = match keep {
        Keep::Alpha => "alpha",
        Keep::Beta => "beta",
    };
    let mut req = json!({ "op": "resolve", "name": name, "keep": keep });
    match paths {
        Some(p) => req["paths"] = json!(p),
        None => req["all"] = true.into(),
    }
    let mut v = match ask_daemon(req) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if let Some(o) = v.as_object_mut() {
        o.remove("ok");
        o.remove("version");
    }
    if json {
        println!("{v}");
    } else {
        let empty = Vec::new();
        let resolved = v
            .get("resolved")
            .and_then(Value::as_array)
            .unwrap_or(&empty);
        if resolved.is_empty() {
            println!("{name}: nothing to resolve");
        }
        let loser = if keep == "alpha" { "beta" } else { "alpha" };
        for r in resolved {
            let path = r.get("path").and_then(Value::as_str).unwrap_or("?");
            let copy = match r.get("loser_copy") {
                Some(Value::String(c)) => format!("{loser}'s version kept in {c}"),
                Some(Value::Array(cs)) => format!(
                    "{loser}'s versions kept in {}",
                    cs.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => format!("{loser} had no version to keep"),
            };
            println!("{name}: {path}: kept {keep}'s version; {copy}");
        }
    }
    cycle_code(&v)
}

/// `ferry monitor [NAME | --label-selector SEL]`: redraws the table on a terminal, else a line
/// per event.
fn monitor(name: Option<String>, selector: Option<String>, json: bool) -> Exit {
    // A selector picks the sessions carrying its labels now.
    let picked: Option<Vec<String>> = match selector {
        Some(sel) => match select(&Target {
            name: None,
            label_selector: Some(sel),
            json,
        }) {
            Ok(n) => Some(n),
            Err(code) => return code,
        },
        None => None,
    };
    let wanted = |session: &str| {
        name.as_deref().is_none_or(|n| n == session)
            && picked
                .as_ref()
                .is_none_or(|p| p.iter().any(|x| x == session))
    };
    let events = match ferry::sessions::watch(name.as_deref()) {
        Ok(e) => e,
        Err(f) => return fail(f),
    };
    let events = events.filter(|ev| {
        picked.is_none()
            || ev
                .get("session")
                .and_then(Value::as_str)
                .is_some_and(&wanted)
    });
    let tty = !json && std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    for ev in events {
        let shown = if json {
            writeln!(out, "{ev}")
        } else if tty {
            let list = match ferry::sessions::request(json!({"op": "list"}), false) {
                Ok(Some(v)) => v,
                Ok(None) => break,
                Err(f) => return fail(f),
            };
            let empty = Vec::new();
            let sessions: Vec<Value> = list
                .get("sessions")
                .and_then(Value::as_array)
                .unwrap_or(&empty)
                .iter()
                .filter(|s| s["name"].as_str().is_some_and(&wanted))
                .cloned()
                .collect();
            // Home, clear, the table.
            write!(
                out,
                "\x1b[H\x1b[2J{}\n(ferry monitor: Ctrl-C to stop)\n",
                ferry::sessions::table(&sessions, now())
            )
        } else {
            writeln!(out, "{}", ferry::sessions::event_line(&ev))
        };
        if shown.and_then(|()| out.flush()).is_err() {
            // The reader went away (a closed pipe).
            return Exit::Ok;
        }
    }
    eprintln!("ferry: the ferry daemon stopped");
    Exit::Failed
}
