//! Command-line parsing in two stages: raw flags ([`Cli`]), then checked, ready-to-use values
//! ([`SyncArgs`]). Every refusal is a one-line [`UsageError`] (exit code 2).

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use ferry_core::{Mode, RelPath};

use crate::engine::{OnChange, Settings};
use crate::remote::Location;
use crate::state::Retention;

#[derive(Parser, Debug)]
#[command(
    name = "ferry",
    version,
    about = "Two-way file sync that never loses a byte",
    after_help = "Example: ferry sync ./app docker://web/app   (see 'ferry sync --help')"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Keep ALPHA and BETA in sync (continuously, until Ctrl-C, unless --once).
    #[command(after_help = SYNC_AFTER_HELP, after_long_help = SYNC_AFTER_LONG_HELP)]
    Sync(SyncFlags),
    /// Build and start a Docker Compose project, sync each service's source with its
    /// container both ways, and stream the logs (until Ctrl-C, which stops the services).
    #[command(after_help = UP_AFTER_HELP)]
    Up(UpFlags),
    /// Resolve conflicts of a background session (NAME) or of a pair not being synced right
    /// now (ALPHA BETA): at each PATH (or every conflict, with --all) the kept side's version
    /// goes to the other side, whose own version is kept in its backup area.
    #[command(after_help = RESOLVE_AFTER_HELP)]
    Resolve(ResolveFlags),
    /// Start, stop or ask about the background daemon (started on demand by the session
    /// commands).
    Daemon {
        #[command(subcommand)]
        op: DaemonOp,
    },
    /// Create a background session syncing ALPHA and BETA (as 'ferry sync' would, in the
    /// daemon, surviving this terminal).
    #[command(after_help = SESSIONS_AFTER_HELP)]
    Create(CreateFlags),
    /// List the background sessions: endpoints, state, last sync each way, conflicts, errors.
    List {
        /// One JSON object with every session.
        #[arg(long)]
        json: bool,
    },
    /// One session's state, endpoints, last sync each way, the last hour's traffic, tree
    /// size, conflicts and last error.
    Status(Target),
    /// A session's open conflicts: path, what each side did there, both versions' sizes and
    /// modification times (exit code 3 when there are any).
    #[command(after_help = "Resolve them with 'ferry resolve NAME PATH... --keep alpha|beta'.")]
    Conflicts(Target),
    /// Watch the sessions (or one) live: on a terminal the 'ferry list' table, redrawn as
    /// cycles happen; otherwise one line per change of state, cycle, conflict or error.
    /// Until Ctrl-C.
    Monitor {
        /// Only this session.
        #[arg(conflicts_with = "label_selector")]
        name: Option<String>,
        /// Only the sessions carrying these labels (KEY=VALUE[,KEY=VALUE...]) when the
        /// monitor starts.
        #[arg(long, value_name = "KEY=VALUE")]
        label_selector: Option<String>,
        /// The daemon's events as they come, one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Pause a session (its engine stops; changes wait until resume).
    Pause(Target),
    /// Resume a paused session.
    Resume(Target),
    /// Stop a session and forget it (its archive and backups stay in the state directory).
    Terminate(Target),
    /// Run a cycle of a session now (only at these PATHs, if given) and wait for it: what
    /// it changed each way (exit code 3 if conflicts remain, 1 on errors).
    Flush(FlushFlags),
    /// Serve MCP (Model Context Protocol) on stdin/stdout for AI assistants: the sessions,
    /// their conflicts and their files as tools, talking to the daemon.
    #[command(after_help = MCP_AFTER_HELP)]
    Mcp,
    /// Serve the wire protocol on stdin/stdout (started by ferry itself on the far side).
    #[command(hide = true)]
    Agent,
}

const SESSIONS_AFTER_HELP: &str = "\
Background sessions run in one daemon per user (its socket under $XDG_RUNTIME_DIR/ferry), are
kept in the state directory and resumed when the daemon starts. Manage them with 'ferry list',
'ferry flush NAME', 'ferry pause NAME', 'ferry resume NAME' and 'ferry terminate NAME'.

Example: ferry create ./app docker://web/app --name web --label team=api";

const MCP_AFTER_HELP: &str = "\
Add it to an MCP client as a stdio server, e.g. 'claude mcp add ferry -- ferry mcp'. File tools
refuse sensitive files (.env*, keys, credentials; see the README) and writes over 10 MiB; the
settings are in ~/.config/ferry/mcp.conf (or $FERRY_MCP_CONFIG).";

#[derive(Subcommand, Debug)]
pub enum DaemonOp {
    /// Start the daemon (nothing happens if it runs already).
    Start {
        /// One JSON object on stdout: `{"running": true, "pid": N}`.
        #[arg(long)]
        json: bool,
    },
    /// Stop the daemon: every session saves its state and is resumed at the next start.
    Stop {
        /// One JSON object on stdout: `{"stopped": true}`, or `{"stopped": false}` when no
        /// daemon was running.
        #[arg(long)]
        json: bool,
    },
    /// Is the daemon running? Its pid, socket and number of sessions.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon in the foreground (what 'start' spawns).
    #[command(hide = true)]
    Run,
}

#[derive(clap::Args, Debug)]
pub struct CreateFlags {
    /// First endpoint (as for 'ferry sync').
    pub alpha: String,
    /// Second endpoint (as for 'ferry sync').
    pub beta: String,
    /// The session's name: a letter or digit, then letters, digits, '.', '_', '-' (at most
    /// 64; never '/' or ':', so a name cannot be read as an endpoint).
    #[arg(long)]
    pub name: String,
    /// A label KEY=VALUE (repeatable), for --label-selector.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Every option 'ferry sync' takes (but --once, --reset, --accept-wipe).
    #[command(flatten)]
    pub options: SessionOptions,
    /// The new session as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct FlushFlags {
    #[command(flatten)]
    pub target: Target,
    /// Only these paths (and what is below them), relative to the roots; with a NAME only.
    #[arg(requires = "name")]
    pub paths: Vec<String>,
    /// Leave changes at paths matching PATTERN (gitignore syntax; repeatable) out of this
    /// cycle only: the next one syncs them.
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub exclude: Vec<String>,
}

/// Which sessions a command acts on: NAME, or every session with these labels.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// The session's name.
    #[arg(
        required_unless_present = "label_selector",
        conflicts_with = "label_selector"
    )]
    pub name: Option<String>,
    /// Every session carrying these labels (KEY=VALUE[,KEY=VALUE...]).
    #[arg(long, value_name = "KEY=VALUE")]
    pub label_selector: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// `ferry sync -h`: where the rest is.
const SYNC_AFTER_HELP: &str =
    "Endpoint forms, environment variables and exit codes: 'ferry sync --help'.";

/// `ferry sync --help`: what a user needs beyond the flags (README.md and docs/design.md say
/// more; keep the three in step).
const SYNC_AFTER_LONG_HELP: &str = "\
Endpoints (ALPHA and BETA):
  ./dir, /abs/dir
          A local directory. ALPHA must exist; BETA is created if its parent exists.
  docker://[USER@]CONTAINER/abs/path
          A running container, by name or id, through the Docker Engine API; USER as in
          'docker exec -u'.
  ssh://[USER@]HOST[:PORT]/abs/path
  [USER@]HOST:path
          A host through the system ssh (~/.ssh/config, agents and jump hosts work);
          HOST:path is relative to the home directory.
  k8s://[CONTEXT@]NAMESPACE/POD[:CONTAINER]/abs/path
          A pod's container through 'kubectl exec'; the namespace is required. In CONTEXT
          write @, / and % as %40, %2F and %25.
  Nothing needs installing on the far side: ferry copies its static agent there.

Hooks (--on-change CMD, --on-change-paths GLOB):
  After a cycle that changed at least one path matching a GLOB (any change without
  --on-change-paths), in either direction, each CMD runs with 'sh -c' in beta's root on
  beta's side: locally for a local BETA, inside the container or on the host or pod for a
  remote one (its '/bin/sh', else 'sh' on PATH). Every GLOB applies to every CMD. One command
  runs at a time, in the order given; changes made meanwhile are synced and run the commands
  they match once more afterwards. Output is printed as 'hook: LINE' (--json: 'hook_start'
  and 'hook' events); a failing command is reported and never stops the session.
  Example: ferry sync ./app ssh://build/app --on-change 'make' --on-change-paths '*.c'

Environment:
  FERRY_AGENT        The static x86_64 Linux agent to install on the far side (default:
                     the one built into or beside this ferry).
  FERRY_AGENT_AARCH64  The same for aarch64 (arm64) far sides.
  FERRY_AGENT_ARCH   Which agent to install: x86_64 or aarch64 (default: the Docker
                     engine's architecture, or 'uname -m' over SSH and kubectl).
  FERRY_SSH_COMMAND  The ssh command line (default 'ssh'; split on spaces, e.g.
                     'ssh -F ./config').
  FERRY_KUBECTL      The kubectl program (default 'kubectl').
  DOCKER_HOST        The Docker engine to use (default: the local socket).
  XDG_STATE_HOME     Where sessions keep their archive and backups (default
                     ~/.local/state; ferry uses its 'ferry' directory).

Exit codes:
  0  Done and in sync.
  1  Failed: I/O, a connection, a path that kept failing, a refused wipe.
  2  Bad usage or input (one line on stderr; nothing touched).
  3  Finished with unresolved conflicts (listed).";

/// `ferry up --help`: what is synced.
const UP_AFTER_HELP: &str = "\
What is synced, per service, first match wins:
  x-ferry.paths      explicit {host, container} mappings (the compose file's x-ferry extension)
  develop.watch      its rules made two-way: sync, sync+restart, sync+exec, rebuild
  the Dockerfile     every COPY/ADD of build-context files in the built stage
minus .dockerignore and container-owned directories (node_modules, target, .venv, ...).
x-ferry (top level: defaults; under a service: overrides): sync, mode, ignore, owned, mirror,
paths, on-change: [{paths, run, restart}]. Needs Docker Compose v2 ('docker compose' or a v2
'docker-compose').

Exit codes: 0 stopped by Ctrl-C (or SIGTERM), 1 failed (engine, build), 3 conflicts left,
2 bad usage or input (no compose file, unknown service, no Compose v2, a bad x-ferry key).";

#[derive(clap::Args, Debug)]
pub struct UpFlags {
    /// Only these services (default: all).
    pub services: Vec<String>,
    /// Compose file (repeatable, merged as compose merges them; default: compose.yaml,
    /// compose.yml, docker-compose.yml or docker-compose.yaml here or in a parent).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Boot and stream logs only; no sync.
    #[arg(long)]
    pub no_sync: bool,
    /// One JSON object per line on stdout for every event, each with its "service".
    #[arg(long)]
    pub json: bool,
}

/// `ferry resolve --help`: the grammar, and how a NAME is told from an endpoint.
const RESOLVE_AFTER_HELP: &str = "\
Two forms, told apart by the first word alone (never by what exists):
  ferry resolve NAME [PATH...|--all] --keep alpha|beta
          A background session (see 'ferry list'); its daemon runs the resolve.
  ferry resolve ALPHA BETA [PATH...|--all] --keep alpha|beta
          A pair as given to 'ferry sync' (either order), not being synced right now (stop
          it first: Ctrl-C lists its conflicts with the command for each).
A first word containing '/' or ':' is ALPHA (every endpoint form has one: ./app, /srv/app,
docker://web/app, host:path); any other word is a session NAME (names never contain '/' or
':'). So write a local directory in the current directory as ./app, not app.

PATHs are relative to the roots. At each PATH the conflicts go the kept side's way and what
changed on one side only syncs as usual; the loser's version is kept in its side's backup area
(the output says where).

Examples: ferry resolve web src/main.rs --keep alpha
          ferry resolve ./app docker://web/app --all --keep beta";

/// The side whose version wins.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    Alpha,
    Beta,
}

#[derive(clap::Args, Debug)]
pub struct ResolveFlags {
    /// NAME, or ALPHA BETA; then the paths to resolve, relative to the roots (see below).
    /// With --label-selector, every word is a PATH.
    #[arg(
        value_name = "NAME|ALPHA BETA",
        required_unless_present = "label_selector"
    )]
    pub words: Vec<String>,
    /// Every background session carrying these labels (KEY=VALUE[,KEY=VALUE...]), instead of
    /// a NAME or a pair.
    #[arg(long, value_name = "KEY=VALUE")]
    pub label_selector: Option<String>,
    /// Whose version wins.
    #[arg(long, value_enum)]
    pub keep: Keep,
    /// Every conflict of the session or pair.
    #[arg(long)]
    pub all: bool,
    /// JSON on stdout: with a NAME one object (what was kept at each path and where the
    /// loser's copy is), with a pair one object per line for every event.
    #[arg(long)]
    pub json: bool,
    /// Name every changed path.
    #[arg(short, long)]
    pub verbose: bool,
}

/// A checked `resolve` command: a background session's, or a pair's.
#[derive(Debug)]
pub enum Resolve {
    Session {
        name: String,
        /// `None`: every conflict (`--all`).
        paths: Option<Vec<String>>,
        keep: Keep,
        json: bool,
    },
    Pair(Box<ResolveArgs>),
    /// Every background session a label selector picks.
    Selected {
        selector: String,
        /// `None`: every conflict (`--all`).
        paths: Option<Vec<String>>,
        keep: Keep,
        json: bool,
    },
}

/// A checked `resolve` of a pair.
#[derive(Debug)]
pub struct ResolveArgs {
    pub alpha: Place,
    pub beta: Place,
    /// The pair's options: a background session's if one syncs this pair, else the defaults.
    pub options: SessionOptions,
    /// `None`: every conflict (`--all`).
    pub paths: Option<Vec<RelPath>>,
    pub keep: Keep,
    pub json: bool,
    pub verbose: bool,
}

/// True if `word` is an endpoint rather than a session name: every endpoint form has a `/` or
/// a `:`, and no session name does.
pub fn is_endpoint_word(word: &str) -> bool {
    word.contains('/') || word.contains(':')
}

impl ResolveFlags {
    /// Tells the two forms apart by the first word (see [`is_endpoint_word`]), then checks
    /// the endpoints (both must exist) or the name, and the paths.
    pub fn check(self) -> Result<Resolve, UsageError> {
        if let Some(selector) = self.label_selector {
            if self.all != self.words.is_empty() {
                return Err(UsageError(
                    "with --label-selector, give the PATHs to resolve or --all (not both)".into(),
                ));
            }
            let paths = match self.all {
                true => None,
                false => Some(
                    self.words
                        .iter()
                        .map(|p| relative_path(p, &[]).map(|r| r.to_string()))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            return Ok(Resolve::Selected {
                selector,
                paths,
                keep: self.keep,
                json: self.json,
            });
        }
        let first = self.words.first().cloned().unwrap_or_default();
        let (head, rest) = if is_endpoint_word(&first) {
            if self.words.len() < 2 {
                return Err(UsageError(format!(
                    "'{first}' is an endpoint (it has a '/' or ':'): give BETA after it, or a session NAME instead"
                )));
            }
            (2, &self.words[2..])
        } else {
            crate::daemon::check_name(&first).map_err(|e| {
                UsageError(format!(
                    "{e}; an endpoint needs a '/' or ':' (write ./{first} for a local directory)"
                ))
            })?;
            (1, &self.words[1..])
        };
        match (self.all, rest.is_empty()) {
            (true, false) => {
                return Err(UsageError("give PATHs or --all, not both".into()));
            }
            (false, true) => {
                return Err(UsageError("give the PATHs to resolve, or --all".into()));
            }
            _ => {}
        }
        if head == 1 {
            let paths = match self.all {
                true => None,
                false => Some(
                    rest.iter()
                        .map(|p| relative_path(p, &[]).map(|r| r.to_string()))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            return Ok(Resolve::Session {
                name: first,
                paths,
                keep: self.keep,
                json: self.json,
            });
        }
        let (alpha, beta) = places(&self.words[0], &self.words[1])?;
        if let Place::Local { root, create: true } = &beta {
            return Err(UsageError(format!(
                "beta '{}' does not exist (nothing to resolve)",
                root.display()
            )));
        }
        let paths = if self.all {
            None
        } else {
            let roots: Vec<&Path> = [&alpha, &beta]
                .into_iter()
                .filter_map(|p| match p {
                    Place::Local { root, .. } => Some(root.as_path()),
                    Place::Remote(_) => None,
                })
                .collect();
            let mut out = Vec::new();
            for p in rest {
                out.push(relative_path(p, &roots)?);
            }
            Some(out)
        };
        // A paused background session of this pair: resolve by its options.
        let options = match (alpha.key(), beta.key()) {
            (Some(a), Some(b)) => crate::daemon::saved_options(&a, &b),
            _ => None,
        };
        Ok(Resolve::Pair(Box::new(ResolveArgs {
            alpha,
            beta,
            options: options.unwrap_or_default(),
            paths,
            keep: self.keep,
            json: self.json,
            verbose: self.verbose,
        })))
    }
}

/// A path given to `resolve` or `flush`: relative to the roots (`./x`, `x/` and `.`
/// accepted), or absolute inside a local root.
pub fn relative_path(p: &str, roots: &[&Path]) -> Result<RelPath, UsageError> {
    let mut rel = p;
    if p.starts_with('/') {
        let inside = roots
            .iter()
            .find_map(|r| Path::new(p).strip_prefix(r).ok().and_then(|q| q.to_str()));
        rel = inside.ok_or_else(|| {
            UsageError(format!(
                "'{p}' is not inside alpha or beta (give paths relative to the roots)"
            ))
        })?;
    }
    let mut rel = rel.trim_end_matches('/');
    while let Some(rest) = rel.strip_prefix("./") {
        rel = rest.trim_start_matches('/');
    }
    if rel == "." {
        rel = "";
    }
    RelPath::new(rel).map_err(|e| UsageError(format!("{e} (give paths relative to the roots)")))
}

#[derive(clap::Args, Debug)]
pub struct SyncFlags {
    /// First endpoint (usually the host's source tree). Must exist.
    pub alpha: String,
    /// Second endpoint. Created if missing (its parent must exist).
    pub beta: String,
    #[command(flatten)]
    pub options: SessionOptions,
    /// Sync until nothing is left to do, then exit.
    #[arg(long)]
    pub once: bool,
    /// One JSON object per line on stdout for every event.
    #[arg(long)]
    pub json: bool,
    /// Name every changed path in the per-cycle line (without it, only a few are named).
    #[arg(short, long)]
    pub verbose: bool,
    /// Let a root that was emptied or removed propagate its wipe to the other side.
    #[arg(long, conflicts_with = "reset")]
    pub accept_wipe: bool,
    /// Forget the last agreed state and start over: both sides are merged, nothing is deleted.
    #[arg(long)]
    pub reset: bool,
}

/// What a session syncs and how: every option `ferry sync` and `ferry create` share (one list,
/// so a new sync option reaches background sessions too). Saved with a background session in
/// `sessions.json`: every field has a default, so entries written before a field existed load.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct SessionOptions {
    /// two-way-safe, two-way-resolved, two-way-newest, one-way-safe or one-way-replica.
    #[arg(long, default_value = "two-way-safe")]
    pub mode: String,
    /// Ignore paths matching PATTERN (gitignore syntax; repeatable; after .ferryignore).
    #[arg(long = "ignore", value_name = "PATTERN")]
    pub ignores: Vec<String>,
    /// Also sync .git, .hg and .svn.
    #[arg(long)]
    pub no_ignore_vcs: bool,
    /// Also sync editors' temporary files (vim swap files and 4913, *~, emacs .#* and #*#,
    /// JetBrains ___jb_*), left out by default.
    #[arg(long)]
    pub no_default_ignores: bool,
    /// Permission bits synced: full (user/group/other rwx) or exec (only the executable bit,
    /// for filesystems that cannot keep modes).
    #[arg(long, default_value = "full", value_name = "full|exec")]
    pub permissions: String,
    /// Leave the copy time on files ferry writes instead of their source's modification time.
    #[arg(long)]
    pub no_times: bool,
    /// Symlinks: portable (links that stay inside the root; others are reported), raw (every
    /// link as it is, never followed) or ignore (none).
    #[arg(long, default_value = "portable", value_name = "portable|raw|ignore")]
    pub symlinks: String,
    /// Leave files bigger than SIZE out (10MB, 512KiB, 1GiB; kB/MB/GB are powers of 1000,
    /// KiB/MiB/GiB of 1024, a bare number is bytes): each is reported once, never synced nor
    /// deleted.
    #[arg(long, value_name = "SIZE")]
    pub max_file_size: Option<String>,
    /// Also ignore what the .gitignore files in alpha's tree ignore, at every level, as git
    /// does (read again whenever one changes; both sides follow alpha's).
    #[arg(long)]
    pub gitignore: bool,
    /// After a cycle that changed files (either way), run CMD with 'sh -c' in beta's root on
    /// beta's side (inside the container, on the SSH host or pod); repeatable. One command
    /// runs at a time; a failing one is reported and syncing goes on.
    #[arg(long = "on-change", value_name = "CMD")]
    pub on_change: Vec<String>,
    /// Only changes to paths matching GLOB (gitignore syntax, relative to the roots) trigger
    /// the --on-change commands; repeatable (any GLOB matches); applies to every --on-change.
    #[arg(long = "on-change-paths", value_name = "GLOB")]
    pub on_change_paths: Vec<String>,
    /// How long each side keeps its backups: DAYS (7d, 12h), SIZE (500MB, 1GiB), both
    /// (7d,1GiB) or 'forever'. Default: 7 days or 1 GiB per session and side, whichever first.
    #[arg(long, value_name = "POLICY")]
    pub keep_backups: Option<String>,
    /// On a first sync, copy into alpha what only beta has without asking (by default a
    /// terminal is asked, and a script refused).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Quiet time after a change before syncing it, in milliseconds.
    #[arg(long, default_value_t = 4, value_name = "MS")]
    pub debounce_ms: u64,
    /// Full rescan period while watching, in seconds (0: never); catches missed events.
    #[arg(long, default_value_t = 300, value_name = "SECS")]
    pub rescan_interval: u64,
}

/// The `--on-change` hooks: every CMD with every GLOB (checked).
fn on_change(commands: Vec<String>, globs: Vec<String>) -> Result<Vec<OnChange>, UsageError> {
    if commands.is_empty() && !globs.is_empty() {
        return Err(UsageError(
            "--on-change-paths needs an --on-change command to apply to".into(),
        ));
    }
    for g in &globs {
        crate::fs::ignore::Ignorer::new(&crate::fs::ignore::IgnoreSpec {
            patterns: vec![g.clone()],
            ..Default::default()
        })
        .map_err(|e| UsageError(format!("--on-change-paths: {e}")))?;
    }
    commands
        .into_iter()
        .map(|run| {
            if run.trim().is_empty() {
                return Err(UsageError("--on-change: the command is empty".into()));
            }
            Ok(OnChange {
                run,
                paths: globs.clone(),
            })
        })
        .collect()
}

impl Default for SessionOptions {
    /// The command line's defaults (what `ferry sync A B` runs with).
    fn default() -> Self {
        SessionOptions {
            mode: Mode::TwoWaySafe.to_string(),
            ignores: Vec::new(),
            no_ignore_vcs: false,
            no_default_ignores: false,
            permissions: "full".into(),
            no_times: false,
            symlinks: "portable".into(),
            max_file_size: None,
            gitignore: false,
            keep_backups: None,
            yes: false,
            on_change: Vec::new(),
            on_change_paths: Vec::new(),
            debounce_ms: 4,
            rescan_interval: 300,
        }
    }
}

impl SessionOptions {
    /// The one place a session's [`Settings`] (watching, not `--once`) and backup retention
    /// are made from its options: `ferry sync`, `ferry resolve` and the daemon's sessions.
    pub fn settings(&self) -> Result<(Settings, Retention), UsageError> {
        let mode: Mode = self
            .mode
            .parse()
            .map_err(|e: ferry_core::UnknownMode| UsageError(e.to_string()))?;
        let retention = match &self.keep_backups {
            Some(p) => p.parse().map_err(UsageError)?,
            None => Retention::default(),
        };
        for p in &self.ignores {
            crate::fs::ignore::Ignorer::new(&crate::fs::ignore::IgnoreSpec {
                patterns: vec![p.clone()],
                ..Default::default()
            })
            .map_err(|e| UsageError(e.to_string()))?;
        }
        let meta = crate::fs::meta::MetaSpec {
            permissions: self.permissions.parse().map_err(UsageError)?,
            times: !self.no_times,
            symlinks: self.symlinks.parse().map_err(UsageError)?,
        };
        let settings = Settings {
            mode,
            meta,
            ignore_vcs: !self.no_ignore_vcs,
            default_ignores: !self.no_default_ignores,
            ignores: self.ignores.clone(),
            once: false,
            accept_wipe: false,
            reset: false,
            debounce: Duration::from_millis(self.debounce_ms),
            rescan_interval: (self.rescan_interval > 0)
                .then(|| Duration::from_secs(self.rescan_interval)),
            yes: self.yes,
            gitignore: self.gitignore,
            max_file_size: match &self.max_file_size {
                Some(s) => Some(parse_size(s).ok_or_else(|| {
                    UsageError(format!(
                        "--max-file-size '{s}': expected a size such as 10MB, 512KiB or 1GiB"
                    ))
                })?),
                None => None,
            },
            on_change: on_change(self.on_change.clone(), self.on_change_paths.clone())?,
            image_changes: None,
            alpha_names: Vec::new(),
            superseded: Default::default(),
        };
        Ok((settings, retention))
    }
}

/// A refusal of the command line or its endpoints (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// A checked `sync` command.
#[derive(Debug)]
pub struct SyncArgs {
    pub alpha: Place,
    pub beta: Place,
    pub settings: Settings,
    pub json: bool,
    /// `-v`: name every changed path.
    pub verbose: bool,
    /// `--keep-backups` (or the default).
    pub retention: Retention,
}

/// Where one side is.
#[derive(Debug)]
pub enum Place {
    /// A canonical local root (which may not exist yet: `create` says so).
    Local { root: PathBuf, create: bool },
    /// A directory behind an agent (checked when connected).
    Remote(Location),
}

impl Place {
    /// The name the session is keyed by.
    pub fn key(&self) -> Option<String> {
        match self {
            Place::Local { root, .. } => root.to_str().map(str::to_owned),
            Place::Remote(l) => Some(l.url()),
        }
    }
}

impl SyncFlags {
    /// Checks everything that can be checked before touching anything.
    pub fn check(self) -> Result<SyncArgs, UsageError> {
        let (mut settings, retention) = self.options.settings()?;
        settings.once = self.once;
        settings.accept_wipe = self.accept_wipe;
        settings.reset = self.reset;
        let (alpha, beta) = places(&self.alpha, &self.beta)?;
        Ok(SyncArgs {
            alpha,
            beta,
            json: self.json,
            verbose: self.verbose,
            retention,
            settings,
        })
    }
}

/// A size as a person writes it: `10MB`, `1.5GiB`, `512k`, `4096` (bytes). `k`/`kB`, `M`/`MB`,
/// `G`/`GB`, `T`/`TB` are powers of 1000 (as `--keep-backups` reads them); `KiB`, `MiB`,
/// `GiB`, `TiB` powers of 1024.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mul: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = n * mul;
    // `u64::MAX as f64` rounds up to 2^64, which does not fit: keep strictly below it.
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// The two sides as places: local directories checked now (existence, nesting), remote ones
/// when connected.
pub fn places(alpha: &str, beta: &str) -> Result<(Place, Place), UsageError> {
    {
        let la = Location::parse("alpha", alpha).map_err(UsageError)?;
        let lb = Location::parse("beta", beta).map_err(UsageError)?;
        let (alpha, beta) = match (la, lb) {
            (Location::Local(a), Location::Local(b)) => local_pair(&a, &b)?,
            (la, lb) => {
                if la == lb {
                    return Err(UsageError(format!(
                        "alpha and beta are the same place ({})",
                        la.url()
                    )));
                }
                let place = |which: &str, l: Location, beta: bool| -> Result<Place, UsageError> {
                    match l {
                        Location::Local(p) => {
                            let p = PathBuf::from(p);
                            if !beta {
                                return Ok(Place::Local {
                                    root: existing_dir(which, &p)?,
                                    create: false,
                                });
                            }
                            Ok(match std::fs::symlink_metadata(&p) {
                                Ok(_) => Place::Local {
                                    root: existing_dir(which, &p)?,
                                    create: false,
                                },
                                Err(_) => Place::Local {
                                    root: new_dir(which, &p)?,
                                    create: true,
                                },
                            })
                        }
                        remote => Ok(Place::Remote(remote)),
                    }
                };
                (place("alpha", la, false)?, place("beta", lb, true)?)
            }
        };
        Ok((alpha, beta))
    }
}

/// Two local directories: both checked now (existence, nesting).
fn local_pair(alpha: &str, beta: &str) -> Result<(Place, Place), UsageError> {
    {
        let alpha = PathBuf::from(alpha);
        let beta = PathBuf::from(beta);
        let alpha = existing_dir("alpha", &alpha)?;
        let (beta, create_beta) = match std::fs::symlink_metadata(&beta) {
            Ok(_) => (existing_dir("beta", &beta)?, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (new_dir("beta", &beta)?, true),
            Err(e) => return Err(UsageError(format!("beta '{}': {e}", beta.display()))),
        };
        if alpha == beta {
            return Err(UsageError(format!(
                "alpha and beta are the same directory ({})",
                alpha.display()
            )));
        }
        if beta.starts_with(&alpha) {
            return Err(UsageError(format!(
                "beta ({}) is inside alpha ({}); each would sync into itself",
                beta.display(),
                alpha.display()
            )));
        }
        if alpha.starts_with(&beta) {
            return Err(UsageError(format!(
                "alpha ({}) is inside beta ({}); each would sync into itself",
                alpha.display(),
                beta.display()
            )));
        }
        Ok((
            Place::Local {
                root: alpha,
                create: false,
            },
            Place::Local {
                root: beta,
                create: create_beta,
            },
        ))
    }
}

fn existing_dir(which: &str, p: &Path) -> Result<PathBuf, UsageError> {
    let meta = std::fs::metadata(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            UsageError(format!("{which} '{}' does not exist", p.display()))
        }
        _ => UsageError(format!("{which} '{}': {e}", p.display())),
    })?;
    if !meta.is_dir() {
        return Err(UsageError(format!(
            "{which} '{}' is not a directory (ferry syncs directories)",
            p.display()
        )));
    }
    let canon = p
        .canonicalize()
        .map_err(|e| UsageError(format!("{which} '{}': {e}", p.display())))?;
    if canon.to_str().is_none() {
        return Err(UsageError(format!(
            "{which} '{}' is not a valid UTF-8 path",
            p.display()
        )));
    }
    Ok(canon)
}

fn new_dir(which: &str, p: &Path) -> Result<PathBuf, UsageError> {
    let name = p
        .file_name()
        .ok_or_else(|| UsageError(format!("{which} '{}' has no name", p.display())))?;
    let parent = match p.parent() {
        Some(par) if !par.as_os_str().is_empty() => par,
        _ => Path::new("."),
    };
    let parent = match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => existing_dir(which, parent)?,
        _ => {
            return Err(UsageError(format!(
                "{which} '{}' does not exist and neither does its parent '{}'",
                p.display(),
                parent.display()
            )));
        }
    };
    let full = parent.join(name);
    if full.to_str().is_none() {
        return Err(UsageError(format!(
            "{which} '{}' is not a valid UTF-8 path",
            p.display()
        )));
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_as_people_write_them() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size("10mb"), Some(10_000_000));
        assert_eq!(parse_size("512KiB"), Some(512 * 1024));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("1.5k"), Some(1500));
        assert_eq!(parse_size(" 2 GB "), Some(2_000_000_000));
        for bad in ["", "MB", "ten", "-1MB", "1XB", "1e3", "99999999999TiB"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }
}
