//! `ferry up`: boots a Compose project with Docker Compose v2, then runs one sync session per
//! mapping of each service's plan (the same engine `ferry sync` runs, through `crate::open`,
//! then `Engine::run`), and streams the services' logs, until Ctrl-C.
//!
//! Compose resolves the project (interpolation, `.env`, profiles, `extends`, several `-f`):
//! ferry reads only `docker compose config --format json`. Each service's plan (mappings,
//! ignores, container-owned and mirrored directories, hooks, what to do after a cycle, rebuild
//! rules) comes from `ferry_plan::compose` (pure); this module turns it into sessions and does
//! the Docker side: restarts, `sync+exec` commands, rebuilds, logs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ferry::cli::{Place, UpFlags};
use ferry::endpoint::WatchEvent;
use ferry::engine::{ImageChanges, OnChange, Settings};
use ferry::fs::watch::{DirWatcher, Seen};
use ferry::output::{Event, Printer};
use ferry::remote::Location;
use ferry::state::Retention;
use ferry_core::{Entry, Held};
use ferry_plan::compose::{
    self, Action, LiveGlob, Project, Rebuild, Service, ServicePlan, Source, XFerry, join,
};
use ferry_plan::{BuildOptions, Context, DockerIgnore, EntryKind, ImageConfig};
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
/// or in a parent directory (as compose looks), unless `COMPOSE_FILE` names them. The project
/// directory (the first file's, as compose takes it), which `x-ferry` paths are relative to.
fn check_compose_files(files: &[PathBuf]) -> Result<PathBuf, Fail> {
    for f in files {
        if !f.is_file() {
            return Err(usage(format!(
                "compose file '{}' does not exist",
                f.display()
            )));
        }
    }
    let cwd = std::env::current_dir().map_err(|e| failed(format!("current directory: {e}")))?;
    let dir_of = |f: &Path| {
        let f = cwd.join(f);
        f.canonicalize()
            .unwrap_or(f)
            .parent()
            .map_or_else(|| cwd.clone(), Path::to_path_buf)
    };
    if let Some(first) = files.first() {
        return Ok(dir_of(first));
    }
    if let Some(env) = std::env::var_os("COMPOSE_FILE") {
        let sep = std::env::var("COMPOSE_PATH_SEPARATOR").unwrap_or_else(|_| ":".into());
        let env = env.to_string_lossy().into_owned();
        let first = env.split(sep.as_str()).next().unwrap_or_default();
        return Ok(dir_of(Path::new(first)));
    }
    let mut dir = Some(cwd.as_path());
    while let Some(d) = dir {
        if COMPOSE_FILES.iter().any(|n| d.join(n).is_file()) {
            return Ok(d.to_path_buf());
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

    fn list(&self, path: &str) -> Option<Vec<(String, EntryKind)>> {
        let mut out: Vec<(String, EntryKind)> = std::fs::read_dir(self.0.join(path))
            .ok()?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                // Followed, as the build context is: a link to a directory is a directory.
                let dir = std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir());
                Some((name, if dir { EntryKind::Dir } else { EntryKind::File }))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Some(out)
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

    /// Streams a container's logs from `since`, each line prefixed by its service, until it
    /// stops (again after a restart or a rebuild).
    fn follow_logs(&self, service: &str, name: &str, since: u64, out: Out) {
        let api = self.api.clone();
        self.rt.spawn(stream_logs(
            api,
            service.to_owned(),
            name.to_owned(),
            since,
            out,
        ));
    }

    /// Restarts a container (its sessions reconnect by themselves).
    fn restart(&self, name: &str) -> Result<(), String> {
        use bollard::query_parameters::RestartContainerOptionsBuilder;
        self.rt
            .block_on(
                self.api
                    .restart_container(name, Some(RestartContainerOptionsBuilder::new().build())),
            )
            .map_err(|e| format!("docker: restarting {name}: {e}"))
    }

    /// `develop.watch`'s `sync+exec`: runs the command in the container as compose does (its
    /// `user`, else the service's; its `working_dir` and `environment`), its output in the
    /// logs with the service's prefix; a failure is reported, syncing goes on.
    fn exec(&self, service: &str, c: &Running, e: &compose::WatchExec, out: Out) {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        use futures_util::StreamExt;
        let Some(cmd) = e.command.clone().filter(|c| !c.is_empty()) else {
            return;
        };
        let shown = cmd.join(" ");
        let env: Vec<String> = e
            .environment
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect();
        // The container's configured user is compose's `user:` when it has one, else the image's.
        let user = e
            .user
            .clone()
            .or_else(|| Some(c.user.clone()).filter(|u| !u.is_empty()));
        let opts = CreateExecOptions {
            cmd: Some(cmd),
            user,
            working_dir: e.working_dir.clone(),
            env: Some(env),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let result: Result<Option<i64>, bollard::errors::Error> = self.rt.block_on(async {
            let exec = self.api.create_exec(&c.name, opts).await?;
            if let StartExecResults::Attached { mut output, .. } =
                self.api.start_exec(&exec.id, None).await?
            {
                let mut partial = String::new();
                while let Some(Ok(chunk)) = output.next().await {
                    partial.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                    while let Some(nl) = partial.find('\n') {
                        let line: String = partial.drain(..=nl).collect();
                        let line = line.trim_end_matches(['\n', '\r']);
                        out.event(
                            service,
                            line,
                            json!({"event": "log", "stream": "exec", "line": line}),
                        );
                    }
                }
                if !partial.is_empty() {
                    out.event(
                        service,
                        &partial,
                        json!({"event": "log", "stream": "exec", "line": partial}),
                    );
                }
            }
            Ok(self.api.inspect_exec(&exec.id).await?.exit_code)
        });
        let (m, ok) = match result {
            Ok(Some(0)) => (format!("exec {shown}: done"), true),
            Ok(Some(code)) => (format!("exec {shown}: failed (exit code {code})"), false),
            Ok(None) => (format!("exec {shown}: done (no exit code)"), true),
            Err(err) => (format!("exec {shown}: {err}"), false),
        };
        out.event(
            service,
            &m,
            json!({"event": "up_exec", "command": shown, "ok": ok, "message": m}),
        );
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

/// What `ferry up` syncs for one service (by the design's precedence: `x-ferry.paths`, else
/// `develop.watch`, else the Dockerfile), or why nothing.
fn plan_service(
    docker: &Docker,
    svc: &Service,
    cfg: &XFerry,
    project_dir: &Path,
) -> Result<ServicePlan, String> {
    let project_str = project_dir.to_string_lossy().into_owned();
    let context = svc
        .build
        .as_ref()
        .map(|b| PathBuf::from(&b.context))
        .filter(|c| c.is_dir());
    let base = context.clone().unwrap_or_else(|| project_dir.to_path_buf());
    let base_str = base.to_string_lossy().into_owned();
    let mut patterns = Vec::new();
    let mut copies = None;
    let mut ignore = None;
    if let (Some(build), Some(context)) = (&svc.build, &context) {
        if build.dockerfile_inline.is_none() {
            let dockerfile_path = context.join(build.dockerfile.as_deref().unwrap_or("Dockerfile"));
            let beside =
                std::fs::read_to_string(format!("{}.dockerignore", dockerfile_path.display())).ok();
            let in_context = std::fs::read_to_string(context.join(".dockerignore")).ok();
            let ignore_text =
                ferry_plan::dockerignore::choose(beside.as_deref(), in_context.as_deref())
                    .unwrap_or("");
            patterns = ferry_plan::dockerignore::read_patterns(ignore_text);
            let matcher =
                DockerIgnore::new(&patterns).map_err(|e| format!(".dockerignore: {e}"))?;
            if compose::source(svc, cfg) == Source::Dockerfile {
                let dockerfile = std::fs::read_to_string(&dockerfile_path)
                    .map_err(|e| format!("cannot read {}: {e}", dockerfile_path.display()))?;
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
                copies = Some(
                    ferry_plan::plan_copies(
                        &dockerfile,
                        &options,
                        &DiskContext(context.clone()),
                        &matcher,
                    )
                    .map_err(|e| format!("{}: {e}", dockerfile_path.display()))?,
                );
            }
            ignore = Some(matcher);
        }
    }
    if compose::source(svc, cfg) == Source::Dockerfile {
        match (&svc.build, &context) {
            (Some(b), _) if b.dockerfile_inline.is_some() => {
                return Err("dockerfile_inline: not synced yet".into());
            }
            (Some(b), None) => {
                return Err(format!(
                    "build context {} is not a local directory: not synced",
                    b.context
                ));
            }
            _ => {}
        }
    }
    let files: Vec<String> = manifests(&base)
        .into_iter()
        .filter(|f| ignore.as_ref().is_none_or(|i| !i.matches(f)))
        .collect();
    let input = compose::Input {
        config: cfg,
        project_dir: &project_str,
        copies: copies.as_ref(),
        dockerignore: &patterns,
        files: &files,
        base: &base_str,
        kinds: &DiskContext(PathBuf::from("/")),
    };
    compose::plan_service(svc, &input).map_err(|e| e.0)
}

/// Every service's `x-ferry` over the top-level one. Compose (2.26 at least) drops a service's
/// `x-*` keys from `config --format json` but keeps them without interpolation: those are read
/// from `config --no-interpolate --format json` when the first has none.
fn x_ferry_settings(
    compose: &Compose,
    project: &Project,
) -> Result<BTreeMap<String, XFerry>, Fail> {
    let top =
        compose::parse_x_ferry(project.x_ferry.as_ref(), "x-ferry").map_err(|e| usage(e.0))?;
    let mut raw: BTreeMap<String, Option<Value>> = project
        .services
        .iter()
        .map(|(n, s)| (n.clone(), s.x_ferry.clone()))
        .collect();
    if raw.values().all(Option::is_none) {
        let out = compose.output(&["config", "--no-interpolate", "--format", "json"])?;
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            for (name, x) in raw.iter_mut() {
                *x = v["services"][name.as_str()].get("x-ferry").cloned();
            }
        }
    }
    let mut all = BTreeMap::new();
    for (name, x) in raw {
        let at = format!("services.{name}.x-ferry");
        let cfg = compose::parse_x_ferry(x.as_ref(), &at).map_err(|e| usage(e.0))?;
        all.insert(name, cfg.over(&top));
    }
    Ok(all)
}

/// What the main thread waits for.
enum Msg {
    Signal,
    Ended {
        service: String,
        what: String,
        code: Exit,
    },
    /// A session's cycle changed these paths (relative to its root).
    Cycle {
        service: String,
        session: usize,
        changed: Vec<String>,
        /// When the cycle ended.
        at: Instant,
    },
    /// A session's hook ran (`restart: true` rules restart the container then).
    HookDone {
        service: String,
        session: usize,
        command: String,
    },
    /// A directory was created under a rebuild rule's path: watcher `index` watches it too.
    WatchDir {
        index: usize,
        dir: PathBuf,
    },
    /// A `develop.watch` rebuild rule's path changed on the host.
    Rebuild {
        service: String,
        why: String,
    },
    /// Something changed where a Dockerfile glob of the service looks for matches.
    Replan {
        service: String,
    },
}

/// Quiet time after a rebuild rule fired before the rebuild starts.
const REBUILD_QUIET: Duration = Duration::from_millis(300);

/// Quiet time after a change where a Dockerfile glob looks before the service is planned
/// again (a `git checkout` or an unpacked archive is one re-plan).
const REPLAN_QUIET: Duration = Duration::from_millis(50);

/// A session's tap: the paths each cycle changed (either way), sent when the cycle ends;
/// `session` is its id.
fn cycle_tap(service: &str, session: usize, tx: mpsc::Sender<Msg>) -> ferry::output::Sink {
    let changed = std::sync::Mutex::new(Vec::<String>::new());
    let tx = std::sync::Mutex::new(tx);
    let service = service.to_owned();
    Box::new(move |ev| match ev {
        Event::Change { path, .. } => {
            changed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(path.clone());
        }
        Event::Hook { command, .. } => {
            let _ = tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(Msg::HookDone {
                    service: service.clone(),
                    session,
                    command: command.clone(),
                });
        }
        Event::CycleEnd { .. } => {
            let paths = std::mem::take(&mut *changed.lock().unwrap_or_else(|e| e.into_inner()));
            if !paths.is_empty() {
                let _ = tx
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .send(Msg::Cycle {
                        service: service.clone(),
                        session,
                        changed: paths,
                        at: Instant::now(),
                    });
            }
        }
        _ => {}
    })
}

/// A host directory that may not exist yet, canonical through its parent (a mirror's target).
fn creatable(path: &Path) -> Option<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Some(p);
    }
    let parent = path.parent()?.canonicalize().ok()?;
    Some(parent.join(path.file_name()?))
}

/// Watches a rebuild rule's path on the host (every directory below it; a file's parent
/// directory) and sends [`Msg::Rebuild`] when something it covers changes; a directory created
/// below it is sent as [`Msg::WatchDir`] for watcher `index` to add.
fn watch_rebuild(
    rule: &Rebuild,
    service: &str,
    index: usize,
    tx: mpsc::Sender<Msg>,
) -> std::io::Result<DirWatcher> {
    let matcher = rule.clone();
    let service = service.to_owned();
    let tx = std::sync::Mutex::new(tx);
    let mut watcher = DirWatcher::new(move |seen| {
        let send = |m: Msg| {
            let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(m);
        };
        let why = match seen {
            Seen::Path(p) => {
                let abs = p.to_string_lossy();
                if !matcher.matches(&abs) {
                    return;
                }
                if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                    send(Msg::WatchDir {
                        index,
                        dir: p.clone(),
                    });
                }
                format!("{}: {abs} changed", matcher.origin)
            }
            Seen::Overflow => format!("{}: events lost", matcher.origin),
            Seen::Failed(_) => return,
        };
        send(Msg::Rebuild {
            service: service.clone(),
            why,
        });
    })?;
    let root = Path::new(&rule.path);
    if root.is_dir() {
        watch_tree(&mut watcher, root)?;
    } else {
        watcher.watch(root.parent().unwrap_or(Path::new("/")))?;
    }
    Ok(watcher)
}

/// Watches where a service's Dockerfile globs look for matches (see [`LiveGlob`]) and sends
/// [`Msg::Replan`] when something changes there. No watcher when there is nothing to watch,
/// or when the watch fails (said in a note).
fn watch_globs(live: &[LiveGlob], service: &str, tx: mpsc::Sender<Msg>, out: Out) -> GlobWatch {
    let disk = DiskContext(PathBuf::from("/"));
    let dirs = glob_dirs(live);
    let watch = |watcher| GlobWatch {
        watcher,
        matched: live.iter().map(|g| g.matches(&disk)).collect(),
    };
    if live.is_empty() {
        return watch(None);
    }
    let globs = live.to_vec();
    let name = service.to_owned();
    let tx = std::sync::Mutex::new(tx);
    let watched = DirWatcher::new(move |seen| {
        let concerns = match &seen {
            Seen::Path(p) => globs.iter().any(|g| g.concerns(&p.to_string_lossy())),
            Seen::Overflow => true,
            Seen::Failed(_) => false,
        };
        if concerns {
            let _ = tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(Msg::Replan {
                    service: name.clone(),
                });
        }
    })
    .and_then(|mut w| {
        for d in &dirs {
            w.watch(Path::new(d))?;
        }
        Ok(w)
    });
    // Listed once watched: a match made meanwhile is either listed or seen.
    match watched {
        Ok(w) => watch(Some(w)),
        Err(e) => {
            let m = format!("cannot watch for new matches of the Dockerfile's globs: {e}");
            out.event(service, &m, json!({"event": "up_note", "message": m}));
            watch(None)
        }
    }
}

/// A service's [`watch_globs`].
struct GlobWatch {
    watcher: Option<DirWatcher>,
    /// What each glob matched once they were watched.
    matched: Vec<Vec<String>>,
}

/// Where `live` globs look for matches now.
fn glob_dirs(live: &[LiveGlob]) -> Vec<String> {
    let disk = DiskContext(PathBuf::from("/"));
    let mut dirs: Vec<String> = live.iter().flat_map(|g| g.dirs(&disk)).collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Runs `service`'s new `plan` (what its Dockerfile globs match changed): sessions it has
/// unchanged keep running; the others stop, their agreement forgotten (`Engine::retire`), and
/// the new ones start, taking over what the stopped ones had synced to their container paths
/// (the later COPY's file replaces the earlier one's, as a rebuild would). Returns how many
/// sessions it started.
#[allow(clippy::too_many_arguments)]
fn replan(
    st: &Starter,
    service: &str,
    c: &Running,
    user: Option<String>,
    plan: ServicePlan,
    plans: &mut BTreeMap<String, ServicePlan>,
    live: &mut BTreeMap<usize, (String, usize, LiveSession)>,
    next_id: &mut usize,
) -> Result<usize, Fail> {
    let out = st.out;
    let old_notes = plans
        .get(service)
        .map(|p| p.notes.clone())
        .unwrap_or_default();
    for n in plan.notes.iter().filter(|n| !old_notes.contains(n)) {
        out.event(service, n, json!({"event": "up_note", "message": n}));
    }
    // Which running sessions the new plan keeps, at which index.
    let mut kept = vec![false; plan.sessions.len()];
    let mut stopped = Vec::new();
    let ids: Vec<usize> = live
        .iter()
        .filter(|(_, (s, _, _))| s == service)
        .map(|(id, _)| *id)
        .collect();
    let old = plans.get(service);
    for id in ids {
        let Some((_, index, l)) = live.get(&id) else {
            continue;
        };
        // One that ended by itself is started again.
        let ended = l.slot.ended();
        let was = old.and_then(|o| o.sessions.get(*index));
        let same = was.filter(|_| !ended).and_then(|was| {
            (0..plan.sessions.len()).find(|&j| !kept[j] && plan.sessions[j] == *was)
        });
        // Its agreement is kept when the new plan still maps the same two directories (only
        // what it leaves out changed: a new manifest's container-owned directory), unless it
        // ended by itself: its host directory may be another one now, whose content wins
        // where the container still has what was agreed (see `Settings::superseded`).
        let retire =
            ended || !was.is_some_and(|was| plan.sessions.iter().any(|n| same_mapping(n, was)));
        match same {
            Some(j) => {
                kept[j] = true;
                if let Some(entry) = live.get_mut(&id) {
                    entry.1 = j;
                }
            }
            None => {
                if let Some((_, _, l)) = live.remove(&id) {
                    l.slot.stop(retire);
                    stopped.push(l);
                }
            }
        }
    }
    if !stopped.is_empty() || kept.iter().any(|k| !k) {
        let m = "what the Dockerfile's globs match changed: its sessions follow";
        out.event(service, m, json!({"event": "up_replan", "message": m}));
    }
    // Stopped first: a new session may map the same directories (and takes their lock).
    let mut retired: Vec<(String, Entry)> = Vec::new();
    for l in stopped {
        let _ = l.thread.join();
        let m = format!("stopped: {}", l.human);
        out.event(
            service,
            &m,
            json!({"event": "up_session_stop", "message": m}),
        );
        let agreed = l
            .slot
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .agreed
            .take();
        if let Some(tree) = agreed {
            retired.push((l.container_dir, tree));
        }
    }
    let mut started = 0;
    for (index, p) in plan.sessions.iter().enumerate() {
        if kept[index] {
            continue;
        }
        let dir = container_dir(p, c);
        let mut superseded = Held::new();
        for (old_dir, tree) in &retired {
            for (path, entry) in ferry_core::unchanged_leaves(tree, &BTreeSet::new()) {
                let abs = join(old_dir, &path);
                if let Some(rel) = compose::below(&dir, &abs).filter(|r| !r.is_empty()) {
                    superseded.insert(rel.to_owned(), entry);
                }
            }
        }
        let id = *next_id;
        *next_id += 1;
        if let Some(l) = start_session(st, service, c, user.clone(), p, id, superseded)? {
            live.insert(id, (service.to_owned(), index, l));
            started += 1;
        }
    }
    plans.insert(service.to_owned(), plan);
    Ok(started)
}

/// Whether two sessions map the same host and container directories, the same way.
fn same_mapping(a: &compose::Session, b: &compose::Session) -> bool {
    a.host == b.host && a.container == b.container && a.mirror == b.mirror && a.renames == b.renames
}

/// A session's container directory (absolute).
fn container_dir(p: &compose::Session, c: &Running) -> String {
    if p.container.starts_with('/') {
        p.container.clone()
    } else {
        join(&c.working_dir, &p.container)
    }
}

/// Who owns what ferry creates in the service's container: compose's `user:`, else the
/// image's USER (both in the container's config); `None`: the mapping's `--chown` decides.
fn service_user(svc: &Service, c: &Running) -> Option<String> {
    svc.user
        .clone()
        .filter(|u| !u.is_empty())
        .or_else(|| Some(c.user.clone()).filter(|u| !u.is_empty()))
}

/// Watches `root` and every directory below it.
fn watch_tree(watcher: &mut DirWatcher, root: &Path) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        watcher.watch(&dir)?;
        for e in std::fs::read_dir(&dir)?.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    Ok(())
}

/// `develop.watch`'s rebuild: `docker compose up -d --build --no-deps SERVICE`; the sessions
/// reconnect to the new container by themselves (a new endpoint, filled from the host).
fn rebuild(compose: &Compose, docker: &Docker, project: &str, service: &str, why: &str, out: Out) {
    let m = format!("rebuilding ({why})");
    out.event(service, &m, json!({"event": "up_rebuild", "reason": why}));
    let since = unix_now();
    match compose.output(&["up", "-d", "--build", "--no-deps", service]) {
        Ok(o) if o.status.success() => {
            let m = "rebuilt and recreated".to_owned();
            out.event(service, &m, json!({"event": "up_rebuilt"}));
            if let Ok(c) = docker.container(project, service) {
                docker.follow_logs(service, &c.name, since, out);
            }
        }
        Ok(o) => {
            let m = format!(
                "rebuild failed ({}): {}; syncing goes on with the old container",
                o.status,
                last_lines(&o, 3).join(" / ")
            );
            out.event(
                service,
                &m,
                json!({"event": "up_rebuild_failed", "message": m}),
            );
        }
        Err(Fail(_, m)) => {
            out.event(
                service,
                &m,
                json!({"event": "up_rebuild_failed", "message": m}),
            );
        }
    }
}

/// After a session's cycle changed `changed`: the stale-dependency lines, then what its rules
/// ask in compose's order (restart, then exec).
fn after_cycle(
    docker: &Docker,
    service: &str,
    c: &Running,
    plan: &ServicePlan,
    index: usize,
    changed: &[String],
    out: Out,
) {
    let mut said = Vec::new();
    for p in changed {
        if let Some(line) = plan.stale(service, index, p) {
            if !said.contains(&line) {
                out.event(
                    service,
                    &line,
                    json!({"event": "stale_dependencies", "path": p, "message": line}),
                );
                said.push(line);
            }
        }
    }
    let Some(session) = plan.sessions.get(index) else {
        return;
    };
    let fired: Vec<&compose::After> = session
        .after
        .iter()
        .filter(|a| changed.iter().any(|p| a.matches(p)))
        .collect();
    if fired.iter().any(|a| a.action == Action::Restart) {
        restart_service(docker, service, c, out);
    }
    for a in fired {
        if let Action::Exec(e) = &a.action {
            docker.exec(service, c, e, out);
        }
    }
}

/// Says which of a cycle's restarts and execs a rebuild supersedes (the rebuilt container
/// starts from the new image).
fn skipped_for_rebuild(
    plan: &ServicePlan,
    index: usize,
    service: &str,
    changed: &[String],
    out: Out,
) {
    let Some(session) = plan.sessions.get(index) else {
        return;
    };
    let skipped: Vec<&str> = session
        .after
        .iter()
        .filter(|a| changed.iter().any(|p| a.matches(p)))
        .map(|a| match a.action {
            Action::Restart => "restart",
            Action::Exec(_) => "exec",
        })
        .collect();
    if skipped.is_empty() {
        return;
    }
    let m = format!(
        "{} skipped: the service is rebuilt (compose's order: rebuild, sync, restart, exec)",
        skipped.join(" and ")
    );
    out.event(
        service,
        &m,
        json!({"event": "up_after_skipped", "reason": "rebuild", "message": m}),
    );
}

/// Restarts a service's container; its logs are followed again (the stream ends with it).
fn restart_service(docker: &Docker, service: &str, c: &Running, out: Out) {
    let since = unix_now();
    match docker.restart(&c.name) {
        Ok(()) => {
            out.event(service, "restarted", json!({"event": "up_restarted"}));
            docker.follow_logs(service, &c.name, since, out);
        }
        Err(m) => out.event(
            service,
            &m,
            json!({"event": "up_restart_failed", "message": m}),
        ),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What every session thread of `ferry up` shares.
struct Starter {
    out: Out,
    tx: mpsc::Sender<Msg>,
    /// Set at Ctrl-C: a session that opens after it stops at once.
    stopping: Arc<AtomicBool>,
}

/// What stops one session; filled by its thread once the session is open.
#[derive(Default)]
struct Slot {
    state: std::sync::Mutex<SlotState>,
    /// Notified when `state.stop` is set.
    stopped: std::sync::Condvar,
}

#[derive(Default)]
struct SlotState {
    handle: Option<(Arc<AtomicBool>, mpsc::SyncSender<WatchEvent>)>,
    /// Asked to stop (Ctrl-C, or a new plan without it).
    stop: bool,
    /// Its engine ended (stopped, or by itself: its host directory removed).
    ended: bool,
    /// Stopped because the plan no longer has it: its agreement is forgotten and kept here
    /// ([`Engine::retire`](ferry::engine::Engine::retire)).
    retire: bool,
    agreed: Option<Entry>,
}

impl Slot {
    /// Whether its engine ended.
    fn ended(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).ended
    }

    fn stop(&self, retire: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.stop = true;
        s.retire |= retire;
        if let Some((stop, wake)) = &s.handle {
            stop.store(true, Ordering::SeqCst);
            let _ = wake.try_send(WatchEvent::Stop);
        }
        self.stopped.notify_all();
    }
}

/// A session `ferry up` runs.
struct LiveSession {
    slot: Arc<Slot>,
    thread: std::thread::JoinHandle<()>,
    /// The container directory (absolute).
    container_dir: String,
    /// Its start line.
    human: String,
}

/// Prints a session's start line and starts it on a thread of its own; `None` when its host
/// directory does not exist. `superseded`: what the container has at the session's paths
/// from sessions a new plan replaced (see [`Settings::superseded`]).
fn start_session(
    st: &Starter,
    service: &str,
    c: &Running,
    user: Option<String>,
    p: &compose::Session,
    id: usize,
    superseded: Held,
) -> Result<Option<LiveSession>, Fail> {
    let out = st.out;
    let host = if p.mirror {
        creatable(Path::new(&p.host))
    } else {
        Path::new(&p.host).canonicalize().ok()
    };
    let Some(host) = host else {
        let m = format!("{} does not exist: not synced", p.host);
        out.event(service, &m, json!({"event": "up_note", "message": m}));
        return Ok(None);
    };
    let Some(host_str) = host.to_str().map(str::to_owned) else {
        return Ok(None);
    };
    let container_dir = container_dir(p, c);
    let left_out = if p.left_out.is_empty() {
        String::new()
    } else {
        format!(" (left out: {})", p.left_out.join("; "))
    };
    let human = if p.mirror {
        format!(
            "{}:{container_dir} -> {host_str} (mirror: one way, container to host)",
            c.name
        )
    } else {
        let mut then: Vec<String> = p
            .hooks
            .iter()
            .map(|h| {
                format!(
                    "run {}{}",
                    ferry::output::shell_word(&h.run),
                    if h.restart { " and restart" } else { "" }
                )
            })
            .collect();
        for a in &p.after {
            then.push(match &a.action {
                Action::Restart => "restart".to_owned(),
                Action::Exec(e) => {
                    format!("exec {}", e.command.clone().unwrap_or_default().join(" "))
                }
            });
        }
        let then = if then.is_empty() {
            String::new()
        } else {
            format!(" (on change: {})", then.join("; "))
        };
        format!("{host_str} -> {}:{container_dir}{left_out}{then}", c.name)
    };
    out.event(
        service,
        &human,
        json!({"event": "up_session", "host": host_str, "container": c.name,
                   "path": container_dir, "left_out": p.left_out, "origin": p.origin,
                   "mode": p.mode.as_str(), "mirror": p.mirror,
                   "hooks": p.hooks.iter().map(|h| &h.run).collect::<Vec<_>>()}),
    );
    // Who owns what ferry creates in the container: compose's `user:`, else the
    // image's USER (both in the container's config), else the mapping's --chown;
    // the agent runs as root and hands its files over.
    let loc = Location::Docker {
        user: None,
        owner: user.or_else(|| p.chown.clone()),
        container: c.name.clone(),
        path: container_dir.clone(),
    };
    let (alpha, beta) = if p.mirror {
        (
            Place::Remote(loc),
            Place::Local {
                root: host,
                create: true,
            },
        )
    } else {
        (
            Place::Local {
                root: host,
                create: false,
            },
            Place::Remote(loc),
        )
    };
    let settings = Settings {
        mode: p.mode,
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
        on_change: p
            .hooks
            .iter()
            .map(|h| OnChange {
                run: h.run.clone(),
                paths: h.paths.clone(),
            })
            .collect(),
        // A mirror's alpha is the container: what the image built there is what
        // it copies; elsewhere the image's own files stay in the container.
        image_changes: (!p.mirror).then(|| image_changes(c.name.clone(), container_dir.clone())),
        alpha_names: p.renames.clone(),
        superseded,
        ..Default::default()
    };
    let mut printer = Printer::new(out.json);
    printer.set_service(service);
    if !p.mirror {
        printer.set_tap(cycle_tap(service, id, st.tx.clone()));
    }
    let tx = st.tx.clone();
    let service = service.to_owned();
    let what = human.clone();
    let slot = Arc::new(Slot::default());
    let mine = slot.clone();
    let stopping = st.stopping.clone();
    let spawned = std::thread::Builder::new()
        .stack_size(STACK)
        .name(format!("ferry-up-{service}"))
        .spawn(move || {
            let tag = format!("{service} | ");
            let ended = |code| {
                let _ = tx.send(Msg::Ended {
                    service: service.clone(),
                    what: what.clone(),
                    code,
                });
            };
            let (mut engine, wake, stop) = match open(
                &alpha,
                &beta,
                settings,
                Retention::default(),
                printer,
                false,
                false,
            ) {
                Err(code) => return ended(code),
                Ok(opened) => opened,
            };
            {
                // Registered, then checked, under the lock the main thread takes to stop
                // it: no session misses a Ctrl-C or a new plan.
                let mut s = mine.state.lock().unwrap_or_else(|e| e.into_inner());
                s.handle = Some((stop.clone(), wake.0.clone()));
                if s.stop || stopping.load(Ordering::SeqCst) {
                    stop.store(true, Ordering::SeqCst);
                    let _ = wake.0.try_send(WatchEvent::Stop);
                }
            }
            let code = match engine.run(Some(wake)) {
                Ok(f) => finish_code(f),
                Err(e) => report_as(&tag, e),
            };
            mine.state.lock().unwrap_or_else(|e| e.into_inner()).ended = true;
            ended(code);
            // A session that ended by itself (its host directory removed) is kept until
            // stopped: a new plan without it still retires it.
            let mut s = mine.state.lock().unwrap_or_else(|e| e.into_inner());
            while !s.stop {
                s = mine.stopped.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            if s.retire {
                match engine.retire() {
                    Ok(agreed) => s.agreed = agreed,
                    Err(e) => {
                        report_as(&tag, e);
                    }
                }
            }
            drop(s);
            // Dropped here, not left to the exit: its lock is released for a session that
            // maps the same directories again.
            drop(engine);
        });
    match spawned {
        Ok(thread) => Ok(Some(LiveSession {
            slot,
            thread,
            container_dir,
            human,
        })),
        Err(e) => Err(failed(format!("cannot start a session thread: {e}"))),
    }
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
    let project_dir = check_compose_files(&flags.files)?;
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
    let settings = x_ferry_settings(&compose, &project)?;
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

    let since = unix_now();
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
        docker.follow_logs(service, &c.name, since, out);
    }

    let starter = Starter {
        out,
        tx: tx.clone(),
        stopping: stopping.clone(),
    };
    // Every session by id: its service, its index in the service's plan, what stops it.
    let mut live: BTreeMap<usize, (String, usize, LiveSession)> = BTreeMap::new();
    let mut next_id = 0;
    let mut plans: BTreeMap<String, ServicePlan> = BTreeMap::new();
    let mut watchers = Vec::new();
    // Per service: the watcher of its Dockerfile's globs expanded at start, and what they
    // matched then.
    let mut globs: BTreeMap<String, GlobWatch> = BTreeMap::new();
    if !flags.no_sync {
        for (service, c) in &containers {
            let Some(svc) = project.services.get(service) else {
                continue;
            };
            let cfg = settings.get(service).cloned().unwrap_or_default();
            let plan = match plan_service(&docker, svc, &cfg, &project_dir) {
                Ok(p) => p,
                Err(why) => {
                    out.event(service, &why, json!({"event": "up_note", "message": why}));
                    continue;
                }
            };
            for n in &plan.notes {
                out.event(service, n, json!({"event": "up_note", "message": n}));
            }
            for r in &plan.rebuild {
                match watch_rebuild(r, service, watchers.len(), tx.clone()) {
                    Ok(w) => {
                        let m = format!("{}: rebuild when {} changes", r.origin, r.path);
                        out.event(
                            service,
                            &m,
                            json!({"event": "up_rebuild_rule", "path": r.path, "origin": r.origin}),
                        );
                        watchers.push(w);
                    }
                    Err(e) => {
                        let m = format!("{}: cannot watch {}: {e}", r.origin, r.path);
                        out.event(service, &m, json!({"event": "up_note", "message": m}));
                    }
                }
            }
            let user = service_user(svc, c);
            for (index, p) in plan.sessions.iter().enumerate() {
                let id = next_id;
                next_id += 1;
                if let Some(l) =
                    start_session(&starter, service, c, user.clone(), p, id, Held::new())?
                {
                    live.insert(id, (service.clone(), index, l));
                }
            }
            globs.insert(
                service.clone(),
                watch_globs(&plan.live, service, tx.clone(), out),
            );
            plans.insert(service.clone(), plan);
        }
    }
    drop(tx);

    let mut code = Exit::Ok;
    let mut running = live.len();
    // Services whose Dockerfile globs may match other files now, waiting for quiet.
    let mut replans: BTreeSet<String> = BTreeSet::new();
    // Services whose rebuild rules fired, waiting for quiet (compose waits 500 ms; a build
    // takes seconds, so a burst of saves is one rebuild).
    let mut rebuilds: BTreeMap<String, String> = BTreeMap::new();
    // When each service's last rebuild ended: what its sessions synced before then went to
    // the container the rebuild replaced.
    let mut rebuilt: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        let quiet = if !rebuilds.is_empty() {
            Some(REBUILD_QUIET)
        } else if !replans.is_empty() {
            Some(REPLAN_QUIET)
        } else {
            None
        };
        let msg = match quiet {
            None => rx.recv().map_err(|_| ()),
            Some(quiet) => match rx.recv_timeout(quiet) {
                Ok(m) => Ok(m),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    for service in std::mem::take(&mut replans) {
                        let (Some(svc), Some(c)) =
                            (project.services.get(&service), containers.get(&service))
                        else {
                            continue;
                        };
                        let Some(before) = globs.get(&service) else {
                            continue;
                        };
                        let disk = DiskContext(PathBuf::from("/"));
                        let looking = plans.get(&service).map_or(&[][..], |p| &p.live[..]);
                        let now: Vec<Vec<String>> =
                            looking.iter().map(|g| g.matches(&disk)).collect();
                        // A session whose host directory was removed and made again between
                        // two looks ended by itself: started again as if the match were new.
                        let ended = live
                            .values()
                            .any(|(s, _, l)| *s == service && l.slot.ended());
                        if now != before.matched || ended {
                            let cfg = settings.get(&service).cloned().unwrap_or_default();
                            match plan_service(&docker, svc, &cfg, &project_dir) {
                                Ok(plan) => {
                                    running += replan(
                                        &starter,
                                        &service,
                                        c,
                                        service_user(svc, c),
                                        plan,
                                        &mut plans,
                                        &mut live,
                                        &mut next_id,
                                    )?;
                                }
                                Err(why) => {
                                    let m = format!("cannot plan again: {why}");
                                    out.event(
                                        &service,
                                        &m,
                                        json!({"event": "up_note", "message": m}),
                                    );
                                }
                            }
                        }
                        // Watched anew: a directory on the way to a match may be new (or made
                        // again).
                        let looking = plans.get(&service).map_or(&[][..], |p| &p.live[..]);
                        let w = watch_globs(looking, &service, starter.tx.clone(), out);
                        globs.insert(service.clone(), w);
                    }
                    for (service, why) in std::mem::take(&mut rebuilds) {
                        rebuild(&compose, &docker, &project.name, &service, &why, out);
                        rebuilt.insert(service, Instant::now());
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(()),
            },
        };
        match msg {
            Ok(Msg::Signal) | Err(()) => break,
            Ok(Msg::Ended {
                service,
                what,
                code: c,
            }) => {
                running -= 1;
                // One of a glob's sessions that ended by itself (its host directory removed,
                // perhaps made again) is looked at again.
                if globs.get(&service).is_some_and(|g| g.watcher.is_some()) {
                    replans.insert(service.clone());
                }
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
            Ok(Msg::HookDone {
                service,
                session,
                command,
            }) => {
                let Some((_, index, _)) = live.get(&session) else {
                    continue;
                };
                let restart = plans
                    .get(&service)
                    .and_then(|p| p.sessions.get(*index))
                    .is_some_and(|s| s.hooks.iter().any(|h| h.restart && h.run == command));
                if let (true, Some(c)) = (restart, containers.get(&service)) {
                    restart_service(&docker, &service, c, out);
                }
            }
            Ok(Msg::Rebuild { service, why }) => {
                rebuilds.entry(service).or_insert(why);
            }
            Ok(Msg::Replan { service }) => {
                replans.insert(service);
            }
            Ok(Msg::WatchDir { index, dir }) => {
                if let Some(w) = watchers.get_mut(index) {
                    let _ = watch_tree(w, &dir);
                }
            }
            Ok(Msg::Cycle {
                service,
                session,
                changed,
                at,
            }) => {
                let (Some(plan), Some(c)) = (plans.get(&service), containers.get(&service)) else {
                    continue;
                };
                // A session stopped for a new plan has no index in it.
                let Some(&(_, session, _)) = live.get(&session) else {
                    continue;
                };
                // Compose's order within a batch: rebuild, sync, restart, exec. A cycle that
                // changed a rebuild rule's path, or that comes while a rebuild waits or ran
                // meanwhile, is the rebuild's: no restart or exec of a container it replaces.
                let trigger = plan.sessions.get(session).and_then(|s| {
                    changed
                        .iter()
                        .map(|p| s.host_path(p))
                        .find(|abs| plan.rebuild.iter().any(|r| r.matches(abs)))
                });
                let superseded = match trigger {
                    Some(abs) => {
                        rebuilds
                            .entry(service.clone())
                            .or_insert_with(|| format!("{abs} changed"));
                        true
                    }
                    None => {
                        rebuilds.contains_key(&service)
                            || rebuilt.get(&service).is_some_and(|t| at <= *t)
                    }
                };
                if superseded {
                    skipped_for_rebuild(plan, session, &service, &changed, out);
                } else {
                    after_cycle(&docker, &service, c, plan, session, &changed, out);
                }
            }
        }
    }
    drop(watchers);
    drop(globs);
    stopping.store(true, Ordering::SeqCst);
    for (_, _, l) in live.values() {
        l.slot.stop(false);
    }
    while running > 0 {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Msg::Ended { code: c, .. }) => {
                running -= 1;
                if c == Exit::Conflicts {
                    code = Exit::Conflicts;
                }
            }
            Ok(_) => {}
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
}
