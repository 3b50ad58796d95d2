//! Everything ferry prints goes through [`Printer`]: JSON event lines on stdout with `--json`,
//! otherwise short human lines (and a progress bar on a terminal).

use std::collections::HashSet;
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
    /// A path both sides changed: left alone until resolved.
    Conflict {
        cycle: u64,
        path: String,
        /// What alpha did there ("modified it (now 1.2 kB)").
        alpha: String,
        /// What beta did there.
        beta: String,
        /// The command that resolves it keeping alpha's version (`--keep beta` for beta's).
        resolve: String,
    },
    /// A first sync (nothing agreed yet) would copy into alpha, which has content, what only
    /// beta has: asked about on a terminal, refused elsewhere unless `--yes`.
    FirstSync {
        alpha: String,
        beta: String,
        /// Files (and links, empty directories) that would go to each side.
        to_alpha: u64,
        to_beta: u64,
        conflicts: u64,
    },
    /// `ferry resolve` is about to make `keep`'s version win at `paths` (empty: nothing to do).
    Resolving {
        keep: &'static str,
        paths: Vec<String>,
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
        /// `bytes` split by the side written.
        bytes_to_alpha: u64,
        bytes_to_beta: u64,
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
    verbose: bool,
    bar: Option<ProgressBar>,
    /// Where each side is, for paths on the far side ("in container web: /root/..."): `None`
    /// for a local side.
    place: [Option<String>; 2],
    /// What the cycle in progress did, printed as a few lines when it ends.
    cycle: CycleLog,
    /// Errors described in the previous cycle that had errors (a retried error is described
    /// once, not at every retry).
    described: HashSet<(String, String, String)>,
    /// A daemon's session: every event goes here instead of stdout/stderr.
    sink: Option<Sink>,
    /// `ferry up`: the compose service this session syncs, added to every JSON event and
    /// before every human line (several sessions and logs share one terminal).
    service: Option<String>,
}

/// Where a [`Printer::sink`] sends events.
pub type Sink = Box<dyn Fn(&Event) + Send + Sync>;

/// What the cycle in progress did.
#[derive(Default)]
struct CycleLog {
    open: bool,
    /// Changed paths per side written (`[alpha, beta]`), as named in the cycle line.
    changed: [Vec<String>; 2],
    /// Backups kept per side: (path in the tree, backup path).
    backups: [Vec<(String, String)>; 2],
    /// Errors in the order seen, grouped by (side, message): paths and whether they are retried.
    errors: Vec<ErrorGroup>,
}

struct ErrorGroup {
    side: Option<&'static str>,
    message: String,
    retry: bool,
    paths: Vec<String>,
}

/// Paths named in a group of errors before "and N more".
const GROUP_NAMES: usize = 3;
/// A cycle that changed at most this many paths names them without `-v`.
const NAMED_CHANGES: usize = 3;

fn side_index(side: &str) -> usize {
    usize::from(side == "beta")
}

/// `1 error`, `2 errors`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// `s` as one shell word: as it is when that is safe, in single quotes otherwise.
pub fn shell_word(s: &str) -> String {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"/._-+,:@=%".contains(&b);
    if !s.is_empty() && s.bytes().all(safe) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command that resolves the conflict at `path` between the endpoints described as
/// `alpha` and `beta`, keeping `keep`'s version.
pub fn resolve_command(alpha: &str, beta: &str, path: &str, keep: &str) -> String {
    // A path starting with '-' would read as an option.
    let path = match path {
        "" => ".".to_owned(),
        p if p.starts_with('-') => format!("./{p}"),
        p => p.to_owned(),
    };
    format!(
        "ferry resolve {} {} {} --keep {keep}",
        shell_word(alpha),
        shell_word(beta),
        shell_word(&path)
    )
}

/// Where an endpoint described as `url` is, when it is not on this machine: `container web`,
/// `pod ns/app`, `host dev@box`; `None` for a local directory.
pub fn remote_place(url: &str) -> Option<String> {
    if url.starts_with('/') {
        return None;
    }
    let drop_user = |s: &str| s.rsplit_once('@').map_or(s, |(_, h)| h).to_owned();
    if let Some(rest) = url.strip_prefix("docker://") {
        let name = rest.split('/').next().unwrap_or(rest);
        return Some(format!("in container {}", drop_user(name)));
    }
    if let Some(rest) = url.strip_prefix("k8s://") {
        let rest = drop_user(rest);
        let mut parts = rest.splitn(3, '/');
        let ns = parts.next().unwrap_or_default();
        let pod = parts.next().unwrap_or_default();
        let pod = pod.split(':').next().unwrap_or(pod);
        return Some(format!("in pod {ns}/{pod}"));
    }
    if let Some(rest) = url.strip_prefix("ssh://") {
        let host = rest.split('/').next().unwrap_or(rest);
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        return Some(format!("on host {host}"));
    }
    let host = url.split(':').next().unwrap_or(url);
    Some(format!("on host {host}"))
}

impl Printer {
    pub fn new(json: bool) -> Self {
        Printer {
            json,
            tty: std::io::stderr().is_terminal(),
            verbose: false,
            bar: None,
            place: [None, None],
            cycle: CycleLog::default(),
            described: HashSet::new(),
            sink: None,
            service: None,
        }
    }

    /// A printer that hands every event to `sink` and prints nothing (a daemon's session).
    pub fn sink(sink: Sink) -> Self {
        let mut p = Printer::new(true);
        p.sink = Some(sink);
        p
    }

    /// Tags everything printed with a compose service (`ferry up`); no progress bar then.
    pub fn set_service(&mut self, service: &str) {
        self.service = Some(service.to_owned());
        self.tty = false;
    }

    /// The compose service this printer tags its output with, if any.
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// `-v`: name every changed path in the per-cycle line.
    pub fn set_verbose(&mut self, verbose: bool) {
        self.verbose = verbose;
    }

    pub fn json(&self) -> bool {
        self.json
    }

    pub fn emit(&mut self, ev: &Event) {
        if let Some(sink) = &self.sink {
            sink(ev);
            return;
        }
        if self.json {
            let mut out = std::io::stdout().lock();
            let line = match &self.service {
                None => serde_json::to_string(ev),
                Some(service) => serde_json::to_value(ev).and_then(|mut v| {
                    if let Some(o) = v.as_object_mut() {
                        o.insert("service".into(), service.clone().into());
                    }
                    serde_json::to_string(&v)
                }),
            };
            if let Ok(line) = line {
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            return;
        }
        for (line, to_stderr) in self.human(ev) {
            self.line(&line, to_stderr);
        }
    }

    /// The lines a person reads for `ev` (and whether each goes to stderr). Events of a cycle
    /// are gathered and told when it ends: grouped errors, one line of backups per side, then
    /// the cycle's line.
    pub fn human(&mut self, ev: &Event) -> Vec<(String, bool)> {
        let line = match ev {
            Event::SessionStart { alpha, beta, .. } => {
                self.place = [remote_place(alpha), remote_place(beta)];
                return Vec::new();
            }
            Event::CycleStart { .. } => {
                self.cycle = CycleLog {
                    open: true,
                    ..Default::default()
                };
                return Vec::new();
            }
            Event::Change {
                side,
                path,
                action,
                kind,
                backups,
                ..
            } => {
                let i = side_index(side);
                let mut name = path.clone();
                if *kind == "directory" && *action != "delete" {
                    name.push('/');
                }
                if *action == "delete" {
                    name.push_str(" deleted");
                }
                self.cycle.changed[i].push(name);
                for b in backups {
                    let rel = b.path.split_once('/').map_or(b.path.as_str(), |(_, r)| r);
                    self.cycle.backups[i].push((rel.to_owned(), b.backup.clone()));
                }
                return Vec::new();
            }
            Event::Conflict {
                path,
                alpha,
                beta,
                resolve,
                ..
            } => {
                let path = if path.is_empty() { "." } else { path };
                format!(
                    "conflict: {path}: alpha {alpha}, beta {beta}; neither side touched. To keep \
                     one: {resolve} (or --keep beta)"
                )
            }
            Event::FirstSync {
                alpha,
                beta,
                to_alpha,
                to_beta,
                conflicts,
            } => {
                let conflicts = if *conflicts > 0 {
                    format!(
                        ", {} left alone",
                        count(*conflicts, "conflict", "conflicts")
                    )
                } else {
                    String::new()
                };
                format!(
                    "first sync of {alpha} and {beta}, which differ: {} would go to beta, \
                     {} only beta has into alpha{conflicts}",
                    count(*to_beta, "file", "files"),
                    count(*to_alpha, "file", "files"),
                )
            }
            Event::Resolving { keep, paths } => match paths.as_slice() {
                [] => "no conflicts to resolve".to_owned(),
                _ => {
                    let shown: Vec<&str> = paths
                        .iter()
                        .take(GROUP_NAMES)
                        .map(|p| if p.is_empty() { "." } else { p.as_str() })
                        .collect();
                    let more = paths.len().saturating_sub(GROUP_NAMES);
                    let more = if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    };
                    format!(
                        "resolving {}{more}: keeping {keep}'s version",
                        shown.join(", ")
                    )
                }
            },
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
                let group = self
                    .cycle
                    .errors
                    .iter_mut()
                    .find(|g| g.side == *side && g.message == *message && g.retry == *retry);
                let group = match group {
                    Some(g) => g,
                    None => {
                        self.cycle.errors.push(ErrorGroup {
                            side: *side,
                            message: message.clone(),
                            retry: *retry,
                            paths: Vec::new(),
                        });
                        let Some(g) = self.cycle.errors.last_mut() else {
                            return Vec::new();
                        };
                        g
                    }
                };
                group.paths.extend(path.clone());
                if self.cycle.open {
                    return Vec::new();
                }
                // Outside a cycle: told at once.
                return self.errors_told().into_iter().map(|l| (l, true)).collect();
            }
            Event::CycleEnd {
                to_alpha,
                to_beta,
                conflicts,
                errors,
                duration_ms,
                ..
            } => {
                let mut out: Vec<(String, bool)> =
                    self.errors_told().into_iter().map(|l| (l, true)).collect();
                out.extend(self.backups_told().into_iter().map(|l| (l, false)));
                let log = std::mem::take(&mut self.cycle);
                if to_alpha + to_beta + errors == 0 {
                    return out;
                }
                let names = log.changed[0].len() + log.changed[1].len();
                let named = self.verbose || names <= NAMED_CHANGES;
                let mut parts = Vec::new();
                for (n, side, paths) in [
                    (*to_beta, "beta", &log.changed[1]),
                    (*to_alpha, "alpha", &log.changed[0]),
                ] {
                    if n == 0 {
                        continue;
                    }
                    if named && !paths.is_empty() {
                        parts.push(format!("{n} → {side} ({})", paths.join(", ")));
                    } else {
                        parts.push(format!("{n} → {side}"));
                    }
                }
                let mut tail = Vec::new();
                if *conflicts > 0 {
                    tail.push(count(*conflicts, "conflict", "conflicts"));
                }
                if *errors > 0 {
                    tail.push(count(*errors, "error", "errors"));
                }
                let line = if parts.is_empty() {
                    format!(
                        "{}; nothing synced ({:.0} ms)",
                        tail.join(", "),
                        duration_ms
                    )
                } else {
                    parts.extend(tail);
                    format!("synced {} in {:.0} ms", parts.join(", "), duration_ms)
                };
                out.push((line, false));
                return out;
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
            Event::SessionEnd { .. } => {
                return Vec::new();
            }
        };
        let to_stderr = matches!(
            ev,
            Event::Problem { .. }
                | Event::Conflict { .. }
                | Event::Reconnecting { .. }
                | Event::FirstSync { .. }
        );
        vec![(line, to_stderr)]
    }

    /// The gathered errors, one line per (side, message), each not told in the previous cycle
    /// with errors; then forgotten.
    fn errors_told(&mut self) -> Vec<String> {
        let groups = std::mem::take(&mut self.cycle.errors);
        if groups.is_empty() {
            // A cycle without errors: whatever failed before is over, and told again if it
            // comes back.
            self.described.clear();
            return Vec::new();
        }
        let key = |g: &ErrorGroup, p: &str| {
            (
                g.side.unwrap_or_default().to_owned(),
                p.to_owned(),
                g.message.clone(),
            )
        };
        let mut now = HashSet::new();
        let mut out = Vec::new();
        for g in groups {
            let fresh: Vec<&String> = if g.paths.is_empty() {
                vec![]
            } else {
                g.paths
                    .iter()
                    .filter(|p| !self.described.contains(&key(&g, p)))
                    .collect()
            };
            for p in &g.paths {
                now.insert(key(&g, p));
            }
            if g.paths.is_empty() {
                if self.described.contains(&key(&g, "")) {
                    now.insert(key(&g, ""));
                    continue;
                }
                now.insert(key(&g, ""));
            } else if fresh.is_empty() {
                continue;
            }
            let side = g.side.map(|s| format!(" {s}")).unwrap_or_default();
            let retry = if g.retry { " (retrying)" } else { "" };
            out.push(match fresh.as_slice() {
                [] => format!("error:{side}: {}{retry}", g.message),
                [p] => format!("error:{side} {p}: {}{retry}", g.message),
                many => {
                    let shown: Vec<&str> =
                        many.iter().take(GROUP_NAMES).map(|p| p.as_str()).collect();
                    let more = many.len().saturating_sub(GROUP_NAMES);
                    let more = if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    };
                    format!(
                        "error:{side}: {} ({} paths: {}{more}){retry}",
                        g.message,
                        many.len(),
                        shown.join(", ")
                    )
                }
            });
        }
        self.described = now;
        out
    }

    /// One line per side that kept copies this cycle, saying where they are.
    fn backups_told(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, side) in ["alpha", "beta"].into_iter().enumerate() {
            let kept = std::mem::take(&mut self.cycle.backups[i]);
            // "in container web: PATH" on a far side; `local` otherwise ("at PATH").
            let at = |p: &str, local: &str| match &self.place[i] {
                Some(place) => format!("{place}: {p}"),
                None => format!("{local} {p}"),
            };
            match kept.as_slice() {
                [] => {}
                [(path, backup)] => {
                    out.push(format!("kept a copy of {side} {path} {}", at(backup, "at")));
                }
                many => {
                    // Each copy is `<folder>/<path>`: name the folders, not the copies.
                    let mut folders: Vec<&str> = many
                        .iter()
                        .map(|(path, backup)| {
                            backup
                                .strip_suffix(path.as_str())
                                .and_then(|f| f.strip_suffix('/'))
                                .unwrap_or(backup)
                        })
                        .collect();
                    folders.sort_unstable();
                    folders.dedup();
                    let under = match folders.as_slice() {
                        [one] => at(one, "under"),
                        more => {
                            let parent = more[0].rsplit_once('/').map_or(more[0], |(p, _)| p);
                            format!("{} ({} folders)", at(parent, "under"), more.len())
                        }
                    };
                    out.push(format!(
                        "kept copies of {} {side} files {under}",
                        many.len()
                    ));
                }
            }
        }
        out
    }

    fn line(&self, s: &str, to_stderr: bool) {
        let prefixed;
        let s = match &self.service {
            Some(service) => {
                prefixed = format!("{service} | {s}");
                prefixed.as_str()
            }
            None => s,
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn start(p: &mut Printer, alpha: &str, beta: &str) {
        p.human(&Event::SessionStart {
            alpha: alpha.into(),
            beta: beta.into(),
            mode: "two-way-safe".into(),
            state_dir: "/s".into(),
        });
        p.human(&Event::CycleStart {
            cycle: 1,
            full_scan: true,
        });
    }

    fn change(side: &'static str, path: &str, action: &'static str, kind: &'static str) -> Event {
        Event::Change {
            cycle: 1,
            direction: if side == "beta" {
                "alpha->beta"
            } else {
                "beta->alpha"
            },
            side,
            path: path.into(),
            action,
            kind,
            backups: Vec::new(),
        }
    }

    fn error(side: &'static str, path: &str, message: &str, retry: bool) -> Event {
        Event::Error {
            side: Some(side),
            path: Some(path.into()),
            message: message.into(),
            retry,
        }
    }

    fn end(to_alpha: u64, to_beta: u64, conflicts: u64, errors: u64) -> Event {
        Event::CycleEnd {
            cycle: 1,
            to_alpha,
            to_beta,
            conflicts,
            errors,
            bytes: 0,
            bytes_to_alpha: 0,
            bytes_to_beta: 0,
            wire_bytes: 0,
            duration_ms: 4.0,
            phases_ms: Phases::default(),
        }
    }

    fn lines(v: Vec<(String, bool)>) -> Vec<String> {
        v.into_iter()
            .map(|(l, err)| format!("{}{l}", if err { "E " } else { "O " }))
            .collect()
    }

    #[test]
    fn a_small_cycle_names_its_paths_with_plurals_right() {
        let mut p = Printer::new(false);
        start(&mut p, "/a", "/b");
        for ev in [
            change("beta", "src/a.rs", "modify", "file"),
            change("beta", "lib", "create", "directory"),
            change("alpha", "old.txt", "delete", "file"),
        ] {
            assert!(p.human(&ev).is_empty());
        }
        assert_eq!(
            lines(p.human(&end(1, 3, 1, 0))),
            ["O synced 3 → beta (src/a.rs, lib/), 1 → alpha (old.txt deleted), 1 conflict in 4 ms"]
        );
    }

    #[test]
    fn a_big_cycle_summarises_unless_verbose() {
        let run = |verbose: bool| {
            let mut p = Printer::new(false);
            p.set_verbose(verbose);
            start(&mut p, "/a", "/b");
            for f in ["a", "b", "c", "d"] {
                p.human(&change("beta", f, "create", "file"));
            }
            lines(p.human(&end(0, 4, 2, 1)))
        };
        assert_eq!(
            run(false),
            ["O synced 4 → beta, 2 conflicts, 1 error in 4 ms"]
        );
        assert_eq!(
            run(true),
            ["O synced 4 → beta (a, b, c, d), 2 conflicts, 1 error in 4 ms"]
        );
    }

    #[test]
    fn errors_are_described_grouped_and_once() {
        let mut p = Printer::new(false);
        start(&mut p, "/a", "/b");
        for f in ["a", "b", "c", "d", "e"] {
            p.human(&error("beta", f, "no space left on device", true));
        }
        p.human(&error("beta", "x", "content changed while copied", true));
        assert_eq!(
            lines(p.human(&end(0, 0, 0, 6))),
            [
                "E error: beta: no space left on device (5 paths: a, b, c and 2 more) (retrying)",
                "E error: beta x: content changed while copied (retrying)",
                "O 6 errors; nothing synced (4 ms)",
            ]
        );
        // The retry fails the same way: counted, not described again.
        p.human(&Event::CycleStart {
            cycle: 2,
            full_scan: false,
        });
        p.human(&error("beta", "x", "content changed while copied", true));
        assert_eq!(
            lines(p.human(&end(0, 0, 0, 1))),
            ["O 1 error; nothing synced (4 ms)"]
        );
        // Once a cycle goes without errors, the same error is news again.
        p.human(&Event::CycleStart {
            cycle: 3,
            full_scan: false,
        });
        assert!(p.human(&end(0, 0, 0, 0)).is_empty());
        p.human(&Event::CycleStart {
            cycle: 4,
            full_scan: false,
        });
        p.human(&error("beta", "x", "content changed while copied", true));
        assert_eq!(
            lines(p.human(&end(0, 0, 0, 1))),
            [
                "E error: beta x: content changed while copied (retrying)",
                "O 1 error; nothing synced (4 ms)"
            ]
        );
    }

    #[test]
    fn backups_are_one_line_per_side_and_say_where() {
        let mut p = Printer::new(false);
        start(&mut p, "/home/me/app", "docker://node@web/srv/app");
        let root = "/root/.local/state/ferry/agent/k/backups/beta/2026-12-06T11-30-05Z";
        for f in ["a", "src/b", "src/c"] {
            p.human(&Event::Change {
                cycle: 1,
                direction: "alpha->beta",
                side: "beta",
                path: f.into(),
                action: "modify",
                kind: "file",
                backups: vec![Backup {
                    path: format!("beta/{f}"),
                    backup: format!("{root}/{f}"),
                }],
            });
        }
        p.human(&Event::Change {
            cycle: 1,
            direction: "beta->alpha",
            side: "alpha",
            path: "n".into(),
            action: "delete",
            kind: "file",
            backups: vec![Backup {
                path: "alpha/n".into(),
                backup: "/s/backups/alpha/2026-12-06T11-30-05Z/n".into(),
            }],
        });
        assert_eq!(
            lines(p.human(&end(1, 3, 0, 0))),
            [
                "O kept a copy of alpha n at /s/backups/alpha/2026-12-06T11-30-05Z/n",
                format!("O kept copies of 3 beta files in container web: {root}").as_str(),
                "O synced 3 → beta, 1 → alpha in 4 ms",
            ]
        );
    }

    #[test]
    fn resolve_commands_are_pasteable() {
        assert_eq!(
            resolve_command(
                "/home/me/app",
                "docker://node@web/srv/app",
                "src/a.rs",
                "alpha"
            ),
            "ferry resolve /home/me/app docker://node@web/srv/app src/a.rs --keep alpha"
        );
        assert_eq!(
            resolve_command("/tmp/my app", "/b", "it's here", "beta"),
            r"ferry resolve '/tmp/my app' /b 'it'\''s here' --keep beta"
        );
        // A name starting with '-' would read as an option; the root is '.'.
        assert_eq!(
            resolve_command("/a", "/b", "-x", "alpha"),
            "ferry resolve /a /b ./-x --keep alpha"
        );
        assert_eq!(
            resolve_command("/a", "/b", "", "alpha"),
            "ferry resolve /a /b . --keep alpha"
        );
    }

    #[test]
    fn conflict_first_sync_and_resolving_lines() {
        let mut p = Printer::new(false);
        start(&mut p, "/a", "/b");
        assert_eq!(
            lines(p.human(&Event::Conflict {
                cycle: 1,
                path: "c".into(),
                alpha: "modified it (now 7 B)".into(),
                beta: "replaced it with a directory (2 files)".into(),
                resolve: "ferry resolve /a /b c --keep alpha".into(),
            })),
            [
                "E conflict: c: alpha modified it (now 7 B), beta replaced it with a directory \
                 (2 files); neither side touched. To keep one: ferry resolve /a /b c --keep alpha \
                 (or --keep beta)"
            ]
        );
        assert_eq!(
            lines(p.human(&Event::FirstSync {
                alpha: "/a".into(),
                beta: "/b".into(),
                to_alpha: 1,
                to_beta: 12,
                conflicts: 2,
            })),
            [
                "E first sync of /a and /b, which differ: 12 files would go to beta, 1 file only \
                 beta has into alpha, 2 conflicts left alone"
            ]
        );
        let resolving = |paths: &[&str]| Event::Resolving {
            keep: "beta",
            paths: paths.iter().map(|p| p.to_string()).collect(),
        };
        assert_eq!(
            lines(p.human(&resolving(&[]))),
            ["O no conflicts to resolve"]
        );
        assert_eq!(
            lines(p.human(&resolving(&["a", "b", "c", "d", "e"]))),
            ["O resolving a, b, c and 2 more: keeping beta's version"]
        );
    }

    #[test]
    fn remote_places() {
        assert_eq!(remote_place("/x"), None);
        assert_eq!(
            remote_place("docker://node@web/srv"),
            Some("in container web".into())
        );
        assert_eq!(remote_place("dev@box:app"), Some("on host dev@box".into()));
        assert_eq!(
            remote_place("ssh://dev@box:2222/app"),
            Some("on host dev@box".into())
        );
        assert_eq!(
            remote_place("k8s://ctx@ns/pod:c/app"),
            Some("in pod ns/pod".into())
        );
    }
}
