//! The client side of background sessions: talking to the daemon (started on demand) and
//! the `ferry list` table. Printing is left to the binary.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::{Paths, VERSION, check_version, paths};
use crate::engine::human_bytes;
use crate::open::OpenFailure;

/// How long a client waits for a daemon it started to listen.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// Connects to the daemon; `None` if none is listening.
fn connect(paths: &Paths) -> Result<Option<UnixStream>, OpenFailure> {
    match UnixStream::connect(&paths.socket) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(OpenFailure::failed(format!(
            "cannot reach the ferry daemon at {}: {e}",
            paths.socket.display()
        ))),
    }
}

/// Spawns `ferry daemon run` in its own session, its output to the daemon's log, and waits
/// until it listens.
fn spawn_daemon(paths: &Paths) -> Result<UnixStream, OpenFailure> {
    let log = crate::daemon::log_file(paths).map_err(OpenFailure::failed)?;
    let log2 = log
        .try_clone()
        .map_err(|e| OpenFailure::failed(format!("cannot open the daemon's log: {e}")))?;
    let exe = std::env::current_exe()
        .map_err(|e| OpenFailure::failed(format!("cannot find this ferry's program: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.args(["daemon", "run"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .current_dir("/");
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| OpenFailure::failed(format!("cannot start the ferry daemon: {e}")))?;
    let deadline = Instant::now() + START_DEADLINE;
    let mut exited = None;
    loop {
        if let Some(s) = connect(paths)? {
            // Reaped by init once this client exits; a zombie meanwhile is harmless.
            let _ = child.try_wait();
            return Ok(s);
        }
        // Ours may have lost the lock to another client's daemon (or to one still exiting):
        // keep trying until the deadline.
        if exited.is_none() {
            exited = child.try_wait().ok().flatten();
        }
        if Instant::now() >= deadline {
            return Err(OpenFailure::failed(match exited {
                Some(status) => format!(
                    "the ferry daemon did not start ({status}); see {}",
                    paths.log.display()
                ),
                None => format!(
                    "the ferry daemon did not start listening in {}s; see {}",
                    START_DEADLINE.as_secs(),
                    paths.log.display()
                ),
            }));
        }
        if exited.is_some() {
            // Start another once the one exiting has let go of the lock.
            if let Ok(c) = cmd.spawn() {
                child = c;
                exited = None;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `req` (the version added) and returns the daemon's answer; the daemon is started
/// first if `start` and none runs. `Ok(None)`: no daemon and `start` is false.
pub fn request(req: Value, start: bool) -> Result<Option<Value>, OpenFailure> {
    Ok(exchange(req, start)?.map(|(v, _)| v))
}

/// `watch` (see [`crate::daemon`]'s doc): the daemon started if needed; the events, one JSON
/// object each, until the daemon goes away.
pub fn watch(name: Option<&str>) -> Result<impl Iterator<Item = Value>, OpenFailure> {
    let mut req = json!({"op": "watch"});
    if let Some(n) = name {
        req["name"] = n.into();
    }
    let (_, conn) = exchange(req, true)?
        .ok_or_else(|| OpenFailure::failed("the ferry daemon did not start".into()))?;
    Ok(conn
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok()))
}

/// Sends `req` and reads the answer; the connection is returned for what follows it.
fn exchange(
    mut req: Value,
    start: bool,
) -> Result<Option<(Value, BufReader<UnixStream>)>, OpenFailure> {
    let paths = paths().map_err(OpenFailure::failed)?;
    let stream = match connect(&paths)? {
        Some(s) => s,
        None if start => spawn_daemon(&paths)?,
        None => return Ok(None),
    };
    if let Some(o) = req.as_object_mut() {
        o.insert("version".into(), VERSION.into());
    }
    let io = |e: std::io::Error| OpenFailure::failed(format!("talking to the ferry daemon: {e}"));
    let mut w = stream.try_clone().map_err(io)?;
    // A daemon refusing this user answers without reading and closes: the write may fail, and
    // its answer is still there to read.
    let written = writeln!(w, "{req}");
    let mut line = String::new();
    let mut conn = BufReader::new(stream);
    let read = conn.read_line(&mut line);
    if line.is_empty() {
        written.map_err(io)?;
        read.map_err(io)?;
    }
    if line.is_empty() {
        return Err(OpenFailure::failed(
            "the ferry daemon closed the connection without answering".into(),
        ));
    }
    let resp: Value = serde_json::from_str(&line)
        .map_err(|e| OpenFailure::failed(format!("the ferry daemon's answer is not JSON: {e}")))?;
    let theirs = resp.get("version").and_then(Value::as_str).unwrap_or("?");
    let stopping = req.get("op").and_then(Value::as_str) == Some("stop");
    if !stopping {
        check_version(theirs, VERSION).map_err(OpenFailure::failed)?;
    }
    if resp.get("ok").and_then(Value::as_bool) == Some(true) {
        return Ok(Some((resp, conn)));
    }
    let message = resp
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("the ferry daemon refused (no reason given)")
        .to_owned();
    let usage = resp.get("usage").and_then(Value::as_bool) == Some(true);
    Err(OpenFailure { message, usage })
}

/// A new session's settings, checked (name, options, labels, endpoints), with local paths
/// made canonical here (relative ones are the client's). `Err`: a one-line usage error.
pub fn spec(
    name: &str,
    alpha: &str,
    beta: &str,
    options: crate::cli::SessionOptions,
    labels: &[String],
) -> Result<crate::daemon::SessionSpec, String> {
    crate::daemon::check_name(name)?;
    options.settings().map_err(|e| e.0)?;
    let mut map = std::collections::BTreeMap::new();
    for l in labels {
        let (k, v) = crate::daemon::parse_label(l)?;
        map.insert(k, v);
    }
    let (a, b) = crate::cli::places(alpha, beta).map_err(|e| e.0)?;
    let (Some(alpha), Some(beta)) = (a.key(), b.key()) else {
        return Err("endpoint paths must be valid UTF-8".into());
    };
    Ok(crate::daemon::SessionSpec {
        name: name.to_owned(),
        alpha,
        beta,
        options,
        labels: map,
        paused: false,
    })
}

/// `ferry daemon start`: connects (starting it if needed); the answer's status.
pub fn start() -> Result<Value, OpenFailure> {
    request(json!({"op": "status"}), true)?
        .ok_or_else(|| OpenFailure::failed("the ferry daemon did not start".into()))
}

/// "3s ago", "5m ago", "2h ago", "4d ago", or "never".
pub fn ago(then: Option<u64>, now: u64) -> String {
    let Some(t) = then else {
        return "never".into();
    };
    let s = now.saturating_sub(t);
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// `ferry list`'s LAST HOUR cell: "5 (1.2 kB) to beta, 0 to alpha".
fn last_hour(v: &Value) -> String {
    let h = v.get("last_hour").unwrap_or(&Value::Null);
    let n = |k: &str| h.get(k).and_then(Value::as_u64).unwrap_or(0);
    let way = |files: u64, bytes: u64, to: &str| {
        if files == 0 && bytes == 0 {
            format!("0 to {to}")
        } else {
            format!("{files} ({}) to {to}", human_bytes(bytes))
        }
    };
    format!(
        "{}, {}",
        way(n("files_to_beta"), n("bytes_to_beta"), "beta"),
        way(n("files_to_alpha"), n("bytes_to_alpha"), "alpha")
    )
}

/// `ferry list`'s TREE cell: "120 files, 45.0 MB", or "?" before the first scan.
fn tree(v: &Value) -> String {
    match v.get("tree") {
        Some(t) if t.is_object() => {
            let n = |k: &str| t.get(k).and_then(Value::as_u64).unwrap_or(0);
            format!(
                "{}, {}",
                crate::output::count(n("files"), "file", "files"),
                human_bytes(n("bytes"))
            )
        }
        _ => "?".into(),
    }
}

/// `ferry status NAME`: one session, a line per fact.
pub fn describe(v: &Value, now: u64) -> String {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mut out = format!(
        "{}: {}\n  alpha      {}\n  beta       {}\n  mode       {}\n  last sync  to beta {}, to alpha {}\n  last hour  {}\n  tree       {}\n  conflicts  {}\n  errors     {}",
        s("name"),
        s("state"),
        s("alpha"),
        s("beta"),
        s("mode"),
        ago(v.get("last_sync_to_beta").and_then(Value::as_u64), now),
        ago(v.get("last_sync_to_alpha").and_then(Value::as_u64), now),
        last_hour(v),
        tree(v),
        n("conflicts"),
        n("errors"),
    );
    if let Some(e) = v.get("last_error").and_then(Value::as_str) {
        out.push_str(&format!("\n  last error {e}"));
    }
    out
}

/// `ferry conflicts NAME`: each conflict with what each side did.
pub fn conflicts_text(name: &str, conflicts: &[Value], now: u64) -> String {
    if conflicts.is_empty() {
        return format!("{name}: no conflicts");
    }
    let mut out = format!(
        "{name}: {}",
        crate::output::count(conflicts.len() as u64, "conflict", "conflicts")
    );
    for c in conflicts {
        out.push_str(&format!(
            "\n{}",
            c.get("path").and_then(Value::as_str).unwrap_or("?")
        ));
        for side in ["alpha", "beta"] {
            let d = c.get(side).unwrap_or(&Value::Null);
            let change = d.get("change").and_then(Value::as_str).unwrap_or("?");
            let mut what = Vec::new();
            if let Some(k) = d.get("kind").and_then(Value::as_str) {
                what.push(k.to_owned());
            }
            if let Some(sz) = d.get("size").and_then(Value::as_u64) {
                what.push(human_bytes(sz));
            }
            if let Some(t) = d.get("mtime").and_then(Value::as_i64) {
                what.push(format!("modified {}", ago(u64::try_from(t).ok(), now)));
            }
            let what = if what.is_empty() {
                String::new()
            } else {
                format!(" ({})", what.join(", "))
            };
            out.push_str(&format!("\n  {side:<5}  {change}{what}"));
        }
    }
    out.push_str(&format!(
        "\nresolve: ferry resolve {name} PATH... --keep alpha|beta (or --all)"
    ));
    out
}

/// One event of a `watch` subscription as a plain line: "web: watching", "web: cycle 3: 1 to
/// beta, 0 to alpha, 0 conflicts, 0 errors", "web: conflict at a.txt", "web: error: ...".
pub fn event_line(ev: &Value) -> String {
    let s = |k: &str| ev.get(k).and_then(Value::as_str).unwrap_or("?");
    let n = |k: &str| ev.get(k).and_then(Value::as_u64).unwrap_or(0);
    let name = s("session");
    match s("event") {
        "state" => format!("{name}: {}", s("state")),
        "cycle" => format!(
            "{name}: cycle {}: {} to beta, {} to alpha, {}, {}",
            n("cycle"),
            n("to_beta"),
            n("to_alpha"),
            crate::output::count(n("conflicts"), "conflict", "conflicts"),
            crate::output::count(n("errors"), "error", "errors"),
        ),
        "conflict" => format!("{name}: conflict at {}", s("path")),
        "error" => format!("{name}: error: {}", s("message")),
        "removed" => format!("{name}: terminated"),
        other => format!("{name}: {other}"),
    }
}

/// The `ferry list` table.
pub fn table(sessions: &[Value], now: u64) -> String {
    if sessions.is_empty() {
        return "no sessions (create one: ferry create ALPHA BETA --name NAME)".into();
    }
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mut rows = vec![[
        "NAME".to_owned(),
        "ALPHA".into(),
        "BETA".into(),
        "STATE".into(),
        "TO BETA".into(),
        "TO ALPHA".into(),
        "LAST HOUR".into(),
        "TREE".into(),
        "CONFLICTS".into(),
        "ERRORS".into(),
    ]];
    let mut errors = Vec::new();
    for v in sessions {
        rows.push([
            s(v, "name"),
            s(v, "alpha"),
            s(v, "beta"),
            s(v, "state"),
            ago(v.get("last_sync_to_beta").and_then(Value::as_u64), now),
            ago(v.get("last_sync_to_alpha").and_then(Value::as_u64), now),
            last_hour(v),
            tree(v),
            n(v, "conflicts").to_string(),
            n(v, "errors").to_string(),
        ]);
        if let Some(e) = v.get("last_error").and_then(Value::as_str) {
            errors.push(format!("{}: {e}", s(v, "name")));
        }
    }
    let mut width = [0usize; 10];
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for e in errors {
        out.push_str(&format!("last error of {e}\n"));
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines() {
        let cases = [
            (
                json!({"event": "state", "session": "web", "state": "watching"}),
                "web: watching",
            ),
            (
                json!({"event": "cycle", "session": "web", "cycle": 3, "to_beta": 1,
                       "to_alpha": 0, "conflicts": 1, "errors": 0}),
                "web: cycle 3: 1 to beta, 0 to alpha, 1 conflict, 0 errors",
            ),
            (
                json!({"event": "conflict", "session": "w", "path": "a"}),
                "w: conflict at a",
            ),
            (
                json!({"event": "error", "session": "w", "message": "m"}),
                "w: error: m",
            ),
            (json!({"event": "removed", "session": "w"}), "w: terminated"),
        ];
        for (ev, line) in cases {
            assert_eq!(event_line(&ev), line);
        }
    }

    #[test]
    fn ago_words() {
        assert_eq!(ago(None, 100), "never");
        assert_eq!(ago(Some(97), 100), "3s ago");
        assert_eq!(ago(Some(0), 300), "5m ago");
        assert_eq!(ago(Some(0), 7200), "2h ago");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &[
                json!({"name": "web", "alpha": "/a", "beta": "docker://w/app", "state": "watching",
                     "last_sync_to_beta": 90, "conflicts": 1, "errors": 0,
                     "last_hour": {"files_to_beta": 2, "bytes_to_beta": 1500},
                     "tree": {"files": 3, "bytes": 2000}}),
            ],
            100,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2, "{t}");
        assert_eq!(
            lines[0],
            "NAME  ALPHA  BETA            STATE     TO BETA  TO ALPHA  LAST HOUR                       TREE             CONFLICTS  ERRORS"
        );
        assert_eq!(
            lines[1],
            "web   /a     docker://w/app  watching  10s ago  never     2 (1.5 kB) to beta, 0 to alpha  3 files, 2.0 kB  1          0"
        );
    }
}
