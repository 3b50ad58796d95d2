//! The Compose side of `ferry up`, pure: the model of `docker compose config --format json`
//! (only what ferry reads), the `x-ferry` extension, and the function from a service to its
//! sync plan (sessions with their mappings, ignores, container-owned directories, hooks and
//! what to do after a cycle), by the design's precedence: `x-ferry.paths`, else
//! `develop.watch`, else the Dockerfile's COPY/ADD scope.
//!
//! The caller reads the files (Dockerfile, `.dockerignore`, the manifests in the context) and
//! runs the plan; nothing here touches Docker or the disk.

use std::collections::BTreeMap;

use ferry_core::Mode;
use serde::Deserialize;
use serde_json::Value;

use crate::dockerfile::{Context, CopyPlan, EntryKind, MappingSource};
use crate::owned::{OwnedDir, owned_dirs};
use crate::{DockerIgnore, path};

/// What ferry reads of `docker compose config --format json`.
#[derive(Debug, Deserialize)]
pub struct Project {
    /// The project name.
    pub name: String,
    /// The services, by name.
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    /// The top-level `x-ferry` extension: defaults for every service.
    #[serde(rename = "x-ferry")]
    pub x_ferry: Option<Value>,
}

/// One service, as compose resolved it.
#[derive(Debug, Deserialize)]
pub struct Service {
    /// `build:` (the context is an absolute path in compose's output).
    pub build: Option<Build>,
    /// `image:`.
    pub image: Option<String>,
    /// `user:`.
    pub user: Option<String>,
    /// `working_dir:`.
    pub working_dir: Option<String>,
    /// `develop:`.
    pub develop: Option<Develop>,
    /// The service's `x-ferry` extension.
    #[serde(rename = "x-ferry")]
    pub x_ferry: Option<Value>,
}

/// A service's `build:`.
#[derive(Debug, Deserialize)]
pub struct Build {
    /// The context directory (absolute) or URL.
    pub context: String,
    /// The Dockerfile, relative to the context.
    pub dockerfile: Option<String>,
    /// An inline Dockerfile.
    pub dockerfile_inline: Option<String>,
    /// The stage built.
    pub target: Option<String>,
    /// Build arguments (`None`: taken from the environment, unset here).
    #[serde(default)]
    pub args: BTreeMap<String, Option<String>>,
}

/// A service's `develop:`.
#[derive(Debug, Deserialize)]
pub struct Develop {
    /// `develop.watch` rules.
    #[serde(default)]
    pub watch: Vec<WatchRule>,
}

/// One `develop.watch` rule.
#[derive(Debug, Clone, Deserialize)]
pub struct WatchRule {
    /// The host path (absolute in compose's output).
    pub path: String,
    /// `sync`, `sync+restart`, `sync+exec`, `rebuild` (or one ferry does not know).
    pub action: String,
    /// The container path (sync actions).
    pub target: Option<String>,
    /// Patterns relative to `path`, in `.dockerignore` syntax.
    #[serde(default)]
    pub ignore: Vec<String>,
    /// Only these (relative to `path`; compose versions that have it).
    #[serde(default)]
    pub include: Vec<String>,
    /// `sync+exec`'s command.
    pub exec: Option<WatchExec>,
}

/// `develop.watch[].exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct WatchExec {
    /// The command, as compose split it.
    pub command: Option<Vec<String>>,
    /// The user to run it as (the service's user when unset).
    pub user: Option<String>,
    /// Its working directory (the container's when unset).
    pub working_dir: Option<String>,
    /// Extra environment.
    #[serde(default)]
    pub environment: BTreeMap<String, Option<String>>,
}

/// The `x-ferry` extension, at top level (defaults) or under a service (overrides, per key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct XFerry {
    /// `false`: the service is not synced.
    pub sync: Option<bool>,
    /// One of ferry's five modes (host is alpha).
    pub mode: Option<String>,
    /// Gitignore patterns, applied in every session of the service, relative to its root.
    pub ignore: Option<Vec<String>>,
    /// Container-owned directories (relative to the build context, else the project
    /// directory): replaces the detected list.
    pub owned: Option<Vec<String>>,
    /// Directories (as `owned`) copied one way, container to host, never back.
    pub mirror: Option<Vec<String>>,
    /// Explicit mappings: replace `develop.watch` and the Dockerfile scope.
    pub paths: Option<Vec<PathMapping>>,
    /// Hooks after a cycle that changed a matching path.
    pub on_change: Option<Vec<OnChangeRule>>,
}

/// `x-ferry.paths[]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathMapping {
    /// Host directory, relative to the compose project directory (or absolute).
    pub host: String,
    /// Container directory (absolute, or relative to the container's working directory).
    pub container: String,
}

/// `x-ferry.on-change[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnChangeRule {
    /// Globs relative to the compose project directory (empty: any synced path).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Run with `sh -c` in the container, in the session's container directory.
    pub run: Option<String>,
    /// Restart the service's container afterwards.
    #[serde(default)]
    pub restart: bool,
}

/// A bad `x-ferry` (one line, naming the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

const TOP_KEYS: [&str; 7] = [
    "sync",
    "mode",
    "ignore",
    "owned",
    "mirror",
    "paths",
    "on-change",
];

/// Reads an `x-ferry` value found at `at` (`x-ferry`, `services.web.x-ferry`): unknown keys
/// and wrong types are errors naming the key.
pub fn parse_x_ferry(value: Option<&Value>, at: &str) -> Result<XFerry, ConfigError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(XFerry::default());
    };
    let Some(obj) = value.as_object() else {
        return Err(ConfigError(format!("{at}: expected a mapping")));
    };
    let unknown = |key: &str| ConfigError(format!("unknown key {key} in the compose file"));
    for (k, v) in obj {
        if !TOP_KEYS.contains(&k.as_str()) {
            return Err(unknown(&format!("{at}.{k}")));
        }
        let inner: &[&str] = match k.as_str() {
            "paths" => &["host", "container"],
            "on-change" => &["paths", "run", "restart"],
            _ => continue,
        };
        for (i, item) in v.as_array().into_iter().flatten().enumerate() {
            for key in item.as_object().into_iter().flat_map(|o| o.keys()) {
                if !inner.contains(&key.as_str()) {
                    return Err(unknown(&format!("{at}.{k}[{i}].{key}")));
                }
            }
        }
    }
    let cfg: XFerry =
        serde_json::from_value(value.clone()).map_err(|e| ConfigError(format!("{at}: {e}")))?;
    if let Some(m) = &cfg.mode {
        m.parse::<Mode>()
            .map_err(|e| ConfigError(format!("{at}.mode: {e}")))?;
    }
    Ok(cfg)
}

impl XFerry {
    /// A service's settings over the top-level defaults, key by key.
    pub fn over(self, defaults: &XFerry) -> XFerry {
        XFerry {
            sync: self.sync.or(defaults.sync),
            mode: self.mode.or_else(|| defaults.mode.clone()),
            ignore: self.ignore.or_else(|| defaults.ignore.clone()),
            owned: self.owned.or_else(|| defaults.owned.clone()),
            mirror: self.mirror.or_else(|| defaults.mirror.clone()),
            paths: self.paths.or_else(|| defaults.paths.clone()),
            on_change: self.on_change.or_else(|| defaults.on_change.clone()),
        }
    }
}

/// Where a service's sync scope comes from, by the design's precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `x-ferry.sync: false`.
    Off,
    /// `x-ferry.paths`.
    Paths,
    /// `develop.watch`.
    Watch,
    /// The Dockerfile's COPY/ADD (the caller plans the copies).
    Dockerfile,
    /// None of those (no build, no paths, no watch).
    Nothing,
}

/// Which of the sources applies to `svc` with its merged settings.
pub fn source(svc: &Service, cfg: &XFerry) -> Source {
    if cfg.sync == Some(false) {
        Source::Off
    } else if cfg.paths.is_some() {
        Source::Paths
    } else if svc.develop.as_ref().is_some_and(|d| !d.watch.is_empty()) {
        Source::Watch
    } else if svc.build.is_some() {
        Source::Dockerfile
    } else {
        Source::Nothing
    }
}

/// One session to run: a host directory and a container directory, with its ignores.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Copied {
    /// Context-relative host directory ("" for the context root).
    host: String,
    /// Absolute container directory.
    container: String,
    /// Only these top-level files (gitignore patterns; `None`: the whole directory).
    only: Option<Vec<String>>,
    /// Top-level files the container knows by another name: (host name, container name).
    renames: Vec<(String, String)>,
    /// `COPY --parents` patterns (relative to the host directory): only what they match.
    parents: Vec<String>,
    /// Paths (root-relative) a later COPY of a single file overwrites, and its line.
    overridden: Vec<(String, usize)>,
    /// Gitignore patterns, anchored at the session's root.
    ignores: Vec<String>,
    /// What is left out, for the start lines.
    left_out: Vec<String>,
    /// Dockerfile line of the COPY/ADD.
    line: usize,
    /// The COPY/ADD's `--chown`: who owns what ferry creates there when the service names no
    /// user.
    chown: Option<String>,
}

/// The Dockerfile scope of a service: context-relative sessions and notes on what is not synced.
#[derive(Debug, Default)]
struct CopyScope {
    sessions: Vec<Copied>,
    notes: Vec<String>,
    /// Globs expanded against the context (context-relative, as written) with their lines.
    live: Vec<(String, usize)>,
}

/// Rebases a `.dockerignore` pattern (moby-cleaned, context-relative, without its `!`) onto a
/// session rooted at context-relative `root`: the gitignore patterns, anchored at the session's
/// root, that match exactly the paths below `root` the Docker pattern matches. Empty when the
/// pattern cannot match below `root`.
fn rebase(pattern: &str, root: &str) -> Vec<String> {
    fn go(p: &[&str], r: &[&str], out: &mut Vec<String>) {
        match (p.first(), r.first()) {
            // The pattern matches the root or a directory above it: everything below.
            (None, _) => out.push("/**".into()),
            (Some(_), None) => out.push(format!("/{}", p.join("/"))),
            (Some(&"**"), Some(_)) => {
                go(&p[1..], r, out);
                go(p, &r[1..], out);
            }
            (Some(c), Some(rc)) => {
                if DockerIgnore::new([*c]).is_ok_and(|m| m.matches(rc)) {
                    go(&p[1..], &r[1..], out);
                }
            }
        }
    }
    let p: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let r: Vec<&str> = root.split('/').filter(|c| !c.is_empty()).collect();
    let mut out = Vec::new();
    go(&p, &r, &mut out);
    out.dedup();
    out
}

/// `.dockerignore` (or `--exclude`) patterns as the session's gitignore patterns, in order.
/// The second value is true when a `!` pattern is present: gitignore cannot re-include a path
/// whose directory is excluded, which Docker can.
fn translate(patterns: &[String], root: &str) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut negated = false;
    for p in patterns {
        let (neg, body) = match p.strip_prefix('!') {
            Some(b) => (true, b),
            None => (false, p.as_str()),
        };
        if body.is_empty() {
            continue;
        }
        for g in rebase(body, root) {
            negated |= neg;
            out.push(if neg { format!("!{g}") } else { g });
        }
    }
    (out, negated)
}

/// A literal file name as a gitignore pattern component (`ferry::endpoint::renamed` reads
/// `ferry up`'s patterns back with [`crate::scope::unescape`]).
pub fn escape(name: &str) -> String {
    let mut s = String::new();
    for ch in name.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\' | '!' | '#' | ' ') {
            s.push('\\');
        }
        s.push(ch);
    }
    s
}

fn split_parent(p: &str) -> (&str, &str) {
    match p.rfind('/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => ("", p),
    }
}

/// `name` below `dir` ("" is the top; a trailing `/` on `dir` is kept once).
pub fn join(dir: &str, name: &str) -> String {
    match (dir.is_empty(), dir.ends_with('/')) {
        (true, _) => name.to_owned(),
        (false, true) => format!("{dir}{name}"),
        (false, false) => format!("{dir}/{name}"),
    }
}

/// `rel` below `dir` (both `/`-separated, "" is the top): the rest, or `None`.
pub fn below<'a>(dir: &str, rel: &'a str) -> Option<&'a str> {
    if dir.is_empty() {
        return Some(rel);
    }
    let dir = dir.trim_end_matches('/');
    if rel == dir {
        return Some("");
    }
    rel.strip_prefix(dir)?.strip_prefix('/')
}

/// From a service's COPY plan to its sessions (pure). `context` lists the build context
/// (paths relative to it) for globs with wildcards above their last component.
///
/// - A directory source is a session of that directory.
/// - A single file is a session of its host directory that leaves out everything else (`/*`,
///   `!/name`, `/*/`); copied under another name, the session knows it by the container's
///   name ([`Session::renames`]). Files from one host directory into one container directory
///   share a session; a later COPY to the same container path overrides an earlier one.
/// - A glob whose wildcards are in its last component only, copied into a directory, is a
///   session of its host directory keeping what the glob matches, now and later. Any other
///   glob is expanded against the context at start, each match a file or directory source.
/// - `COPY --parents` is a session of the pivot keeping only what the patterns match.
/// - Sessions already covered by another (a `COPY src /app/src` under `COPY . /app`) are
///   dropped; other copies' destinations inside a session's container directory are left
///   out of it, so no container path is synced to two host paths.
/// - `.dockerignore`, `--exclude` and container-owned directories are left out both ways.
fn plan_sessions(
    plan: &CopyPlan,
    dockerignore: &[String],
    owned: &[OwnedDir],
    context: &dyn Context,
) -> CopyScope {
    let mut sp = CopyScope::default();
    for s in &plan.skipped {
        let what = if s.source.is_empty() {
            String::new()
        } else {
            format!("{} ", s.source)
        };
        sp.notes.push(format!(
            "Dockerfile line {}: {what}not synced: {}",
            s.line, s.reason
        ));
    }
    let ignored = DockerIgnore::new(dockerignore).ok();
    let mut raw: Vec<(Copied, Vec<String>)> = Vec::new();
    // Single files, by container path: a later COPY to the same path overrides.
    let mut files: Vec<(String, String, &crate::Mapping)> = Vec::new();
    fn place_file<'m>(
        files: &mut Vec<(String, String, &'m crate::Mapping)>,
        host: String,
        container: String,
        m: &'m crate::Mapping,
    ) {
        files.retain(|(_, c, _)| *c != container);
        files.push((host, container, m));
    }
    let dir_session = |host: String, container: String, m: &crate::Mapping| {
        (
            Copied {
                host,
                container,
                only: None,
                renames: Vec::new(),
                parents: Vec::new(),
                overridden: Vec::new(),
                ignores: Vec::new(),
                left_out: Vec::new(),
                line: m.line,
                chown: m.chown.clone(),
            },
            m.excludes.clone(),
        )
    };
    for m in &plan.mappings {
        match &m.source {
            MappingSource::Dir(dir) => raw.push(dir_session(dir.clone(), m.container.clone(), m)),
            MappingSource::File(file) => {
                place_file(&mut files, file.clone(), m.container.clone(), m)
            }
            MappingSource::Glob(glob) => {
                let (hdir, last) = split_parent(glob);
                if !crate::dockerfile::contains_wildcards(hdir)
                    && m.into_dir
                    && m.excludes.is_empty()
                {
                    // Directories it matches copy their contents into the destination.
                    for (d, kind) in expand(glob, context, ignored.as_ref()).unwrap_or_default() {
                        if kind == EntryKind::Dir {
                            raw.push(dir_session(d, m.container.clone(), m));
                        }
                    }
                    raw.push((
                        Copied {
                            host: crate::scope::unescape(hdir),
                            container: m.container.clone(),
                            only: Some(vec![last.to_owned()]),
                            renames: Vec::new(),
                            parents: Vec::new(),
                            overridden: Vec::new(),
                            ignores: Vec::new(),
                            left_out: Vec::new(),
                            line: m.line,
                            chown: m.chown.clone(),
                        },
                        Vec::new(),
                    ));
                    continue;
                }
                let Some(matches) = expand(glob, context, ignored.as_ref()) else {
                    sp.notes.push(format!(
                        "Dockerfile line {}: glob {glob}: the context cannot be listed: not synced",
                        m.line
                    ));
                    continue;
                };
                // What it matches is decided now; `ferry up` plans again when that changes.
                sp.live.push((glob.clone(), m.line));
                let excludes = DockerIgnore::new(&m.excludes).ok();
                let matches: Vec<(String, EntryKind)> = matches
                    .into_iter()
                    .filter(|(p, _)| !excludes.as_ref().is_some_and(|x| x.matches(p)))
                    .collect();
                if matches.is_empty() {
                    sp.notes.push(format!(
                        "Dockerfile line {}: glob {glob} matches nothing yet (watched for new matches)",
                        m.line
                    ));
                    continue;
                }
                sp.notes.push(format!(
                    "Dockerfile line {}: glob {glob} matches {} (watched for new matches)",
                    m.line,
                    matches
                        .iter()
                        .map(|(p, _)| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                for (p, kind) in matches {
                    match kind {
                        EntryKind::Dir => raw.push(dir_session(p, m.container.clone(), m)),
                        EntryKind::File => {
                            let container = if m.into_dir {
                                join(&m.container, split_parent(&p).1)
                            } else {
                                m.container.clone()
                            };
                            place_file(&mut files, p, container, m);
                        }
                    }
                }
            }
            MappingSource::Parents { pivot, pattern } => {
                let pivot = pivot.trim_end_matches('/').to_owned();
                if let Some((p, _)) = raw.iter_mut().find(|(p, ex)| {
                    !p.parents.is_empty()
                        && p.host == pivot
                        && p.container == m.container
                        && *ex == m.excludes
                }) {
                    p.parents.push(pattern.clone());
                    continue;
                }
                let (mut c, ex) = dir_session(pivot, m.container.clone(), m);
                c.parents.push(pattern.clone());
                raw.push((c, ex));
            }
        }
    }
    // A single file and a whole directory copied over the same container path: the later
    // COPY wins, as in the image. A later directory copy that has a file there drops the
    // single file's session; a later single file is left out of the earlier directory's.
    let files: Vec<(String, String, &crate::Mapping)> = files
        .into_iter()
        .filter(|(_, c, m)| {
            let overridden = raw.iter().find(|(d, ex)| {
                if d.selective() || d.line <= m.line {
                    return false;
                }
                let Some(rel) =
                    below(d.container.trim_end_matches('/'), c).filter(|r| !r.is_empty())
                else {
                    return false;
                };
                let host = join(&d.host, rel);
                let excluded = DockerIgnore::new(ex).is_ok_and(|x| x.matches(rel));
                context.kind(&host).is_some()
                    && !excluded
                    && !ignored.as_ref().is_some_and(|i| i.matches(&host))
            });
            if let Some((d, _)) = overridden {
                sp.notes.push(format!(
                    "Dockerfile line {}: {c} is overwritten by line {}: synced from there",
                    m.line, d.line
                ));
            }
            overridden.is_none()
        })
        .collect();
    for (d, _) in raw.iter_mut().filter(|(d, _)| !d.selective()) {
        for (host, c, m) in &files {
            if m.line <= d.line {
                continue;
            }
            if let Some(rel) = below(d.container.trim_end_matches('/'), c).filter(|r| !r.is_empty())
            {
                // The same file again at the same place changes nothing.
                if *host != join(&d.host, rel) {
                    d.overridden.push((rel.to_owned(), m.line));
                }
            }
        }
    }
    // Single files into sessions of their directories, by container name.
    for (host, container, m) in files {
        let (hdir, hname) = split_parent(&host);
        let (cdir, cname) = split_parent(&container);
        let cdir = if cdir.is_empty() { "/" } else { cdir };
        let renames = if hname == cname {
            Vec::new()
        } else {
            vec![(hname.to_owned(), cname.to_owned())]
        };
        raw.push((
            Copied {
                host: hdir.to_owned(),
                container: cdir.to_owned(),
                only: Some(vec![escape(cname)]),
                renames,
                parents: Vec::new(),
                overridden: Vec::new(),
                ignores: Vec::new(),
                left_out: Vec::new(),
                line: m.line,
                chown: m.chown.clone(),
            },
            Vec::new(),
        ));
    }
    // Merge selective sessions of the same pair of directories.
    let mut merged: Vec<(Copied, Vec<String>)> = Vec::new();
    for (p, ex) in raw {
        if let Some(only) = &p.only {
            if let Some((q, _)) = merged
                .iter_mut()
                .find(|(q, _)| q.only.is_some() && q.host == p.host && q.container == p.container)
            {
                if let Some(qo) = &mut q.only {
                    for n in only {
                        if !qo.contains(n) {
                            qo.push(n.clone());
                        }
                    }
                }
                q.renames.extend(p.renames.iter().cloned());
                continue;
            }
        }
        merged.push((p, ex));
    }
    // Drop what a whole-directory session already syncs at the same place.
    let trim = |c: &str| c.trim_end_matches('/').to_owned();
    let mut kept: Vec<(Copied, Vec<String>)> = Vec::new();
    for (i, (p, ex)) in merged.iter().enumerate() {
        let covered = merged.iter().enumerate().any(|(j, (w, wex))| {
            // A file under another name is a mapping of its own (its session is keyed apart).
            if j == i || w.selective() || !p.renames.is_empty() {
                return false;
            }
            if !p.selective() && w.host == p.host && trim(&w.container) == trim(&p.container) {
                return j < i; // the same pair twice: the first stays
            }
            wex.is_empty()
                && below(&w.host, &p.host)
                    .is_some_and(|rest| trim(&join(&w.container, rest)) == trim(&p.container))
        });
        if !covered {
            kept.push((p.clone(), ex.clone()));
        }
    }
    // Another session's container directory inside this one's is that session's alone.
    let containers: Vec<(String, usize)> = kept
        .iter()
        .map(|(p, _)| (p.container.clone(), p.line))
        .collect();
    for (i, (p, ex)) in kept.into_iter().enumerate() {
        let mut p = p;
        let mut ignores = Vec::new();
        let mut left_out = Vec::new();
        if let Some(only) = &p.only {
            ignores.push("/*".to_owned());
            for n in only {
                ignores.push(format!("!/{n}"));
            }
            ignores.push("/*/".to_owned());
            left_out.push(format!("everything but {}", only.join(", ")));
        }
        if !p.parents.is_empty() {
            ignores.extend(parents_ignores(&p.parents));
            left_out.push(format!("everything but {}", p.parents.join(", ")));
        }
        for (h, c) in &p.renames {
            left_out.push(format!("{} is {c} in the container", join(&p.host, h)));
        }
        let (di, neg) = translate(dockerignore, &p.host);
        if !di.is_empty() {
            left_out.push(format!(".dockerignore: {}", di.join(" ")));
            if neg {
                left_out.push(
                    "(a `!` pattern re-including a path inside an excluded directory is not honoured)"
                        .into(),
                );
            }
        }
        ignores.extend(di);
        let ex_patterns: Vec<String> = crate::dockerignore::read_patterns(&ex.join("\n"));
        let (exi, _) = translate(&ex_patterns, "");
        if !exi.is_empty() {
            left_out.push(format!("--exclude: {}", exi.join(" ")));
        }
        ignores.extend(exi);
        let (owned_ignores, owned_here, all_owned) = owned_below(owned, &p.host);
        // (A session of single files leaves every directory out anyway: its ignores do not
        // change when a new manifest makes a directory container-owned.)
        if p.only.is_none() {
            ignores.extend(owned_ignores);
        }
        if all_owned {
            sp.notes.push(format!(
                "Dockerfile line {}: {} is container-owned: not synced",
                p.line,
                if p.host.is_empty() { "." } else { &p.host }
            ));
            continue;
        }
        if !owned_here.is_empty() && p.only.is_none() {
            left_out.push(format!("container-owned: {}", owned_here.join(", ")));
        }
        // A file copied under another name was checked against `.dockerignore` by its own
        // name; the container's name must not be matched again.
        for (_, c) in &p.renames {
            ignores.push(format!("!/{}", escape(c)));
        }
        if !p.selective() {
            for (j, (c, line)) in containers.iter().enumerate() {
                if j == i {
                    continue;
                }
                if let Some(rest) = below(p.container.trim_end_matches('/'), c) {
                    if !rest.is_empty() {
                        ignores.push(format!("/{}", escape_path(rest)));
                        left_out.push(format!("{rest} (synced by Dockerfile line {line})"));
                    }
                }
            }
        }
        for (rel, line) in &p.overridden {
            ignores.push(format!("/{}", escape_path(rel)));
            left_out.push(format!("{rel} (overwritten by Dockerfile line {line})"));
        }
        p.ignores = ignores;
        p.left_out = left_out;
        sp.sessions.push(p);
    }
    sp
}

/// The context paths a Go glob matches, sorted as BuildKit walks them, leaving out what
/// `.dockerignore` leaves out of the context. `None` when the context cannot be listed or the
/// glob is malformed.
fn expand(
    glob: &str,
    context: &dyn Context,
    ignored: Option<&DockerIgnore>,
) -> Option<Vec<(String, EntryKind)>> {
    let mut level: Vec<(String, EntryKind)> = vec![(String::new(), EntryKind::Dir)];
    for part in glob.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for (dir, kind) in &level {
            if *kind != EntryKind::Dir {
                continue;
            }
            if crate::dockerfile::contains_wildcards(part) {
                let m = crate::scope::go_glob(part).ok()?;
                for (name, k) in context.list(dir)? {
                    if m.is_match(&name) {
                        next.push((join(dir, &name), k));
                    }
                }
            } else {
                let p = join(dir, &crate::scope::unescape(part));
                if let Some(k) = context.kind(&p) {
                    next.push((p, k));
                }
            }
        }
        next.retain(|(p, _)| !ignored.is_some_and(|ig| ig.matches(p)));
        level = next;
    }
    level.sort_by(|a, b| a.0.cmp(&b.0));
    Some(level)
}

/// A context seen from a directory of another (`kind` and `list` take paths relative to it).
struct Under<'a> {
    context: &'a dyn Context,
    base: &'a str,
}

impl Context for Under<'_> {
    fn kind(&self, path: &str) -> Option<EntryKind> {
        self.context.kind(&abs_join(self.base, path))
    }

    fn list(&self, path: &str) -> Option<Vec<(String, EntryKind)>> {
        self.context.list(&abs_join(self.base, path))
    }
}

impl Copied {
    /// Only some of the directory's entries (single files, a glob, `--parents` patterns).
    fn selective(&self) -> bool {
        self.only.is_some() || !self.parents.is_empty()
    }
}

/// A Docker pattern component as a gitignore one (`[^...]` is `[!...]`).
fn glob_component(c: &str) -> String {
    c.replace("[^", "[!")
}

/// `COPY --parents` patterns as gitignore rules that keep only what they match, and everything
/// below a matched directory. Without `**`, one level at a time (`/*`, `!/a/`, `/a/*`,
/// `!/a/*.js`), exclusions of a level before its inclusions, so nothing else is even walked;
/// with `**`, every directory is walked (`*`, `!*/`, `!/pattern`).
fn parents_ignores(patterns: &[String]) -> Vec<String> {
    let split = |p: &String| -> Vec<String> {
        p.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(glob_component)
            .collect()
    };
    let all: Vec<Vec<String>> = patterns.iter().map(split).collect();
    let mut out = Vec::new();
    if all.iter().any(|p| p.iter().any(|c| c.contains("**"))) {
        out.push("*".to_owned());
        out.push("!*/".to_owned());
        for p in &all {
            out.push(format!("!/{}", p.join("/")));
        }
    } else {
        let depth = all.iter().map(Vec::len).max().unwrap_or(0);
        for d in 1..=depth {
            let mut push = |rule: String| {
                if !out.contains(&rule) {
                    out.push(rule);
                }
            };
            for p in all.iter().filter(|p| p.len() >= d) {
                push(format!("/{}", join(&p[..d - 1].join("/"), "*")));
            }
            for p in all.iter().filter(|p| p.len() >= d) {
                push(if p.len() == d {
                    format!("!/{}", p.join("/"))
                } else {
                    format!("!/{}/", p[..d].join("/"))
                });
            }
        }
    }
    // Everything below a matched directory.
    for p in &all {
        out.push(format!("!/{}/**", p.join("/")));
    }
    out
}

/// The container-owned directories below context-relative `root`, as gitignore patterns
/// anchored there; their descriptions; and whether `root` itself is owned.
fn owned_below(owned: &[OwnedDir], root: &str) -> (Vec<String>, Vec<String>, bool) {
    let mut ignores = Vec::new();
    let mut described = Vec::new();
    let mut all = false;
    for o in owned {
        let pattern = match &o.nested {
            None => o.path.clone(),
            Some(name) => join(&o.path, &format!("**/{name}")),
        };
        let g = rebase(&pattern, root);
        if g.iter().any(|g| g == "/**") {
            all = true;
        }
        if !g.is_empty() {
            described.push(o.describe());
            ignores.extend(g);
        }
    }
    (ignores, described, all)
}

fn escape_path(p: &str) -> String {
    p.split('/').map(escape).collect::<Vec<_>>().join("/")
}

/// One session `ferry up` runs for a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Host directory (absolute).
    pub host: String,
    /// Container directory: absolute, or relative to the container's working directory.
    pub container: String,
    /// The session's mode; the host is alpha, except for a mirror.
    pub mode: Mode,
    /// A mirror: alpha is the container directory, beta the host's (one-way-replica).
    pub mirror: bool,
    /// Gitignore patterns anchored at the session's root.
    pub ignores: Vec<String>,
    /// What is left out, for the start lines.
    pub left_out: Vec<String>,
    /// Where the mapping comes from (`Dockerfile line 5`, `x-ferry.paths[0]`,
    /// `develop.watch[1]`, `x-ferry.mirror[0]`).
    pub origin: String,
    /// Engine hooks: `run` with `sh -c` in the container directory after a cycle that changed
    /// a path matching `paths` (root-relative gitignore globs; empty: any).
    pub hooks: Vec<Hook>,
    /// What `ferry up` does after a cycle that changed a matching path, in this order.
    pub after: Vec<After>,
    /// The Dockerfile COPY/ADD's `--chown`: the owner of what ferry creates in the container
    /// when neither compose's `user:` nor the image's USER names one.
    pub chown: Option<String>,
    /// Top-level files the container knows by another name, `(host name, container name)`:
    /// the session uses the container's names (`ferry::endpoint::renamed`).
    pub renames: Vec<(String, String)>,
}

/// An engine hook (`ferry::engine::OnChange`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// The command, for `sh -c`.
    pub run: String,
    /// Root-relative gitignore globs (empty: any path).
    pub paths: Vec<String>,
    /// Restart the service's container once the hook has run (`restart: true`).
    pub restart: bool,
}

/// Something done after a cycle of a session that changed a path matching `paths`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After {
    /// Root-relative gitignore globs, as [`rooted_match`] reads them (empty: any path).
    pub paths: Vec<String>,
    /// What.
    pub action: Action,
}

/// What is done after a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Restart the service's container.
    Restart,
    /// `docker exec` this in the container (`develop.watch`'s `sync+exec`).
    Exec(WatchExec),
}

impl After {
    /// Whether a change at root-relative `path` triggers it.
    pub fn matches(&self, path: &str) -> bool {
        self.paths.is_empty() || self.paths.iter().any(|p| rooted_match(p, path))
    }
}

/// `develop.watch`'s `rebuild`: rebuild and recreate the service when something under `path`
/// changes on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuild {
    /// Host path (absolute): a directory or a file.
    pub path: String,
    /// Gitignore patterns anchored at `path` (when a directory).
    pub ignores: Vec<String>,
    /// `develop.watch[i]`.
    pub origin: String,
}

impl Rebuild {
    /// Whether a change at absolute host path `abs` triggers it.
    pub fn matches(&self, abs: &str) -> bool {
        match below(&self.path, abs) {
            Some(rel) => !self.ignores.iter().any(|p| rooted_match(p, rel)),
            None => false,
        }
    }
}

/// A service's sync plan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServicePlan {
    /// One engine session per mapping.
    pub sessions: Vec<Session>,
    /// `rebuild` rules.
    pub rebuild: Vec<Rebuild>,
    /// What is not synced and why, for the start lines.
    pub notes: Vec<String>,
    /// Dockerfile globs whose matches were listed to make this plan: when what they match
    /// changes, the plan is made again.
    pub live: Vec<LiveGlob>,
}

/// A COPY/ADD glob with wildcards above its last component (`COPY */package.json ./`). What it
/// matches was listed when the plan was made, so a match made or removed later changes the
/// plan: `ferry up` watches [`LiveGlob::dirs`] and plans the service again when a change
/// [`LiveGlob::concerns`] it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveGlob {
    /// The directory the glob starts from (absolute): the build context joined with the
    /// glob's leading components that have no wildcards.
    pub root: String,
    /// The glob's other components (Go glob syntax), the first with a wildcard.
    pub parts: Vec<String>,
    /// The Dockerfile line.
    pub line: usize,
}

impl LiveGlob {
    fn new(base: &str, glob: &str, line: usize) -> LiveGlob {
        let parts: Vec<&str> = glob.split('/').filter(|c| !c.is_empty()).collect();
        let fixed = parts
            .iter()
            .take_while(|c| !crate::dockerfile::contains_wildcards(c))
            .count();
        let mut root = base.to_owned();
        for c in &parts[..fixed] {
            root = abs_join(&root, &crate::scope::unescape(c));
        }
        LiveGlob {
            root,
            parts: parts[fixed..].iter().map(|c| (*c).to_owned()).collect(),
            line,
        }
    }

    /// Whether component `i` of the glob matches `name`.
    fn part_matches(&self, i: usize, name: &str) -> bool {
        let Some(part) = self.parts.get(i) else {
            return false;
        };
        if crate::dockerfile::contains_wildcards(part) {
            crate::scope::go_glob(part).is_ok_and(|m| m.is_match(name))
        } else {
            crate::scope::unescape(part) == name
        }
    }

    /// Whether a change at `path` (absolute) can change what the glob matches: `path` is below
    /// [`LiveGlob::root`] and its components there match the glob's first ones (a directory on
    /// the way to a match, or a match).
    pub fn concerns(&self, path: &str) -> bool {
        let Some(rest) = below(&self.root, path).filter(|r| !r.is_empty()) else {
            return false;
        };
        let names: Vec<&str> = rest.split('/').collect();
        names.len() <= self.parts.len()
            && names
                .iter()
                .enumerate()
                .all(|(i, name)| self.part_matches(i, name))
    }

    /// The directories (absolute) whose entries decide the matches: the root and every
    /// directory matching a proper prefix of the glob, as `context` (absolute paths) has them.
    pub fn dirs(&self, context: &dyn Context) -> Vec<String> {
        self.walk(context).0
    }

    /// What the glob matches now (absolute paths, sorted), `.dockerignore` not applied: when
    /// this changes, the plan may.
    pub fn matches(&self, context: &dyn Context) -> Vec<String> {
        self.walk(context).1
    }

    fn walk(&self, context: &dyn Context) -> (Vec<String>, Vec<String>) {
        let mut dirs = Vec::new();
        let mut level = vec![self.root.clone()];
        for i in 0..self.parts.len() {
            let mut next = Vec::new();
            for dir in level {
                if context.kind(&dir) != Some(EntryKind::Dir) {
                    continue;
                }
                for (name, kind) in context.list(&dir).unwrap_or_default() {
                    let last = i + 1 == self.parts.len();
                    if (last || kind == EntryKind::Dir) && self.part_matches(i, &name) {
                        next.push(abs_join(&dir, &name));
                    }
                }
                dirs.push(dir);
            }
            level = next;
        }
        level.sort();
        (dirs, level)
    }
}

/// What [`plan_service`] needs besides the service.
pub struct Input<'a> {
    /// The service's merged `x-ferry` ([`XFerry::over`]).
    pub config: &'a XFerry,
    /// The compose project directory (absolute): `x-ferry` paths are relative to it.
    pub project_dir: &'a str,
    /// The Dockerfile's COPY/ADD plan, when the source is [`Source::Dockerfile`].
    pub copies: Option<&'a CopyPlan>,
    /// The build context's `.dockerignore` patterns (moby-cleaned).
    pub dockerignore: &'a [String],
    /// Files (manifests among them) relative to [`Input::base`], for container-owned
    /// directories.
    pub files: &'a [String],
    /// The build context (absolute), else the project directory: what `files`, `owned` and
    /// `mirror` are relative to.
    pub base: &'a str,
    /// Whether host paths are directories or files (absolute paths).
    pub kinds: &'a dyn Context,
}

/// A service's sync plan, by the design's precedence (`x-ferry.paths`, else `develop.watch`,
/// else the Dockerfile scope), with `x-ferry`'s ignores, owned and mirrored directories, and
/// on-change rules.
pub fn plan_service(svc: &Service, input: &Input) -> Result<ServicePlan, ConfigError> {
    let cfg = input.config;
    let mode = match &cfg.mode {
        Some(m) => m
            .parse::<Mode>()
            .map_err(|e| ConfigError(format!("x-ferry.mode: {e}")))?,
        None => Mode::TwoWaySafe,
    };
    let owned: Vec<OwnedDir> = match &cfg.owned {
        Some(list) => list
            .iter()
            .map(|d| OwnedDir {
                path: path::context_relative(d),
                nested: None,
                manifest: "x-ferry.owned".into(),
            })
            .collect(),
        None => owned_dirs(input.files),
    };
    let mut plan = ServicePlan::default();
    let blank = |host: String, container: String, origin: String| Session {
        host,
        container,
        mode,
        mirror: false,
        ignores: Vec::new(),
        left_out: Vec::new(),
        origin,
        hooks: Vec::new(),
        after: Vec::new(),
        chown: None,
        renames: Vec::new(),
    };
    match source(svc, cfg) {
        Source::Off => {
            plan.notes.push("x-ferry sync: false: not synced".into());
            return Ok(plan);
        }
        Source::Nothing => {
            plan.notes
                .push("no build, develop.watch or x-ferry.paths: not synced".into());
            return Ok(plan);
        }
        Source::Dockerfile => {
            let Some(copies) = input.copies else {
                return Ok(plan);
            };
            let context = Under {
                context: input.kinds,
                base: input.base,
            };
            let scope = plan_sessions(copies, input.dockerignore, &owned, &context);
            plan.notes.extend(scope.notes);
            plan.live = scope
                .live
                .iter()
                .map(|(glob, line)| LiveGlob::new(input.base, glob, *line))
                .collect();
            for c in scope.sessions {
                let mut s = blank(
                    abs_join(input.base, &c.host),
                    c.container,
                    format!("Dockerfile line {}", c.line),
                );
                s.ignores = c.ignores;
                s.left_out = c.left_out;
                s.chown = c.chown;
                s.renames = c.renames;
                plan.sessions.push(s);
            }
        }
        Source::Paths => {
            for (i, m) in cfg.paths.iter().flatten().enumerate() {
                let host = abs_join(input.project_dir, &m.host);
                let mut s = blank(host, m.container.clone(), format!("x-ferry.paths[{i}]"));
                if let Some(rel) = below(input.base, &s.host) {
                    let (ignores, described, all) = owned_below(&owned, rel);
                    if all {
                        plan.notes.push(format!(
                            "{}: {} is container-owned: not synced",
                            s.origin, m.host
                        ));
                        continue;
                    }
                    if !described.is_empty() {
                        s.left_out
                            .push(format!("container-owned: {}", described.join(", ")));
                    }
                    s.ignores = ignores;
                }
                plan.sessions.push(s);
            }
        }
        Source::Watch => {
            let rules = svc.develop.as_ref().map_or(&[][..], |d| &d.watch[..]);
            for (i, w) in rules.iter().enumerate() {
                let origin = format!("develop.watch[{i}]");
                let (ignores, left_out) = watch_ignores(w, input);
                let after = match w.action.as_str() {
                    "sync" => None,
                    "sync+restart" => Some(Action::Restart),
                    "sync+exec" => match w.exec.as_ref().filter(|e| e.command.is_some()) {
                        Some(e) => Some(Action::Exec(e.clone())),
                        None => {
                            plan.notes
                                .push(format!("{origin}: sync+exec without exec.command"));
                            None
                        }
                    },
                    "rebuild" => {
                        // `include` selects what is synced; a rebuild rule has nothing to sync.
                        let only_ignores = WatchRule {
                            include: Vec::new(),
                            ..w.clone()
                        };
                        plan.rebuild.push(Rebuild {
                            path: path::clean(&w.path),
                            ignores: watch_ignores(&only_ignores, input).0,
                            origin,
                        });
                        continue;
                    }
                    other => {
                        plan.notes
                            .push(format!("{origin}: action {other} is not known: ignored"));
                        continue;
                    }
                };
                let Some(target) = &w.target else {
                    plan.notes.push(format!(
                        "{origin}: {} without a target: not synced",
                        w.action
                    ));
                    continue;
                };
                let host = path::clean(&w.path);
                let mut s = match input.kinds.kind(&host) {
                    Some(EntryKind::File) => {
                        let (hdir, hname) = split_parent(&host);
                        let (cdir, cname) = split_parent(target);
                        let mut s = blank(
                            if hdir.is_empty() {
                                "/".into()
                            } else {
                                hdir.into()
                            },
                            if cdir.is_empty() {
                                "/".into()
                            } else {
                                cdir.into()
                            },
                            origin,
                        );
                        s.ignores = vec!["/*".into(), format!("!/{}", escape(cname)), "/*/".into()];
                        if hname != cname {
                            s.renames.push((hname.to_owned(), cname.to_owned()));
                            s.left_out
                                .push(format!("{host} is {cname} in the container"));
                        }
                        s
                    }
                    _ => {
                        let mut s = blank(host.clone(), target.clone(), origin);
                        if let Some(rel) = below(input.base, &host) {
                            let (owned_ignores, described, all) = owned_below(&owned, rel);
                            if all {
                                plan.notes.push(format!(
                                    "{}: {host} is container-owned: not synced",
                                    s.origin
                                ));
                                continue;
                            }
                            if !described.is_empty() {
                                s.left_out
                                    .push(format!("container-owned: {}", described.join(", ")));
                            }
                            s.ignores = owned_ignores;
                        }
                        s.ignores.extend(ignores);
                        s.left_out.extend(left_out);
                        s
                    }
                };
                if let Some(action) = after {
                    s.after.push(After {
                        paths: Vec::new(),
                        action,
                    });
                }
                plan.sessions.push(s);
            }
        }
    }
    if let Some(extra) = &cfg.ignore {
        for s in &mut plan.sessions {
            s.ignores.extend(extra.iter().cloned());
            s.left_out
                .push(format!("x-ferry.ignore: {}", extra.join(" ")));
        }
    }
    for (i, rule) in cfg.on_change.iter().flatten().enumerate() {
        if rule.run.is_none() && !rule.restart {
            plan.notes.push(format!(
                "x-ferry.on-change[{i}] has neither run nor restart"
            ));
        }
        let mut applied = false;
        for s in &mut plan.sessions {
            let paths = if rule.paths.is_empty() {
                Vec::new()
            } else {
                let Some(rel) = below(input.project_dir, &s.host) else {
                    continue;
                };
                let rebased: Vec<String> = rule.paths.iter().flat_map(|g| rebase(g, rel)).collect();
                if rebased.is_empty() {
                    continue;
                }
                rebased
            };
            applied = true;
            match &rule.run {
                Some(run) => s.hooks.push(Hook {
                    run: run.clone(),
                    paths,
                    restart: rule.restart,
                }),
                None if rule.restart => s.after.push(After {
                    paths,
                    action: Action::Restart,
                }),
                None => {}
            }
        }
        if !applied {
            plan.notes.push(format!(
                "x-ferry.on-change[{i}]: its paths are in no synced directory"
            ));
        }
    }
    for (i, m) in cfg.mirror.iter().flatten().enumerate() {
        let origin = format!("x-ferry.mirror[{i}]");
        let abs = abs_join(input.base, m);
        let Some(outer) = plan
            .sessions
            .iter_mut()
            .filter(|s| !s.mirror)
            .find(|s| below(&s.host, &abs).is_some_and(|r| !r.is_empty()))
        else {
            plan.notes.push(format!(
                "{origin}: {m} is in no synced directory: not mirrored"
            ));
            continue;
        };
        let rest = below(&outer.host, &abs).unwrap_or_default().to_owned();
        let anchored = format!("/{}", escape_path(&rest));
        if !outer.ignores.contains(&anchored) {
            outer.ignores.push(anchored);
        }
        let container = join(&outer.container, &rest);
        let mut s = blank(abs, container, origin);
        s.mode = Mode::OneWayReplica;
        s.mirror = true;
        plan.sessions.push(s);
    }
    Ok(plan)
}

/// A `develop.watch` rule's ignores as gitignore patterns anchored at its path: its own
/// `ignore` (relative to the path, Docker syntax), its `include` (only those), and the
/// context's `.dockerignore` when the path is inside the context (as compose watch does).
fn watch_ignores(w: &WatchRule, input: &Input) -> (Vec<String>, Vec<String>) {
    let mut ignores = Vec::new();
    let mut left_out = Vec::new();
    let host = path::clean(&w.path);
    if !w.include.is_empty() {
        ignores.push("*".to_owned());
        ignores.push("!*/".to_owned());
        for inc in &w.include {
            ignores.push(format!("!{inc}"));
        }
        left_out.push(format!("everything but {}", w.include.join(", ")));
    }
    let own = crate::dockerignore::read_patterns(&w.ignore.join("\n"));
    let (own, _) = translate(&own, "");
    if !own.is_empty() {
        left_out.push(format!("watch ignore: {}", own.join(" ")));
    }
    ignores.extend(own);
    if let Some(rel) = below(input.base, &host) {
        let (di, _) = translate(input.dockerignore, rel);
        if !di.is_empty() {
            left_out.push(format!(".dockerignore: {}", di.join(" ")));
        }
        ignores.extend(di);
    }
    (ignores, left_out)
}

/// `rel` (relative, or absolute) joined to the absolute `base`, cleaned.
fn abs_join(base: &str, rel: &str) -> String {
    if rel.starts_with('/') {
        path::clean(rel)
    } else {
        path::clean(&format!("{base}/{rel}"))
    }
}

/// Whether root-relative `path` matches a rooted gitignore-style glob as [`rebase`] makes
/// them (`/src/*.js`, `/**/x`, `/**`): the path or one of its parents matches.
pub fn rooted_match(pattern: &str, path: &str) -> bool {
    fn go(p: &[&str], r: &[&str]) -> bool {
        match (p.first(), r.first()) {
            (None, _) => true,
            (Some(&"**"), _) => go(&p[1..], r) || (!r.is_empty() && go(p, &r[1..])),
            (Some(_), None) => false,
            (Some(c), Some(rc)) => {
                DockerIgnore::new([*c]).is_ok_and(|m| m.matches(rc)) && go(&p[1..], &r[1..])
            }
        }
    }
    let p: Vec<&str> = pattern.split('/').filter(|c| !c.is_empty()).collect();
    let r: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    go(&p, &r)
}

/// What a dependency manifest's change may leave stale in the container, by file name.
pub fn dependencies_of(file_name: &str) -> Option<&'static str> {
    let lower = file_name.to_ascii_lowercase();
    Some(match file_name {
        "package.json"
        | "package-lock.json"
        | "npm-shrinkwrap.json"
        | "yarn.lock"
        | "pnpm-lock.yaml" => "node_modules",
        "Cargo.toml" | "Cargo.lock" => "target",
        "pyproject.toml" | "Pipfile" | "Pipfile.lock" | "poetry.lock" | "uv.lock" => {
            "the Python environment"
        }
        "Gemfile" | "Gemfile.lock" => "the installed gems",
        "go.mod" | "go.sum" => "the Go modules",
        "composer.json" | "composer.lock" => "vendor",
        _ if lower.starts_with("requirements") && lower.ends_with(".txt") => {
            "the Python environment"
        }
        _ => return None,
    })
}

impl Session {
    /// The host path (absolute) of session-relative `rel`: its first component is the
    /// container's name of a renamed file ([`Session::renames`]).
    pub fn host_path(&self, rel: &str) -> String {
        let (first, rest) = rel.split_once('/').unwrap_or((rel, ""));
        let first = self
            .renames
            .iter()
            .find(|(_, c)| c == first)
            .map_or(first, |(h, _)| h.as_str());
        let rel = if rest.is_empty() {
            first.to_owned()
        } else {
            format!("{first}/{rest}")
        };
        abs_join(&self.host, &rel)
    }
}

impl ServicePlan {
    /// The stale-dependency line for a change at root-relative `rel` in session `i`, unless a
    /// hook, a `sync+exec` or a rebuild rule covers it.
    pub fn stale(&self, service: &str, i: usize, rel: &str) -> Option<String> {
        let s = self.sessions.get(i)?;
        if s.mirror {
            return None;
        }
        let name = path::base(rel);
        let deps = dependencies_of(name)?;
        let covered = s
            .hooks
            .iter()
            .any(|h| h.paths.is_empty() || h.paths.iter().any(|p| rooted_match(p, rel)))
            || s.after
                .iter()
                .any(|a| matches!(a.action, Action::Exec(_)) && a.matches(rel))
            || self.rebuild.iter().any(|r| r.matches(&s.host_path(rel)));
        (!covered).then(|| {
            format!(
                "{rel} changed: {deps} in {service} may be stale; add an on-change rule or rebuild"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebased_dockerignore_patterns() {
        // At the context root: anchored as they are.
        assert_eq!(rebase("*.md", ""), ["/*.md"]);
        // A root-only pattern does not apply below another directory.
        assert!(rebase("*.md", "src").is_empty());
        assert_eq!(rebase("src/*.tmp", "src"), ["/*.tmp"]);
        assert_eq!(rebase("*/*.tmp", "src"), ["/*.tmp"]);
        assert!(rebase("docs/x", "src").is_empty());
        // `**` may end inside the root or below it.
        assert_eq!(rebase("**/*.log", "src"), ["/**/*.log"]);
        assert_eq!(rebase("**/src/*.log", "src"), ["/*.log", "/**/src/*.log"]);
        // A pattern matching the root or above it: everything.
        assert_eq!(rebase("src", "src/lib"), ["/**"]);
    }

    fn mapping(source: MappingSource, container: &str, line: usize) -> crate::Mapping {
        crate::Mapping {
            source,
            container: container.into(),
            into_dir: true,
            chown: None,
            excludes: Vec::new(),
            line,
        }
    }

    #[test]
    fn sessions_from_a_node_dockerfile() {
        let plan = CopyPlan {
            mappings: vec![
                mapping(
                    MappingSource::File("package.json".into()),
                    "/app/package.json",
                    3,
                ),
                mapping(
                    MappingSource::File("package-lock.json".into()),
                    "/app/package-lock.json",
                    3,
                ),
                mapping(MappingSource::Dir("".into()), "/app", 5),
                mapping(MappingSource::Dir("src".into()), "/app/src", 6),
                mapping(MappingSource::Dir("conf".into()), "/etc/app", 7),
            ],
            ..CopyPlan::default()
        };
        let owned = crate::owned_dirs(["package.json"]);
        let sp = plan_sessions(&plan, &["*.md".into()], &owned, &ContextList::default());
        let pairs: Vec<(&str, &str)> = sp
            .sessions
            .iter()
            .map(|p| (p.host.as_str(), p.container.as_str()))
            .collect();
        assert_eq!(pairs, [("", "/app"), ("conf", "/etc/app")]);
        assert_eq!(sp.sessions[0].ignores, ["/*.md", "/node_modules"]);
    }

    #[test]
    fn single_files_share_a_selective_session() {
        let plan = CopyPlan {
            mappings: vec![
                mapping(MappingSource::File("a.txt".into()), "/tasks/a.txt", 2),
                mapping(MappingSource::File("b.txt".into()), "/tasks/b.txt", 2),
                mapping(MappingSource::File("c.txt".into()), "/tasks/renamed", 3),
                mapping(MappingSource::Glob("config/*.yml".into()), "/app/config", 4),
            ],
            ..CopyPlan::default()
        };
        let sp = plan_sessions(&plan, &["*.md".into()], &[], &ContextList::default());
        assert_eq!(sp.sessions.len(), 2);
        assert_eq!(sp.sessions[0].host, "config");
        assert_eq!(sp.sessions[0].ignores, ["/*", "!/*.yml", "/*/"]);
        let files = &sp.sessions[1];
        assert_eq!(
            (files.host.as_str(), files.container.as_str()),
            ("", "/tasks")
        );
        // The session knows c.txt by the container's name; .dockerignore's rules were checked
        // against c.txt, so `renamed` is re-included after them.
        assert_eq!(files.renames, [("c.txt".to_owned(), "renamed".to_owned())]);
        assert_eq!(
            files.ignores,
            [
                "/*",
                "!/a.txt",
                "!/b.txt",
                "!/renamed",
                "/*/",
                "/*.md",
                "!/renamed"
            ]
        );
        assert!(
            files
                .left_out
                .iter()
                .any(|l| l == "c.txt is renamed in the container"),
            "{:?}",
            files.left_out
        );
    }

    /// Whether the engine keeps `path` under gitignore rules anchored at the session root: no
    /// directory on the way is ignored (the walk does not enter one) and the path is not.
    fn kept(rules: &[String], path: &str, is_dir: bool) -> bool {
        let mut b = ignore::gitignore::GitignoreBuilder::new("/");
        for r in rules {
            b.add_line(None, r).expect("a valid rule");
        }
        let g = b.build().expect("rules");
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..parts.len() {
            if g.matched(format!("/{}", parts[..i].join("/")), true)
                .is_ignore()
            {
                return false;
            }
        }
        !g.matched(format!("/{path}"), is_dir).is_ignore()
    }

    #[test]
    fn a_later_copy_to_the_same_container_path_overrides() {
        let plan = CopyPlan {
            mappings: vec![
                mapping(MappingSource::File("a/x.txt".into()), "/app/x.txt", 2),
                mapping(MappingSource::File("b/x.txt".into()), "/app/x.txt", 3),
            ],
            ..CopyPlan::default()
        };
        let sp = plan_sessions(&plan, &[], &[], &ContextList::default());
        assert_eq!(sp.sessions.len(), 1, "{:?}", sp.sessions);
        assert_eq!(sp.sessions[0].host, "b");
        assert_eq!(sp.sessions[0].line, 3);
    }

    #[test]
    fn a_file_and_a_directory_copied_over_one_path_the_later_copy_wins() {
        let context: ContextList = ["package.json", "ui/package.json", "config.json", "src/a.js"]
            .into_iter()
            .collect();
        // The monorepo pattern: manifests first, then everything; the root's package.json
        // overwrites ui's at /app/package.json.
        let plan = CopyPlan {
            mappings: vec![
                mapping(
                    MappingSource::File("ui/package.json".into()),
                    "/app/package.json",
                    2,
                ),
                mapping(MappingSource::Dir(String::new()), "/app", 3),
            ],
            ..CopyPlan::default()
        };
        let sp = plan_sessions(&plan, &[], &[], &context);
        assert_eq!(sp.sessions.len(), 1, "{:?}", sp.sessions);
        assert_eq!(sp.sessions[0].host, "");
        assert!(
            sp.notes
                .iter()
                .any(|n| n.contains("/app/package.json is overwritten by line 3")),
            "{:?}",
            sp.notes
        );
        // A file over a directory copied before: the directory's session leaves it out.
        let plan = CopyPlan {
            mappings: vec![
                mapping(MappingSource::Dir(String::new()), "/app", 2),
                mapping(
                    MappingSource::File("config.prod.json".into()),
                    "/app/config.json",
                    3,
                ),
            ],
            ..CopyPlan::default()
        };
        let sp = plan_sessions(&plan, &[], &[], &context);
        assert_eq!(sp.sessions.len(), 2, "{:?}", sp.sessions);
        let whole = sp
            .sessions
            .iter()
            .find(|s| s.only.is_none())
            .expect("the directory");
        assert!(
            whole.ignores.contains(&"/config.json".to_owned()),
            "{:?}",
            whole.ignores
        );
        assert!(!kept(&whole.ignores, "config.json", false));
        assert!(kept(&whole.ignores, "src/a.js", false));
        let file = sp
            .sessions
            .iter()
            .find(|s| s.only.is_some())
            .expect("the file");
        assert_eq!(
            file.renames,
            [("config.prod.json".to_owned(), "config.json".to_owned())]
        );
    }

    #[test]
    fn globs_with_wildcards_above_the_last_component_are_expanded() {
        let context: ContextList = [
            "api/package.json",
            "web/package.json",
            "web/src/x.js",
            "docs/package.json",
            "README.md",
            "packages/a/index.js",
            "packages/b/index.js",
            "conf/prod/app.yml",
        ]
        .into_iter()
        .collect();
        let mut into_file = mapping(
            MappingSource::Glob("conf/*/app.yml".into()),
            "/etc/app.yml",
            4,
        );
        into_file.into_dir = false;
        let plan = CopyPlan {
            mappings: vec![
                mapping(MappingSource::Glob("*/package.json".into()), "/app/", 2),
                mapping(MappingSource::Glob("packages/*".into()), "/srv", 3),
                into_file,
            ],
            ..CopyPlan::default()
        };
        let sp = plan_sessions(&plan, &["docs".into()], &[], &context);
        let pairs: Vec<(&str, &str)> = sp
            .sessions
            .iter()
            .map(|s| (s.host.as_str(), s.container.as_str()))
            .collect();
        // web/package.json lands last at /app/package.json (api's is overwritten, docs is
        // ignored); packages/a and packages/b are directories whose contents land in /srv/
        // (packages/* has its wildcard in the last component, but it is copied as directories:
        // the live pattern session is for files); conf/prod/app.yml is /etc/app.yml.
        assert!(pairs.contains(&("web", "/app")), "{pairs:?}");
        assert!(
            !pairs.iter().any(|p| p.0 == "api" || p.0 == "docs"),
            "{pairs:?}"
        );
        assert!(pairs.contains(&("conf/prod", "/etc")), "{pairs:?}");
        assert!(pairs.contains(&("packages/a", "/srv")), "{pairs:?}");
        assert!(pairs.contains(&("packages/b", "/srv")), "{pairs:?}");
        let etc = sp
            .sessions
            .iter()
            .find(|s| s.host == "conf/prod")
            .expect("conf/prod");
        assert_eq!(
            etc.renames,
            [("app.yml".to_owned(), "app.yml".to_owned())][..0]
        );
        assert!(
            sp.notes
                .iter()
                .any(|n| n.contains("*/package.json matches api/package.json, web/package.json")),
            "{:?}",
            sp.notes
        );
        // Expanded now, so watched for new matches; `packages/*` (last component only) is not.
        assert_eq!(
            sp.live,
            [
                ("*/package.json".to_owned(), 2),
                ("conf/*/app.yml".to_owned(), 4)
            ]
        );
        let mut renamed = mapping(
            MappingSource::Glob("conf/*/app.yml".into()),
            "/etc/my.yml",
            5,
        );
        renamed.into_dir = false;
        let sp = plan_sessions(
            &CopyPlan {
                mappings: vec![renamed],
                ..CopyPlan::default()
            },
            &[],
            &[],
            &context,
        );
        assert_eq!(sp.sessions.len(), 1);
        assert_eq!(
            sp.sessions[0].renames,
            [("app.yml".to_owned(), "my.yml".to_owned())]
        );
        // Nothing matches: said, not synced.
        let none = CopyPlan {
            mappings: vec![mapping(
                MappingSource::Glob("*/nothing.json".into()),
                "/app/",
                6,
            )],
            ..CopyPlan::default()
        };
        let sp = plan_sessions(&none, &[], &[], &context);
        assert!(sp.sessions.is_empty());
        assert!(
            sp.notes.iter().any(|n| n.contains("matches nothing")),
            "{:?}",
            sp.notes
        );
    }

    #[test]
    fn live_globs_say_where_to_watch_and_which_changes_concern_them() {
        let context: ContextList = [
            "/ctx/api/package.json",
            "/ctx/web/package.json",
            "/ctx/web/src/x.js",
            "/ctx/README.md",
            "/ctx/packages/a/conf/app.yml",
            "/ctx/packages/a/conf/app.txt",
            "/ctx/packages/b/",
            "/ctx/packages/c.yml",
        ]
        .into_iter()
        .collect();
        let g = LiveGlob::new("/ctx", "*/package.json", 2);
        assert_eq!(g.root, "/ctx");
        assert_eq!(g.parts, ["*", "package.json"]);
        assert_eq!(
            g.dirs(&context),
            ["/ctx", "/ctx/api", "/ctx/packages", "/ctx/web"]
        );
        assert_eq!(
            g.matches(&context),
            ["/ctx/api/package.json", "/ctx/web/package.json"]
        );
        // A directory on the way to a match (any name at the first level may become one), or
        // a match; nothing deeper, nothing elsewhere.
        assert!(g.concerns("/ctx/zz"));
        assert!(g.concerns("/ctx/zz/package.json"));
        assert!(!g.concerns("/ctx/zz/other.json"));
        assert!(!g.concerns("/ctx/web/src/x.js"));
        assert!(!g.concerns("/ctx"));
        assert!(!g.concerns("/ctxx/zz/package.json"));
        assert!(!g.concerns("/elsewhere/zz/package.json"));

        // Leading components without wildcards are the root; literals after a wildcard match
        // exactly; an escaped `*` is a literal.
        let deep = LiveGlob::new("/ctx", "packages/*/conf/*.yml", 3);
        assert_eq!(deep.root, "/ctx/packages");
        assert_eq!(deep.parts, ["*", "conf", "*.yml"]);
        assert_eq!(
            deep.dirs(&context),
            [
                "/ctx/packages",
                "/ctx/packages/a",
                "/ctx/packages/b",
                "/ctx/packages/a/conf"
            ]
        );
        assert_eq!(deep.matches(&context), ["/ctx/packages/a/conf/app.yml"]);
        assert!(deep.concerns("/ctx/packages/new/conf/x.yml"));
        assert!(!deep.concerns("/ctx/packages/new/other/x.yml"));
        assert!(!deep.concerns("/ctx/packages/a/conf/app.txt"));
        let escaped = LiveGlob::new("/ctx", "\\*/*/x", 4);
        assert_eq!(escaped.root, "/ctx/*");
        assert!(escaped.concerns("/ctx/*/a/x"));
        assert!(!escaped.concerns("/ctx/b/a/x"));
        // A root that does not exist has nothing to watch yet.
        assert!(
            LiveGlob::new("/ctx", "nope/*/x", 5)
                .dirs(&context)
                .is_empty()
        );
    }

    #[test]
    fn a_renamed_files_session_path_is_its_host_name() {
        let mut s = Session {
            host: "/p/web".into(),
            container: "/etc".into(),
            mode: Mode::TwoWaySafe,
            mirror: false,
            ignores: Vec::new(),
            left_out: Vec::new(),
            origin: String::new(),
            hooks: Vec::new(),
            after: Vec::new(),
            chown: None,
            renames: vec![("site.conf".into(), "default.conf".into())],
        };
        assert_eq!(s.host_path("default.conf"), "/p/web/site.conf");
        assert_eq!(s.host_path("other.conf"), "/p/web/other.conf");
        assert_eq!(s.host_path("a/b"), "/p/web/a/b");
        s.renames.clear();
        assert_eq!(s.host_path("default.conf"), "/p/web/default.conf");
    }

    #[test]
    fn copy_parents_keeps_only_what_its_patterns_match() {
        let parents = |pivot: &str, pattern: &str| MappingSource::Parents {
            pivot: pivot.into(),
            pattern: pattern.into(),
        };
        let plan = CopyPlan {
            mappings: vec![
                mapping(parents("x", "a/*.js"), "/app", 2),
                mapping(parents("x", "b/*/conf.yml"), "/app", 2),
                mapping(parents("x", "lib"), "/app", 2),
            ],
            ..CopyPlan::default()
        };
        let sp = plan_sessions(&plan, &[], &[], &ContextList::default());
        assert_eq!(sp.sessions.len(), 1, "{:?}", sp.sessions);
        let s = &sp.sessions[0];
        assert_eq!((s.host.as_str(), s.container.as_str()), ("x", "/app"));
        for (path, dir, want) in [
            ("a", true, true),
            ("a/x.js", false, true),
            ("a/x.css", false, false),
            ("a/sub/y.js", false, false),
            ("a/d.js/deep/z.txt", false, true),
            ("b/prod/conf.yml", false, true),
            ("b/prod/other.yml", false, false),
            ("b/conf.yml", false, false),
            ("lib/any/thing.txt", false, true),
            ("other.txt", false, false),
            ("c/x.js", false, false),
        ] {
            assert_eq!(kept(&s.ignores, path, dir), want, "{path}: {:?}", s.ignores);
        }
        // With `**`: every directory is walked, matches at any depth.
        let plan = CopyPlan {
            mappings: vec![mapping(parents("", "src/**/*.go"), "/app", 2)],
            ..CopyPlan::default()
        };
        let sp = plan_sessions(&plan, &[], &[], &ContextList::default());
        let s = &sp.sessions[0];
        for (path, want) in [
            ("src/main.go", true),
            ("src/a/b/c.go", true),
            ("src/a/b/c.txt", false),
            ("main.go", false),
        ] {
            assert_eq!(
                kept(&s.ignores, path, false),
                want,
                "{path}: {:?}",
                s.ignores
            );
        }
        // A whole-directory COPY of the same pair covers it.
        let plan = CopyPlan {
            mappings: vec![
                mapping(parents("x", "a/*.js"), "/app", 2),
                mapping(MappingSource::Dir("x".into()), "/app", 3),
            ],
            ..CopyPlan::default()
        };
        let sp = plan_sessions(&plan, &[], &[], &ContextList::default());
        assert_eq!(sp.sessions.len(), 1);
        assert!(sp.sessions[0].parents.is_empty());
    }

    #[test]
    fn nested_destinations_belong_to_one_session() {
        let plan = CopyPlan {
            mappings: vec![
                mapping(MappingSource::Dir("".into()), "/app", 2),
                mapping(MappingSource::Dir("config".into()), "/app/conf", 3),
            ],
            ..CopyPlan::default()
        };
        let sp = plan_sessions(&plan, &[], &[], &ContextList::default());
        assert_eq!(sp.sessions.len(), 2);
        assert_eq!(sp.sessions[0].ignores, ["/conf"]);
    }

    use serde_json::json;

    use crate::ContextList;

    fn service(v: Value) -> Service {
        serde_json::from_value(v).expect("a service")
    }

    #[test]
    fn x_ferry_keys_and_types() {
        let at = "services.web.x-ferry";
        let cases: Vec<(Value, Result<XFerry, &str>)> = vec![
            (Value::Null, Ok(XFerry::default())),
            (
                json!({"sync": false}),
                Ok(XFerry {
                    sync: Some(false),
                    ..XFerry::default()
                }),
            ),
            (
                json!({"bogus": 1}),
                Err("unknown key services.web.x-ferry.bogus in the compose file"),
            ),
            (
                json!({"on-change": [{"run": "x", "when": 1}]}),
                Err("unknown key services.web.x-ferry.on-change[0].when in the compose file"),
            ),
            (
                json!({"paths": [{"host": ".", "container": "/app", "mode": "x"}]}),
                Err("unknown key services.web.x-ferry.paths[0].mode in the compose file"),
            ),
            (
                json!({"mode": "both-ways"}),
                Err(
                    "services.web.x-ferry.mode: unknown mode 'both-ways' (expected two-way-safe, two-way-resolved, two-way-newest, one-way-safe or one-way-replica)",
                ),
            ),
            (
                json!({"sync": "no"}),
                Err("services.web.x-ferry: invalid type: string \"no\", expected a boolean"),
            ),
            (json!([1]), Err("services.web.x-ferry: expected a mapping")),
            (
                json!({"mode": "one-way-safe", "ignore": ["*.log"], "owned": ["deps"],
                       "mirror": ["deps"], "paths": [{"host": "./src", "container": "/app/src"}],
                       "on-change": [{"paths": ["src/*.c"], "run": "make", "restart": true}]}),
                Ok(XFerry {
                    sync: None,
                    mode: Some("one-way-safe".into()),
                    ignore: Some(vec!["*.log".into()]),
                    owned: Some(vec!["deps".into()]),
                    mirror: Some(vec!["deps".into()]),
                    paths: Some(vec![PathMapping {
                        host: "./src".into(),
                        container: "/app/src".into(),
                    }]),
                    on_change: Some(vec![OnChangeRule {
                        paths: vec!["src/*.c".into()],
                        run: Some("make".into()),
                        restart: true,
                    }]),
                }),
            ),
        ];
        for (value, want) in cases {
            let got = parse_x_ferry(Some(&value), at).map_err(|e| e.0);
            assert_eq!(got, want.map_err(str::to_owned), "{value}");
        }
        let top = parse_x_ferry(Some(&json!({"x": 1})), "x-ferry").unwrap_err();
        assert_eq!(top.0, "unknown key x-ferry.x in the compose file");
    }

    #[test]
    fn service_settings_override_the_defaults_per_key() {
        let defaults = XFerry {
            mode: Some("two-way-resolved".into()),
            ignore: Some(vec!["*.log".into()]),
            ..XFerry::default()
        };
        let svc = XFerry {
            ignore: Some(vec!["*.tmp".into()]),
            sync: Some(true),
            ..XFerry::default()
        };
        let merged = svc.over(&defaults);
        assert_eq!(merged.mode.as_deref(), Some("two-way-resolved"));
        assert_eq!(merged.ignore, Some(vec!["*.tmp".to_owned()]));
        assert_eq!(merged.sync, Some(true));
    }

    #[test]
    fn sources_by_precedence() {
        let watch =
            json!({"develop": {"watch": [{"path": "/p/src", "action": "sync", "target": "/app"}]}});
        let build = json!({"build": {"context": "/p"}});
        let both = json!({"build": {"context": "/p"},
                          "develop": {"watch": [{"path": "/p", "action": "rebuild"}]}});
        let paths = XFerry {
            paths: Some(vec![]),
            ..XFerry::default()
        };
        let off = XFerry {
            sync: Some(false),
            paths: Some(vec![]),
            ..XFerry::default()
        };
        let none = XFerry::default();
        let table = [
            (&both, &none, Source::Watch),
            (&both, &paths, Source::Paths),
            (&both, &off, Source::Off),
            (&build, &none, Source::Dockerfile),
            (&watch, &none, Source::Watch),
            (&json!({"image": "x"}), &none, Source::Nothing),
            (&json!({"image": "x"}), &paths, Source::Paths),
        ];
        for (svc, cfg, want) in table {
            assert_eq!(source(&service(svc.clone()), cfg), want, "{svc} {cfg:?}");
        }
    }

    fn input<'a>(cfg: &'a XFerry, files: &'a [String], kinds: &'a ContextList) -> Input<'a> {
        Input {
            config: cfg,
            project_dir: "/p",
            copies: None,
            dockerignore: &[],
            files,
            base: "/p/web",
            kinds,
        }
    }

    #[test]
    fn explicit_paths_with_owned_ignore_mirror_and_hooks() {
        let svc = service(json!({"build": {"context": "/p/web"}}));
        let cfg = parse_x_ferry(
            Some(&json!({
                "mode": "two-way-resolved",
                "ignore": ["*.log"],
                "mirror": ["node_modules"],
                "paths": [{"host": "./web", "container": "/app"},
                          {"host": "/p/docs", "container": "docs"}],
                "on-change": [
                    {"paths": ["web/src/**/*.js"], "run": "touch /tmp/js", "restart": true},
                    {"paths": ["web/package.json"], "restart": true},
                    {"run": "sync-all"},
                    {"paths": ["elsewhere/*"], "run": "never"}
                ]
            })),
            "x-ferry",
        )
        .unwrap();
        let files = vec!["package.json".to_owned(), "src/index.js".to_owned()];
        let kinds = ContextList::default();
        let plan = plan_service(&svc, &input(&cfg, &files, &kinds)).unwrap();
        assert_eq!(plan.sessions.len(), 3, "{plan:#?}");
        let web = &plan.sessions[0];
        assert_eq!(
            (web.host.as_str(), web.container.as_str()),
            ("/p/web", "/app")
        );
        assert_eq!(web.mode, Mode::TwoWayResolved);
        assert_eq!(web.origin, "x-ferry.paths[0]");
        assert_eq!(web.ignores, ["/node_modules", "*.log"]);
        assert_eq!(
            web.hooks,
            [
                Hook {
                    run: "touch /tmp/js".into(),
                    paths: vec!["/src/**/*.js".into()],
                    restart: true,
                },
                Hook {
                    run: "sync-all".into(),
                    paths: vec![],
                    restart: false,
                }
            ]
        );
        assert_eq!(
            web.after,
            [After {
                paths: vec!["/package.json".into()],
                action: Action::Restart
            }]
        );
        let docs = &plan.sessions[1];
        assert_eq!(
            (docs.host.as_str(), docs.container.as_str()),
            ("/p/docs", "docs")
        );
        assert_eq!(docs.ignores, ["*.log"]);
        assert_eq!(docs.hooks.len(), 1, "only the rule without paths applies");
        let mirror = &plan.sessions[2];
        assert!(mirror.mirror);
        assert_eq!(mirror.mode, Mode::OneWayReplica);
        assert_eq!(
            (mirror.host.as_str(), mirror.container.as_str()),
            ("/p/web/node_modules", "/app/node_modules")
        );
        assert!(mirror.hooks.is_empty() && mirror.ignores.is_empty());
        assert_eq!(
            plan.notes,
            ["x-ferry.on-change[3]: its paths are in no synced directory"]
        );
    }

    #[test]
    fn owned_replaces_the_detected_list_and_sync_false_plans_nothing() {
        let svc = service(json!({"build": {"context": "/p/web"}}));
        let files = vec!["package.json".to_owned()];
        let kinds = ContextList::default();
        let cfg = XFerry {
            owned: Some(vec!["deps".into(), "out/".into()]),
            paths: Some(vec![PathMapping {
                host: "web".into(),
                container: "/app".into(),
            }]),
            ..XFerry::default()
        };
        let plan = plan_service(&svc, &input(&cfg, &files, &kinds)).unwrap();
        assert_eq!(plan.sessions[0].ignores, ["/deps", "/out"]);
        let off = XFerry {
            sync: Some(false),
            ..cfg
        };
        let plan = plan_service(&svc, &input(&off, &files, &kinds)).unwrap();
        assert!(plan.sessions.is_empty());
        assert_eq!(plan.notes, ["x-ferry sync: false: not synced"]);
    }

    #[test]
    fn develop_watch_rules_become_sessions_actions_and_rebuilds() {
        let svc = service(json!({
            "build": {"context": "/p/web"},
            "develop": {"watch": [
                {"path": "/p/web/src", "action": "sync", "target": "/app/src",
                 "ignore": ["*.tmp", "gen/"]},
                {"path": "/p/web/conf", "action": "sync+restart", "target": "/etc/app"},
                {"path": "/p/web/scripts", "action": "sync+exec", "target": "/app/scripts",
                 "exec": {"command": ["sh", "-c", "echo hi"], "user": "1000"}},
                {"path": "/p/web/package.json", "action": "rebuild"},
                {"path": "/p/web/static", "action": "sync", "target": "/app/static",
                 "include": ["*.css"]},
                {"path": "/p/web/VERSION", "action": "sync", "target": "/app/VERSION"},
                {"path": "/p/web/x", "action": "teleport"},
                {"path": "/p/web/lib", "action": "rebuild", "include": ["*.c"], "ignore": ["*.o"]}
            ]}
        }));
        let files = vec!["package.json".to_owned()];
        let kinds: ContextList = ["/p/web/src/", "/p/web/VERSION"].into_iter().collect();
        let cfg = XFerry::default();
        let mut inp = input(&cfg, &files, &kinds);
        let di = vec!["**/*.md".to_owned()];
        inp.dockerignore = &di;
        let plan = plan_service(&svc, &inp).unwrap();
        let pairs: Vec<(&str, &str, &str)> = plan
            .sessions
            .iter()
            .map(|s| (s.host.as_str(), s.container.as_str(), s.origin.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("/p/web/src", "/app/src", "develop.watch[0]"),
                ("/p/web/conf", "/etc/app", "develop.watch[1]"),
                ("/p/web/scripts", "/app/scripts", "develop.watch[2]"),
                ("/p/web/static", "/app/static", "develop.watch[4]"),
                ("/p/web", "/app", "develop.watch[5]"),
            ]
        );
        // Docker syntax, relative to the path: `*.tmp` is at its top only (as compose matches).
        assert_eq!(plan.sessions[0].ignores, ["/*.tmp", "/gen", "/**/*.md"]);
        assert!(plan.sessions[0].after.is_empty());
        assert_eq!(plan.sessions[1].after[0].action, Action::Restart);
        match &plan.sessions[2].after[0].action {
            Action::Exec(e) => {
                assert_eq!(
                    e.command.as_deref(),
                    Some(&["sh".to_owned(), "-c".into(), "echo hi".into()][..])
                );
                assert_eq!(e.user.as_deref(), Some("1000"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            plan.sessions[3].ignores[..3],
            ["*".to_owned(), "!*/".into(), "!*.css".into()]
        );
        assert_eq!(plan.sessions[4].ignores, ["/*", "!/VERSION", "/*/"]);
        assert_eq!(
            plan.rebuild,
            [
                Rebuild {
                    path: "/p/web/package.json".into(),
                    ignores: vec!["/**/*.md".into()],
                    origin: "develop.watch[3]".into()
                },
                Rebuild {
                    path: "/p/web/lib".into(),
                    ignores: vec!["/*.o".into(), "/**/*.md".into()],
                    origin: "develop.watch[7]".into()
                }
            ]
        );
        assert!(plan.rebuild[1].matches("/p/web/lib/a.c"));
        assert!(plan.rebuild[1].matches("/p/web/lib/sub/a.o"));
        assert!(!plan.rebuild[1].matches("/p/web/lib/a.o"));
        assert!(!plan.rebuild[1].matches("/p/web/lib/docs/x.md"));
        assert!(plan.rebuild[0].matches("/p/web/package.json"));
        assert!(!plan.rebuild[0].matches("/p/web/package.json5"));
        assert_eq!(
            plan.notes,
            ["develop.watch[6]: action teleport is not known: ignored"]
        );
    }

    #[test]
    fn dockerfile_scope_becomes_absolute_sessions() {
        let svc = service(json!({"build": {"context": "/p/web"}}));
        let copies = CopyPlan {
            mappings: vec![mapping(MappingSource::Dir("".into()), "/app", 2)],
            ..CopyPlan::default()
        };
        let files = vec!["package.json".to_owned()];
        let kinds = ContextList::default();
        let cfg = XFerry {
            mirror: Some(vec!["node_modules".into()]),
            ..XFerry::default()
        };
        let mut inp = input(&cfg, &files, &kinds);
        inp.copies = Some(&copies);
        let plan = plan_service(&svc, &inp).unwrap();
        assert_eq!(plan.sessions.len(), 2);
        assert_eq!(plan.sessions[0].host, "/p/web");
        assert_eq!(plan.sessions[0].origin, "Dockerfile line 2");
        assert_eq!(plan.sessions[0].ignores, ["/node_modules"]);
        assert_eq!(plan.sessions[1].container, "/app/node_modules");
    }

    #[test]
    fn rooted_matches() {
        let table = [
            ("/**", "", true),
            ("/**", "a/b", true),
            ("/src", "src/a.js", true),
            ("/src", "srcs/a.js", false),
            ("/src/*.js", "src/a.js", true),
            ("/src/*.js", "src/lib/a.js", false),
            ("/src/**/*.js", "src/lib/a.js", true),
            ("/src/**/*.js", "src/a.js", true),
            ("/**/package.json", "a/b/package.json", true),
            ("/package.json", "web/package.json", false),
        ];
        for (p, path, want) in table {
            assert_eq!(rooted_match(p, path), want, "{p} {path}");
        }
    }

    #[test]
    fn stale_dependencies_unless_a_rule_covers_them() {
        let s = |hooks: Vec<Hook>, after: Vec<After>| Session {
            host: "/p/web".into(),
            container: "/app".into(),
            mode: Mode::TwoWaySafe,
            mirror: false,
            ignores: vec![],
            left_out: vec![],
            origin: String::new(),
            hooks,
            after,
            chown: None,
            renames: vec![],
        };
        let mut plan = ServicePlan {
            sessions: vec![s(vec![], vec![])],
            ..ServicePlan::default()
        };
        assert_eq!(
            plan.stale("web", 0, "package.json").as_deref(),
            Some(
                "package.json changed: node_modules in web may be stale; add an on-change rule or rebuild"
            )
        );
        assert_eq!(plan.stale("web", 0, "src/index.js"), None);
        assert!(plan.stale("web", 0, "requirements-dev.txt").is_some());
        assert!(plan.stale("web", 0, "go.sum").is_some());
        plan.sessions[0].hooks.push(Hook {
            run: "npm install".into(),
            paths: vec!["/package.json".into()],
            restart: false,
        });
        assert_eq!(plan.stale("web", 0, "package.json"), None);
        assert!(plan.stale("web", 0, "Cargo.lock").is_some());
        plan.rebuild.push(Rebuild {
            path: "/p/web/Cargo.lock".into(),
            ignores: vec![],
            origin: String::new(),
        });
        assert_eq!(plan.stale("web", 0, "Cargo.lock"), None);
    }
}
