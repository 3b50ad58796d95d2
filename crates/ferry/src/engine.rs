//! The engine: the one place that runs a cycle (scan -> reconcile -> stage -> transition ->
//! save) and the loop that triggers cycles from watch events.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use ferry_core::{
    Aligned, Change, Conflict, Digest, Entry, Held, Mode, RelPath, Spellings, WipeRefusal,
    agree_at, agree_made, align_names, check_wipe, drop_held, forget, reconcile, reconcile_at,
    scope, set_agreed, settle_held_conflicts, unchanged_leaves,
};

use crate::copy;
use crate::delta;
use crate::endpoint::{
    Endpoint, EndpointError, IgnoreSpec, Outcome, ScanRequest, Side, Wanted, WatchEvent,
};
use crate::fs::ignore::{GITIGNORE, Ignorer, gitignore_patterns, parse_ignore_file};
use crate::fs::meta::MetaSpec;
use crate::fs::transition::is_transient;
use crate::hooks::Hooks;
use crate::identity::{Identities, Side as IdSide};
use crate::output::{Backup, Event, Phases, Printer};
use crate::report::{Changed, CycleReport, SessionView, conflict_view, kind, tree_size};
use crate::state::{Archive, Pending, Session, StateError};

/// What a session was asked to do.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub mode: Mode,
    pub ignore_vcs: bool,
    /// Leave editors' temporary files out (off with `--no-default-ignores`).
    pub default_ignores: bool,
    /// `--ignore` patterns (applied after `.ferryignore`).
    pub ignores: Vec<String>,
    /// Which metadata is synced (`--permissions`, `--no-times`, `--symlinks`).
    pub meta: MetaSpec,
    pub once: bool,
    pub accept_wipe: bool,
    /// Start from an empty archive (a first sync: nothing is deleted, differences conflict).
    pub reset: bool,
    /// Quiet time after the last watch event before a cycle starts.
    pub debounce: Duration,
    /// Full rescan period while watching (the fallback for missed events); `None`: never.
    pub rescan_interval: Option<Duration>,
    /// A first sync may copy into alpha what only beta has without asking (`--yes`).
    pub yes: bool,
    /// `--max-file-size` in bytes: bigger files are reported, not synced.
    pub max_file_size: Option<u64>,
    /// `--gitignore`: alpha's `.gitignore` files, at every level, are ignore rules too.
    pub gitignore: bool,
    /// `--on-change` hooks: run after a cycle that changed a matching path, in either direction.
    pub on_change: Vec<OnChange>,
    /// Beta came with files of its own (a container's image; `ferry up` sets it): which of
    /// beta's paths changed since. What else beta has at the first full cycle, or when beta is
    /// a new endpoint, is held back from alpha while it stays as it is (build products are not
    /// copied to the host; what the running container creates or changes is).
    pub image_changes: Option<ImageChanges>,
    /// Alpha's top-level names that the session knows by other names, `(on alpha's disk, in
    /// the session)` (`ferry up`: a file a Dockerfile copies under another name; see
    /// [`crate::endpoint::renamed`]).
    pub alpha_names: Vec<(String, String)>,
    /// Beta's entries (leaves, by path) that another session synced from other alpha files
    /// which a later mapping overrides (`ferry up`: a new match of a Dockerfile glob takes a
    /// container path over). Nobody's edit: until the two sides agree on the path, where a
    /// cycle finds one still as it was and alpha has the path in another version, alpha's
    /// replaces it (the overwritten content is kept in beta's backup area); it is never copied
    /// to alpha.
    pub superseded: Held,
}

/// Asks beta's provider which paths, relative to beta's root, were added or changed since beta
/// was provisioned (Docker's container changes against the image). `Err`: it cannot tell
/// (then nothing is held, and the reason is reported).
#[derive(Clone)]
pub struct ImageChanges(pub Arc<dyn Fn() -> Result<BTreeSet<String>, String> + Send + Sync>);

impl std::fmt::Debug for ImageChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImageChanges(..)")
    }
}

/// One `--on-change` hook (also `ferry up`'s `x-ferry.on-change` and `develop.watch`'s
/// `sync+exec`): `run` is given to `sh -c` in beta's root, on beta's side (through the agent for
/// a remote beta), after a cycle that changed a path matching one of `paths` (gitignore-style
/// globs relative to the session's root; empty: any path).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OnChange {
    pub run: String,
    #[serde(default)]
    pub paths: Vec<String>,
}

impl Settings {
    /// The rules both sides scan and watch by, with `patterns` (`.ferryignore`'s lines, then
    /// `--ignore`'s).
    pub fn ignore_spec(&self, patterns: Vec<String>) -> IgnoreSpec {
        IgnoreSpec {
            vcs: self.ignore_vcs,
            editor_temps: self.default_ignores,
            patterns,
            meta: self.meta,
            max_file_size: self.max_file_size,
        }
    }
}

/// What `ferry resolve` asked for: where (`None`: every conflict) and whose version wins.
#[derive(Clone, Debug)]
pub struct Resolving {
    pub paths: Option<Vec<RelPath>>,
    pub keep: Side,
}

/// What the daemon asks of a running session (see [`WatchEvent::Request`]).
#[derive(Clone, Debug)]
pub enum Request {
    /// A cycle now: looking everywhere, or only at `paths` (and their parents, as a
    /// watch-triggered cycle does); changes at paths matching `exclude` (gitignore patterns)
    /// are left out of this cycle only.
    Flush {
        paths: Option<Vec<RelPath>>,
        exclude: Vec<String>,
    },
    /// `ferry resolve NAME`: [`Engine::resolve`]'s cycle, run by the live session.
    Resolve(Resolving),
}

/// Where a [`Request`]'s answer goes: its report, or why not (and `true` when the request
/// itself was refused: a bad pattern, a path on neither side; nothing was changed).
pub type ReplyTo = SyncSender<Result<CycleReport, (String, bool)>>;

/// Why a session stopped before it was done.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Wipe(#[from] WipeRefusal),
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}'s root {1} is gone; stopping (nothing was changed)")]
    RootGone(&'static str, String),
    #[error("bad ignore rules: {0}")]
    Ignore(String),
    /// Not done, as asked or because nobody could be asked; nothing was changed (exit 2).
    #[error("{0}")]
    Refused(String),
}

/// How a session ended (maps to the design's exit codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    InSync,
    Errors,
    Conflicts,
}

const IGNORE_FILE: &str = ".ferryignore";
const MAX_ONCE_CYCLES: usize = 10;
/// Connection attempts a `--once` run makes before it gives up on a lost remote side.
const ONCE_RECONNECTS: u32 = 6;
/// Changes are applied in batches so a stop request is honoured between them.
const BATCH: usize = 256;
/// While cycles keep coming, the archive is written at most this often.
const ARCHIVE_SAVE_EVERY: Duration = Duration::from_secs(1);
/// While watching, this many deleted entries within [`DELETE_WINDOW`] look like a wipe in
/// progress (`rm -rf` of a root takes many cycles): deletions are then held until changes
/// stop for [`SETTLE`], and a full scan decides.
const MASS_DELETE: u64 = 100;
/// A cycle deleting this many entries on a side (or coming within [`DELETE_WINDOW`] of as many
/// deletions) is a bulk deletion: everything it removes is kept in the backup area.
const BULK_COPIES: u64 = 20;
const DELETE_WINDOW: Duration = Duration::from_secs(2);
const SETTLE: Duration = Duration::from_secs(1);
const MAX_HOLD: Duration = Duration::from_secs(10);
/// Deletions closer together than this belong to one episode (see `Engine::episode`).
const WIPE_WINDOW: Duration = Duration::from_secs(60);
/// ... and as soon as the session has been quiet this long.
const ARCHIVE_SAVE_IDLE: Duration = Duration::from_millis(100);

pub struct Engine {
    alpha: Box<dyn Endpoint>,
    beta: Box<dyn Endpoint>,
    session: Session,
    archive: Archive,
    settings: Settings,
    printer: Printer,
    ignorer: Ignorer,
    ignore_file: Option<Vec<u8>>,
    /// With `--gitignore`: alpha's `.gitignore` files (directory -> digest) the rules in force
    /// were made from, and their patterns.
    gitignores: std::collections::BTreeMap<String, Digest>,
    gitignore_patterns: Vec<String>,
    /// The rules must be made again even if `.ferryignore` did not change.
    rules_stale: bool,
    cycle: u64,
    archive_dirty: bool,
    /// Journalled changes of a run that died before saving the archive.
    recovering: Vec<Pending>,
    /// The changes of the cycle in flight, until it agrees on what they did; still there when
    /// the next cycle starts if a lost connection cut that cycle short (see `settle_interrupted`).
    in_flight: Vec<Pending>,
    /// The journal holds records the saved archive does not account for.
    journal_open: bool,
    archive_saved: Instant,
    /// Watch-triggered cycles hold mass deletions (see [`MASS_DELETE`]).
    watching: bool,
    recent_deletes: std::collections::VecDeque<(Instant, u64)>,
    /// Deletions are held; a full cycle runs once nothing was deleted for [`SETTLE`].
    settle_at: Option<Instant>,
    hold_started: Option<Instant>,
    /// Entries deleted by watch-triggered cycles since the last full cycle, and the archive's
    /// size then: a slow wipe shows in their ratio.
    /// Deletions applied while watching in the last [`WIPE_WINDOW`] (an "episode"), and the
    /// archive's size when the episode began: a wipe shows as their ratio, however slow.
    episode: std::collections::VecDeque<(Instant, u64, u64)>,
    episode_base: u64,
    /// The archive's size at the last full cycle.
    ancestor_entries: u64,
    /// This cycle is the full one that decides held deletions.
    settling: bool,
    stop: Arc<AtomicBool>,
    reported: HashSet<(Side, String, String)>,
    /// Conflicts told and still open, by path.
    reported_conflicts: HashMap<String, Conflict>,
    /// Paths that failed and when to retry them.
    retries: HashMap<RelPath, Retry>,
    /// The last error shown for a path on a side: the same error again is not repeated.
    shown_errors: HashMap<(Side, RelPath), String>,
    /// Which endpoints the archive's sides are, and what a fresh side kept for itself.
    ids: Identities,
    /// The side being filled as a new endpoint, until the fill's cycle finishes: a cycle cut
    /// short (a lost connection) left no ancestor behind, and the next one must fill again,
    /// not merge as in a first sync.
    filling: Option<IdSide>,
    /// Asks the person at the terminal whether a first sync may merge into alpha (see
    /// [`Engine::confirm_first_sync`]); `None`: nobody to ask, so it is refused.
    confirm: Option<Box<dyn FnMut() -> bool>>,
    /// Set while `ferry resolve` runs its cycle.
    resolving: Option<Resolving>,
    /// `--on-change` hooks: told what each cycle changed, run on beta between cycles.
    hooks: Hooks,
    /// The paths the last resolve cycle acted on.
    resolved: Vec<RelPath>,
    /// Shared with the daemon: open conflicts and the tree's size, refreshed every cycle.
    view: Option<Arc<std::sync::Mutex<SessionView>>>,
    /// While a requested cycle runs: the changes it makes.
    collect: Option<Vec<Changed>>,
    /// While a flush with `exclude` runs: the paths it leaves alone.
    exclude: Option<Ignorer>,
    /// With [`Settings::image_changes`]: whether this run asked yet (its first full cycle does).
    image_asked: bool,
}

/// What one cycle left behind.
#[derive(Default)]
struct CycleResult {
    applied: u64,
    conflicts: u64,
    errors: u64,
    /// Paths whose transient errors the next cycle should retry.
    retry: BTreeSet<RelPath>,
    /// Paths that failed for a reason that may clear with time (no space, permissions, a
    /// read-only filesystem): retried with a growing delay while watching.
    retry_later: BTreeSet<RelPath>,
    /// Paths this cycle looked at (`None`: everything).
    looked: Option<BTreeSet<RelPath>>,
    /// What failed at each path that will be retried: the side's entry before and the entry
    /// wanted there.
    failed: HashMap<RelPath, (Option<Entry>, Option<Entry>)>,
    /// Paths left out of this cycle because their retry was not due yet.
    deferred: BTreeSet<RelPath>,
}

/// A path that keeps failing: when to try again, and the change that failed (the same change
/// is not tried again before then, whatever else starts a cycle).
#[derive(Clone, Debug)]
struct Retry {
    attempts: u32,
    due: Instant,
    old: Option<Entry>,
    new: Option<Entry>,
}

/// The delay before the `attempts`th retry: transient failures (a file changed while it was
/// copied) are retried quickly, failures that wait on the user (a full disk) slowly.
fn retry_delay(attempts: u32, slow: bool) -> Duration {
    let (first, cap) = if slow {
        (Duration::from_secs(1), Duration::from_secs(30))
    } else {
        (Duration::from_millis(50), Duration::from_secs(2))
    };
    first
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(10))
        .min(cap)
}

impl Engine {
    pub fn new(
        alpha: Box<dyn Endpoint>,
        beta: Box<dyn Endpoint>,
        session: Session,
        settings: Settings,
        printer: Printer,
        stop: Arc<AtomicBool>,
    ) -> Result<Engine, RunError> {
        let archive = if settings.reset {
            Archive::default()
        } else {
            session.load_archive()?.unwrap_or_default()
        };
        // A run that died between changing files and saving the archive left those changes in
        // the journal; the first cycle settles them against what its scan finds (`recover`).
        // `--reset` forgets everything, the journal included (it describes the old archive).
        let recovering = if settings.reset {
            Vec::new()
        } else {
            session.pending(archive.epoch)
        };
        let archive_dirty = settings.reset || !recovering.is_empty();
        let spec = settings.ignore_spec(settings.ignores.clone());
        let ignorer = Ignorer::new(&spec).map_err(|e| RunError::Ignore(e.to_string()))?;
        let hooks = Hooks::new(&settings.on_change).map_err(|e| RunError::Ignore(e.to_string()))?;
        let session_dir = session.dir.clone();
        let mut engine = Engine {
            alpha,
            beta,
            session,
            archive,
            settings,
            printer,
            ignorer,
            ignore_file: None,
            gitignores: Default::default(),
            gitignore_patterns: Vec::new(),
            rules_stale: false,
            cycle: 0,
            archive_dirty,
            journal_open: !recovering.is_empty(),
            recovering,
            in_flight: Vec::new(),
            archive_saved: Instant::now(),
            watching: false,
            recent_deletes: Default::default(),
            settle_at: None,
            hold_started: None,
            episode: Default::default(),
            episode_base: 0,
            ancestor_entries: 0,
            settling: false,
            stop,
            reported: HashSet::new(),
            reported_conflicts: HashMap::new(),
            retries: HashMap::new(),
            shown_errors: HashMap::new(),
            filling: None,
            ids: Identities::load(&session_dir),
            confirm: None,
            resolving: None,
            hooks,
            resolved: Vec::new(),
            view: None,
            collect: None,
            exclude: None,
            image_asked: false,
        };
        engine.archive.alpha = engine.alpha.describe();
        engine.archive.beta = engine.beta.describe();
        if engine.settings.reset {
            // Written now, so an interrupted reset cannot bring the old archive back.
            engine.save_archive()?;
        }
        engine.reload_ignore()?;
        Ok(engine)
    }

    /// Runs the session: `--once` cycles until done, or watches until stopped.
    pub fn run(
        &mut self,
        wake: Option<(SyncSender<WatchEvent>, Receiver<WatchEvent>)>,
    ) -> Result<Finish, RunError> {
        self.printer.emit(&Event::SessionStart {
            alpha: self.alpha.describe(),
            beta: self.beta.describe(),
            mode: self.settings.mode.to_string(),
            state_dir: self.session.dir.display().to_string(),
        });
        let finish = match wake {
            Some((tx, rx)) if !self.settings.once => self.watch_loop(tx, rx),
            _ => self.once_loop(),
        };
        // A session that ends normally saves what its cycles learnt. One that failed does not:
        // a cycle may have stopped half way, and the journal with the last saved archive
        // settles that correctly at the next start.
        if finish.is_ok() && self.archive_dirty {
            self.save_archive()?;
        }
        let _ = self.alpha.save_cache();
        let _ = self.beta.save_cache();
        finish
    }

    /// Who to ask before a first sync merges into alpha what only beta has (a terminal's
    /// y/N). Without it such a first sync is refused unless `--yes`.
    pub fn set_confirm(&mut self, ask: Box<dyn FnMut() -> bool>) {
        self.confirm = Some(ask);
    }

    /// Shares the session's open conflicts and tree size with `view` (the daemon's), refreshed
    /// at the end of every cycle.
    pub fn share_view(&mut self, view: Arc<std::sync::Mutex<SessionView>>) {
        self.view = Some(view);
    }

    /// Runs the cycle a [`Request`] asks for; the report says what it changed. A refusal
    /// (a bad pattern, a path on neither side) changes nothing and ends nothing.
    fn serve(&mut self, req: Request) -> Result<CycleReport, RunError> {
        let (ra, resolving) = match req {
            Request::Flush { paths, exclude } => {
                if !exclude.is_empty() {
                    let spec = IgnoreSpec {
                        patterns: exclude,
                        ..Default::default()
                    };
                    self.exclude = Some(
                        Ignorer::new(&spec)
                            .map_err(|e| RunError::Refused(format!("bad exclude pattern: {e}")))?,
                    );
                }
                let req = match paths {
                    Some(p) => ScanRequest::Paths(p.into_iter().collect()),
                    None => ScanRequest::Full,
                };
                (req, None)
            }
            Request::Resolve(r) => {
                if let Some(paths) = &r.paths {
                    let at = |t: Option<&Entry>, p: &RelPath| {
                        t.and_then(|t| t.get(p.as_str())).is_some()
                    };
                    let (a, b) = (self.alpha.tree(), self.beta.tree());
                    if let Some(p) = paths.iter().find(|p| !at(a, p) && !at(b, p)) {
                        return Err(RunError::Refused(format!(
                            "nothing at '{p}' in alpha or beta; nothing was changed"
                        )));
                    }
                }
                (ScanRequest::Full, Some(r))
            }
        };
        self.collect = Some(Vec::new());
        self.resolved.clear();
        self.resolving = resolving;
        let out = self.cycle_resilient(&ra, &ra);
        self.resolving = None;
        self.exclude = None;
        let changes = self.collect.take().unwrap_or_default();
        let res = out?;
        self.schedule_retries(&res);
        Ok(CycleReport {
            cycle: self.cycle,
            changes,
            resolved: self.resolved.drain(..).map(|p| p.to_string()).collect(),
            conflicts: res.conflicts,
            errors: res.errors,
        })
    }

    /// `ferry resolve`: one full cycle that acts only at `r.paths` (every conflict if `None`),
    /// where the side `r.keep` wins every conflict; the loser's versions go to its backup area
    /// and the archive records the paths as agreed.
    pub fn resolve(&mut self, r: Resolving) -> Result<Finish, RunError> {
        self.printer.emit(&Event::SessionStart {
            alpha: self.alpha.describe(),
            beta: self.beta.describe(),
            mode: format!("resolve, keeping {}'s version", r.keep.as_str()),
            state_dir: self.session.dir.display().to_string(),
        });
        self.resolving = Some(r);
        let res = self.cycle_resilient(&ScanRequest::Full, &ScanRequest::Full);
        self.resolving = None;
        let res = res?;
        if self.archive_dirty {
            self.save_archive()?;
        }
        let _ = self.alpha.save_cache();
        let _ = self.beta.save_cache();
        Ok(self.finish(&res))
    }

    fn once_loop(&mut self) -> Result<Finish, RunError> {
        let mut res = CycleResult::default();
        for _ in 0..MAX_ONCE_CYCLES {
            res = self.cycle_resilient(&ScanRequest::Full, &ScanRequest::Full)?;
            if res.retry.is_empty() || self.stop.load(Ordering::SeqCst) {
                break;
            }
        }
        self.hooks
            .finish(&mut *self.beta, &mut self.printer, &self.stop);
        Ok(self.finish(&res))
    }

    fn finish(&mut self, res: &CycleResult) -> Finish {
        let f = if res.errors > 0 {
            Finish::Errors
        } else if res.conflicts > 0 {
            Finish::Conflicts
        } else {
            Finish::InSync
        };
        self.printer.emit(&Event::SessionEnd {
            exit_code: match f {
                Finish::InSync => 0,
                Finish::Errors => 1,
                Finish::Conflicts => 3,
            },
            conflicts: res.conflicts,
            errors: res.errors,
        });
        f
    }

    fn watch_loop(
        &mut self,
        tx: SyncSender<WatchEvent>,
        rx: Receiver<WatchEvent>,
    ) -> Result<Finish, RunError> {
        self.hooks.set_wake(tx.clone());
        self.alpha.watch(tx.clone())?;
        self.beta.watch(tx)?;
        let mut res = self.cycle_resilient(&ScanRequest::Full, &ScanRequest::Full)?;
        self.run_hooks();
        // The first scan hashed everything: keep that work even if this process is killed.
        let _ = self.alpha.save_cache();
        let _ = self.beta.save_cache();
        self.watching = true;
        self.printer.emit(&Event::Watching {
            alpha: self.alpha.describe(),
            beta: self.beta.describe(),
        });
        let mut last_full = Instant::now();
        let mut polling = false;
        self.schedule_retries(&res);
        let mut last_cache_save = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            let mut full = (false, false);
            let mut dirty: (BTreeSet<RelPath>, BTreeSet<RelPath>) = Default::default();
            // How long to sleep: until a retry is due, a periodic rescan is due, or forever.
            let mut timeout = Duration::from_secs(3600);
            if let Some(due) = self.retries.values().map(|r| r.due).min() {
                timeout = due.saturating_duration_since(Instant::now());
            }
            let period = if polling {
                Some(Duration::from_secs(2))
            } else {
                self.settings.rescan_interval
            };
            if let Some(p) = period {
                timeout = timeout.min(p.saturating_sub(last_full.elapsed()));
            }
            if self.archive_dirty {
                timeout = timeout.min(ARCHIVE_SAVE_IDLE);
            }
            if let Some(at) = self.settle_at {
                timeout = timeout.min(at.saturating_duration_since(Instant::now()));
            }
            let mut got = Vec::new();
            let mut requests = Vec::new();
            match rx.recv_timeout(timeout) {
                Ok(ev) => {
                    let mut asked = matches!(ev, WatchEvent::Request(..));
                    got.push(ev);
                    // Debounce: wait for a quiet moment, but never longer than a bound, so a
                    // long burst still makes progress. A request is not kept waiting.
                    let deadline = Instant::now() + self.settings.debounce * 20;
                    while !asked {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        match rx.recv_timeout(self.settings.debounce.min(deadline - now)) {
                            Ok(ev) => {
                                asked = matches!(ev, WatchEvent::Request(..));
                                got.push(ev);
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.archive_dirty {
                        self.save_archive()?;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            got.extend(self.alpha.poll_watch());
            got.extend(self.beta.poll_watch());
            for ev in got {
                match ev {
                    WatchEvent::Paths(side, paths) => {
                        let set = if side == Side::Alpha {
                            &mut dirty.0
                        } else {
                            &mut dirty.1
                        };
                        set.extend(paths.into_iter().filter(|p| {
                            !self.ignorer.event_ignored(p) || p.as_str() == IGNORE_FILE
                        }));
                    }
                    WatchEvent::Rescan(Side::Alpha) => full.0 = true,
                    WatchEvent::Rescan(Side::Beta) => full.1 = true,
                    WatchEvent::Failed(side, msg) => {
                        self.printer.emit(&Event::Problem {
                            side: side.as_str(),
                            path: ".".into(),
                            message: msg,
                        });
                        polling = true;
                        full = (true, true);
                    }
                    WatchEvent::Disconnected(side, msg) => {
                        let ep = match side {
                            Side::Alpha => &self.alpha,
                            Side::Beta => &self.beta,
                        };
                        // A cycle may have noticed first and connected again already.
                        if !ep.connected() {
                            self.reconnect(side.as_str(), msg)?;
                        }
                        full = (true, true);
                    }
                    WatchEvent::Stop | WatchEvent::HookDone => {}
                    WatchEvent::Request(r, reply) => requests.push((r, reply)),
                }
            }
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            self.run_hooks();
            if period.is_some_and(|p| last_full.elapsed() >= p) {
                full = (true, true);
            }
            let settle = self.settle_at.is_some_and(|at| Instant::now() >= at);
            if settle {
                // Held deletions: things went quiet; a full scan shows what really happened.
                self.settle_at = None;
                self.hold_started = None;
                full = (true, true);
            }
            // Failed paths are looked at again when their delay is up, whatever woke the loop
            // (a failing write can itself cause events: it must not retry at once).
            let now = Instant::now();
            let due: Vec<RelPath> = self
                .retries
                .iter()
                .filter(|(_, r)| r.due <= now)
                .map(|(p, _)| p.clone())
                .collect();
            dirty.0.extend(due.iter().cloned());
            dirty.1.extend(due);
            // Requests first, each its own cycle (a flush restricted to some paths reports only
            // what it was asked about); then what the watchers saw.
            for (r, reply) in requests {
                match self.serve(r) {
                    Ok(report) => {
                        res.errors = report.errors;
                        let _ = reply.send(Ok(report));
                    }
                    Err(RunError::Refused(m)) => {
                        let _ = reply.send(Err((m, true)));
                    }
                    Err(e) => {
                        let _ = reply.send(Err((e.to_string(), false)));
                        return Err(e);
                    }
                }
            }
            if full.0 || full.1 || !dirty.0.is_empty() || !dirty.1.is_empty() {
                if full.0 && full.1 {
                    last_full = Instant::now();
                }
                let req = |full: bool, d: BTreeSet<RelPath>| {
                    if full {
                        ScanRequest::Full
                    } else {
                        ScanRequest::Paths(d)
                    }
                };
                self.settling = settle;
                let out = self.cycle_resilient(&req(full.0, dirty.0), &req(full.1, dirty.1));
                self.settling = false;
                res = out?;
                self.schedule_retries(&res);
            }
            self.run_hooks();
            if last_cache_save.elapsed() > Duration::from_secs(60) {
                let _ = self.alpha.save_cache();
                let _ = self.beta.save_cache();
                last_cache_save = Instant::now();
            }
        }
        // Stopped by a signal: the step in flight finished; save the archive.
        if self.archive_dirty {
            self.save_archive()?;
        }
        // Open conflicts are listed again (with the command that resolves each), as `--once`
        // leaves them, and the exit code says so.
        let mut open: Vec<Conflict> = self.reported_conflicts.values().cloned().collect();
        open.sort_by(|x, y| x.path.cmp(&y.path));
        for c in &open {
            let ev = self.conflict_event(self.cycle, c);
            self.printer.emit(&ev);
        }
        let finish = if open.is_empty() {
            Finish::InSync
        } else {
            Finish::Conflicts
        };
        self.printer.emit(&Event::SessionEnd {
            exit_code: if open.is_empty() { 0 } else { 3 },
            conflicts: open.len() as u64,
            errors: res.errors,
        });
        Ok(finish)
    }

    /// Reports hook runs that ended and starts the next one due.
    fn run_hooks(&mut self) {
        if self.hooks.any() {
            self.hooks.step(&mut *self.beta, &mut self.printer);
        }
    }

    /// The event telling conflict `c`: what each side did, and the command that resolves it.
    fn conflict_event(&self, cycle: u64, c: &Conflict) -> Event {
        Event::Conflict {
            cycle,
            path: c.path.to_string(),
            alpha: describe_side(c.ancestor.as_ref(), c.alpha.as_ref()),
            beta: describe_side(c.ancestor.as_ref(), c.beta.as_ref()),
            resolve: crate::output::resolve_command(
                &self.alpha.describe(),
                &self.beta.describe(),
                c.path.as_str(),
                "alpha",
            ),
        }
    }

    /// Before a first sync (nothing agreed yet) copies into a non-empty alpha what only beta
    /// has (a stale copy as beta would put back files deleted from the source tree), says what
    /// would go each way and asks; with nobody to ask, refuses unless `--yes`. Filling an
    /// empty side, trees that agree, the one-way modes and `--reset` are not asked about.
    fn confirm_first_sync(&mut self, plan: &ferry_core::Plan) -> Result<(), RunError> {
        if self.archive.ancestor.is_some()
            || self.settings.reset
            || self.settings.yes
            || self.settings.mode.is_one_way()
            || plan.alpha.is_empty()
            || !matches!(self.alpha.tree(), Some(Entry::Directory(c)) if !c.is_empty())
        {
            return Ok(());
        }
        let (to_alpha, to_beta) = (leaves(&plan.alpha), leaves(&plan.beta));
        let conflicts = plan.conflicts.len() as u64;
        let ev = Event::FirstSync {
            alpha: self.alpha.describe(),
            beta: self.beta.describe(),
            to_alpha,
            to_beta,
            conflicts,
        };
        let asked = match self.confirm.as_mut() {
            Some(ask) => {
                self.printer.emit(&ev);
                Some(ask())
            }
            None => {
                if self.printer.json() {
                    self.printer.emit(&ev);
                }
                None
            }
        };
        match asked {
            Some(true) => {
                // Asked once per run, whatever makes the first cycle run again.
                self.settings.yes = true;
                Ok(())
            }
            Some(false) => Err(RunError::Refused(
                "nothing was changed (--mode one-way-replica makes beta a copy of alpha)".into(),
            )),
            None => Err(RunError::Refused(format!(
                "first sync: would copy {} only beta has into alpha, {} to beta{}; nothing was \
                 changed: pass --yes to merge both ways, or --mode one-way-replica to make beta \
                 a copy of alpha",
                crate::output::count(to_alpha, "file", "files"),
                to_beta,
                if conflicts > 0 {
                    format!(
                        ", and leave {}",
                        crate::output::count(conflicts, "conflict", "conflicts")
                    )
                } else {
                    String::new()
                }
            ))),
        }
    }

    /// With `--gitignore`: if the `.gitignore` files in alpha's tree changed since the rules
    /// were made (added, edited, removed, or newly visible or hidden), reads them again and
    /// installs the new rules on both sides; returns true (both sides then need a full scan).
    /// Rules come from alpha alone, as `.ferryignore`'s do, so both sides ignore the same paths
    /// (a rule only one side knew would read as a deletion there).
    fn reload_gitignore(&mut self) -> Result<bool, RunError> {
        if !self.settings.gitignore {
            return Ok(false);
        }
        let mut found = std::collections::BTreeMap::new();
        if let Some(tree) = self.alpha.tree() {
            tree.walk("", &mut |p, e| {
                if let Entry::File { digest, .. } = e {
                    let (dir, name) = p.rsplit_once('/').unwrap_or(("", p));
                    if name == GITIGNORE {
                        found.insert(dir.to_owned(), *digest);
                    }
                }
            });
        }
        if found == self.gitignores {
            return Ok(false);
        }
        // Shallowest first, so a deeper file's patterns come later and win.
        let mut dirs: Vec<&String> = found.keys().collect();
        dirs.sort_by_key(|d| (d.matches('/').count() + usize::from(!d.is_empty()), *d));
        let mut patterns = Vec::new();
        for dir in dirs {
            let file = if dir.is_empty() {
                GITIGNORE.to_owned()
            } else {
                format!("{dir}/{GITIGNORE}")
            };
            let Ok(path) = RelPath::new(&file) else {
                continue;
            };
            match self.alpha.read_small(&path, 1 << 20) {
                Ok(Some(c)) => {
                    patterns.extend(gitignore_patterns(dir, &String::from_utf8_lossy(&c)))
                }
                Ok(None) => {}
                Err(e) => self.report_once(Side::Alpha, &file, &format!("{e}; ignored")),
            }
        }
        self.gitignores = found;
        self.gitignore_patterns = patterns;
        // Installs them (with `.ferryignore`'s and `--ignore`'s), as a changed .ferryignore.
        self.rules_stale = true;
        self.reload_ignore()
    }

    /// Reads alpha's `.ferryignore`; if it changed, installs the new rules on both sides and
    /// returns true (both sides then need a full scan).
    fn reload_ignore(&mut self) -> Result<bool, RunError> {
        let starting = self.cycle == 0;
        let path = RelPath::new(IGNORE_FILE).unwrap_or_default();
        let content = match self.alpha.read_small(&path, 1 << 20) {
            Ok(c) => c,
            // Mid-session, a .ferryignore that cannot be read keeps the rules in force.
            Err(e) if !starting => {
                self.report_once(
                    Side::Alpha,
                    IGNORE_FILE,
                    &format!("{e}; keeping the previous ignore rules"),
                );
                return Ok(false);
            }
            Err(e) => {
                self.report_once(Side::Alpha, IGNORE_FILE, &format!("{e}; ignored"));
                None
            }
        };
        let stale = std::mem::take(&mut self.rules_stale);
        if content == self.ignore_file && !starting && !stale {
            return Ok(false);
        }
        let mut patterns = self.gitignore_patterns.clone();
        patterns.extend(
            content
                .as_deref()
                .map(|c| parse_ignore_file(&String::from_utf8_lossy(c)))
                .unwrap_or_default(),
        );
        patterns.extend(self.settings.ignores.iter().cloned());
        let spec = self.settings.ignore_spec(patterns);
        let ignorer = match Ignorer::new(&spec) {
            Ok(i) => i,
            // Bad input at start is a usage error; later, a typo must not end the session.
            Err(e) if starting => return Err(RunError::Ignore(format!("{IGNORE_FILE}: {e}"))),
            Err(e) => {
                self.report_once(
                    Side::Alpha,
                    IGNORE_FILE,
                    &format!("{e}; keeping the previous ignore rules"),
                );
                self.ignore_file = content;
                return Ok(false);
            }
        };
        self.alpha.set_ignore(&spec)?;
        self.beta.set_ignore(&spec)?;
        self.ignorer = ignorer;
        self.ignore_file = content;
        Ok(true)
    }

    /// Updates the retry schedule after a cycle: paths that failed again wait longer, paths
    /// the cycle looked at without failing are done.
    fn schedule_retries(&mut self, res: &CycleResult) {
        let now = Instant::now();
        self.retries.retain(|p, _| {
            res.retry.contains(p)
                || res.retry_later.contains(p)
                || res.deferred.contains(p)
                || res
                    .looked
                    .as_ref()
                    .is_some_and(|l| !l.iter().any(|q| p.starts_with(q)))
        });
        for (paths, slow) in [(&res.retry, false), (&res.retry_later, true)] {
            for p in paths {
                let (old, new) = res.failed.get(p).cloned().unwrap_or_default();
                let r = self.retries.entry(p.clone()).or_insert(Retry {
                    attempts: 0,
                    due: now,
                    old: None,
                    new: None,
                });
                r.attempts += 1;
                r.due = now + retry_delay(r.attempts, slow);
                r.old = old;
                r.new = new;
            }
        }
    }

    /// While watching, takes out of `plan` the changes that failed before and are not due for
    /// another try (the same change: an edit since is tried at once). Returns their paths.
    fn defer_not_due(&self, plan: &mut ferry_core::Plan) -> BTreeSet<RelPath> {
        let mut deferred = BTreeSet::new();
        if !self.watching || self.retries.is_empty() {
            return deferred;
        }
        let now = Instant::now();
        for changes in [&mut plan.alpha, &mut plan.beta] {
            changes.retain(|c| {
                let wait = self
                    .retries
                    .get(&c.path)
                    .is_some_and(|r| r.due > now && r.old == c.old && r.new == c.new);
                if wait {
                    deferred.insert(c.path.clone());
                }
                !wait
            });
        }
        deferred
    }

    /// The side that is a new endpoint since the last cycle (see `identity.rs`).
    fn fresh_side(&self) -> Option<IdSide> {
        if self.filling.is_some() {
            return self.filling;
        }
        // Nothing agreed yet: a first sync either way.
        self.archive.ancestor.as_ref()?;
        self.ids.fresh(
            self.alpha.identity().as_deref(),
            self.beta.identity().as_deref(),
        )
    }

    /// After a full cycle: records what the endpoints are, and what a fresh side kept for
    /// itself. A fill is saved at once (archive first), so a crash cannot make a later run
    /// read the fresh side against the old archive.
    fn note_identities(
        &mut self,
        fresh: Option<IdSide>,
        adopted: std::collections::BTreeMap<String, Entry>,
        image_held: Held,
    ) -> Result<(), RunError> {
        let mut ids = self.ids.clone();
        let (a, b) = (self.alpha.identity(), self.beta.identity());
        if a.is_some() {
            ids.alpha = a;
        }
        if b.is_some() {
            ids.beta = b;
        }
        match fresh {
            Some(IdSide::Alpha) => ids.adopted_alpha = adopted,
            Some(IdSide::Beta) => ids.adopted_beta = adopted,
            None => {}
        }
        ids.adopted_beta.extend(image_held);
        // An adopted entry is forgotten once it changed or the other side has the path.
        let (ta, tb) = (self.alpha.tree(), self.beta.tree());
        ids.adopted_alpha.retain(|p, e| {
            ta.and_then(|t| t.get(p)) == Some(&*e) && tb.and_then(|t| t.get(p)).is_none()
        });
        ids.adopted_beta.retain(|p, e| {
            tb.and_then(|t| t.get(p)) == Some(&*e) && ta.and_then(|t| t.get(p)).is_none()
        });
        if fresh.is_some() {
            self.save_archive()?;
        }
        self.filling = None;
        if ids != self.ids {
            ids.save(&self.session.dir).map_err(|source| {
                RunError::State(StateError::Io {
                    path: self.session.dir.join("endpoints"),
                    source,
                })
            })?;
            self.ids = ids;
        }
        Ok(())
    }

    /// Reports each name a side cannot hold apart, once.
    fn report_clashes(&mut self, names: &Aligned) {
        for c in &names.clashes {
            let side = if c.side == Side::Alpha.as_str() {
                Side::Alpha
            } else {
                Side::Beta
            };
            let message = c.message();
            for n in &c.names {
                let path = c.dir.join(n).map_or_else(|_| n.clone(), |p| p.to_string());
                self.report_once(side, &path, &message);
            }
        }
    }

    /// Emits a problem unless the same one was already reported.
    fn report_once(&mut self, side: Side, path: &str, message: &str) {
        let key = (side, path.to_owned(), message.to_owned());
        if self.reported.insert(key) {
            self.printer.emit(&Event::Problem {
                side: side.as_str(),
                path: path.to_owned(),
                message: message.to_owned(),
            });
        }
    }

    fn scan(&mut self, ra: &ScanRequest, rb: &ScanRequest) -> Result<(), RunError> {
        let (alpha, beta) = (&mut self.alpha, &mut self.beta);
        let (a, b) = std::thread::scope(|s| {
            // Deep trees recurse deeply: the same generous stack as the main engine thread.
            let h = std::thread::Builder::new()
                .stack_size(256 << 20)
                .spawn_scoped(s, || alpha.scan(ra));
            let b = beta.scan(rb);
            (h.map(|h| h.join()), b)
        });
        let a = match a {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => {
                return Err(RunError::Endpoint(EndpointError::Other(
                    "scan thread panicked".into(),
                    "alpha",
                )));
            }
            Err(e) => {
                return Err(RunError::Endpoint(EndpointError::Other(
                    format!("cannot start a scan thread: {e}"),
                    "alpha",
                )));
            }
        };
        let b = b?;
        for (side, report) in [(Side::Alpha, a), (Side::Beta, b)] {
            for (path, message) in report.notes {
                self.printer.emit(&Event::Problem {
                    side: side.as_str(),
                    path: path.to_string(),
                    message,
                });
            }
        }
        Ok(())
    }

    /// Runs a cycle; when a remote side's connection breaks, connects again (with backoff) and
    /// runs a full cycle instead: the archive is untouched by a cycle that did not finish, and
    /// what did get applied shows up as the same change on both sides.
    fn cycle_resilient(
        &mut self,
        ra: &ScanRequest,
        rb: &ScanRequest,
    ) -> Result<CycleResult, RunError> {
        let mut out = self.cycle(ra, rb);
        while let Err(RunError::Endpoint(EndpointError::Lost { side, message })) = out {
            self.printer.progress_end();
            self.alpha.discard_staged();
            self.beta.discard_staged();
            self.reconnect(side, message)?;
            if self.stop.load(Ordering::SeqCst) {
                return Ok(CycleResult::default());
            }
            out = self.cycle(&ScanRequest::Full, &ScanRequest::Full);
        }
        out
    }

    /// Connects `side` again: attempts with growing delays (0.1 s doubling to 5 s), each
    /// reported; `--once` gives up after [`ONCE_RECONNECTS`] attempts, a watching session only
    /// when stopped.
    fn reconnect(&mut self, side: &'static str, mut why: String) -> Result<(), RunError> {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0u32;
        // A Ctrl-C reaches the transport too (ssh shares the terminal's process group, and
        // must, to ask for passwords): its connection may end a moment before the stop flag
        // is set. A short grace keeps a stop from looking like a lost connection.
        let grace = Instant::now() + delay;
        while Instant::now() < grace && !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if self.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        // A person reads each reason once, then ferry waits quietly (a stopped container
        // would otherwise print a line every 5 s); --json keeps every attempt.
        let mut said: Vec<String> = Vec::new();
        loop {
            attempt += 1;
            if self.printer.json() || !said.contains(&why) {
                self.printer.emit(&Event::Reconnecting {
                    side,
                    attempt,
                    delay_ms: delay.as_millis() as u64,
                    message: why.clone(),
                });
                said.push(why.clone());
            }
            let until = Instant::now() + delay;
            while Instant::now() < until && !self.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let ep = if side == Side::Alpha.as_str() {
                &mut self.alpha
            } else {
                &mut self.beta
            };
            match ep.reconnect() {
                Ok(()) => {
                    self.printer.emit(&Event::Reconnected { side, attempt });
                    return Ok(());
                }
                Err(e) if self.settings.once && attempt >= ONCE_RECONNECTS => {
                    return Err(e.into());
                }
                // The side is named once, by the line itself.
                Err(EndpointError::Lost { message, .. }) => why = message,
                Err(e) => why = e.to_string(),
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    fn cycle(&mut self, ra: &ScanRequest, rb: &ScanRequest) -> Result<CycleResult, RunError> {
        let started = Instant::now();
        let wire_start = self.alpha.wire_bytes() + self.beta.wire_bytes();
        self.cycle += 1;
        let cycle = self.cycle;
        let mut full = matches!(ra, ScanRequest::Full) || matches!(rb, ScanRequest::Full);
        self.printer.emit(&Event::CycleStart {
            cycle,
            full_scan: full,
        });
        let mut phases = Phases::default();
        let mut mark = Instant::now();
        let mut lap = |slot: &mut f64| {
            let now = Instant::now();
            *slot += (now - mark).as_secs_f64() * 1000.0;
            mark = now;
        };
        self.scan(ra, rb)?;
        let ignore_touched = match ra {
            ScanRequest::Full => true,
            ScanRequest::Paths(p) => p.iter().any(|p| p.as_str() == IGNORE_FILE),
        };
        if ignore_touched && self.reload_ignore()? && cycle > 1 {
            self.scan(&ScanRequest::Full, &ScanRequest::Full)?;
            full = true;
        }
        // Each new set of .gitignore rules can show or hide other .gitignore files: read again
        // until they settle (a .gitignore's rules apply below its directory, so they do).
        for _ in 0..8 {
            if !self.reload_gitignore()? {
                break;
            }
            self.scan(&ScanRequest::Full, &ScanRequest::Full)?;
            full = true;
        }
        // Names spelled differently on the two sides or in the archive are shown to reconcile
        // under one spelling; names a side cannot hold apart become problems there (issue 12,
        // part 4: see `ferry_core::align_names`).
        let rules = [self.alpha.name_rules(), self.beta.name_rules()];
        let names = align_names(
            self.archive.ancestor.as_ref(),
            self.alpha.tree(),
            self.beta.tree(),
            rules,
        );
        self.report_clashes(&names);
        // A watch-triggered cycle looks only where the events pointed (and retries): what was
        // not rescanned on either side cannot have changed since the last cycle.
        let scope: Option<Vec<RelPath>> = match (full, ra, rb) {
            (false, ScanRequest::Paths(pa), ScanRequest::Paths(pb)) => {
                // Each side's events name its own spellings.
                let dirty: BTreeSet<RelPath> = pa
                    .iter()
                    .map(|p| names.alpha_spellings.to_session(p))
                    .chain(pb.iter().map(|p| names.beta_spellings.to_session(p)))
                    .collect();
                let dirty: Vec<RelPath> = dirty.into_iter().collect();
                Some(scope(
                    shown(&names.alpha, self.alpha.tree()),
                    shown(&names.beta, self.beta.tree()),
                    &dirty,
                ))
            }
            _ => None,
        };
        if !self.recovering.is_empty() {
            self.recover();
        }
        if !self.in_flight.is_empty() {
            self.settle_interrupted();
        }
        // A side that is a new endpoint (a recreated container, a mirror made again) was
        // edited by nobody: this cycle fills it from the other side instead of reading the
        // difference as deletions (see `fill_plan`).
        let fresh = if scope.is_none() && self.resolving.is_none() {
            self.fresh_side()
        } else {
            None
        };
        if let Some(f) = fresh {
            let (new, from) = match f {
                IdSide::Alpha => (Side::Alpha, Side::Beta),
                IdSide::Beta => (Side::Beta, Side::Alpha),
            };
            let endpoint = match f {
                IdSide::Alpha => self.alpha.describe(),
                IdSide::Beta => self.beta.describe(),
            };
            self.printer.emit(&Event::NewEndpoint {
                side: new.as_str(),
                from: from.as_str(),
                endpoint,
            });
            self.archive.ancestor = None;
            self.archive_dirty = true;
            self.filling = Some(f);
        }
        let ancestor = self.archive.ancestor.as_ref();
        let (a, b) = (
            shown(&names.alpha, self.alpha.tree()),
            shown(&names.beta, self.beta.tree()),
        );
        if !self.settings.accept_wipe {
            check_wipe(ancestor, a, b, self.settings.mode)?;
        }
        if a.is_none() {
            return Err(RunError::RootGone("alpha", self.alpha.describe()));
        }
        if b.is_none() {
            return Err(RunError::RootGone("beta", self.beta.describe()));
        }
        // What beta's image brought, asked at the first full cycle and when beta is new.
        let image_changed = match &self.settings.image_changes {
            Some(ask)
                if scope.is_none()
                    && self.resolving.is_none()
                    && (!self.image_asked || fresh == Some(IdSide::Beta)) =>
            {
                self.image_asked = true;
                match (ask.0)() {
                    Ok(changed) => Some(changed),
                    Err(why) => {
                        self.printer.emit(&Event::Problem {
                            side: "beta",
                            path: String::new(),
                            message: format!(
                                "cannot tell the image's files from the container's ({why}): \
                                 the image's files may be copied to alpha"
                            ),
                        });
                        None
                    }
                }
            }
            _ => None,
        };
        let mut image_held: Held = match (&image_changed, fresh, b) {
            (Some(changed), None, Some(b)) => unchanged_leaves(b, changed),
            _ => Held::new(),
        };
        if fresh.is_none() && self.resolving.is_none() && !self.settings.superseded.is_empty() {
            // Until agreed: a file rewritten while the first cycle copied it is settled by a
            // later one.
            let agreed = self.archive.ancestor.as_ref();
            self.settings
                .superseded
                .retain(|p, _| agreed.and_then(|t| t.get(p)).is_none());
            image_held.extend(self.settings.superseded.clone());
        }
        let mut adopted = std::collections::BTreeMap::new();
        let mut plan = match (&scope, fresh, &self.resolving) {
            (_, _, Some(r)) => {
                let (plan, paths) = resolve_plan(ancestor, a, b, r)?;
                self.printer.emit(&Event::Resolving {
                    keep: r.keep.as_str(),
                    paths: paths.iter().map(|p| p.to_string()).collect(),
                });
                self.resolved = paths;
                plan
            }
            (_, Some(f), None) => fill_plan(a, b, f, image_changed.as_ref(), &mut adopted),
            (Some(paths), None, None) => reconcile_at(ancestor, a, b, self.settings.mode, paths),
            (None, None, None) => reconcile(ancestor, a, b, self.settings.mode),
        };
        if fresh.is_none() {
            drop_adopted(&mut plan, &self.ids);
            drop_held(&mut plan.alpha, &image_held);
            settle_held_conflicts(&mut plan.conflicts, &mut plan.beta, &image_held, true);
        }
        if fresh.is_none() && self.resolving.is_none() {
            self.confirm_first_sync(&plan)?;
        }
        // Deletions in bulk are held while they keep coming (a wipe of the whole root shows
        // as one only at its end); then they propagate, with copies kept (below). Only a root
        // that was emptied or vanished stops a session (`check_wipe`).
        if self.watching && !self.settling {
            self.hold_mass_deletions(&mut plan, cycle);
        }
        let deferred = self.defer_not_due(&mut plan);
        if let Some(ex) = &self.exclude {
            for changes in [&mut plan.alpha, &mut plan.beta] {
                changes.retain(|c| !touches_excluded(c, ex));
            }
        }
        if self.watching {
            let created = creations(&plan.alpha) + creations(&plan.beta);
            self.note_deletions(deletions(&plan.alpha) + deletions(&plan.beta), created);
        }
        lap(&mut phases.scan);
        self.report_problems(ra, rb);
        lap(&mut phases.reconcile);
        let mut res = CycleResult {
            conflicts: plan.conflicts.len() as u64,
            looked: scope.as_ref().map(|s| s.iter().cloned().collect()),
            deferred,
            ..Default::default()
        };
        let current: HashSet<&str> = plan.conflicts.iter().map(|c| c.path.as_str()).collect();
        // Forget conflicts that are gone; outside a partial cycle's scope nothing was looked at.
        // A resolve looks only at its paths too.
        let looked = scope.as_ref().or(if self.resolving.is_some() {
            Some(&self.resolved)
        } else {
            None
        });
        self.reported_conflicts.retain(|p, _| {
            current.contains(p.as_str())
                || looked.is_some_and(|s| {
                    let p = RelPath::new(p).unwrap_or_default();
                    !s.iter().any(|q| p.starts_with(q))
                })
        });
        for c in &plan.conflicts {
            let told = self.reported_conflicts.get(c.path.as_str());
            if told.is_some_and(|t| t.alpha == c.alpha && t.beta == c.beta) {
                continue;
            }
            self.reported_conflicts
                .insert(c.path.as_str().to_owned(), c.clone());
            let ev = self.conflict_event(cycle, c);
            self.printer.emit(&ev);
        }
        if !plan.alpha.is_empty() || !plan.beta.is_empty() {
            let records: Vec<Pending> = [(true, &plan.alpha), (false, &plan.beta)]
                .into_iter()
                .flat_map(|(alpha, changes)| {
                    changes.iter().map(move |c| Pending::Planned {
                        alpha,
                        path: c.path.clone(),
                        old: c.old.clone(),
                        new: c.new.clone(),
                    })
                })
                .collect();
            if !self.journal_open {
                // A new journal names the archive it extends.
                self.session
                    .journal_pending(&[Pending::Epoch(self.archive.epoch)])?;
            }
            self.session.journal_pending(&records)?;
            self.in_flight = records;
            self.journal_open = true;
            // The journal only shrinks when the archive is written: keep that coming.
            self.archive_dirty = true;
        }
        let mut bytes = 0;
        // Bytes written to (alpha, beta).
        let mut moved_to = (0u64, 0u64);
        let mut counts = (0u64, 0u64);
        for (side, changes) in [(Side::Beta, &plan.beta), (Side::Alpha, &plan.alpha)] {
            if changes.is_empty() || self.stop.load(Ordering::SeqCst) {
                continue;
            }
            // A bulk deletion keeps a copy of everything it removes (hard links: free), as
            // does the cycle filling a new endpoint.
            let recent: u64 = self.recent_deletes.iter().map(|(_, n)| n).sum();
            let keep_all = (self.watching && self.bulk_deleting())
                || fresh.is_some()
                || self.resolving.is_some()
                || deletions(changes).max(recent) >= BULK_COPIES;
            let backup = self.needs_backup(changes, keep_all);
            lap(&mut phases.stage);
            let (src_names, dst_names, dst_tree) = match side {
                Side::Beta => (
                    &names.alpha_spellings,
                    &names.beta_spellings,
                    self.beta.tree(),
                ),
                Side::Alpha => (
                    &names.beta_spellings,
                    &names.alpha_spellings,
                    self.alpha.tree(),
                ),
            };
            let on_disk = spelled_on_disk(changes, dst_names, dst_tree);
            let spellings = [src_names, dst_names];
            let (outcomes, moved) =
                self.stage_and_transition(side, changes, &on_disk, spellings, &backup, &mut res)?;
            bytes += moved;
            lap(&mut phases.transition);
            let n = self.report_outcomes(side, &on_disk, &outcomes, &mut res);
            if side == Side::Beta {
                counts.1 = n;
                moved_to.1 = moved;
            } else {
                counts.0 = n;
                moved_to.0 = moved;
            }
        }
        res.applied = counts.0 + counts.1;
        let root = [RelPath::root()];
        let paths = scope.as_deref().unwrap_or(&root);
        // What the sides hold now, under the session's spellings again.
        let after: Aligned;
        let (a_now, b_now) = if names.is_identity() {
            (self.alpha.tree(), self.beta.tree())
        } else {
            after = align_names(
                self.archive.ancestor.as_ref(),
                self.alpha.tree(),
                self.beta.tree(),
                rules,
            );
            (
                shown(&after.alpha, self.alpha.tree()),
                shown(&after.beta, self.beta.tree()),
            )
        };
        let changed = agree_at(&mut self.archive.ancestor, a_now, b_now, paths);
        self.in_flight.clear();
        self.archive_dirty |= changed;
        if scope.is_none() {
            self.ancestor_entries = self
                .archive
                .ancestor
                .as_ref()
                .map_or(0, |a| a.count() as u64);
        }
        lap(&mut phases.agree);
        if scope.is_none() && self.resolving.is_none() {
            self.note_identities(fresh, adopted, image_held)?;
        }
        // `--accept-wipe` lets one wipe through, not every later one of a live session.
        self.settings.accept_wipe = false;
        // Writing the archive is off the path to visibility; while busy, at most once a second
        // (the watch loop saves it when things go quiet, and at exit). Until then the journal
        // records what this cycle agreed on.
        if self.archive_dirty
            && (self.settings.once || self.archive_saved.elapsed() > ARCHIVE_SAVE_EVERY)
        {
            self.save_archive()?;
        } else if self.journal_open {
            let agreed = paths
                .iter()
                .map(|p| {
                    let value = self
                        .archive
                        .ancestor
                        .as_ref()
                        .and_then(|a| a.get(p.as_str()));
                    (p.clone(), value.cloned())
                })
                .collect();
            self.session
                .journal_pending(&[Pending::Committed { agreed }])?;
        }
        lap(&mut phases.save);
        if let Some(view) = &self.view {
            let mut conflicts: Vec<_> = self
                .reported_conflicts
                .values()
                .map(conflict_view)
                .collect();
            conflicts.sort_by(|x, y| x.path.cmp(&y.path));
            let tree = (full || res.applied > 0 || self.cycle == 1)
                .then(|| self.alpha.tree().map(tree_size))
                .flatten();
            let mut v = view.lock().unwrap_or_else(|p| p.into_inner());
            v.conflicts = conflicts;
            if tree.is_some() {
                v.tree = tree;
            }
        }
        self.printer.emit(&Event::CycleEnd {
            cycle,
            to_alpha: counts.0,
            to_beta: counts.1,
            conflicts: res.conflicts,
            errors: res.errors,
            bytes,
            bytes_to_alpha: moved_to.0,
            bytes_to_beta: moved_to.1,
            wire_bytes: (self.alpha.wire_bytes() + self.beta.wire_bytes())
                .saturating_sub(wire_start),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            phases_ms: phases,
        });
        Ok(res)
    }

    /// Settles the journal of a run that died before saving its archive, against this cycle's
    /// (full) scan: a change whose side now holds its `new` state happened, so that state is
    /// what both sides agreed on; one whose side still holds `old` did not, so the archive
    /// stands; anything else (half a directory, an edit since) is forgotten, and the sides are
    /// merged there as in a first sync. Nothing is taken for a deletion that was not one.
    fn recover(&mut self) {
        // Finished cycles first: their agreed values are exact. What follows the last commit
        // is a cycle that died half way: judge each of its changes by what the disk shows.
        let mut unfinished = Vec::new();
        for r in std::mem::take(&mut self.recovering) {
            match r {
                Pending::Committed { agreed } => {
                    for (path, value) in agreed {
                        set_agreed(&mut self.archive.ancestor, &path, value);
                    }
                    unfinished.clear();
                }
                Pending::Epoch(_) => {}
                planned => unfinished.push(planned),
            }
        }
        for r in unfinished {
            let Pending::Planned {
                alpha,
                path,
                old,
                new,
            } = r
            else {
                continue;
            };
            let side = if alpha { &self.alpha } else { &self.beta };
            let now = side.tree().and_then(|t| t.get(path.as_str()));
            if now == new.as_ref() {
                set_agreed(&mut self.archive.ancestor, &path, new);
            } else if now != old.as_ref() {
                forget(&mut self.archive.ancestor, &path);
            }
        }
    }

    /// Settles the changes of a cycle a lost connection cut short, against this cycle's full
    /// scan (`cycle_resilient` follows a loss with a full cycle): what was made is agreed on
    /// (see [`agree_made`]; issue 9, item C), the rest keeps the archive's value.
    fn settle_interrupted(&mut self) {
        for r in std::mem::take(&mut self.in_flight) {
            let Pending::Planned {
                alpha, path, new, ..
            } = r
            else {
                continue;
            };
            let side = if alpha { &self.alpha } else { &self.beta };
            let now = side.tree().and_then(|t| t.get(path.as_str()));
            self.archive_dirty |= agree_made(&mut self.archive.ancestor, &path, new.as_ref(), now);
        }
    }

    /// Takes deletions out of a watch-triggered plan while they come in bulk (see
    /// [`MASS_DELETE`]); the full cycle after [`SETTLE`] brings them back if they are real.
    fn hold_mass_deletions(&mut self, plan: &mut ferry_core::Plan, cycle: u64) {
        let removes = |c: &Change| {
            c.new.is_none()
                || c.old
                    .as_ref()
                    .is_some_and(|o| o.is_dir() && !c.new.as_ref().is_some_and(Entry::is_dir))
        };
        let deletions: u64 = plan
            .alpha
            .iter()
            .chain(&plan.beta)
            .filter(|c| removes(c))
            .filter_map(|c| c.old.as_ref())
            .map(|o| o.count() as u64)
            .sum();
        if deletions == 0 {
            return;
        }
        let now = Instant::now();
        while self
            .recent_deletes
            .front()
            .is_some_and(|(t, _)| now - *t > DELETE_WINDOW)
        {
            self.recent_deletes.pop_front();
        }
        let recent: u64 = self.recent_deletes.iter().map(|(_, n)| n).sum();
        // A slow wipe is caught by the episode's total, not the rate.
        // Net of what the same plan creates: a rename or a branch switch deletes as much as it
        // creates; a wipe only deletes.
        let net = deletions.saturating_sub(creations(&plan.alpha) + creations(&plan.beta));
        let all = self.episode_total(now) + net;
        let slow_wipe = all >= 20 && all * 5 >= self.episode_base_or_now();
        if self.settle_at.is_none() && recent + net < MASS_DELETE && !slow_wipe {
            self.recent_deletes.push_back((now, net));
            return;
        }
        plan.alpha.retain(|c| !removes(c));
        plan.beta.retain(|c| !removes(c));
        let started = *self.hold_started.get_or_insert(now);
        // Only bulk keeps the hold going (a stray temp file must not starve it), and never past
        // MAX_HOLD: then a full cycle decides, whatever is still going on.
        if self.settle_at.is_none() || deletions >= MASS_DELETE / 10 {
            self.settle_at = Some((now + SETTLE).min(started + MAX_HOLD));
        }
        self.recent_deletes.clear();
        self.printer.emit(&Event::Hold { cycle, deletions });
    }

    /// Entries deleted in the current episode (pruning what is older than [`WIPE_WINDOW`]).
    /// Net deletions of the current episode: entries deleted minus entries created (a rename
    /// or an edit by temp file + rename nets to nothing; a wipe is all deletions).
    fn episode_total(&mut self, now: Instant) -> u64 {
        while self
            .episode
            .front()
            .is_some_and(|(t, _, _)| now - *t > WIPE_WINDOW)
        {
            self.episode.pop_front();
        }
        let (d, c) = self
            .episode
            .iter()
            .fold((0, 0), |(d, c), (_, x, y)| (d + x, c + y));
        d.saturating_sub(c)
    }

    fn episode_base_or_now(&self) -> u64 {
        if self.episode.is_empty() {
            self.ancestor_entries
        } else {
            self.episode_base
        }
    }

    /// Records deletions a watch-triggered cycle is about to apply.
    fn note_deletions(&mut self, deleted: u64, created: u64) {
        if deleted == 0 && created == 0 {
            return;
        }
        let now = Instant::now();
        self.episode_total(now);
        if self.episode.is_empty() {
            // A new episode: measured against the archive as it was when it began.
            self.episode_base = self.ancestor_entries;
        }
        self.episode.push_back((now, deleted, created));
    }

    /// Deletions are coming in bulk (a hold is on, or this is the cycle deciding one): then
    /// every deleted file is kept in the backup area, archived or not.
    fn bulk_deleting(&mut self) -> bool {
        self.settle_at.is_some() || self.settling
    }

    /// Forgets what the two sides agreed, as `--reset` would at the next start, and returns
    /// it: the session no longer maps these two directories (`ferry up`: a later COPY took its
    /// container paths over), so that agreement is stale by the time it maps them again.
    pub fn retire(&mut self) -> Result<Option<Entry>, RunError> {
        let agreed = self.archive.ancestor.take();
        self.archive.epoch += 1;
        self.in_flight.clear();
        self.session.save_archive(&self.archive)?;
        self.archive_dirty = false;
        Ok(agreed)
    }

    fn save_archive(&mut self) -> Result<(), RunError> {
        if !self.in_flight.is_empty() {
            // A cycle was cut short and no scan has settled its changes yet (stopped while
            // reconnecting): only the journal knows them; the next start settles them.
            return Ok(());
        }
        self.archive.epoch += 1;
        self.session.save_archive(&self.archive)?;
        self.archive_dirty = false;
        self.journal_open = false;
        self.archive_saved = Instant::now();
        Ok(())
    }

    /// The digests of content that `changes` replace or remove and that the archive does not
    /// hold at that same path: what must be backed up first. (A digest elsewhere in the
    /// archive is not enough: that copy may be gone by now, or go in this very cycle.) With
    /// `keep_all` (a bulk deletion), everything removed, except content the same changes put
    /// back elsewhere (a rename or a move needs no copy).
    fn needs_backup(&self, changes: &[Change], keep_all: bool) -> HashSet<Digest> {
        let ancestor = self.archive.ancestor.as_ref();
        let mut created = HashSet::new();
        if keep_all {
            for ch in changes {
                if let Some(new) = &ch.new {
                    new.walk("", &mut |_, e| {
                        if let Entry::File { digest, .. } = e {
                            created.insert(*digest);
                        }
                    });
                }
            }
        }
        let mut out = HashSet::new();
        for ch in changes {
            let Some(old) = &ch.old else { continue };
            old.walk(ch.path.as_str(), &mut |p, e| {
                let Entry::File { digest, .. } = e else { return };
                let archived = matches!(ancestor.and_then(|a| a.get(p)), Some(Entry::File { digest: d, .. }) if d == digest);
                if !archived || (keep_all && !created.contains(digest)) {
                    out.insert(*digest);
                }
            });
        }
        out
    }

    /// Applies `changes` to `side`: content found locally is staged first, the rest streams
    /// from the other side while the changes are applied (see `copy`). Returns the outcomes
    /// and the bytes that crossed.
    /// `changes` are in the session's spelling, `on_disk` the same as the receiving side
    /// spells them; `spellings` are the sending and the receiving side's.
    fn stage_and_transition(
        &mut self,
        side: Side,
        changes: &[Change],
        on_disk: &[Change],
        spellings: [&Spellings; 2],
        backup: &HashSet<Digest>,
        res: &mut CycleResult,
    ) -> Result<(Vec<Outcome>, u64), RunError> {
        let mut items = copy::wanted(changes);
        // Content is read on the sending side under its own spelling. A delta needs the
        // receiver's file at the same path: not where the two spell it differently.
        let mut respelled: HashSet<RelPath> = HashSet::new();
        if spellings.iter().any(|s| !s.is_empty()) {
            for it in &mut items {
                let (from, to) = (
                    spellings[0].to_disk(&it.path),
                    spellings[1].to_disk(&it.path),
                );
                if from != to {
                    respelled.insert(from.clone());
                }
                it.path = from;
            }
        }
        let (src, dst) = match side {
            Side::Beta => (&mut self.alpha, &mut self.beta),
            Side::Alpha => (&mut self.beta, &mut self.alpha),
        };
        let list: Vec<Wanted> = items.iter().map(|i| i.want).collect();
        match dst.stage_local(&list) {
            Ok(missing) => {
                let missing: HashSet<Digest> = missing.into_iter().collect();
                items.retain(|i| missing.contains(&i.want.digest));
            }
            Err(e @ EndpointError::Lost { .. }) => return Err(e.into()),
            Err(e) => {
                // Everything then streams from the other side.
                res.errors += 1;
                self.printer.emit(&Event::Error {
                    side: Some(side.as_str()),
                    path: None,
                    message: e.to_string(),
                    retry: false,
                });
            }
        }
        if src.is_remote() || dst.is_remote() {
            // A big file the receiver has an older version of goes as a delta against it.
            let olds: HashMap<&RelPath, Digest> = on_disk
                .iter()
                .filter_map(|ch| match (&ch.old, &ch.new) {
                    (Some(Entry::File { digest, .. }), Some(Entry::File { .. })) => {
                        Some((&ch.path, *digest))
                    }
                    _ => None,
                })
                .collect();
            for it in &mut items {
                let Some(old) = olds
                    .get(&it.path)
                    .filter(|_| delta::worth_it(it.want.size) && !respelled.contains(&it.path))
                else {
                    continue;
                };
                match dst.signature(&it.path, old) {
                    Ok(sig) => {
                        it.base_digest = sig.is_some().then_some(*old);
                        it.signature = sig;
                    }
                    Err(e @ EndpointError::Lost { .. }) => return Err(e.into()),
                    Err(_) => {}
                }
            }
        }
        let base = dst.base_opener();
        let total: u64 = items.iter().map(|i| i.want.size).sum();
        self.printer
            .progress_start(total, items.iter().map(|i| i.want.uses as u64).sum());
        let printer = &self.printer;
        let stop = &self.stop;
        let (moved, result) = copy::stream(
            &mut **src,
            &items,
            base,
            stop,
            &|n| printer.progress_inc(n),
            |feed| {
                let mut out = Vec::with_capacity(on_disk.len());
                for batch in on_disk.chunks(BATCH) {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    out.extend(dst.transition(batch, backup, feed)?);
                }
                Ok::<_, EndpointError>(out)
            },
        );
        self.printer.progress_end();
        // Content is staged for the whole cycle; only now is what is left of it unneeded.
        dst.discard_staged();
        Ok((result?, moved))
    }

    /// Emits change, backup and error events; returns the number of entries changed.
    fn report_outcomes(
        &mut self,
        side: Side,
        changes: &[Change],
        outcomes: &[Outcome],
        res: &mut CycleResult,
    ) -> u64 {
        let direction = match side {
            Side::Beta => "alpha->beta",
            Side::Alpha => "beta->alpha",
        };
        let mut n = 0;
        for (ch, o) in changes.iter().zip(outcomes) {
            for (path, message) in &o.errors {
                // A full disk also shows as "content not available": it waits on the user.
                let later = waits_on_the_user(message);
                let retry = !later && is_transient(message);
                if retry {
                    res.retry.insert(path.clone());
                } else if later {
                    res.retry_later.insert(path.clone());
                }
                if retry || later {
                    res.failed.insert(
                        path.clone(),
                        (below(ch, &ch.old, path), below(ch, &ch.new, path)),
                    );
                }
                res.errors += 1;
                let message = explain(message, path, ch);
                // The same failure at the same path is said once, not at every retry.
                let key = (side, path.clone());
                if self.shown_errors.get(&key) == Some(&message) {
                    continue;
                }
                self.shown_errors.insert(key, message.clone());
                self.printer.emit(&Event::Error {
                    side: Some(side.as_str()),
                    path: Some(path.to_string()),
                    message,
                    retry: retry || later,
                });
            }
            if o.errors.is_empty() && !self.shown_errors.is_empty() {
                // Done at this path and below: a later failure there is news again.
                self.shown_errors
                    .retain(|(s, p), _| *s != side || !p.starts_with(&ch.path));
            }
            if o.now == ch.old {
                continue;
            }
            self.hooks
                .note_change(&ch.path, ch.old.as_ref(), o.now.as_ref());
            n += o
                .now
                .as_ref()
                .or(ch.old.as_ref())
                .map_or(1, |e| e.count() as u64);
            let (action, kind) = describe_change(ch);
            if let Some(c) = &mut self.collect {
                c.push(Changed {
                    direction,
                    path: ch.path.to_string(),
                    action,
                    backups: o
                        .backups
                        .iter()
                        .map(|(_, b)| b.display().to_string())
                        .collect(),
                });
            }
            self.printer.emit(&Event::Change {
                cycle: self.cycle,
                direction,
                side: side.as_str(),
                path: ch.path.to_string(),
                action,
                kind,
                backups: o
                    .backups
                    .iter()
                    .map(|(p, b)| Backup {
                        path: format!("{}/{}", side.as_str(), p),
                        backup: b.display().to_string(),
                    })
                    .collect(),
            });
        }
        n
    }

    /// Reports each unreadable path once (full scans look everywhere, partial ones only where
    /// they looked).
    fn report_problems(&mut self, ra: &ScanRequest, rb: &ScanRequest) {
        let mut found = Vec::new();
        for (side, req, tree) in [
            (Side::Alpha, ra, self.alpha.tree()),
            (Side::Beta, rb, self.beta.tree()),
        ] {
            let Some(tree) = tree else { continue };
            let mut visit = |prefix: &str, e: &Entry| {
                e.walk(prefix, &mut |p, e| {
                    if let Entry::Problem(m) = e {
                        found.push((side, p.to_owned(), m.clone()));
                    }
                })
            };
            match req {
                ScanRequest::Full => visit("", tree),
                ScanRequest::Paths(paths) => {
                    for p in paths {
                        if let Some(e) = tree.get(p.as_str()) {
                            visit(p.as_str(), e);
                        }
                    }
                }
            }
        }
        for (side, path, message) in found {
            self.report_once(side, &path, &message);
        }
    }
}

/// A side's tree as reconcile sees it: as [`align_names`] showed it, or as scanned.
fn shown<'a>(aligned: &'a Option<Option<Entry>>, scanned: Option<&'a Entry>) -> Option<&'a Entry> {
    match aligned {
        Some(tree) => tree.as_ref(),
        None => scanned,
    }
}

/// `changes` (in the session's spelling) with their paths as `names` spells them on the
/// receiving side's disk; where names at or below a path are spelled differently, `old` is
/// that side's own entry there (the same state, its names as on disk).
fn spelled_on_disk<'a>(
    changes: &'a [Change],
    names: &Spellings,
    tree: Option<&Entry>,
) -> Cow<'a, [Change]> {
    if names.is_empty() {
        return Cow::Borrowed(changes);
    }
    Cow::Owned(
        changes
            .iter()
            .map(|ch| {
                let path = names.to_disk(&ch.path);
                let old = if ch.is_meta() || !names.touches(&ch.path) {
                    ch.old.clone()
                } else {
                    tree.and_then(|t| t.get(path.as_str())).cloned()
                };
                Change {
                    path,
                    old,
                    new: ch.new.clone(),
                }
            })
            .collect(),
    )
}

/// The plan of the cycle that fills a fresh side from the other (the truth): the truth's
/// files go in, the fresh side's differing versions are replaced (kept as backups), what only
/// the fresh side has stays where it is and is not copied back (`adopted`), nothing is
/// deleted; when the fresh side is beta and its image's changes are known (`image_changed`),
/// what the container made or changed since its image is copied back. Two-way as usual from
/// the next cycle.
fn fill_plan(
    alpha: Option<&Entry>,
    beta: Option<&Entry>,
    fresh: IdSide,
    image_changed: Option<&BTreeSet<String>>,
    adopted: &mut std::collections::BTreeMap<String, Entry>,
) -> ferry_core::Plan {
    let (truth, new) = match fresh {
        IdSide::Beta => (alpha, beta),
        IdSide::Alpha => (beta, alpha),
    };
    // No ancestor: nothing is a deletion; the truth wins every difference.
    let p = reconcile(None, truth, new, Mode::TwoWayResolved);
    for c in &p.alpha {
        if c.old.is_none()
            && let Some(n) = &c.new
        {
            // Leaf by leaf: a file added beside them later syncs alone (see `drop_adopted`).
            n.walk(c.path.as_str(), &mut |path, e| match e {
                Entry::Directory(children) if !children.is_empty() => {}
                // What the container made or changed since its image comes back.
                _ if fresh == IdSide::Beta && image_changed.is_some_and(|c| c.contains(path)) => {}
                _ => {
                    adopted.insert(path.to_owned(), e.clone());
                }
            });
        }
    }
    let mut conflicts = p.conflicts;
    match fresh {
        IdSide::Beta => {
            let mut back = Vec::new();
            if image_changed.is_some() {
                back = p.alpha;
                drop_held(&mut back, adopted);
            }
            ferry_core::Plan {
                alpha: back,
                beta: p.beta,
                conflicts,
            }
        }
        IdSide::Alpha => {
            for c in &mut conflicts {
                std::mem::swap(&mut c.alpha, &mut c.beta);
            }
            ferry_core::Plan {
                alpha: p.beta,
                beta: Vec::new(),
                conflicts,
            }
        }
    }
}

/// The plan of `ferry resolve` (see [`Engine::resolve`]) and the paths it covers: two-way
/// reconciliation restricted to those paths in which the kept side wins every conflict (alpha
/// as in `two-way-resolved`, beta by its mirror). What changed on one side only there syncs as
/// usual. A named path that is on neither side is refused before anything is done.
fn resolve_plan(
    ancestor: Option<&Entry>,
    a: Option<&Entry>,
    b: Option<&Entry>,
    r: &Resolving,
) -> Result<(ferry_core::Plan, Vec<RelPath>), RunError> {
    let at = |t: Option<&Entry>, p: &RelPath| t.and_then(|t| t.get(p.as_str())).is_some();
    let paths = match &r.paths {
        Some(paths) => {
            if let Some(p) = paths.iter().find(|p| !at(a, p) && !at(b, p)) {
                return Err(RunError::Refused(format!(
                    "nothing at '{p}' in alpha or beta; nothing was changed"
                )));
            }
            paths.clone()
        }
        None => reconcile(ancestor, a, b, Mode::TwoWaySafe)
            .conflicts
            .into_iter()
            .map(|c| c.path)
            .collect(),
    };
    let plan = match r.keep {
        Side::Alpha => reconcile_at(ancestor, a, b, Mode::TwoWayResolved, &paths),
        Side::Beta => {
            let p = reconcile_at(ancestor, b, a, Mode::TwoWayResolved, &paths);
            ferry_core::Plan {
                alpha: p.beta,
                beta: p.alpha,
                conflicts: p
                    .conflicts
                    .into_iter()
                    .map(|c| Conflict {
                        alpha: c.beta,
                        beta: c.alpha,
                        ..c
                    })
                    .collect(),
            }
        }
    };
    Ok((plan, paths))
}

/// True if `c` is at or below a path `ex` matches, or would carry one (a directory created,
/// replaced or removed with an excluded path inside): a flush's `exclude` leaves it for the
/// next cycle.
fn touches_excluded(c: &Change, ex: &Ignorer) -> bool {
    if ex.is_ignored_or_below(&c.path) {
        return true;
    }
    let mut hit = false;
    for e in [&c.old, &c.new].into_iter().flatten() {
        e.walk(c.path.as_str(), &mut |p, e| {
            hit |= !p.is_empty() && ex.is_ignored(p, e.is_dir());
        });
    }
    hit
}

/// Files (and links, and empty directories) that `changes` put in place.
fn leaves(changes: &[Change]) -> u64 {
    let mut n = 0;
    for c in changes {
        if let Some(e) = &c.new {
            e.walk("", &mut |_, e| match e {
                Entry::Directory(c) if !c.is_empty() => {}
                _ => n += 1,
            });
        }
    }
    n
}

/// Takes out of `plan` the copies of what a fresh side adopted or beta's image brought (see
/// [`fill_plan`] and [`Settings::image_changes`]): a creation of a held entry goes, and a
/// directory created with held entries inside goes without them (the files added beside them
/// still go).
fn drop_adopted(plan: &mut ferry_core::Plan, ids: &Identities) {
    drop_held(&mut plan.alpha, &ids.adopted_beta);
    drop_held(&mut plan.beta, &ids.adopted_alpha);
}

/// The part of `e` (an entry of change `ch`) at `path`, a path at or below `ch.path`.
fn below(ch: &Change, e: &Option<Entry>, path: &RelPath) -> Option<Entry> {
    let e = e.as_ref()?;
    if path == &ch.path {
        return Some(e.clone());
    }
    let rest = path.as_str().strip_prefix(ch.path.as_str())?;
    let rest = rest.trim_start_matches('/');
    e.get(rest).cloned()
}

/// True for failures that wait on something outside ferry (space, permissions, a read-only
/// filesystem, a quota): retried slowly while watching, never given up on.
fn waits_on_the_user(message: &str) -> bool {
    [
        "No space left on device",
        "Disk quota exceeded",
        "Permission denied",
        "Read-only file system",
        "Operation not permitted",
        "Too many open files",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// The message a person reads for an error at `path` while applying `ch`: a full disk says
/// how much was needed.
fn explain(message: &str, path: &RelPath, ch: &Change) -> String {
    if message.contains("No space left on device") {
        let need = ch.new.as_ref().map_or(0, |e| {
            let mut n = 0;
            e.walk("", &mut |_, e| {
                if let Entry::File { size, .. } = e {
                    n += size;
                }
            });
            n
        });
        return format!(
            "no space left on device writing {path} ({} needed); retrying until there is",
            human_bytes(need)
        );
    }
    message.to_owned()
}

/// `n` bytes for a person: "1.6 MB", "512 B".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Entries removed by `changes` (files and whole subtrees).
fn deletions(changes: &[Change]) -> u64 {
    changes
        .iter()
        .filter(|c| c.new.is_none())
        .filter_map(|c| c.old.as_ref())
        .map(|o| o.count() as u64)
        .sum()
}

/// Entries created by `changes` where nothing was.
fn creations(changes: &[Change]) -> u64 {
    changes
        .iter()
        .filter(|c| c.old.is_none())
        .filter_map(|c| c.new.as_ref())
        .map(|n| n.count() as u64)
        .sum()
}

fn describe_change(ch: &Change) -> (&'static str, &'static str) {
    match (&ch.old, &ch.new) {
        (None, Some(n)) => ("create", kind(n)),
        (Some(o), None) => ("delete", kind(o)),
        (Some(Entry::File { digest: a, .. }), Some(Entry::File { digest: b, .. })) if a == b => {
            ("chmod", "file")
        }
        (Some(Entry::Directory(_)), Some(Entry::Directory(_))) => ("chmod", "directory"),
        (Some(Entry::File { .. }), Some(Entry::File { .. })) => ("modify", "file"),
        (Some(_), Some(n)) => ("replace", kind(n)),
        (None, None) => ("none", "none"),
    }
}

/// How one side moved away from the ancestor, for conflict messages: "created a file (7 B)",
/// "modified it (now 1.2 kB)", "replaced it with a directory (3 files)", "deleted it".
fn describe_side(ancestor: Option<&Entry>, now: Option<&Entry>) -> String {
    match (ancestor, now) {
        (_, None) => "deleted it".into(),
        (None, Some(e)) => format!("created {}", what(e)),
        (Some(Entry::File { digest: a, .. }), Some(Entry::File { digest: b, .. })) if a == b => {
            "changed the permission bits".into()
        }
        (Some(Entry::File { .. }), Some(Entry::File { size, .. })) => {
            format!("modified it (now {})", human_bytes(*size))
        }
        (Some(a), Some(e)) if kind(a) == kind(e) => "modified it".into(),
        (Some(_), Some(e)) => format!("replaced it with {}", what(e)),
    }
}

/// An entry for a person: "a file (7 B)", "a directory (3 files)", "a symlink to x".
fn what(e: &Entry) -> String {
    match e {
        Entry::File { size, .. } => format!("a file ({})", human_bytes(*size)),
        Entry::Directory(_) => {
            let mut files = 0;
            e.walk("", &mut |_, e| {
                if !e.is_dir() {
                    files += 1;
                }
            });
            format!(
                "a directory ({})",
                crate::output::count(files, "file", "files")
            )
        }
        Entry::Symlink { target } => format!("a symlink to {target}"),
        Entry::Problem(m) => format!("something unreadable ({m})"),
    }
}

/// A channel for watch events, and a stop flag the signal handler sets.
pub fn wake_channel() -> (SyncSender<WatchEvent>, Receiver<WatchEvent>) {
    sync_channel(4096)
}
