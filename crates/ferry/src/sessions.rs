//! The client side of background sessions: talking to the daemon (started on demand) and
//! the `ferry list` table. Printing is left to the binary.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::daemon::{Paths, VERSION, check_version, paths};
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
pub fn request(mut req: Value, start: bool) -> Result<Option<Value>, OpenFailure> {
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
    let read = BufReader::new(stream).read_line(&mut line);
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
        return Ok(Some(resp));
    }
    let message = resp
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("the ferry daemon refused (no reason given)")
        .to_owned();
    let usage = resp.get("usage").and_then(Value::as_bool) == Some(true);
    Err(OpenFailure { message, usage })
}

/// A new session's settings, checked (name, mode, ignore patterns, labels, endpoints), with
/// local paths made canonical here (relative ones are the client's). `Err`: a one-line usage
/// error.
pub fn spec(
    name: &str,
    alpha: &str,
    beta: &str,
    mode: &str,
    ignores: Vec<String>,
    labels: &[String],
    yes: bool,
) -> Result<crate::daemon::SessionSpec, String> {
    crate::daemon::check_name(name)?;
    mode.parse::<ferry_core::Mode>()
        .map_err(|e| e.to_string())?;
    for p in &ignores {
        let spec = crate::fs::ignore::IgnoreSpec {
            vcs: false,
            editor_temps: false,
            patterns: vec![p.clone()],
            meta: Default::default(),
            max_file_size: None,
        };
        crate::fs::ignore::Ignorer::new(&spec).map_err(|e| e.to_string())?;
    }
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
        mode: mode.to_owned(),
        ignores,
        labels: map,
        paused: false,
        yes,
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
            n(v, "conflicts").to_string(),
            n(v, "errors").to_string(),
        ]);
        if let Some(e) = v.get("last_error").and_then(Value::as_str) {
            errors.push(format!("{}: {e}", s(v, "name")));
        }
    }
    let mut width = [0usize; 8];
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
                     "last_sync_to_beta": 90, "conflicts": 1, "errors": 0}),
            ],
            100,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2, "{t}");
        assert_eq!(
            lines[0],
            "NAME  ALPHA  BETA            STATE     TO BETA  TO ALPHA  CONFLICTS  ERRORS"
        );
        assert_eq!(
            lines[1],
            "web   /a     docker://w/app  watching  10s ago  never     1          0"
        );
    }
}
