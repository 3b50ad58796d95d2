//! Opening a byte stream to an agent: Docker's exec API (bollard), the system `ssh`, or
//! `kubectl exec -i`. Each transport installs the static agent when it is missing (Docker: a
//! tar upload through the API, so a container needs no tools at all; SSH and Kubernetes: `sh`
//! and `cat` on the far side) and starts `ferry agent` with its stdio as the stream.

use std::io::{self, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::arch::{self, Arch};
use super::wire::{MAGIC, PROTOCOL, WireError};
use super::{AgentBinary, Location, agent_binary};

/// A connected agent: its stream, past the preface.
pub struct Link {
    pub reader: Box<dyn Read + Send>,
    pub writer: Box<dyn Write + Send>,
    /// Keeps the far side alive (a child process, the Docker runtime); dropped to hang up.
    pub guard: Box<dyn Send>,
    /// What the far side wrote on stderr (for messages).
    pub stderr: Arc<Mutex<String>>,
}

/// Why a connection could not be made.
#[derive(Debug)]
pub struct ConnectError {
    /// The user's input is at fault (no such container): exit code 2, no retry.
    pub usage: bool,
    pub message: String,
}

impl ConnectError {
    fn failed(message: impl Into<String>) -> Self {
        ConnectError {
            usage: false,
            message: message.into(),
        }
    }
}

/// A way to reach an agent.
pub trait Transport: Send {
    /// Starts an agent (installing it first if needed) and returns its stream.
    fn connect(&mut self) -> Result<Link, ConnectError>;
    /// Whether to ask for compressed frames (worth it over a network).
    fn compress(&self) -> bool;
    /// What the last connection reached, when it can be told apart from a new endpoint at the
    /// same address (a container's id: a recreated container is another endpoint).
    fn identity(&self) -> Option<String> {
        None
    }
}

/// The transport for a remote location.
pub fn for_location(loc: &Location) -> Result<Box<dyn Transport>, ConnectError> {
    match loc {
        Location::Local(_) => Err(ConnectError::failed("a local path has no transport")),
        Location::Docker {
            user,
            owner,
            container,
            path,
        } => Ok(Box::new(DockerTransport::new(
            container,
            user.clone(),
            owner.clone(),
            path,
        )?)),
        Location::Ssh {
            user, host, port, ..
        } => {
            let mut argv =
                split_command(&std::env::var("FERRY_SSH_COMMAND").unwrap_or_else(|_| "ssh".into()));
            if let Some(p) = port {
                argv.extend(["-p".into(), p.to_string()]);
            }
            if let Some(u) = user {
                argv.extend(["-l".into(), u.clone()]);
            }
            // `-e none`: no escape character on a binary stream; `--` ends ssh's options.
            argv.extend(["-e".into(), "none".into(), "--".into(), host.clone()]);
            Ok(Box::new(CommandTransport {
                argv,
                quote_script: true,
                compress: true,
                reported: None,
            }))
        }
        Location::K8s {
            context,
            namespace,
            pod,
            container,
            ..
        } => {
            let mut argv =
                vec![std::env::var("FERRY_KUBECTL").unwrap_or_else(|_| "kubectl".into())];
            if let Some(c) = context {
                argv.extend(["--context".into(), c.clone()]);
            }
            argv.extend([
                "exec".into(),
                "-i".into(),
                "-n".into(),
                namespace.clone(),
                pod.clone(),
            ]);
            if let Some(c) = container {
                argv.extend(["-c".into(), c.clone()]);
            }
            argv.extend(["--".into(), "sh".into(), "-c".into()]);
            Ok(Box::new(CommandTransport {
                argv,
                quote_script: false,
                compress: true,
                reported: None,
            }))
        }
    }
}

fn split_command(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// The agent's architecture (see [`arch::choose`]): a bad `FERRY_AGENT_ARCH` is a usage error.
fn choose_arch(wanted: Option<&str>, reported: Option<&str>) -> Result<Arch, ConnectError> {
    arch::choose(wanted, reported).map_err(|message| ConnectError {
        // With a valid override there is no error: any error is the override's.
        usage: wanted.is_some_and(|w| !w.is_empty()),
        message,
    })
}

fn agent(arch: Arch) -> Result<AgentBinary, ConnectError> {
    agent_binary(arch).map_err(ConnectError::failed)
}

/// What the far side said first.
enum Greeting {
    Agent,
    /// The install script's answer: the agent is missing on this OS and machine.
    Need(String),
}

/// Reads the agent's preface (or the script's `FERRY-NEED` line) off `r`.
fn greet(r: &mut dyn Read, stderr: &Mutex<String>) -> Result<Greeting, ConnectError> {
    let mut p = [0u8; 12];
    let mut got = 0;
    while got < p.len() {
        match r.read(&mut p[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ConnectError::failed(e.to_string())),
        }
    }
    if p.starts_with(b"FERRY-NEED") {
        let mut line = String::from_utf8_lossy(&p[..got]).into_owned();
        let mut b = [0u8; 1];
        while !line.ends_with('\n') && line.len() < 200 {
            match r.read(&mut b) {
                Ok(1) => line.push(b[0] as char),
                _ => break,
            }
        }
        return Ok(Greeting::Need(line.trim().to_owned()));
    }
    if got == p.len() && &p[..8] == MAGIC {
        let theirs = u32::from_le_bytes([p[8], p[9], p[10], p[11]]);
        if theirs != PROTOCOL {
            return Err(ConnectError::failed(
                WireError::Version {
                    ours: PROTOCOL,
                    theirs,
                }
                .to_string(),
            ));
        }
        return Ok(Greeting::Agent);
    }
    // Give the far side's error message a moment to arrive.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let err = stderr
        .lock()
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let said = String::from_utf8_lossy(&p[..got]).trim().to_owned();
    let mut msg = if got == 0 {
        "the agent did not start".to_owned()
    } else {
        format!("the far side is not a ferry agent (it sent {said:?})")
    };
    if !err.is_empty() {
        msg.push_str(": ");
        msg.push_str(&one_line(&err));
    }
    Err(ConnectError::failed(msg))
}

fn one_line(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let mut out = lines.join("; ");
    if out.len() > 400 {
        let mut cut = 400;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// Collects a child's stderr in the background.
fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    if let Some(mut e) = child.stderr.take() {
        let b = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = e.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = b.lock() {
                    if s.len() < 64 * 1024 {
                        s.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    }
                }
            }
        });
    }
    buf
}

/// A child process; killed when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ssh HOST SCRIPT` or `kubectl exec -i ... -- sh -c SCRIPT`.
struct CommandTransport {
    argv: Vec<String>,
    /// ssh hands the command to the login shell: wrap it in `sh -c '...'` so any shell works.
    quote_script: bool,
    compress: bool,
    /// The far side's `uname -m`, once it said it (when it needed an agent).
    reported: Option<String>,
}

/// The agent's directory on the far side (per version, under the user's home).
fn agent_dir(tag: &str) -> String {
    format!("\"${{HOME:-/tmp}}/.ferry/agent/{tag}\"")
}

impl CommandTransport {
    fn spawn(&self, script: &str, stdin: Stdio) -> Result<Child, ConnectError> {
        let (prog, args) = self
            .argv
            .split_first()
            .ok_or_else(|| ConnectError::failed("empty transport command"))?;
        let script = if self.quote_script {
            format!("sh -c '{}'", script.replace('\'', "'\\''"))
        } else {
            script.to_owned()
        };
        Command::new(prog)
            .args(args)
            .arg(script)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ConnectError::failed(format!("cannot run {prog}: {e}")))
    }

    fn install(&self, agent: &AgentBinary) -> Result<(), ConnectError> {
        let bytes = std::fs::read(&agent.path)
            .map_err(|e| ConnectError::failed(format!("{}: {e}", agent.path.display())))?;
        let d = agent_dir(&agent.tag);
        let script = format!(
            "mkdir -p {d} && cat > {d}/ferry.$$ && chmod 755 {d}/ferry.$$ && mv -f {d}/ferry.$$ {d}/ferry"
        );
        let mut child = self.spawn(&script, Stdio::piped())?;
        let err = collect_stderr(&mut child);
        let written = child
            .stdin
            .take()
            .map(|mut i| i.write_all(&bytes))
            .unwrap_or(Ok(()));
        let status = child
            .wait()
            .map_err(|e| ConnectError::failed(e.to_string()))?;
        if !status.success() || written.is_err() {
            let e = err.lock().map(|s| one_line(&s)).unwrap_or_default();
            return Err(ConnectError::failed(format!(
                "installing the agent failed ({status}): {e}"
            )));
        }
        Ok(())
    }
}

impl Transport for CommandTransport {
    fn connect(&mut self) -> Result<Link, ConnectError> {
        let wanted = arch::override_from_env();
        // Until the far side says its machine (it does when it has no agent yet), try the
        // agent for this one's.
        let mut agent = agent(choose_arch(wanted.as_deref(), self.reported.as_deref())?)?;
        let mut installed = false;
        // Start; on FERRY-NEED, the far side's agent (if not the one tried) or an install;
        // then start again.
        for _ in 0..3 {
            let d = agent_dir(&agent.tag);
            let script = format!(
                "if [ -x {d}/ferry ]; then exec {d}/ferry agent; else echo FERRY-NEED \"$(uname -s)\" \"$(uname -m)\"; fi"
            );
            let mut child = self.spawn(&script, Stdio::piped())?;
            let stderr = collect_stderr(&mut child);
            let (Some(mut out), Some(input)) = (child.stdout.take(), child.stdin.take()) else {
                return Err(ConnectError::failed("no pipes to the transport command"));
            };
            let guard = ChildGuard(child);
            match greet(&mut out, &stderr)? {
                Greeting::Agent => {
                    return Ok(Link {
                        reader: Box::new(out),
                        writer: Box::new(input),
                        guard: Box::new(guard),
                        stderr,
                    });
                }
                Greeting::Need(line) if !installed => {
                    drop(guard);
                    let words: Vec<&str> = line.split_whitespace().collect();
                    let (os, machine) = (words.get(1).copied(), words.get(2).copied());
                    if os != Some("Linux") {
                        return Err(ConnectError::failed(format!(
                            "the far side is {} {}: ferry has Linux agents only",
                            os.unwrap_or("?"),
                            machine.unwrap_or("?")
                        )));
                    }
                    self.reported = machine.map(str::to_owned);
                    let arch = choose_arch(wanted.as_deref(), machine)?;
                    let needed = self::agent(arch)?;
                    if needed.tag != agent.tag {
                        // Another machine than guessed: its agent may be there already.
                        agent = needed;
                        continue;
                    }
                    self.install(&agent)?;
                    installed = true;
                }
                Greeting::Need(_) => {
                    return Err(ConnectError::failed(
                        "the agent was installed but is still not there",
                    ));
                }
            }
        }
        Err(ConnectError::failed("the agent did not start"))
    }

    fn compress(&self) -> bool {
        self.compress
    }
}

/// A container, through the Docker Engine API.
struct DockerTransport {
    rt: tokio::runtime::Runtime,
    docker: bollard::Docker,
    container: String,
    user: Option<String>,
    /// Set: the agent runs as root and gives what it creates to this `USER[:GROUP]`.
    owner: Option<String>,
    /// The id of the container the last connection reached.
    connected_id: Option<String>,
    /// The synced directory: where the agent can live when the root filesystem is read-only.
    root: String,
    /// The agent that started last time: reconnections go straight there.
    started: Option<String>,
    /// The engine's architecture, once asked.
    arch: Option<Arch>,
}

/// What `docker inspect` tells about the container.
struct Found {
    id: String,
    read_only: bool,
    /// Destinations of volumes and bind mounts that can be written.
    rw_mounts: Vec<String>,
}

/// Where the agent can be put in a container, and how.
struct Place {
    /// The directory holding `ferry`.
    dir: String,
    how: Install,
}

enum Install {
    /// A tar archive through the API, extracted at `at` (needs no tool in the container; Docker
    /// refuses it into a read-only root filesystem unless `at` is in a volume).
    Upload { at: String },
    /// `cat` through an exec of `sh` (needs a shell; works wherever the user can write).
    Stream { as_root: bool },
}

/// Why an exec of the agent did not give an agent.
enum ExecFail {
    /// No such file: not installed there (yet).
    Missing,
    /// Someone is writing it right now (an installer of another ferry).
    Busy,
    /// Found, but the kernel will not run it there (a `noexec` mount).
    NoExec(String),
    /// Nothing another place can fix.
    Fatal(ConnectError),
}

/// Why an install script failed.
enum ScriptFail {
    NoShell,
    Failed(String),
}

/// The Docker Engine's address, for messages.
fn docker_host() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// "cannot reach the Docker engine at ADDRESS: OS REASON; HINT" from bollard's nested error
/// (whose own text is "Error in the hyper legacy client: client error (Connect)").
pub fn docker_unreachable(e: &bollard::errors::Error) -> ConnectError {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let denied = cause
        .downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::PermissionDenied);
    let hint = if denied {
        "is this user allowed to use it (the docker group)?"
    } else {
        "is it running?"
    };
    ConnectError::failed(format!(
        "cannot reach the Docker engine at {}: {cause}; {hint}",
        docker_host()
    ))
}

/// True for errors that mean the engine itself could not be reached.
fn is_unreachable(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error;
    matches!(
        e,
        Error::HyperLegacyError { .. } | Error::IOError { .. } | Error::SocketNotFoundError(_)
    )
}

/// Where the agent lives in a container: at the filesystem's root, which even `FROM scratch`
/// images have, one directory per agent version.
fn container_agent_dir(tag: &str) -> String {
    format!("/.ferry/agent/{tag}")
}

/// The compose labels ferry reads to find a service's container.
const COMPOSE_SERVICE: &str = "com.docker.compose.service";
const COMPOSE_WORKDIR: &str = "com.docker.compose.project.working_dir";

impl DockerTransport {
    /// The agent's architecture: `FERRY_AGENT_ARCH`, else the engine's (the kernel that runs
    /// the container, whatever the image was built for).
    fn arch(&mut self) -> Result<Arch, ConnectError> {
        if let Some(a) = self.arch {
            return Ok(a);
        }
        let wanted = arch::override_from_env();
        let engine = if wanted.as_deref().is_some_and(|w| !w.is_empty()) {
            None
        } else {
            let v = self.rt.block_on(self.docker.version()).map_err(|e| {
                if is_unreachable(&e) {
                    docker_unreachable(&e)
                } else {
                    ConnectError::failed(format!("docker: {e}"))
                }
            })?;
            Some(v.arch.unwrap_or_default())
        };
        let a = choose_arch(wanted.as_deref(), engine.as_deref())?;
        self.arch = Some(a);
        Ok(a)
    }

    fn new(
        container: &str,
        user: Option<String>,
        owner: Option<String>,
        root: &str,
    ) -> Result<Self, ConnectError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ferry-docker")
            .enable_all()
            .build()
            .map_err(|e| ConnectError::failed(format!("cannot start the Docker client: {e}")))?;
        let docker =
            bollard::Docker::connect_with_defaults().map_err(|e| docker_unreachable(&e))?;
        let docker = rt
            .block_on(docker.negotiate_version())
            .map_err(|e| docker_unreachable(&e))?;
        Ok(DockerTransport {
            rt,
            docker,
            container: container.to_owned(),
            user,
            owner,
            connected_id: None,
            arch: None,
            root: root.to_owned(),
            started: None,
        })
    }

    /// The running container: by name or id, else a Compose service of the project in the
    /// current directory.
    fn find(&self) -> Result<Found, ConnectError> {
        use bollard::errors::Error;
        let name = match self
            .rt
            .block_on(self.docker.inspect_container(&self.container, None))
        {
            Ok(info) => return self.found(info),
            Err(Error::DockerResponseServerError {
                status_code: 404, ..
            }) => match self.service_container()? {
                Some(id) => id,
                None => {
                    return Err(ConnectError {
                        usage: true,
                        message: format!("no container named '{}'", self.container),
                    });
                }
            },
            Err(e) if is_unreachable(&e) => return Err(docker_unreachable(&e)),
            Err(e) => return Err(ConnectError::failed(format!("docker: {e}"))),
        };
        let info = self
            .rt
            .block_on(self.docker.inspect_container(&name, None))
            .map_err(|e| ConnectError::failed(format!("docker: {e}")))?;
        self.found(info)
    }

    fn found(
        &self,
        info: bollard::models::ContainerInspectResponse,
    ) -> Result<Found, ConnectError> {
        let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        if !running {
            return Err(ConnectError::failed(format!(
                "container '{}' is not running",
                self.container
            )));
        }
        let id = info
            .id
            .ok_or_else(|| ConnectError::failed("docker: the container has no id"))?;
        let read_only = info
            .host_config
            .as_ref()
            .and_then(|h| h.readonly_rootfs)
            .unwrap_or(false);
        let rw_mounts = info
            .mounts
            .unwrap_or_default()
            .into_iter()
            .filter(|m| m.rw.unwrap_or(false))
            .filter_map(|m| m.destination)
            .collect();
        Ok(Found {
            id,
            read_only,
            rw_mounts,
        })
    }

    /// The one running container of the Compose project in the current directory (or a parent
    /// of it) that runs service `self.container`. `None` when no container runs that service;
    /// an error naming the candidates when several could be meant.
    fn service_container(&self) -> Result<Option<String>, ConnectError> {
        use bollard::query_parameters::ListContainersOptionsBuilder;
        let filters = std::collections::HashMap::from([(
            "label",
            vec![format!("{COMPOSE_SERVICE}={}", self.container)],
        )]);
        let opts = ListContainersOptionsBuilder::new()
            .filters(&filters)
            .build();
        let list = self
            .rt
            .block_on(self.docker.list_containers(Some(opts)))
            .map_err(|e| ConnectError::failed(format!("docker: listing containers: {e}")))?;
        if list.is_empty() {
            return Ok(None);
        }
        let cwd = std::env::current_dir().ok();
        let cwd = cwd.map(|d| d.canonicalize().unwrap_or(d));
        let mut here = Vec::new();
        let mut elsewhere = Vec::new();
        for c in list {
            let name = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_owned())
                .or_else(|| c.id.clone())
                .unwrap_or_default();
            let dir = c
                .labels
                .as_ref()
                .and_then(|l| l.get(COMPOSE_WORKDIR))
                .cloned()
                .unwrap_or_default();
            let ours = !dir.is_empty()
                && cwd
                    .as_deref()
                    .is_some_and(|cwd| cwd.starts_with(std::path::Path::new(&dir)));
            if ours {
                here.push((name, c.id));
            } else {
                elsewhere.push(format!("{name} (project {dir})"));
            }
        }
        here.sort();
        elsewhere.sort();
        match here.len() {
            1 => Ok(here.pop().and_then(|(_, id)| id)),
            0 => Err(ConnectError {
                usage: true,
                message: format!(
                    "no container named '{}', and no Compose project in this directory runs a \
                     service of that name (it runs in: {}); run ferry from the project's \
                     directory or name the container",
                    self.container,
                    elsewhere.join(", ")
                ),
            }),
            _ => Err(ConnectError {
                usage: true,
                message: format!(
                    "no container named '{}', and several containers run Compose service '{}' \
                     here: {}; name one of them",
                    self.container,
                    self.container,
                    here.iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// The places to try, in order: the container's root (a tar upload, no tools needed); on a
    /// read-only root filesystem, a volume at `/.ferry`, the synced directory's never-synced
    /// `.ferry-staging` and the container's own `/dev` (both streamed through `sh`).
    fn places(&self, found: &Found, tag: &str) -> Vec<Place> {
        let mut places = Vec::new();
        if !found.read_only {
            places.push(Place {
                dir: container_agent_dir(tag),
                how: Install::Upload { at: "/".into() },
            });
            return places;
        }
        if found.rw_mounts.iter().any(|m| m == "/.ferry") {
            places.push(Place {
                dir: container_agent_dir(tag),
                how: Install::Upload {
                    at: "/.ferry".into(),
                },
            });
        }
        places.push(Place {
            dir: format!(
                "{}/{}/agent/{tag}",
                self.root.trim_end_matches('/'),
                crate::fs::ignore::STAGING_DIR_NAME
            ),
            how: Install::Stream { as_root: false },
        });
        places.push(Place {
            dir: format!("/dev/.ferry/agent/{tag}"),
            how: Install::Stream { as_root: true },
        });
        places
    }

    /// Starts `cmd` in the container with its stdio attached.
    fn attach(
        &self,
        id: &str,
        cmd: Vec<String>,
        user: Option<String>,
        env: Option<Vec<String>>,
    ) -> Result<Attached, ConnectError> {
        use bollard::container::LogOutput;
        use bollard::exec::{CreateExecOptions, StartExecResults};
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;

        let opts = CreateExecOptions {
            cmd: Some(cmd),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            user,
            env,
            ..Default::default()
        };
        let started = self.rt.block_on(async {
            let exec = self.docker.create_exec(id, opts).await?;
            let started = self.docker.start_exec(&exec.id, None).await?;
            Ok::<_, bollard::errors::Error>((exec.id, started))
        });
        let (exec_id, (mut output, mut input)) = match started {
            Ok((exec_id, StartExecResults::Attached { output, input })) => {
                (exec_id, (output, input))
            }
            Ok((_, StartExecResults::Detached)) => {
                return Err(ConnectError::failed("docker: the exec did not attach"));
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                return Err(ConnectError::failed(format!(
                    "container '{}' is not running",
                    self.container
                )));
            }
            Err(e) => return Err(ConnectError::failed(format!("docker exec: {e}"))),
        };
        let stderr = Arc::new(Mutex::new(String::new()));
        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
        let (in_tx, mut in_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
        let err = stderr.clone();
        let writing = self.rt.spawn(async move {
            while let Some(buf) = in_rx.recv().await {
                if input.write_all(&buf).await.is_err() || input.flush().await.is_err() {
                    break;
                }
            }
            let _ = input.shutdown().await;
        });
        let stop_writing = writing.abort_handle();
        let reading = self.rt.spawn(async move {
            while let Some(item) = output.next().await {
                match item {
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                        if out_tx.send(message).await.is_err() {
                            break;
                        }
                    }
                    Ok(LogOutput::StdErr { message }) => {
                        if let Ok(mut s) = err.lock() {
                            if s.len() < 64 * 1024 {
                                s.push_str(&String::from_utf8_lossy(&message));
                            }
                        }
                    }
                    Ok(LogOutput::StdIn { .. }) => {}
                    Err(e) => {
                        if let Ok(mut s) = err.lock() {
                            s.push_str(&format!("\n{e}"));
                        }
                        break;
                    }
                }
            }
            // The agent's output ended: it is gone. Docker may keep taking its input (or stop
            // reading it without closing the connection), and a write waiting for room would
            // wait forever, the session with it: stopping the writer makes the next write fail
            // ("the agent's stream closed"), and the engine reconnects.
            stop_writing.abort();
        });
        Ok(Attached {
            exec_id,
            reader: ChanReader {
                rx: out_rx,
                cur: bytes::Bytes::new(),
            },
            writer: ChanWriter {
                tx: in_tx,
                buf: Vec::new(),
            },
            guard: TaskGuard(vec![reading, writing]),
            stderr,
        })
    }

    /// Runs the agent at `path`, as the session's user (`cleanup`: the installer's leftover
    /// name for it, which the agent removes).
    fn exec_agent(&self, id: &str, path: &str, cleanup: Option<&str>) -> Result<Link, ExecFail> {
        let mut env: Vec<String> = cleanup
            .map(|c| format!("FERRY_AGENT_CLEANUP={c}"))
            .into_iter()
            .collect();
        // Writing for another user: as root, giving what it creates to that user (works
        // whoever owns the directories, and with numeric ids an image has no passwd entry for).
        let user = match &self.owner {
            Some(owner) => {
                env.push(format!("{}={owner}", crate::fs::owner::ENV));
                Some("0:0".to_owned())
            }
            None => self.user.clone(),
        };
        let env = (!env.is_empty()).then_some(env);
        let Attached {
            reader: mut r,
            writer,
            guard,
            stderr,
            ..
        } = self
            .attach(id, vec![path.to_owned(), "agent".into()], user, env)
            .map_err(ExecFail::Fatal)?;
        let mut p = [0u8; 12];
        let mut got = 0;
        while got < p.len() {
            match r.read(&mut p[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ExecFail::Fatal(ConnectError::failed(e.to_string()))),
            }
        }
        if got == p.len() && &p[..8] == MAGIC {
            let theirs = u32::from_le_bytes([p[8], p[9], p[10], p[11]]);
            if theirs != PROTOCOL {
                return Err(ExecFail::Fatal(ConnectError::failed(
                    WireError::Version {
                        ours: PROTOCOL,
                        theirs,
                    }
                    .to_string(),
                )));
            }
            return Ok(Link {
                reader: Box::new(r),
                writer: Box::new(writer),
                guard: Box::new(guard),
                stderr,
            });
        }
        // Not the agent: the exec failed (Docker writes why on the stream) and the stream ends.
        let mut said = p[..got].to_vec();
        let _ = (&mut r).take(4096).read_to_end(&mut said);
        drop(guard);
        let mut text = String::from_utf8_lossy(&said).into_owned();
        if let Ok(e) = stderr.lock() {
            text.push('\n');
            text.push_str(&e);
        }
        Err(self.exec_failure(&one_line(&text)))
    }

    /// Sorts out what Docker (runc) said when the agent did not start.
    fn exec_failure(&self, text: &str) -> ExecFail {
        let lower = text.to_ascii_lowercase();
        if let Some(at) = lower.find("unable to find user ") {
            let rest = &text[at + "unable to find user ".len()..];
            let user = rest.split(':').next().unwrap_or(rest).trim();
            return ExecFail::Fatal(ConnectError {
                usage: true,
                message: format!("no user '{user}' in container '{}'", self.container),
            });
        }
        if lower.contains("text file busy") {
            ExecFail::Busy
        } else if lower.contains("no such file or directory") {
            ExecFail::Missing
        } else if lower.contains("permission denied") {
            ExecFail::NoExec(text.to_owned())
        } else if text.is_empty() {
            ExecFail::Fatal(ConnectError::failed(format!(
                "container '{}': the agent did not start",
                self.container
            )))
        } else {
            ExecFail::Fatal(ConnectError::failed(format!(
                "container '{}': the agent did not start: {text}",
                self.container
            )))
        }
    }

    /// Uploads the agent as a tar archive extracted at `at`. The file is written under a name
    /// of its own, then hard-linked as `ferry`, so nobody ever runs a file still being written
    /// (`text file busy`) and concurrent installers do not disturb each other.
    /// Returns the name it was written under.
    fn upload(&self, id: &str, at: &str, dir: &str, agent: &AgentBinary) -> Result<String, String> {
        let bytes =
            std::fs::read(&agent.path).map_err(|e| format!("{}: {e}", agent.path.display()))?;
        let rel = dir
            .strip_prefix(at)
            .unwrap_or(dir)
            .trim_start_matches('/')
            .to_owned();
        let mut tar = tar::Builder::new(Vec::new());
        let header = |kind: tar::EntryType, size: u64| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o755);
            h.set_size(size);
            h.set_uid(0);
            h.set_gid(0);
            h
        };
        let mut prefix = String::new();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            prefix.push_str(part);
            prefix.push('/');
            tar.append_data(
                &mut header(tar::EntryType::Directory, 0),
                &prefix,
                io::empty(),
            )
            .map_err(|e| e.to_string())?;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let aside = format!("{prefix}ferry.{}-{nanos}", std::process::id());
        tar.append_data(
            &mut header(tar::EntryType::Regular, bytes.len() as u64),
            &aside,
            &bytes[..],
        )
        .map_err(|e| e.to_string())?;
        tar.append_link(
            &mut header(tar::EntryType::Link, 0),
            format!("{prefix}ferry"),
            &aside,
        )
        .map_err(|e| e.to_string())?;
        let archive = tar.into_inner().map_err(|e| e.to_string())?;
        let opts = bollard::query_parameters::UploadToContainerOptionsBuilder::new()
            .path(at)
            .build();
        self.rt
            .block_on(self.docker.upload_to_container(
                id,
                Some(opts),
                bollard::body_full(archive.into()),
            ))
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError { message, .. } => message,
                e => e.to_string(),
            })?;
        Ok(format!("{}/{aside}", at.trim_end_matches('/')))
    }

    /// Streams the agent into `dir` through `sh` and `cat`, written aside and renamed; checks
    /// that it runs there (a `noexec` mount) before putting it in place.
    fn stream(
        &self,
        id: &str,
        dir: &str,
        as_root: bool,
        agent: &AgentBinary,
    ) -> Result<(), ScriptFail> {
        let bytes = std::fs::read(&agent.path)
            .map_err(|e| ScriptFail::Failed(format!("{}: {e}", agent.path.display())))?;
        let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let root = q(&self.root);
        let d = q(dir);
        // What the script may have created, deepest first (only empty ones go).
        let made: Vec<String> = {
            let mut v = Vec::new();
            let mut cur = std::path::Path::new(dir);
            let stop = if as_root { "/dev" } else { self.root.as_str() };
            while cur != std::path::Path::new(stop) && cur.parent().is_some() {
                v.push(q(&cur.to_string_lossy()));
                cur = cur.parent().unwrap_or(cur);
            }
            v
        };
        let made = made.join(" ");
        let script = format!(
            "umask 022; [ -d {root} ] || [ {as_root} = true ] || {{ echo 'the synced directory does not exist yet' >&2; exit 3; }}; \
             mkdir -p {d} || exit 3; f={d}/ferry.$$; cat > \"$f\" || {{ rm -f \"$f\"; exit 3; }}; chmod 755 \"$f\" || exit 3; \
             if \"$f\" --version >/dev/null 2>&1; then mv -f \"$f\" {d}/ferry; else rm -f \"$f\"; rmdir {made} 2>/dev/null; echo 'mounted noexec: programs cannot run from there' >&2; exit 3; fi"
        );
        let user = if as_root {
            Some("0".to_owned())
        } else {
            self.user.clone()
        };
        let cmd = vec!["sh".to_owned(), "-c".to_owned(), script];
        let Attached {
            exec_id,
            mut reader,
            mut writer,
            guard,
            stderr,
        } = self
            .attach(id, cmd, user, None)
            .map_err(|e| ScriptFail::Failed(e.message))?;
        let written = writer.write_all(&bytes).and_then(|()| writer.flush());
        drop(writer);
        let mut out = Vec::new();
        let _ = (&mut reader).take(64 * 1024).read_to_end(&mut out);
        drop(guard);
        let code = self
            .rt
            .block_on(self.docker.inspect_exec(&exec_id))
            .ok()
            .and_then(|i| i.exit_code);
        let mut text = String::from_utf8_lossy(&out).into_owned();
        if let Ok(e) = stderr.lock() {
            text.push('\n');
            text.push_str(&e);
        }
        let text = one_line(&text);
        if code == Some(0) && written.is_ok() {
            return Ok(());
        }
        if text.contains("executable file not found") || text.contains("\"sh\": stat") {
            return Err(ScriptFail::NoShell);
        }
        // The last line is the script's own reason; earlier ones are the tools'.
        let reason = text.rsplit("; ").next().unwrap_or(&text).to_owned();
        Err(ScriptFail::Failed(if reason.is_empty() {
            format!("the install script failed (exit code {code:?})")
        } else {
            reason
        }))
    }
}

/// An exec with its stdio attached.
struct Attached {
    exec_id: String,
    reader: ChanReader,
    writer: ChanWriter,
    guard: TaskGuard,
    stderr: Arc<Mutex<String>>,
}

impl Transport for DockerTransport {
    fn connect(&mut self) -> Result<Link, ConnectError> {
        let agent = agent(self.arch()?)?;
        let found = self.find()?;
        self.connected_id = Some(found.id.clone());
        if let Some(path) = self.started.clone() {
            match self.exec_agent(&found.id, &path, None) {
                Ok(link) => return Ok(link),
                Err(ExecFail::Fatal(e)) => return Err(e),
                // Gone (a new container under the name): install again below.
                Err(_) => self.started = None,
            }
        }
        let mut why: Vec<String> = Vec::new();
        let mut no_shell = false;
        for place in self.places(&found, &agent.tag) {
            let path = format!("{}/ferry", place.dir);
            let mut aside: Option<String> = None;
            // Several ferries may install at once (one session per mapping): a miss or a busy
            // file means someone else is at it; installing again is harmless (a complete copy
            // replaces the name, never the file someone runs or writes).
            let mut busy = false;
            const TRIES: u64 = 6;
            for attempt in 0..TRIES {
                let fail = match self.exec_agent(&found.id, &path, aside.as_deref()) {
                    Ok(link) => {
                        self.started = Some(path);
                        return Ok(link);
                    }
                    Err(f) => f,
                };
                match fail {
                    ExecFail::Fatal(e) => return Err(e),
                    ExecFail::NoExec(e) => {
                        why.push(format!("{}: {e}", place.dir));
                        break;
                    }
                    // Another installer finishing: give it a moment, then install our own.
                    ExecFail::Busy if !busy => {
                        busy = true;
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        continue;
                    }
                    ExecFail::Busy | ExecFail::Missing => {}
                }
                if attempt + 1 == TRIES {
                    why.push(format!(
                        "{}: still missing or busy after {TRIES} tries",
                        place.dir
                    ));
                    break;
                }
                let done = match &place.how {
                    Install::Upload { at } => self
                        .upload(&found.id, at, &place.dir, &agent)
                        .map(|name| aside = Some(name)),
                    Install::Stream { .. } if no_shell => Err(String::new()),
                    Install::Stream { as_root } => {
                        match self.stream(&found.id, &place.dir, *as_root, &agent) {
                            Ok(()) => Ok(()),
                            Err(ScriptFail::NoShell) => {
                                no_shell = true;
                                Err(String::new())
                            }
                            Err(ScriptFail::Failed(e)) => Err(e),
                        }
                    }
                };
                if let Err(e) = done {
                    if !e.is_empty() {
                        why.push(format!("{}: {e}", place.dir));
                    }
                    break;
                }
            }
        }
        Err(ConnectError::failed(self.nowhere(&found, no_shell, &why)))
    }

    fn identity(&self) -> Option<String> {
        self.connected_id.as_ref().map(|id| format!("docker:{id}"))
    }

    fn compress(&self) -> bool {
        // The Docker socket is local unless DOCKER_HOST says otherwise.
        std::env::var("DOCKER_HOST")
            .is_ok_and(|h| h.starts_with("tcp://") || h.starts_with("ssh://"))
    }
}

impl DockerTransport {
    /// One line: why no place in the container can run the agent, and what to change.
    fn nowhere(&self, found: &Found, no_shell: bool, why: &[String]) -> String {
        let c = &self.container;
        let fix =
            "mount a volume at /.ferry (docker run -v ferry-agent:/.ferry ...) or drop --read-only";
        if !found.read_only {
            return format!(
                "cannot install the agent in container '{c}': {}",
                why.join("; ")
            );
        }
        let mut tried = why.join("; ");
        if no_shell {
            if !tried.is_empty() {
                tried.push_str("; ");
            }
            tried.push_str("no shell (sh) to copy it elsewhere");
        }
        format!(
            "container '{c}' has a read-only root filesystem and no place the agent can run from ({tried}): {fix}"
        )
    }
}

/// Aborts the Docker stream's tasks when the link is dropped.
struct TaskGuard(Vec<tokio::task::JoinHandle<()>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

struct ChanReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    cur: bytes::Bytes,
}

impl Read for ChanReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

struct ChanWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Write for ChanWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= 256 * 1024 {
            self.flush()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.tx
            .blocking_send(std::mem::take(&mut self.buf))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the agent's stream closed"))
    }
}
