//! Opening a byte stream to an agent: Docker's exec API (bollard), the system `ssh`, or
//! `kubectl exec -i`. Each transport installs the static agent when it is missing (Docker: a
//! tar upload through the API, so a container needs no tools at all; SSH and Kubernetes: `sh`
//! and `cat` on the far side) and starts `ferry agent` with its stdio as the stream.

use std::io::{self, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

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
}

/// The transport for a remote location.
pub fn for_location(loc: &Location) -> Result<Box<dyn Transport>, ConnectError> {
    match loc {
        Location::Local(_) => Err(ConnectError::failed("a local path has no transport")),
        Location::Docker {
            user, container, ..
        } => Ok(Box::new(DockerTransport::new(container, user.clone())?)),
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
            }))
        }
    }
}

fn split_command(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

fn agent() -> Result<AgentBinary, ConnectError> {
    agent_binary().map_err(ConnectError::failed)
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

    fn install(&self, agent: &AgentBinary, need: &str) -> Result<(), ConnectError> {
        let words: Vec<&str> = need.split_whitespace().collect();
        if words.get(1).copied() != Some("Linux") || words.get(2).copied() != Some("x86_64") {
            return Err(ConnectError::failed(format!(
                "the far side is {} {}: this build only has an x86_64 Linux agent",
                words.get(1).unwrap_or(&"?"),
                words.get(2).unwrap_or(&"?")
            )));
        }
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
        let agent = agent()?;
        let d = agent_dir(&agent.tag);
        let script = format!(
            "if [ -x {d}/ferry ]; then exec {d}/ferry agent; else echo FERRY-NEED \"$(uname -s)\" \"$(uname -m)\"; fi"
        );
        for attempt in 0..2 {
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
                Greeting::Need(line) if attempt == 0 => {
                    drop(guard);
                    self.install(&agent, &line)?;
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
}

/// Where the agent lives in a container: at the filesystem's root, which even `FROM scratch`
/// images have, one directory per agent version.
fn container_agent_path(tag: &str) -> String {
    format!("/.ferry/agent/{tag}/ferry")
}

impl DockerTransport {
    fn new(container: &str, user: Option<String>) -> Result<Self, ConnectError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ferry-docker")
            .enable_all()
            .build()
            .map_err(|e| ConnectError::failed(format!("cannot start the Docker client: {e}")))?;
        let docker = bollard::Docker::connect_with_defaults()
            .map_err(|e| ConnectError::failed(format!("cannot reach Docker: {e}")))?;
        let docker = rt
            .block_on(docker.negotiate_version())
            .map_err(|e| ConnectError::failed(format!("cannot reach Docker: {e}")))?;
        Ok(DockerTransport {
            rt,
            docker,
            container: container.to_owned(),
            user,
        })
    }

    /// The running container's id.
    fn find(&self) -> Result<String, ConnectError> {
        use bollard::errors::Error;
        let info = self
            .rt
            .block_on(self.docker.inspect_container(&self.container, None))
            .map_err(|e| match e {
                Error::DockerResponseServerError {
                    status_code: 404, ..
                } => ConnectError {
                    usage: true,
                    message: format!("no container named '{}'", self.container),
                },
                e => ConnectError::failed(format!("docker: {e}")),
            })?;
        let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        if !running {
            return Err(ConnectError::failed(format!(
                "container '{}' is not running",
                self.container
            )));
        }
        info.id
            .ok_or_else(|| ConnectError::failed("docker: the container has no id"))
    }

    fn upload(&self, id: &str, agent: &AgentBinary) -> Result<(), ConnectError> {
        let bytes = std::fs::read(&agent.path)
            .map_err(|e| ConnectError::failed(format!("{}: {e}", agent.path.display())))?;
        let mut tar = tar::Builder::new(Vec::new());
        let dir = |path: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            h.set_uid(0);
            h.set_gid(0);
            (h, path.to_owned())
        };
        let tag_dir = format!(".ferry/agent/{}/", agent.tag);
        for (mut h, p) in [dir(".ferry/"), dir(".ferry/agent/"), dir(&tag_dir)] {
            tar.append_data(&mut h, p, io::empty())
                .map_err(|e| ConnectError::failed(e.to_string()))?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o755);
        h.set_size(bytes.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        tar.append_data(&mut h, format!("{tag_dir}ferry"), &bytes[..])
            .map_err(|e| ConnectError::failed(e.to_string()))?;
        let archive = tar
            .into_inner()
            .map_err(|e| ConnectError::failed(e.to_string()))?;
        let opts = bollard::query_parameters::UploadToContainerOptionsBuilder::new()
            .path("/")
            .build();
        self.rt
            .block_on(self.docker.upload_to_container(
                id,
                Some(opts),
                bollard::body_full(archive.into()),
            ))
            .map_err(|e| ConnectError::failed(format!("uploading the agent: {e}")))
    }

    fn exec(&self, id: &str, agent: &AgentBinary) -> Result<Link, ConnectError> {
        use bollard::container::LogOutput;
        use bollard::exec::{CreateExecOptions, StartExecResults};
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;

        let cmd = vec![container_agent_path(&agent.tag), "agent".to_owned()];
        let opts = CreateExecOptions {
            cmd: Some(cmd),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            user: self.user.clone(),
            ..Default::default()
        };
        let started = self.rt.block_on(async {
            let exec = self.docker.create_exec(id, opts).await?;
            self.docker.start_exec(&exec.id, None).await
        });
        let (mut output, mut input) = match started {
            Ok(StartExecResults::Attached { output, input }) => (output, input),
            Ok(StartExecResults::Detached) => {
                return Err(ConnectError::failed("docker: the exec did not attach"));
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
        let mut reader = ChanReader {
            rx: out_rx,
            cur: bytes::Bytes::new(),
        };
        let guard = TaskGuard(vec![reading, writing]);
        match greet(&mut reader, &stderr)? {
            Greeting::Agent => Ok(Link {
                reader: Box::new(reader),
                writer: Box::new(ChanWriter {
                    tx: in_tx,
                    buf: Vec::new(),
                }),
                guard: Box::new(guard),
                stderr,
            }),
            Greeting::Need(_) => Err(ConnectError::failed("unexpected answer from the agent")),
        }
    }
}

impl Transport for DockerTransport {
    fn connect(&mut self) -> Result<Link, ConnectError> {
        let agent = agent()?;
        let id = self.find()?;
        match self.exec(&id, &agent) {
            Ok(link) => Ok(link),
            Err(first) => {
                // Most likely not installed yet (or removed): upload it and try once more.
                self.upload(&id, &agent)?;
                self.exec(&id, &agent).map_err(|e| ConnectError {
                    usage: false,
                    message: format!("{} (before installing: {})", e.message, first.message),
                })
            }
        }
    }

    fn compress(&self) -> bool {
        // The Docker socket is local unless DOCKER_HOST says otherwise.
        std::env::var("DOCKER_HOST")
            .is_ok_and(|h| h.starts_with("tcp://") || h.starts_with("ssh://"))
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
