//! `ferry up`: boots a Compose project with Docker Compose v2, then runs one sync session per
//! directory each service's Dockerfile copies (the same engine `ferry sync` runs, through
//! `crate::open`, then `Engine::run`), and streams the services' logs, until Ctrl-C.
//!
//! Compose resolves the project (interpolation, `.env`, profiles, `extends`, several `-f`):
//! ferry reads only `docker compose config --format json`. The scope of each service comes
//! from `ferry_plan` (pure); this module turns it into sessions and does the Docker side.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use ferry::cli::{Place, UpFlags};
use ferry::endpoint::WatchEvent;
use ferry::engine::{ImageChanges, Settings};
use ferry::output::Printer;
use ferry::remote::Location;
use ferry::state::Retention;
use ferry_core::Mode;
use ferry_plan::{
    BuildOptions, Context, CopyPlan, DockerIgnore, EntryKind, ImageConfig, MappingSource, OwnedDir,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Exit, STACK, finish_code, open, report_as};

/// The file names compose looks for, in its order.
const COMPOSE_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// A failure of the whole command: its exit code and one line.
struct Fail(Exit, String);

fn usage(msg: impl Into<String>) -> Fail {
    Fail(Exit::Usage, msg.into())
}

fn failed(msg: impl Into<String>) -> Fail {
    Fail(Exit::Failed, msg.into())
}

/// What ferry reads of `docker compose config --format json`.
#[derive(Debug, Deserialize)]
struct Project {
    name: String,
    #[serde(default)]
    services: BTreeMap<String, Service>,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)] // image, working_dir and x-ferry are read by the parts that come next
struct Service {
    build: Option<Build>,
    image: Option<String>,
    user: Option<String>,
    working_dir: Option<String>,
    develop: Option<Develop>,
    #[serde(rename = "x-ferry")]
    x_ferry: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Build {
    context: String,
    dockerfile: Option<String>,
    dockerfile_inline: Option<String>,
    target: Option<String>,
    #[serde(default)]
    args: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Deserialize)]
struct Develop {
    #[serde(default)]
    watch: Vec<Value>,
}

/// The major version in a compose tool's `version` output ("2.29.7", "v2.29.7",
/// "Docker Compose version v2.29.7", "docker-compose version 1.29.2, build 5becea4c").
fn compose_major(version: &str) -> Option<u32> {
    version.split_whitespace().find_map(|word| {
        let word = word.trim_end_matches(',');
        let word = word.strip_prefix('v').unwrap_or(word);
        let (major, rest) = word.split_once('.')?;
        rest.chars().next().filter(char::is_ascii_digit)?;
        major.parse().ok()
    })
}

/// The compose command to run: `docker compose`, else a `docker-compose` that is v2.
fn compose_tool() -> Result<Vec<String>, Fail> {
    let version = |prog: &str, args: &[&str]| -> Option<String> {
        let out = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    if let Some(v) = version("docker", &["compose", "version", "--short"]) {
        if compose_major(&v).is_some_and(|m| m >= 2) {
            return Ok(vec!["docker".into(), "compose".into()]);
        }
    }
    match version("docker-compose", &["version", "--short"])
        .or_else(|| version("docker-compose", &["version"]))
    {
        Some(v) => match compose_major(&v) {
            Some(m) if m >= 2 => Ok(vec!["docker-compose".into()]),
            _ => Err(usage(format!(
                "docker-compose {v} rejects `develop`: install Docker Compose v2"
            ))),
        },
        None => Err(usage(
            "no Docker Compose found ('docker compose' or 'docker-compose'): install Docker Compose v2",
        )),
    }
}

/// The compose files named with `-f`, checked; or, with none, that compose will find one here
/// or in a parent directory (as compose looks), unless `COMPOSE_FILE` names them.
fn check_compose_files(files: &[PathBuf]) -> Result<(), Fail> {
    for f in files {
        if !f.is_file() {
            return Err(usage(format!(
                "compose file '{}' does not exist",
                f.display()
            )));
        }
    }
    if !files.is_empty() || std::env::var_os("COMPOSE_FILE").is_some() {
        return Ok(());
    }
    let cwd = std::env::current_dir().map_err(|e| failed(format!("current directory: {e}")))?;
    let mut dir = Some(cwd.as_path());
    while let Some(d) = dir {
        if COMPOSE_FILES.iter().any(|n| d.join(n).is_file()) {
            return Ok(());
        }
        dir = d.parent();
    }
    Err(usage(format!(
        "no compose file ({}) in {} or its parents; name one with -f",
        COMPOSE_FILES.join(", "),
        cwd.display()
    )))
}

/// Runs compose with the project's `-f` files; stdout and stderr.
struct Compose {
    tool: Vec<String>,
    files: Vec<PathBuf>,
    project: Option<String>,
}

impl Compose {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.tool[0]);
        c.args(&self.tool[1..]);
        for f in &self.files {
            c.arg("-f").arg(f);
        }
        if let Some(p) = &self.project {
            c.args(["-p", p]);
        }
        c.args(args).stdin(Stdio::null());
        c
    }

    fn output(&self, args: &[&str]) -> Result<std::process::Output, Fail> {
        self.command(args)
            .output()
            .map_err(|e| failed(format!("cannot run {}: {e}", self.tool.join(" "))))
    }
}

/// The last non-empty lines of a command's output, for a failure message.
fn last_lines(out: &std::process::Output, n: usize) -> Vec<String> {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// Everything `ferry up` prints of its own (the sessions print through their [`Printer`]).
#[derive(Clone, Copy)]
struct Out {
    json: bool,
}

impl Out {
    fn event(&self, service: &str, human: &str, event: Value) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if self.json {
            let mut event = event;
            if let Some(o) = event.as_object_mut() {
                o.insert("service".into(), service.into());
            }
            let _ = writeln!(out, "{event}");
        } else {
            let _ = writeln!(out, "{service} | {human}");
        }
        let _ = out.flush();
    }
}

/// One session to run: a host directory and a container directory, with its ignores.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Planned {
    /// Context-relative host directory ("" for the context root).
    host: String,
    /// Absolute container directory.
    container: String,
    /// Only these top-level files (`None`: the whole directory).
    only: Option<Vec<String>>,
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

/// A service's sync plan: sessions and notes on what is not synced.
#[derive(Debug, Default)]
struct ServicePlan {
    sessions: Vec<Planned>,
    notes: Vec<String>,
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

/// A literal file name as a gitignore pattern component.
fn escape(name: &str) -> String {
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

fn join(dir: &str, name: &str) -> String {
    match (dir.is_empty(), dir.ends_with('/')) {
        (true, _) => name.to_owned(),
        (false, true) => format!("{dir}{name}"),
        (false, false) => format!("{dir}/{name}"),
    }
}

/// `rel` below `dir` (both `/`-separated, "" is the top): the rest, or `None`.
fn below<'a>(dir: &str, rel: &'a str) -> Option<&'a str> {
    if dir.is_empty() {
        return Some(rel);
    }
    let dir = dir.trim_end_matches('/');
    if rel == dir {
        return Some("");
    }
    rel.strip_prefix(dir)?.strip_prefix('/')
}

/// From a service's COPY plan to its sessions (pure).
///
/// - A directory source is a session of that directory.
/// - A single file, and a glob whose wildcards are in its last component only, copied into a
///   directory under its own name, is a session of its host directory that leaves out
///   everything else (`/*`, `!/name`, `/*/`); files from one host directory into one
///   container directory share a session.
/// - Sessions already covered by another (a `COPY src /app/src` under `COPY . /app`) are
///   dropped; other copies' destinations inside a session's container directory are left
///   out of it, so no container path is synced to two host paths.
/// - `.dockerignore`, `--exclude` and container-owned directories are left out both ways.
fn plan_sessions(plan: &CopyPlan, dockerignore: &[String], owned: &[OwnedDir]) -> ServicePlan {
    let mut sp = ServicePlan::default();
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
    let mut raw: Vec<(Planned, Vec<String>)> = Vec::new();
    for m in &plan.mappings {
        let note = |why: &str| format!("Dockerfile line {}: {why}: not synced yet", m.line);
        match &m.source {
            MappingSource::Dir(dir) => raw.push((
                Planned {
                    host: dir.clone(),
                    container: m.container.clone(),
                    only: None,
                    ignores: Vec::new(),
                    left_out: Vec::new(),
                    line: m.line,
                    chown: m.chown.clone(),
                },
                m.excludes.clone(),
            )),
            MappingSource::File(file) => {
                let (hdir, hname) = split_parent(file);
                let (cdir, cname) = split_parent(&m.container);
                if hname != cname {
                    sp.notes.push(note(&format!(
                        "{file} is copied under another name ({cname})"
                    )));
                    continue;
                }
                raw.push((
                    Planned {
                        host: hdir.to_owned(),
                        container: if cdir.is_empty() {
                            "/".into()
                        } else {
                            cdir.into()
                        },
                        only: Some(vec![escape(hname)]),
                        ignores: Vec::new(),
                        left_out: Vec::new(),
                        line: m.line,
                        chown: m.chown.clone(),
                    },
                    Vec::new(),
                ));
            }
            MappingSource::Glob(glob) => {
                let (hdir, last) = split_parent(glob);
                let wild = |s: &str| s.contains(['*', '?', '[', '\\']);
                if wild(hdir) || !m.into_dir || !m.excludes.is_empty() {
                    sp.notes.push(note(&format!("glob {glob}")));
                    continue;
                }
                raw.push((
                    Planned {
                        host: hdir.to_owned(),
                        container: m.container.clone(),
                        only: Some(vec![last.to_owned()]),
                        ignores: Vec::new(),
                        left_out: Vec::new(),
                        line: m.line,
                        chown: m.chown.clone(),
                    },
                    Vec::new(),
                ));
            }
            MappingSource::Parents { pivot, pattern } => {
                sp.notes
                    .push(note(&format!("COPY --parents {pivot}/./{pattern}")));
            }
        }
    }
    // Merge selective sessions of the same pair of directories.
    let mut merged: Vec<(Planned, Vec<String>)> = Vec::new();
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
                continue;
            }
        }
        merged.push((p, ex));
    }
    // Drop what a whole-directory session already syncs at the same place.
    let trim = |c: &str| c.trim_end_matches('/').to_owned();
    let mut kept: Vec<(Planned, Vec<String>)> = Vec::new();
    for (i, (p, ex)) in merged.iter().enumerate() {
        let covered = merged.iter().enumerate().any(|(j, (w, wex))| {
            if j == i || w.only.is_some() {
                return false;
            }
            if p.only.is_none() && w.host == p.host && trim(&w.container) == trim(&p.container) {
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
        let ex_patterns: Vec<String> = ferry_plan::dockerignore::read_patterns(&ex.join("\n"));
        let (exi, _) = translate(&ex_patterns, "");
        if !exi.is_empty() {
            left_out.push(format!("--exclude: {}", exi.join(" ")));
        }
        ignores.extend(exi);
        let mut owned_here = Vec::new();
        let mut all_owned = false;
        for o in owned {
            let pattern = match &o.nested {
                None => o.path.clone(),
                Some(name) => join(&o.path, &format!("**/{name}")),
            };
            let g = rebase(&pattern, &p.host);
            if g.iter().any(|g| g == "/**") {
                all_owned = true;
            }
            if !g.is_empty() {
                owned_here.push(o.describe());
                ignores.extend(g);
            }
        }
        if all_owned {
            sp.notes.push(format!(
                "Dockerfile line {}: {} is container-owned: not synced",
                p.line,
                if p.host.is_empty() { "." } else { &p.host }
            ));
            continue;
        }
        if !owned_here.is_empty() {
            left_out.push(format!("container-owned: {}", owned_here.join(", ")));
        }
        if p.only.is_none() {
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
        p.ignores = ignores;
        p.left_out = left_out;
        sp.sessions.push(p);
    }
    sp
}

fn escape_path(p: &str) -> String {
    p.split('/').map(escape).collect::<Vec<_>>().join("/")
}

/// The build context on disk, for the planner.
struct DiskContext(PathBuf);

impl Context for DiskContext {
    fn kind(&self, path: &str) -> Option<EntryKind> {
        let meta = std::fs::metadata(self.0.join(path)).ok()?;
        Some(if meta.is_dir() {
            EntryKind::Dir
        } else {
            EntryKind::File
        })
    }
}

/// Context-relative paths of the manifests that make directories container-owned (the walk
/// does not enter directories that are themselves owned or VCS metadata).
fn manifests(context: &Path) -> Vec<String> {
    const SKIP: [&str; 8] = [
        ".git",
        "node_modules",
        "target",
        ".venv",
        "venv",
        "vendor",
        ".gradle",
        "__pycache__",
    ];
    let mut out = Vec::new();
    let mut stack = vec![(context.to_path_buf(), String::new())];
    let mut budget = 200_000usize;
    while let Some((dir, rel)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                return out;
            }
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let path = join(&rel, &name);
            match e.file_type() {
                Ok(t) if t.is_dir() && !SKIP.contains(&name.as_str()) => {
                    stack.push((e.path(), path));
                }
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out
}

/// The `FROM` image references of a Dockerfile, as written (ARGs unexpanded), for inspection.
fn from_images(dockerfile: &str) -> Vec<String> {
    dockerfile
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let first = words.next()?;
            if !first.eq_ignore_ascii_case("FROM") {
                return None;
            }
            words.find(|w| !w.starts_with("--")).map(str::to_owned)
        })
        .filter(|r| r != "scratch" && !r.contains('$'))
        .collect()
}

/// The Docker side, on one runtime.
struct Docker {
    rt: tokio::runtime::Runtime,
    api: bollard::Docker,
}

/// A service's running container.
struct Running {
    name: String,
    working_dir: String,
    user: String,
}

impl Docker {
    fn connect() -> Result<Docker, Fail> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ferry-up")
            .enable_all()
            .build()
            .map_err(|e| failed(format!("cannot start the Docker client: {e}")))?;
        let unreachable = |e: bollard::errors::Error| {
            failed(ferry::remote::transport::docker_unreachable(&e).message)
        };
        let api = bollard::Docker::connect_with_defaults().map_err(unreachable)?;
        let api = rt.block_on(api.negotiate_version()).map_err(unreachable)?;
        rt.block_on(api.ping()).map_err(unreachable)?;
        Ok(Docker { rt, api })
    }

    /// The running container of `service` in `project`, by compose's labels.
    fn container(&self, project: &str, service: &str) -> Result<Running, Fail> {
        use bollard::query_parameters::ListContainersOptionsBuilder;
        let filters = HashMap::from([(
            "label",
            vec![
                format!("com.docker.compose.project={project}"),
                format!("com.docker.compose.service={service}"),
            ],
        )]);
        let list = self
            .rt
            .block_on(
                self.api.list_containers(Some(
                    ListContainersOptionsBuilder::new()
                        .filters(&filters)
                        .build(),
                )),
            )
            .map_err(|e| failed(format!("docker: listing containers: {e}")))?;
        let mut names: Vec<String> = list
            .iter()
            .filter_map(|c| c.names.as_ref()?.first().cloned())
            .map(|n| n.trim_start_matches('/').to_owned())
            .collect();
        names.sort();
        let Some(name) = names.into_iter().next() else {
            return Err(failed(
                "no running container after 'docker compose up' (did it exit? 'docker compose logs' tells): not synced",
            ));
        };
        let info = self
            .rt
            .block_on(self.api.inspect_container(&name, None))
            .map_err(|e| failed(format!("docker: inspecting {name}: {e}")))?;
        let config = info.config.unwrap_or_default();
        Ok(Running {
            name,
            working_dir: config.working_dir.unwrap_or_default(),
            user: config.user.unwrap_or_default(),
        })
    }

    /// A local image's configuration, if the engine has it.
    fn image_config(&self, reference: &str) -> Option<ImageConfig> {
        let info = self.rt.block_on(self.api.inspect_image(reference)).ok()?;
        let config = info.config?;
        Some(ImageConfig {
            working_dir: config.working_dir.unwrap_or_default(),
            env: config
                .env
                .unwrap_or_default()
                .into_iter()
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.into(), v.into())))
                .collect(),
            user: config.user.unwrap_or_default(),
        })
    }
}

/// Container paths below `root` as paths relative to it (`root` itself and what is outside
/// it are left out).
fn below_root<'a>(root: &str, paths: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let root = root.trim_end_matches('/');
    paths
        .into_iter()
        .filter_map(|p| p.strip_prefix(root)?.strip_prefix('/'))
        .map(|rest| rest.trim_end_matches('/').to_owned())
        .filter(|rest| !rest.is_empty())
        .collect()
}

/// How a session asks which of its container directory's paths the running container added or
/// changed since its image (Docker's container changes, `GET /containers/{id}/changes`), so
/// that the image's own files (build products) are not copied to the host. Asked by name: a
/// container compose recreated under it is asked about its own image.
fn image_changes(container: String, root: String) -> ImageChanges {
    ImageChanges(Arc::new(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the Docker client: {e}"))?;
        let changes = rt.block_on(async {
            let api = bollard::Docker::connect_with_defaults()?;
            let api = api.negotiate_version().await?;
            api.container_changes(&container).await
        });
        let changes = changes.map_err(|e| format!("docker: changes of {container}: {e}"))?;
        let changes = changes.unwrap_or_default();
        Ok(below_root(&root, changes.iter().map(|c| c.path.as_str())))
    }))
}

/// What `ferry up` syncs for one service, or why nothing.
fn plan_service(docker: &Docker, name: &str, svc: &Service) -> Result<ServicePlan, String> {
    if svc.develop.as_ref().is_some_and(|d| !d.watch.is_empty()) {
        return Err("develop.watch not supported yet: not synced".into());
    }
    let Some(build) = &svc.build else {
        return Err("no build: not synced (x-ferry paths are not supported yet)".into());
    };
    if build.dockerfile_inline.is_some() {
        return Err("dockerfile_inline: not synced yet".into());
    }
    let context = PathBuf::from(&build.context);
    if !context.is_dir() {
        return Err(format!(
            "build context {} is not a local directory: not synced",
            build.context
        ));
    }
    let dockerfile_path = context.join(build.dockerfile.as_deref().unwrap_or("Dockerfile"));
    let dockerfile = std::fs::read_to_string(&dockerfile_path)
        .map_err(|e| format!("cannot read {}: {e}", dockerfile_path.display()))?;
    let beside =
        std::fs::read_to_string(format!("{}.dockerignore", dockerfile_path.display())).ok();
    let in_context = std::fs::read_to_string(context.join(".dockerignore")).ok();
    let ignore_text =
        ferry_plan::dockerignore::choose(beside.as_deref(), in_context.as_deref()).unwrap_or("");
    let patterns = ferry_plan::dockerignore::read_patterns(ignore_text);
    let ignore = DockerIgnore::new(&patterns).map_err(|e| format!(".dockerignore: {e}"))?;
    let mut options = BuildOptions {
        target: build.target.clone(),
        build_args: build
            .args
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect(),
        images: BTreeMap::new(),
    };
    for r in from_images(&dockerfile) {
        if let Some(c) = docker.image_config(&r) {
            options.images.insert(r, c);
        }
    }
    let plan = ferry_plan::plan_copies(
        &dockerfile,
        &options,
        &DiskContext(context.clone()),
        &ignore,
    )
    .map_err(|e| format!("{}: {e}", dockerfile_path.display()))?;
    let files: Vec<String> = manifests(&context)
        .into_iter()
        .filter(|f| !ignore.matches(f))
        .collect();
    let owned = ferry_plan::owned_dirs(&files);
    let _ = name;
    Ok(plan_sessions(&plan, &patterns, &owned))
}

/// What the main thread waits for.
enum Msg {
    Signal,
    Ended {
        service: String,
        what: String,
        code: Exit,
    },
}

/// `ferry up`.
pub fn run(flags: UpFlags) -> Exit {
    let out = Out { json: flags.json };
    match up(flags, out) {
        Ok(code) => code,
        Err(Fail(code, msg)) => {
            eprintln!("ferry: {msg}");
            code
        }
    }
}

fn up(flags: UpFlags, out: Out) -> Result<Exit, Fail> {
    check_compose_files(&flags.files)?;
    let tool = compose_tool()?;
    let mut compose = Compose {
        tool,
        files: flags.files.clone(),
        project: None,
    };
    let config = compose.output(&["config", "--format", "json"])?;
    if !config.status.success() {
        let why = last_lines(&config, 1).join(" ");
        return Err(usage(format!("docker compose config: {why}")));
    }
    let project: Project = serde_json::from_slice(&config.stdout).map_err(|e| {
        failed(format!(
            "cannot read 'docker compose config --format json': {e}"
        ))
    })?;
    for s in &flags.services {
        if !project.services.contains_key(s) {
            let known: Vec<&str> = project.services.keys().map(String::as_str).collect();
            return Err(usage(format!(
                "unknown service '{s}' (services: {})",
                known.join(", ")
            )));
        }
    }
    compose.project = Some(project.name.clone());
    let docker = Docker::connect()?;
    let selected: Vec<String> = if flags.services.is_empty() {
        project.services.keys().cloned().collect()
    } else {
        flags.services.clone()
    };

    // Signals are caught from here on: a Ctrl-C during the build still stops what started.
    let (tx, rx) = mpsc::channel::<Msg>();
    let stopping = Arc::new(AtomicBool::new(false));
    {
        let tx = tx.clone();
        let stopping = stopping.clone();
        ctrlc::set_handler(move || {
            if stopping.swap(true, Ordering::SeqCst) {
                std::process::exit(Exit::Failed as i32);
            }
            let _ = tx.send(Msg::Signal);
        })
        .map_err(|e| failed(format!("cannot install the signal handler: {e}")))?;
    }

    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut args = vec!["up", "-d", "--build"];
    args.extend(flags.services.iter().map(String::as_str));
    if !out.json {
        eprintln!("ferry: building and starting {}", selected.join(", "));
    }
    let booted = compose.output(&args)?;
    if !booted.status.success() {
        let mut msg = format!(
            "docker compose up failed ({}); its last lines:",
            booted.status
        );
        for l in last_lines(&booted, 15) {
            msg.push_str("\n  ");
            msg.push_str(&l);
        }
        return Err(failed(msg));
    }

    // A service with no running container (a one-shot job that already exited) is named and
    // skipped; the others run.
    let mut containers = BTreeMap::new();
    for s in &selected {
        match docker.container(&project.name, s) {
            Ok(c) => {
                containers.insert(s.clone(), c);
            }
            Err(Fail(_, why)) => {
                out.event(s, &why, json!({"event": "up_note", "message": why}));
            }
        }
    }

    // Logs first, so what a service prints while its sessions start is seen.
    for (service, c) in &containers {
        let api = docker.api.clone();
        let service = service.clone();
        let name = c.name.clone();
        docker.rt.spawn(stream_logs(api, service, name, since, out));
    }

    type Registry = Vec<(Arc<AtomicBool>, std::sync::mpsc::SyncSender<WatchEvent>)>;
    let registry: Arc<std::sync::Mutex<Registry>> = Arc::default();
    let mut threads = Vec::new();
    if !flags.no_sync {
        for (service, c) in &containers {
            let Some(svc) = project.services.get(service) else {
                continue;
            };
            let plan = match plan_service(&docker, service, svc) {
                Ok(p) => p,
                Err(why) => {
                    out.event(service, &why, json!({"event": "up_note", "message": why}));
                    continue;
                }
            };
            for n in &plan.notes {
                out.event(service, n, json!({"event": "up_note", "message": n}));
            }
            let context = svc.build.as_ref().map(|b| PathBuf::from(&b.context));
            let Some(context) = context else { continue };
            // Who owns what ferry creates in the container: compose's `user:`, else the
            // image's USER (both in the container's config), else the mapping's --chown.
            let user = svc
                .user
                .clone()
                .filter(|u| !u.is_empty())
                .or_else(|| Some(c.user.clone()).filter(|u| !u.is_empty()));
            for p in plan.sessions {
                let host = context.join(&p.host);
                let Ok(host) = host.canonicalize() else {
                    let m = format!("{} does not exist: not synced", host.display());
                    out.event(service, &m, json!({"event": "up_note", "message": m}));
                    continue;
                };
                let Some(host_str) = host.to_str().map(str::to_owned) else {
                    continue;
                };
                let container_dir = if p.container.starts_with('/') {
                    p.container.clone()
                } else {
                    join(&c.working_dir, &p.container)
                };
                let human = format!(
                    "{host_str} -> {}:{container_dir}{}",
                    c.name,
                    if p.left_out.is_empty() {
                        String::new()
                    } else {
                        format!(" (left out: {})", p.left_out.join("; "))
                    }
                );
                out.event(
                    service,
                    &human,
                    json!({"event": "up_session", "host": host_str, "container": c.name,
                           "path": container_dir, "left_out": p.left_out}),
                );
                let loc = Location::Docker {
                    user: None,
                    owner: user.clone().or_else(|| p.chown.clone()),
                    container: c.name.clone(),
                    path: container_dir.clone(),
                };
                let alpha = Place::Local {
                    root: host,
                    create: false,
                };
                let beta = Place::Remote(loc);
                let settings = Settings {
                    mode: Mode::TwoWaySafe,
                    ignore_vcs: true,
                    default_ignores: true,
                    ignores: p.ignores.clone(),
                    meta: Default::default(),
                    once: false,
                    accept_wipe: false,
                    reset: false,
                    debounce: Duration::from_millis(4),
                    rescan_interval: Some(Duration::from_secs(300)),
                    // No one to ask: the first sync merges both ways, as `ferry sync --yes`.
                    yes: true,
                    image_changes: Some(image_changes(c.name.clone(), container_dir.clone())),
                    ..Default::default()
                };
                let mut printer = Printer::new(out.json);
                printer.set_service(service);
                let tx = tx.clone();
                let service = service.clone();
                let what = human.clone();
                let registry = registry.clone();
                let stopping = stopping.clone();
                let spawned = std::thread::Builder::new()
                    .stack_size(STACK)
                    .name(format!("ferry-up-{service}"))
                    .spawn(move || {
                        let tag = format!("{service} | ");
                        let code = match open(
                            &alpha,
                            &beta,
                            settings,
                            Retention::default(),
                            printer,
                            false,
                            false,
                        ) {
                            Err(code) => code,
                            Ok((mut engine, wake, stop)) => {
                                {
                                    // Registered, then checked, under the lock the main thread
                                    // takes to stop everyone: no session misses a Ctrl-C.
                                    let mut r = registry.lock().unwrap_or_else(|e| e.into_inner());
                                    r.push((stop.clone(), wake.0.clone()));
                                    if stopping.load(Ordering::SeqCst) {
                                        stop.store(true, Ordering::SeqCst);
                                        let _ = wake.0.try_send(WatchEvent::Stop);
                                    }
                                }
                                let code = match engine.run(Some(wake)) {
                                    Ok(f) => finish_code(f),
                                    Err(e) => report_as(&tag, e),
                                };
                                std::mem::forget(engine);
                                code
                            }
                        };
                        let _ = tx.send(Msg::Ended {
                            service,
                            what,
                            code,
                        });
                    });
                match spawned {
                    Ok(h) => threads.push(h),
                    Err(e) => return Err(failed(format!("cannot start a session thread: {e}"))),
                }
            }
        }
    }
    drop(tx);

    let mut code = Exit::Ok;
    let mut running = threads.len();
    loop {
        match rx.recv() {
            Ok(Msg::Signal) | Err(_) => break,
            Ok(Msg::Ended {
                service,
                what,
                code: c,
            }) => {
                running -= 1;
                // Reported now; the exit code is Ctrl-C's (a session that ended is not running
                // when the user stops the loop).
                if c != Exit::Ok {
                    let m = format!("session {what} ended (exit code {})", c as i32);
                    out.event(
                        &service,
                        &m,
                        json!({"event": "up_session_end", "message": m, "code": c as i32}),
                    );
                }
            }
        }
    }
    for (stop, wake) in registry.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        stop.store(true, Ordering::SeqCst);
        let _ = wake.try_send(WatchEvent::Stop);
    }
    while running > 0 {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Msg::Ended { code: c, .. }) => {
                running -= 1;
                if c == Exit::Conflicts {
                    code = Exit::Conflicts;
                }
            }
            Ok(Msg::Signal) => {}
            Err(_) => break,
        }
    }
    let mut stop_args = vec!["stop"];
    stop_args.extend(flags.services.iter().map(String::as_str));
    if !out.json {
        eprintln!("ferry: stopping {}", selected.join(", "));
    }
    let stopped = compose.output(&stop_args)?;
    if !stopped.status.success() {
        return Err(failed(format!(
            "docker compose stop failed: {}",
            last_lines(&stopped, 1).join(" ")
        )));
    }
    drop(docker);
    Ok(code)
}

/// Streams one container's logs, each line prefixed by its service, until the container stops.
async fn stream_logs(api: bollard::Docker, service: String, name: String, since: u64, out: Out) {
    use bollard::container::LogOutput;
    use bollard::query_parameters::LogsOptionsBuilder;
    use futures_util::StreamExt;
    let opts = LogsOptionsBuilder::new()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .since(i32::try_from(since).unwrap_or(0))
        .build();
    let mut stream = api.logs(&name, Some(opts));
    let mut partial: [String; 2] = Default::default();
    while let Some(item) = stream.next().await {
        let Ok(item) = item else { break };
        let (i, stream_name, bytes) = match item {
            LogOutput::StdErr { message } => (1, "stderr", message),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                (0, "stdout", message)
            }
            LogOutput::StdIn { .. } => continue,
        };
        partial[i].push_str(&String::from_utf8_lossy(&bytes));
        while let Some(nl) = partial[i].find('\n') {
            let line: String = partial[i].drain(..=nl).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            out.event(
                &service,
                line,
                json!({"event": "log", "stream": stream_name, "line": line}),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_versions() {
        assert_eq!(compose_major("2.29.7"), Some(2));
        assert_eq!(compose_major("v2.29.7"), Some(2));
        assert_eq!(compose_major("Docker Compose version v2.20.2"), Some(2));
        assert_eq!(
            compose_major("docker-compose version 1.29.2, build 5becea4c"),
            Some(1)
        );
        assert_eq!(compose_major("1.25.0"), Some(1));
        assert_eq!(compose_major("garbage"), None);
    }

    #[test]
    fn container_changes_below_the_synced_directory() {
        let got = below_root(
            "/app/",
            [
                "/app",
                "/app/dist",
                "/app/dist/bundle.js",
                "/application/x",
                "/tmp/y",
                "/app/src/gen.js",
            ],
        );
        let want: Vec<&str> = got.iter().map(String::as_str).collect();
        assert_eq!(want, ["dist", "dist/bundle.js", "src/gen.js"]);
        assert!(below_root("/", ["/x", "/"]).contains("x"));
    }

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

    fn mapping(source: MappingSource, container: &str, line: usize) -> ferry_plan::Mapping {
        ferry_plan::Mapping {
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
        let owned = ferry_plan::owned_dirs(["package.json"]);
        let sp = plan_sessions(&plan, &["*.md".into()], &owned);
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
        let sp = plan_sessions(&plan, &[], &[]);
        assert_eq!(sp.sessions.len(), 2);
        assert_eq!(sp.sessions[0].ignores, ["/*", "!/a.txt", "!/b.txt", "/*/"]);
        assert_eq!(sp.sessions[1].host, "config");
        assert_eq!(sp.sessions[1].ignores, ["/*", "!/*.yml", "/*/"]);
        assert!(
            sp.notes.iter().any(|n| n.contains("another name")),
            "{:?}",
            sp.notes
        );
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
        let sp = plan_sessions(&plan, &[], &[]);
        assert_eq!(sp.sessions.len(), 2);
        assert_eq!(sp.sessions[0].ignores, ["/conf"]);
    }
}
