//! Everything ferry prints goes through [`Printer`]: JSON event lines on stdout with `--json`,
//! otherwise short human lines (and a progress bar on a terminal).

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// One thing that happened, as printed with `--json` (`{"event": "...", ...}`).
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    SessionStart {
        alpha: String,
        beta: String,
        mode: String,
        state_dir: String,
    },
    CycleStart {
        cycle: u64,
        full_scan: bool,
    },
    Change {
        cycle: u64,
        /// `alpha->beta` or `beta->alpha`.
        direction: &'static str,
        /// The side written.
        side: &'static str,
        path: String,
        /// `create`, `modify`, `delete`, `replace` or `chmod`.
        action: &'static str,
        /// `file`, `directory` or `symlink` (the new kind, or the removed one).
        kind: &'static str,
        /// Copies kept of content this change replaced or removed.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        backups: Vec<Backup>,
    },
    Conflict {
        cycle: u64,
        path: String,
        alpha: String,
        beta: String,
    },
    Problem {
        side: &'static str,
        path: String,
        message: String,
    },
    /// `side` is a new endpoint since the archive was written (a recreated container, a
    /// mirror made again): this cycle fills it from `from`.
    NewEndpoint {
        side: &'static str,
        from: &'static str,
        endpoint: String,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        side: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        message: String,
        /// True when the next cycle retries it (content changed while copied, and the like).
        retry: bool,
    },
    CycleEnd {
        cycle: u64,
        to_alpha: u64,
        to_beta: u64,
        conflicts: u64,
        errors: u64,
        bytes: u64,
        /// Bytes the remote sides' connections carried in this cycle (both ways, framing
        /// included); 0 between local directories.
        wire_bytes: u64,
        duration_ms: f64,
        /// Where the time went: scan, reconcile, stage, transition, agree, save (ms).
        phases_ms: Phases,
    },
    Watching {
        alpha: String,
        beta: String,
    },
    /// Many deletions arrived at once (a wipe in progress?): they wait until changes stop, then
    /// a full scan decides (a wiped root stops the session; otherwise they are applied).
    Hold {
        cycle: u64,
        deletions: u64,
    },
    /// A remote side's connection broke: the next attempt starts after `delay_ms`.
    Reconnecting {
        side: &'static str,
        attempt: u32,
        delay_ms: u64,
        message: String,
    },
    /// ... and is back: a full cycle follows.
    Reconnected {
        side: &'static str,
        attempt: u32,
    },
    SessionEnd {
        exit_code: i32,
        conflicts: u64,
        errors: u64,
    },
}

/// Milliseconds spent in each step of a cycle.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Phases {
    pub scan: f64,
    pub reconcile: f64,
    pub stage: f64,
    pub transition: f64,
    pub agree: f64,
    pub save: f64,
}

/// A kept copy.
#[derive(Clone, Debug, Serialize)]
pub struct Backup {
    pub path: String,
    pub backup: String,
}

pub struct Printer {
    json: bool,
    tty: bool,
    bar: Option<ProgressBar>,
}

impl Printer {
    pub fn new(json: bool) -> Self {
        Printer {
            json,
            tty: std::io::stderr().is_terminal(),
            bar: None,
        }
    }

    pub fn json(&self) -> bool {
        self.json
    }

    pub fn emit(&mut self, ev: &Event) {
        if self.json {
            let mut out = std::io::stdout().lock();
            if let Ok(line) = serde_json::to_string(ev) {
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            return;
        }
        let line = match ev {
            Event::Change { backups, .. } => {
                for b in backups {
                    self.line(&format!("kept a copy of {} at {}", b.path, b.backup), true);
                }
                return;
            }
            Event::Conflict {
                path, alpha, beta, ..
            } => {
                format!("conflict: {path} (alpha {alpha}, beta {beta}); neither side touched")
            }
            Event::Problem {
                side,
                path,
                message,
            } => format!("warning: {side} {path}: {message}"),
            Event::Error {
                side,
                path,
                message,
                retry,
            } => {
                if *retry {
                    return;
                }
                let mut s = "error:".to_owned();
                if let Some(side) = side {
                    s.push(' ');
                    s.push_str(side);
                }
                if let Some(p) = path {
                    s.push(' ');
                    s.push_str(p);
                    s.push(':');
                }
                format!("{s} {message}")
            }
            Event::CycleEnd {
                to_alpha,
                to_beta,
                conflicts,
                errors,
                duration_ms,
                ..
            } => {
                if to_alpha + to_beta + errors == 0 {
                    return;
                }
                let mut parts = Vec::new();
                if *to_beta > 0 {
                    parts.push(format!("{to_beta} → beta"));
                }
                if *to_alpha > 0 {
                    parts.push(format!("{to_alpha} → alpha"));
                }
                if *conflicts > 0 {
                    parts.push(format!("{conflicts} conflicts"));
                }
                if *errors > 0 {
                    parts.push(format!("{errors} errors"));
                }
                format!("synced {} in {:.0} ms", parts.join(", "), duration_ms)
            }
            Event::Reconnecting {
                side,
                attempt,
                delay_ms,
                message,
            } => format!(
                "{side}: connection lost ({message}); reconnecting in {delay_ms} ms (attempt {attempt})"
            ),
            Event::Reconnected { side, .. } => format!("{side}: reconnected; rescanning"),
            Event::Hold { deletions, .. } => format!(
                "holding {deletions} deletions until changes stop (checking for a wiped root first)"
            ),
            Event::NewEndpoint {
                side,
                from,
                endpoint,
            } => format!(
                "{side} is a new endpoint ({endpoint}): filling it from {from}; what only it \
                 has stays there, differing versions are kept in its backup area"
            ),
            Event::Watching { alpha, beta } => {
                format!("watching {alpha} ⇄ {beta} (Ctrl-C to stop)")
            }
            Event::SessionStart { .. } | Event::CycleStart { .. } | Event::SessionEnd { .. } => {
                return;
            }
        };
        let to_stderr = matches!(
            ev,
            Event::Problem { .. }
                | Event::Error { .. }
                | Event::Conflict { .. }
                | Event::Reconnecting { .. }
        );
        self.line(&line, to_stderr);
    }

    fn line(&self, s: &str, to_stderr: bool) {
        let print = || {
            if to_stderr {
                eprintln!("{s}");
            } else {
                println!("{s}");
            }
        };
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    /// Starts a progress bar for `total` bytes of long work, on a terminal only.
    pub fn progress_start(&mut self, total: u64, files: u64) {
        if self.json || !self.tty || (files < 500 && total < 64 << 20) {
            return;
        }
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("copying {files} files"));
        self.bar = Some(bar);
    }

    pub fn progress_inc(&self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }

    pub fn progress_end(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
