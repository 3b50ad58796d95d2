//! Fixtures for remote endpoints: Docker images and containers, an `sshd` on 127.0.0.1 with a
//! dedicated user, the kubectl stand-in script, and the static agent binary.
//!
//! Everything here fails the test with a message naming what is missing (Docker, `/bin/busybox`,
//! `sshd`, root...): nothing is skipped silently.
//!
//! - Images are built `FROM scratch` (nothing can be pulled), at most once per test process and
//!   reused across processes: a build checks `docker image inspect` first and compares the
//!   `ferry.recipe` label (a hash of the recipe), so changing a recipe below rebuilds the image
//!   under the same tag. Builds are serialised by a `OnceLock` per image inside a process and by
//!   an `flock` on [`IMAGE_LOCK`] across processes.
//! - Every [`Container`] carries the label `ferry-test-pid=<pid>`; containers left behind by a
//!   test process that no longer exists (killed before its `Drop` ran) are removed the first time
//!   a process starts a container.
//! - [`Sshd`] logs in as one of eight dedicated users (`ferrytest0` .. `ferrytest7`, created on
//!   first use), one per concurrently running `Sshd`, each with its own home directory that is
//!   wiped at start and at the end. Tests never write into the real `/root`.

use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::{self, DEADLINE, Tree};

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Polls `f` every 20 ms until it returns true; panics after `timeout` naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= end {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `docker ARGS...` (not run yet).
fn docker<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new("docker");
    c.args(args).stdin(Stdio::null());
    c
}

/// Runs `cmd` to completion; a missing program fails the test with `needs`.
fn output(cmd: &mut Command, needs: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?} failed ({e}): {needs}"))
}

const NEEDS_DOCKER: &str = "these tests need the `docker` CLI and a running Docker Engine \
                            (the current user must be allowed to use it)";

/// Runs `docker ARGS...` and panics (with its output) unless it succeeds.
fn docker_ok<I, S>(args: I, what: &str) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = docker(args);
    let out = output(&mut cmd, NEEDS_DOCKER);
    assert!(
        out.status.success(),
        "{what}: {cmd:?} failed ({})\n{}",
        out.status,
        show(&out)
    );
    out
}

/// Stdout and stderr of `out`, for failure messages.
fn show(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` with `input` on its stdin (written on a thread, so a big input cannot deadlock
/// against the output pipes).
fn output_with_stdin(cmd: &mut Command, input: &[u8], needs: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd:?} failed ({e}): {needs}"));
    let mut stdin = child.stdin.take().expect("child stdin");
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        // A command that exits without reading everything closes the pipe: not our problem here.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("waiting for the child");
    writer.join().expect("stdin writer thread");
    out
}

/// An exclusive `flock` on a file, released when dropped.
struct FileLock {
    _file: fs::File,
}

impl FileLock {
    /// Waits for the lock on `path` (created if missing).
    fn acquire(path: &Path) -> FileLock {
        Self::lock(path, true).expect("a blocking flock returns only when locked")
    }

    /// Takes the lock on `path` if nobody holds it.
    fn try_acquire(path: &Path) -> Option<FileLock> {
        Self::lock(path, false)
    }

    fn lock(path: &Path, block: bool) -> Option<FileLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("opening the lock file {}: {e}", path.display()));
        let op = if block {
            libc::LOCK_EX
        } else {
            libc::LOCK_EX | libc::LOCK_NB
        };
        loop {
            // SAFETY: flock(2) on a descriptor we own for the duration of the call.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Some(FileLock { _file: file });
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) if !block => return None,
                _ => panic!("flock {}: {e}", path.display()),
            }
        }
    }
}

/// FNV-1a over `parts` (a cheap, stable fingerprint of an image recipe).
fn fingerprint(parts: &[&[u8]]) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for p in parts {
        for b in p.iter().chain(&[0xff]) {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

// ---------------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------------

/// Taken (with `flock`) around every image check-and-build, across test processes.
pub const IMAGE_LOCK: &str = "/tmp/ferry-test-images.lock";

const BUSYBOX: &str = "/bin/busybox";

const BUSYBOX_TAG: &str = "ferry-test-busybox:1";

const NOSHELL_TAG: &str = "ferry-test-noshell:1";

/// The busybox image: `/bin/busybox` with every applet linked in `/bin` (so `/bin/sh`), users
/// `root` (uid 0, home `/root`) and `node` (uid 1000, gid 1000, home `/home/node`, owned by
/// 1000), `/tmp` (1777), `/root`, `/srv`; it runs `sleep 1000000`. Built on first use.
pub fn busybox_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| ensure_image(&busybox_recipe()));
    BUSYBOX_TAG
}

/// The image with no shell anywhere: busybox only as `/pause/sleep` (busybox picks its applet
/// from the file name, so this copy can only sleep: no applet links, no `/bin/sh`), `/etc/passwd`
/// with root, directories `/srv`, `/tmp` (1777) and `/root`. Its entrypoint is
/// `/pause/sleep 1000000`. Files go in and out with `docker cp` (see [`Container::cp_in`]).
pub fn noshell_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| ensure_image(&noshell_recipe()));
    NOSHELL_TAG
}

/// What goes into a build context.
struct Recipe {
    tag: &'static str,
    /// The Dockerfile, without the final `LABEL ferry.recipe=...` line.
    dockerfile: String,
    /// (path in the context, contents, mode); parent directories are created 0755.
    files: Vec<(&'static str, Vec<u8>, u32)>,
    /// (path in the context, mode).
    dirs: Vec<(&'static str, u32)>,
}

impl Recipe {
    fn fingerprint(&self) -> String {
        let mut parts: Vec<Vec<u8>> = vec![self.tag.into(), self.dockerfile.clone().into()];
        for (p, data, mode) in &self.files {
            parts.push(format!("{p} {mode:o}").into());
            parts.push(data.clone());
        }
        for (p, mode) in &self.dirs {
            parts.push(format!("{p}/ {mode:o}").into());
        }
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        fingerprint(&refs)
    }
}

fn busybox_recipe() -> Recipe {
    busybox_recipe_with(BUSYBOX_TAG, static_busybox())
}

const ARM64_BUSYBOX_TAG: &str = "ferry-test-busybox-arm64:1";

/// Where scripts/test.sh puts Debian's arm64 `busybox-static` (`$FERRY_TEST_ARM64_BUSYBOX`
/// overrides).
const ARM64_BUSYBOX: &str = "/usr/local/lib/ferry-test/busybox-arm64";

const ARM64_HINT: &str = "scripts/test.sh prepares it: `dpkg --add-architecture arm64 && apt-get \
                          update && apt-get download busybox-static:arm64`, `dpkg -x` it and copy \
                          bin/busybox to /usr/local/lib/ferry-test/busybox-arm64";

/// The busybox image of [`busybox_image`] with Debian's arm64 busybox: every process in it
/// runs under qemu (checked first: [`require_aarch64_emulation`]).
pub fn arm64_busybox_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        require_aarch64_emulation();
        let path = std::env::var_os("FERRY_TEST_ARM64_BUSYBOX")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(ARM64_BUSYBOX));
        let data = fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "the arm64 test image needs Debian's arm64 busybox-static at {}: {e}; {ARM64_HINT}",
                path.display()
            )
        });
        assert_eq!(
            data.get(0x12..0x14),
            Some(&[0xb7, 0][..]),
            "{} is not an aarch64 ELF binary; {ARM64_HINT}",
            path.display()
        );
        match elf_interpreter(&data) {
            Ok(None) => {}
            other => panic!(
                "{} is not a static ELF binary ({other:?}); {ARM64_HINT}",
                path.display()
            ),
        }
        ensure_image(&busybox_recipe_with(ARM64_BUSYBOX_TAG, data))
    });
    ARM64_BUSYBOX_TAG
}

/// Fails (with the fix) unless the kernel runs aarch64 binaries through qemu for every process,
/// containers included: a `qemu-aarch64` binfmt_misc entry, enabled, with the F flag (the
/// interpreter is opened at registration, so it works inside a container's root).
pub fn require_aarch64_emulation() {
    const FIX: &str = "as root: `apt-get install qemu-user-static`, `mount -t binfmt_misc \
                       binfmt_misc /proc/sys/fs/binfmt_misc` (if not mounted), then `cat \
                       /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register` \
                       (scripts/test.sh does all this)";
    let entry = "/proc/sys/fs/binfmt_misc/qemu-aarch64";
    let text = fs::read_to_string(entry)
        .unwrap_or_else(|e| panic!("no aarch64 emulation: {entry}: {e}; {FIX}"));
    assert!(
        text.lines().next() == Some("enabled"),
        "no aarch64 emulation: {entry} is not enabled:\n{text}\n{FIX}"
    );
    let flags = text
        .lines()
        .find_map(|l| l.strip_prefix("flags: "))
        .unwrap_or("");
    assert!(
        flags.contains('F'),
        "aarch64 emulation without the F flag (flags {flags:?}): containers cannot reach the \
         interpreter; {FIX}"
    );
}

/// The static aarch64 agent: `$FERRY_AGENT_AARCH64` if set, else
/// `<workspace>/target/aarch64-unknown-linux-gnu/agent/ferry`. Panics (with the command that
/// builds it) if it is missing.
pub fn aarch64_agent() -> PathBuf {
    let p = std::env::var_os("FERRY_AGENT_AARCH64")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/aarch64-unknown-linux-gnu/agent/ferry")
        });
    let data = fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "the aarch64 agent is missing: {}: {e}; build it with `cargo build --profile agent \
             --target aarch64-unknown-linux-gnu -p ferry` (needs `rustup target add \
             aarch64-unknown-linux-gnu` and Debian's gcc-aarch64-linux-gnu; scripts/test.sh)",
            p.display()
        )
    });
    assert_eq!(
        (data.get(0x12..0x14), elf_interpreter(&data)),
        (Some(&[0xb7, 0][..]), Ok(None)),
        "{} is not a static aarch64 ELF binary",
        p.display()
    );
    p
}

fn busybox_recipe_with(tag: &'static str, bb: Vec<u8>) -> Recipe {
    Recipe {
        tag,
        dockerfile: r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
COPY rootfs/ /
RUN chown 1000:1000 /home/node && chmod 1777 /tmp && chmod 0700 /root
CMD ["/bin/sleep","1000000"]
"#
        .to_owned(),
        files: vec![
            ("busybox", bb, 0o755),
            (
                "rootfs/etc/passwd",
                b"root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000:node:/home/node:/bin/sh\n"
                    .to_vec(),
                0o644,
            ),
            (
                "rootfs/etc/group",
                b"root:x:0:\nnode:x:1000:\n".to_vec(),
                0o644,
            ),
        ],
        dirs: vec![
            ("rootfs/tmp", 0o1777),
            ("rootfs/root", 0o700),
            ("rootfs/srv", 0o755),
            ("rootfs/home/node", 0o755),
        ],
    }
}

fn noshell_recipe() -> Recipe {
    let bb = static_busybox();
    Recipe {
        tag: NOSHELL_TAG,
        dockerfile: r#"FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/pause/sleep","1000000"]
"#
        .to_owned(),
        files: vec![
            ("rootfs/pause/sleep", bb, 0o755),
            (
                "rootfs/etc/passwd",
                b"root:x:0:0:root:/root:/sbin/nologin\n".to_vec(),
                0o644,
            ),
            ("rootfs/etc/group", b"root:x:0:\n".to_vec(), 0o644),
        ],
        dirs: vec![
            ("rootfs/tmp", 0o1777),
            ("rootfs/root", 0o700),
            ("rootfs/srv", 0o755),
        ],
    }
}

/// The bytes of `/bin/busybox`, checked to be a statically linked ELF (an image `FROM scratch`
/// has no dynamic loader).
fn static_busybox() -> Vec<u8> {
    let data = fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!(
            "the test images need a statically linked busybox at {BUSYBOX} \
             (Debian: apt-get install busybox-static): {e}"
        )
    });
    match elf_interpreter(&data) {
        Err(why) => panic!("{BUSYBOX} is not a usable ELF binary: {why}"),
        Ok(Some(interp)) => panic!(
            "{BUSYBOX} is dynamically linked (interpreter {interp}); the test images are built \
             FROM scratch and need the static one (Debian: apt-get install busybox-static)"
        ),
        Ok(None) => data,
    }
}

/// The `PT_INTERP` of a little-endian ELF64 file (`None` when statically linked).
fn elf_interpreter(data: &[u8]) -> Result<Option<String>, String> {
    let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        data.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if data.get(..5) != Some(b"\x7fELF\x02") || data.get(5) != Some(&1) {
        return Err("not a little-endian 64-bit ELF file".into());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Err("truncated ELF header".into());
    };
    for i in 0..usize::from(phnum) {
        let ph = phoff as usize + i * usize::from(phentsize);
        let p_type = data
            .get(ph..ph + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or("truncated program header")?;
        if p_type == 3 {
            let (Some(off), Some(size)) = (u64_at(ph + 8), u64_at(ph + 32)) else {
                return Err("truncated PT_INTERP header".into());
            };
            let name = data
                .get(off as usize..(off + size) as usize)
                .ok_or("PT_INTERP out of the file")?;
            return Ok(Some(
                String::from_utf8_lossy(name)
                    .trim_end_matches('\0')
                    .to_owned(),
            ));
        }
    }
    Ok(None)
}

/// The `ferry.recipe` label of image `tag`, `None` if there is no such image.
fn image_recipe_label(tag: &str) -> Option<String> {
    let mut cmd = docker([
        "image",
        "inspect",
        "--format",
        r#"{{index .Config.Labels "ferry.recipe"}}"#,
        tag,
    ]);
    let out = output(&mut cmd, NEEDS_DOCKER);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Builds `r.tag` unless an image with that tag and the same recipe fingerprint exists.
fn ensure_image(r: &Recipe) {
    let want = r.fingerprint();
    let _lock = FileLock::acquire(Path::new(IMAGE_LOCK));
    if image_recipe_label(r.tag).as_deref() == Some(want.as_str()) {
        return;
    }
    let started = Instant::now();
    let ctx = tempfile::Builder::new()
        .prefix("ferry-image-")
        .tempdir()
        .expect("creating a temp dir for a docker build context");
    for (p, mode) in &r.dirs {
        let d = ctx.path().join(p);
        support::mkdir(&d);
        fs::set_permissions(&d, fs::Permissions::from_mode(*mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", d.display()));
    }
    for (p, data, mode) in &r.files {
        let f = ctx.path().join(p);
        support::write(&f, data);
        fs::set_permissions(&f, fs::Permissions::from_mode(*mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", f.display()));
    }
    let dockerfile = format!("{}LABEL ferry.recipe={want}\n", r.dockerfile);
    support::write(&ctx.path().join("Dockerfile"), &dockerfile);
    // The classic builder (Docker 20.10 without buildx) needs no network for FROM scratch.
    let mut cmd = docker([
        OsStr::new("build"),
        OsStr::new("--quiet"),
        OsStr::new("--tag"),
        OsStr::new(r.tag),
        ctx.path().as_os_str(),
    ]);
    let out = output(&mut cmd, NEEDS_DOCKER);
    assert!(
        out.status.success(),
        "building the test image {} failed ({}):\n{dockerfile}\n{}",
        r.tag,
        out.status,
        show(&out)
    );
    eprintln!(
        "remote_support: built {} in {:.1} s",
        r.tag,
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Containers
// ---------------------------------------------------------------------------------------------

/// The label every test container carries (value: the pid of the test process).
const PID_LABEL: &str = "ferry-test-pid";

/// A running container, removed with its anonymous volumes (`docker rm -fv`) when dropped.
/// `docker ARGS...`, which must succeed; its standard output, trimmed.
pub fn docker_run_ok(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("running docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub struct Container {
    /// `ferry-test-<pid>-<counter>`: also the pod name the kubectl stand-in maps to.
    pub name: String,
    pub id: String,
    /// A scratch directory on the host for `docker cp` (kept with the container).
    scratch: TempDir,
}

impl Container {
    /// `docker run -d --name ferry-test-<pid>-<n> EXTRA_ARGS... IMAGE`: `extra_args` are
    /// `docker run` options (`-u`, `-e`, `--tmpfs`...). Panics if the container does not start.
    pub fn start(image: &str, extra_args: &[&str]) -> Container {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        static CLEANED: OnceLock<()> = OnceLock::new();
        CLEANED.get_or_init(remove_stale_containers);
        let pid = std::process::id();
        let name = format!(
            "ferry-test-{pid}-{}",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let label = format!("{PID_LABEL}={pid}");
        let mut args = vec!["run", "-d", "--name", &name, "--label", &label];
        args.extend_from_slice(extra_args);
        args.push(image);
        let mut cmd = docker(&args);
        let out = output(&mut cmd, NEEDS_DOCKER);
        if !out.status.success() {
            // It may exist, created but not started.
            let _ = docker(["rm", "-f", name.as_str()]).output();
            panic!(
                "starting a test container: {cmd:?} failed ({})\n{}",
                out.status,
                show(&out)
            );
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(!id.is_empty(), "docker run printed no container id");
        let scratch = tempfile::Builder::new()
            .prefix("ferry-cp-")
            .tempdir()
            .expect("creating a scratch dir for docker cp");
        Container { name, id, scratch }
    }

    /// `docker exec NAME ARGS...` (as the image's user), whatever its outcome.
    pub fn exec(&self, args: &[&str]) -> Output {
        output(
            &mut docker(["exec", self.name.as_str()].iter().chain(args)),
            NEEDS_DOCKER,
        )
    }

    /// `docker exec -u USER NAME ARGS...` (`USER` is a name or `uid[:gid]`).
    pub fn exec_as(&self, user: &str, args: &[&str]) -> Output {
        output(
            &mut docker(["exec", "-u", user, self.name.as_str()].iter().chain(args)),
            NEEDS_DOCKER,
        )
    }

    /// Runs `sh -c SCRIPT` (busybox image) and returns its stdout; panics unless it exits 0.
    pub fn sh(&self, script: &str) -> String {
        let out = self.exec(&["sh", "-c", script]);
        assert!(
            out.status.success(),
            "in container {}: sh -c {script:?} failed ({})\n{}",
            self.name,
            out.status,
            show(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `docker restart -t 0` (the main process is killed at once, the filesystem kept).
    pub fn restart(&self) {
        docker_ok(
            ["restart", "-t", "0", self.name.as_str()],
            "restarting a test container",
        );
    }

    /// True while the container is running.
    pub fn running(&self) -> bool {
        let mut cmd = docker([
            "inspect",
            "--format",
            "{{.State.Running}}",
            self.name.as_str(),
        ]);
        let out = output(&mut cmd, NEEDS_DOCKER);
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "true"
    }

    /// Writes `data` to `path` in the container, creating parent directories, as root (busybox
    /// image: it runs `sh -c 'cat > path'`; see [`Container::cp_write_file`] otherwise).
    pub fn write_file(&self, path: &str, data: impl AsRef<[u8]>) {
        let mut cmd = docker([
            "exec",
            "-i",
            "-u",
            "0",
            &self.name,
            "sh",
            "-c",
            r#"mkdir -p "$(dirname "$1")" && cat > "$1""#,
            "sh",
            path,
        ]);
        let out = output_with_stdin(&mut cmd, data.as_ref(), NEEDS_DOCKER);
        assert!(
            out.status.success(),
            "writing {path} in container {} failed ({})\n{}",
            self.name,
            out.status,
            show(&out)
        );
    }

    /// The contents of the regular file at `path` in the container, `None` if there is none
    /// (busybox image; see [`Container::cp_read_file`] otherwise).
    pub fn read_file(&self, path: &str) -> Option<Vec<u8>> {
        let out = self.exec(&["sh", "-c", r#"[ -f "$1" ] || exit 3; cat "$1""#, "sh", path]);
        match out.status.code() {
            Some(0) => Some(out.stdout),
            Some(3) => None,
            _ => panic!(
                "reading {path} in container {} failed ({})\n{}",
                self.name,
                out.status,
                show(&out)
            ),
        }
    }

    /// Every entry under the directory `path` that is not a directory (files, symlinks...), as
    /// sorted `/`-separated relative paths. A missing directory lists as empty, so this can be
    /// polled with [`wait_until`] (busybox image; use [`Container::tree`] otherwise).
    pub fn list(&self, path: &str) -> Vec<String> {
        let out = self.exec(&[
            "sh",
            "-c",
            r#"[ -e "$1" ] || exit 0; cd "$1" && find . ! -type d"#,
            "sh",
            path,
        ]);
        assert!(
            out.status.success(),
            "listing {path} in container {} failed ({})\n{}",
            self.name,
            out.status,
            show(&out)
        );
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.strip_prefix("./").unwrap_or(l).to_owned())
            .collect();
        v.sort();
        v
    }

    /// `docker cp HOST_PATH NAME:CONTAINER_PATH` (any image: no shell needed). A directory is
    /// copied recursively, into `CONTAINER_PATH` if that is an existing directory, as
    /// `CONTAINER_PATH` otherwise; its parent must exist. Entries end up owned by root.
    pub fn cp_in(&self, host_path: &Path, container_path: &str) {
        let dest = format!("{}:{container_path}", self.name);
        docker_ok(
            [OsStr::new("cp"), host_path.as_os_str(), OsStr::new(&dest)],
            "copying into a test container",
        );
    }

    /// `docker cp NAME:CONTAINER_PATH HOST_PATH` (any image). Panics if the path is missing.
    pub fn cp_out(&self, container_path: &str, host_path: &Path) {
        assert!(
            self.try_cp_out(container_path, host_path),
            "{container_path} does not exist in container {}",
            self.name
        );
    }

    /// Like [`Container::cp_out`], but false when `container_path` does not exist.
    fn try_cp_out(&self, container_path: &str, host_path: &Path) -> bool {
        let src = format!("{}:{container_path}", self.name);
        let mut cmd = docker([OsStr::new("cp"), OsStr::new(&src), host_path.as_os_str()]);
        let out = output(&mut cmd, NEEDS_DOCKER);
        if out.status.success() {
            return true;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("No such container:path") || err.contains("Could not find the file") {
            return false;
        }
        panic!(
            "{cmd:?} failed ({}) in container {}\n{}",
            out.status,
            self.name,
            show(&out)
        );
    }

    /// A fresh host path in this container's scratch directory.
    fn scratch_path(&self, what: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        self.scratch
            .path()
            .join(format!("{what}-{}", N.fetch_add(1, Ordering::Relaxed)))
    }

    /// Writes `data` to `path` with `docker cp` (any image; the parent directory must exist).
    pub fn cp_write_file(&self, path: &str, data: impl AsRef<[u8]>) {
        let staged = self.scratch_path("in");
        support::write(&staged, data);
        self.cp_in(&staged, path);
        support::remove(&staged);
    }

    /// The contents of the file at `path` via `docker cp` (any image), `None` if it is missing.
    pub fn cp_read_file(&self, path: &str) -> Option<Vec<u8>> {
        let staged = self.scratch_path("out");
        if !self.try_cp_out(path, &staged) {
            return None;
        }
        let m = fs::symlink_metadata(&staged).expect("docker cp output");
        assert!(
            m.is_file(),
            "{path} in container {} is not a regular file ({:?})",
            self.name,
            m.file_type()
        );
        let data = support::read(&staged);
        support::remove(&staged);
        Some(data)
    }

    /// A snapshot ([`support::tree`]) of the directory `path`, copied out with `docker cp`
    /// (any image; symlinks and executable bits are kept). Panics if `path` does not exist.
    pub fn tree(&self, path: &str) -> Tree {
        let staged = self.scratch_path("tree");
        self.cp_out(path, &staged);
        let t = support::tree(&staged);
        support::remove(&staged);
        t
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(["rm", "-fv", self.name.as_str()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// True if a process `pid` exists (in our pid namespace).
fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes test containers whose test process is gone (it was killed before `Drop` ran).
fn remove_stale_containers() {
    let mut cmd = docker([
        "ps",
        "-a",
        "--filter",
        &format!("label={PID_LABEL}"),
        "--format",
        &format!("{{{{.ID}}}} {{{{.Label \"{PID_LABEL}\"}}}}"),
    ]);
    let out = output(&mut cmd, NEEDS_DOCKER);
    assert!(
        out.status.success(),
        "listing test containers: {cmd:?} failed ({})\n{}",
        out.status,
        show(&out)
    );
    let me = std::process::id() as i32;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((id, pid)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<i32>() else {
            continue;
        };
        if pid != me && !pid_alive(pid) {
            let _ = docker(["rm", "-f", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// sshd
// ---------------------------------------------------------------------------------------------

/// How many [`Sshd`]s may run at once (each has its own user and home).
const SSHD_SLOTS: usize = 8;

/// Serialises `useradd`/`usermod` across test processes (they fail on a locked `/etc/passwd`).
const ACCOUNTS_LOCK: &str = "/tmp/ferry-test-accounts.lock";

const SSHD: &str = "/usr/sbin/sshd";

/// `sshd` listening on 127.0.0.1 (a free port), accepting one client key, for one of the
/// dedicated users `ferrytest<slot>`. The client side is the `ssh_config` at
/// [`Sshd::config_path`], whose host `ferry-test` logs in as that user. Dropping it kills sshd
/// and every process of that user, and wipes the home directory.
pub struct Sshd {
    child: Child,
    dir: TempDir,
    port: u16,
    user: String,
    uid: u32,
    home: PathBuf,
    _slot: FileLock,
}

impl Sshd {
    /// The name of the host in [`Sshd::config_path`].
    pub const HOST: &'static str = "ferry-test";

    /// Generates keys, takes a free user slot (waiting up to two minutes for one), gives its
    /// user a fresh home, and starts sshd. Needs root, `sshd`, `ssh`, `ssh-keygen`, `useradd`.
    pub fn start() -> Sshd {
        assert!(
            support::is_root(),
            "the sshd fixture needs root (it creates users and runs sshd on 127.0.0.1)"
        );
        for (p, pkg) in [
            (SSHD, "openssh-server"),
            ("/usr/bin/ssh", "openssh-client"),
            ("/usr/bin/ssh-keygen", "openssh-client"),
            ("/usr/sbin/useradd", "passwd"),
        ] {
            assert!(
                Path::new(p).exists(),
                "the sshd fixture needs {p} (Debian package {pkg})"
            );
        }
        let (slot, lock) = take_slot();
        let user = format!("ferrytest{slot}");
        let home = PathBuf::from(format!("/tmp/ferry-sshd-home-{slot}"));
        let uid = ensure_user(&user, &home);
        kill_user_processes(uid);
        fresh_home(&home, uid);

        let dir = tempfile::Builder::new()
            .prefix("ferry-sshd-")
            .tempdir()
            .expect("creating the sshd temp dir");
        // sshd reads authorized_keys as the user: the directory must be traversable.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod the sshd temp dir");
        let host_key = dir.path().join("host_ed25519");
        let client_key = dir.path().join("client_ed25519");
        for k in [&host_key, &client_key] {
            let mut cmd = Command::new("ssh-keygen");
            cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", "ferry-test", "-f"])
                .arg(k)
                .stdin(Stdio::null());
            let out = output(
                &mut cmd,
                "the sshd fixture needs ssh-keygen (openssh-client)",
            );
            assert!(out.status.success(), "ssh-keygen failed\n{}", show(&out));
        }
        let authorized = dir.path().join("authorized_keys");
        fs::copy(client_key.with_extension("pub"), &authorized).expect("writing authorized_keys");
        fs::set_permissions(&authorized, fs::Permissions::from_mode(0o644))
            .expect("chmod authorized_keys");
        // sshd's privilege separation directory (normally made by the init script).
        support::mkdir(Path::new("/run/sshd"));

        let config = dir.path().join("sshd_config");
        let log = dir.path().join("sshd.log");
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            support::write(
                &config,
                format!(
                    "ListenAddress 127.0.0.1\n\
                     Port {port}\n\
                     HostKey {host}\n\
                     AuthorizedKeysFile {auth}\n\
                     PidFile {pid}\n\
                     PasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\n\
                     PubkeyAuthentication yes\n\
                     PermitRootLogin yes\n\
                     StrictModes no\n\
                     UsePAM no\n\
                     PrintMotd no\n\
                     PrintLastLog no\n\
                     MaxStartups 100\n\
                     MaxSessions 100\n\
                     LogLevel INFO\n",
                    host = host_key.display(),
                    auth = authorized.display(),
                    pid = dir.path().join("sshd.pid").display(),
                ),
            );
            let log_file = fs::File::create(&log).expect("creating the sshd log");
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {SSHD}: {e}"));
            let listening = format!("Server listening on 127.0.0.1 port {port}");
            let end = Instant::now() + DEADLINE;
            loop {
                let text = fs::read_to_string(&log).unwrap_or_default();
                if text.contains(&listening) && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let sshd = Sshd {
                        child,
                        dir,
                        port,
                        user,
                        uid,
                        home,
                        _slot: lock,
                    };
                    sshd.write_client_config(&client_key);
                    return sshd;
                }
                if let Some(st) = child.try_wait().expect("waiting for sshd") {
                    last_log = format!("sshd exited ({st}):\n{text}");
                    break;
                }
                if Instant::now() >= end {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "sshd did not start listening on port {port} within {DEADLINE:?}:\n{text}"
                    );
                }
                thread::sleep(Duration::from_millis(20));
            }
            if !last_log.contains("Address already in use") && !last_log.contains("Cannot bind") {
                break;
            }
        }
        panic!("sshd failed to start\n{last_log}");
    }

    fn write_client_config(&self, key: &Path) {
        support::write(
            &self.config_path(),
            format!(
                "Host {host}\n\
                 \tHostName 127.0.0.1\n\
                 \tPort {port}\n\
                 \tUser {user}\n\
                 \tIdentityFile {key}\n\
                 \tIdentitiesOnly yes\n\
                 \tStrictHostKeyChecking no\n\
                 \tUserKnownHostsFile /dev/null\n\
                 \tLogLevel ERROR\n\
                 \tBatchMode yes\n",
                host = Self::HOST,
                port = self.port,
                user = self.user,
                key = key.display(),
            ),
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The client `ssh_config` (host [`Sshd::HOST`]).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// `ssh -F <config_path>`: the value for `FERRY_SSH_COMMAND` (split on whitespace; the path
    /// has none).
    pub fn ssh_command(&self) -> String {
        let cfg = self.config_path();
        let cfg = cfg.to_str().expect("temp paths are UTF-8");
        assert!(
            !cfg.contains(char::is_whitespace),
            "the ssh_config path {cfg:?} contains whitespace"
        );
        format!("ssh -F {cfg}")
    }

    /// Runs `cmd` (a shell command line) on the "remote" as the test user, over ssh.
    pub fn run(&self, cmd: &str) -> Output {
        let mut c = Command::new("ssh");
        c.arg("-F")
            .arg(self.config_path())
            .arg(Self::HOST)
            .arg(cmd)
            .stdin(Stdio::null());
        output(&mut c, "the sshd fixture needs ssh (openssh-client)")
    }

    /// The remote user's name (`ferrytest<slot>`).
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The remote user's home: a local directory, fresh for this `Sshd`, owned by the user.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// What sshd has logged so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Processes running as the remote user: (pid, command line). Empty once every session has
    /// ended, so a test can check that nothing (an agent...) was left behind.
    pub fn user_processes(&self) -> Vec<(i32, String)> {
        user_processes(self.uid)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        // (After 5 s, wait_with_deadline SIGKILLs it.)
        let _ = support::wait_with_deadline(&mut self.child, Duration::from_secs(5));
        kill_user_processes(self.uid);
        let _ = fs::remove_dir_all(&self.home);
    }
}

/// Waits for one of the [`SSHD_SLOTS`] user slots to be free (across processes).
fn take_slot() -> (usize, FileLock) {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        for slot in 0..SSHD_SLOTS {
            let path = PathBuf::from(format!("/tmp/ferry-test-sshd-slot-{slot}.lock"));
            if let Some(lock) = FileLock::try_acquire(&path) {
                return (slot, lock);
            }
        }
        assert!(
            Instant::now() < end,
            "all {SSHD_SLOTS} sshd fixture slots stayed busy for two minutes"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Creates `user` (home `home`, shell /bin/sh, password `*`: no password, but not "locked",
/// which sshd without PAM would refuse) unless it exists with that home; returns its uid.
fn ensure_user(user: &str, home: &Path) -> u32 {
    let _lock = FileLock::acquire(Path::new(ACCOUNTS_LOCK));
    let getent = |db: &str| {
        let out = output(
            Command::new("getent").args([db, user]),
            "the sshd fixture needs getent (libc-bin)",
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let home_s = home.to_str().expect("UTF-8 home path");
    let fix = match getent("passwd") {
        None => Some("useradd"),
        Some(line) => {
            let f: Vec<&str> = line.split(':').collect();
            let shadow = getent("shadow").unwrap_or_default();
            let locked = shadow.split(':').nth(1).is_some_and(|p| p.starts_with('!'));
            (f.get(5) != Some(&home_s) || f.get(6) != Some(&"/bin/sh") || locked)
                .then_some("usermod")
        }
    };
    if let Some(tool) = fix {
        let mut cmd = Command::new(tool);
        if tool == "useradd" {
            cmd.args(["-M", "-U", "-c", "ferry test user"]);
        }
        cmd.args(["-d", home_s, "-s", "/bin/sh", "-p", "*", user]);
        let out = output(&mut cmd, "the sshd fixture needs useradd/usermod (passwd)");
        assert!(
            out.status.success(),
            "{cmd:?} failed ({})\n{}",
            out.status,
            show(&out)
        );
    }
    let out = output(Command::new("id").args(["-u", user]), "id (coreutils)");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("`id -u {user}` printed no uid ({e})\n{}", show(&out)))
}

/// Empties (recreates) `home`, owned by `uid` and its group.
fn fresh_home(home: &Path, uid: u32) {
    if support::exists(home) {
        fs::remove_dir_all(home).unwrap_or_else(|e| panic!("wiping {}: {e}", home.display()));
    }
    support::mkdir(home);
    fs::set_permissions(home, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", home.display()));
    // The user's private group (useradd -U) has the same id on a fresh Debian, but ask.
    let out = output(
        Command::new("id").args(["-g", &uid.to_string()]),
        "id (coreutils)",
    );
    let gid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(uid);
    std::os::unix::fs::chown(home, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", home.display()));
}

/// Every process whose real uid is `uid`: (pid, command line).
fn user_processes(uid: u32) -> Vec<(i32, String)> {
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(status) = fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let real_uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|s| s.parse::<u32>().ok());
        if real_uid == Some(uid) {
            let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            v.push((pid, cmdline.trim_end().to_owned()));
        }
    }
    v
}

/// SIGKILLs every process of the dedicated test user `uid` (never root) and waits for them.
fn kill_user_processes(uid: u32) {
    assert_ne!(uid, 0, "refusing to kill root's processes");
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = user_processes(uid);
        if procs.is_empty() {
            return;
        }
        if Instant::now() >= end {
            eprintln!("remote_support: processes of uid {uid} survived SIGKILL: {procs:?}");
            return;
        }
        for (pid, _) in procs {
            // SAFETY: kill(2); these are processes of the fixture's own test user.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0 to find a free port")
        .port()
}

// ---------------------------------------------------------------------------------------------
// kubectl stand-in and static agent
// ---------------------------------------------------------------------------------------------

/// `tests/kubectl-standin`: a POSIX sh script for `FERRY_KUBECTL`. It accepts only
/// `[--context CTX] exec -i -n NAMESPACE POD [-c CONTAINER] -- ARGS...` and runs
/// `docker exec -i POD ARGS...` (the pod name is a [`Container`]'s name); it appends its
/// arguments, space-separated on one line, to `$FERRY_KUBECTL_LOG` when that is set.
pub fn kubectl_standin() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kubectl-standin");
    let m = fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(
        m.permissions().mode() & 0o111 != 0,
        "{} is not executable",
        p.display()
    );
    p
}

const STATIC_AGENT_HINT: &str = "build it with `cargo build --profile agent --target \
                                 x86_64-unknown-linux-musl -p ferry` (see DEVELOPERS.md)";

/// The fully static ferry binary the product uploads into containers: `$FERRY_AGENT` if set,
/// else `<workspace>/target/x86_64-unknown-linux-musl/agent/ferry`. Panics if it is missing.
#[allow(dead_code)] // used by the remote endpoint tests, not written yet
pub fn static_agent() -> PathBuf {
    let from_env = std::env::var_os("FERRY_AGENT").map(PathBuf::from);
    if from_env.is_none() {
        build_static_agent();
    }
    static_agent_from(from_env).unwrap_or_else(|e| panic!("{e}"))
}

/// Builds the static agent where ferry looks for it, once per test process: a no-op when it is
/// up to date (`.ci/run` builds it beforehand), a rebuild when the sources changed, so tests
/// never run a stale agent.
fn build_static_agent() {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--profile",
            "agent",
            "--target",
            "x86_64-unknown-linux-musl",
            "-p",
            "ferry",
        ])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .output()
        .expect("running cargo to build the static agent");
    assert!(
        out.status.success(),
        "building the static agent failed ({STATIC_AGENT_HINT}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    *built = true;
}

/// [`static_agent`]'s logic, with the value of `FERRY_AGENT` passed in.
fn static_agent_from(from_env: Option<PathBuf>) -> Result<PathBuf, String> {
    let (p, origin) = match from_env {
        Some(p) => (p, "FERRY_AGENT"),
        None => (default_static_agent(), "the default location"),
    };
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "static agent missing: {} ({origin}) is not a file; {STATIC_AGENT_HINT}",
            p.display()
        ))
    }
}

fn default_static_agent() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join("target/x86_64-unknown-linux-musl/agent/ferry")
}

// ---------------------------------------------------------------------------------------------
// Self-tests
// ---------------------------------------------------------------------------------------------

#[test]
fn fixtures_busybox_image_users_dirs_and_file_helpers() {
    let c = Container::start(busybox_image(), &[]);
    assert!(c.running(), "the busybox container is not running");
    let out = docker_ok(
        ["inspect", "--format", "{{.Name}}", c.id.as_str()],
        "inspect",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("/{}", c.name)
    );
    // Users, homes and modes.
    assert_eq!(
        c.sh("id -u node; id -g node; echo $HOME"),
        "1000\n1000\n/root\n"
    );
    let out = c.exec_as("node", &["sh", "-c", "echo $HOME; touch ~/w && echo ok"]);
    assert!(
        out.status.success(),
        "node cannot write its home\n{}",
        show(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/home/node\nok\n");
    assert_eq!(
        c.sh("stat -c '%a %u' /tmp /root /srv /home/node"),
        "1777 0\n700 0\n755 0\n755 1000\n"
    );
    // Files in and out (binary-safe, nested directories created).
    let data = support::pseudo_random(7, 100_000);
    c.write_file("/srv/app/sub/dir/blob", &data);
    c.write_file("/srv/app/a.txt", "hello\n");
    assert_eq!(
        c.read_file("/srv/app/sub/dir/blob").as_deref(),
        Some(&data[..])
    );
    assert_eq!(c.read_file("/srv/app/missing"), None);
    assert_eq!(c.list("/srv/app"), ["a.txt", "sub/dir/blob"]);
    assert!(c.list("/srv/nowhere").is_empty());
    let t = c.tree("/srv/app");
    assert_eq!(
        t.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a.txt", "sub", "sub/dir", "sub/dir/blob"]
    );
    // Restart: running again at once, files kept.
    c.restart();
    wait_until(DEADLINE, "the restarted container runs", || c.running());
    assert_eq!(
        c.read_file("/srv/app/a.txt").as_deref(),
        Some(&b"hello\n"[..])
    );
}

#[test]
fn fixtures_noshell_image_has_no_shell_and_cp_helpers_work() {
    let c = Container::start(noshell_image(), &[]);
    assert!(c.running(), "the noshell container is not running");
    for sh in ["/bin/sh", "sh", "/pause/sleep"] {
        let out = c.exec(&[sh, "-c", "true"]);
        assert!(
            !out.status.success(),
            "`{sh} -c true` worked in the no-shell image\n{}",
            show(&out)
        );
    }
    c.cp_write_file("/srv/one.txt", "one\n");
    assert_eq!(
        c.cp_read_file("/srv/one.txt").as_deref(),
        Some(&b"one\n"[..])
    );
    assert_eq!(c.cp_read_file("/srv/none"), None);
    // A whole tree in (with an executable and a symlink), and back out identical.
    let src = tempfile::tempdir().expect("temp dir");
    let tree_in = src.path().join("app");
    support::write(&tree_in.join("d/x.sh"), "#!/bin/sh\n");
    support::set_exec(&tree_in.join("d/x.sh"), true);
    support::write(&tree_in.join("y"), support::pseudo_random(3, 5000));
    support::symlink("d/x.sh", &tree_in.join("link"));
    c.cp_in(&tree_in, "/srv/app");
    assert!(support::diff_trees(&support::tree(&tree_in), &c.tree("/srv/app")).is_none());
    c.restart();
    wait_until(DEADLINE, "the restarted container runs", || c.running());
    assert_eq!(
        c.cp_read_file("/srv/one.txt").as_deref(),
        Some(&b"one\n"[..])
    );
}

#[test]
fn fixtures_container_drop_removes_it() {
    let name = {
        let c = Container::start(busybox_image(), &["-u", "node", "-e", "X=1"]);
        assert_eq!(c.sh("id -u; echo $X"), "1000\n1\n");
        c.name.clone()
    };
    let out = output(&mut docker(["inspect", name.as_str()]), NEEDS_DOCKER);
    assert!(!out.status.success(), "container {name} survived its Drop");
}

#[test]
fn fixtures_sshd_logs_in_as_a_dedicated_user_with_its_own_home() {
    let a = Sshd::start();
    let b = Sshd::start();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.home(), b.home());
    for s in [&a, &b] {
        let out = s.run("echo ok; echo $HOME; pwd; id -u; id -un");
        assert!(
            out.status.success(),
            "ssh failed\n{}\n--- sshd log ---\n{}",
            show(&out),
            s.log()
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!(
                "ok\n{h}\n{h}\n{}\n{}\n",
                s.uid(),
                s.user(),
                h = s.home().display()
            )
        );
        assert_ne!(s.uid(), 0);
        assert!(s.ssh_command().starts_with("ssh -F /"));
        assert_eq!(s.ssh_command().split_whitespace().count(), 3);
        // The home is the user's and writable over ssh; the test sees it on the host.
        let out = s.run("echo hi > ~/f");
        assert!(out.status.success(), "{}", show(&out));
        support::assert_content(&s.home().join("f"), "hi\n");
        wait_until(DEADLINE, "the ssh session's processes end", || {
            s.user_processes().is_empty()
        });
    }
    // The same command through FERRY_SSH_COMMAND's shape, split on whitespace.
    let cmd = a.ssh_command();
    let mut words = cmd.split_whitespace();
    let out = output(
        Command::new(words.next().expect("program"))
            .args(words)
            .args([Sshd::HOST, "echo via-command"]),
        "ssh",
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "via-command\n",
        "{}",
        show(&out)
    );
    let home = a.home().to_owned();
    drop(a);
    assert!(!support::exists(&home), "the home was not wiped at the end");
}

#[test]
fn fixtures_kubectl_standin_runs_docker_exec_and_logs() {
    let c = Container::start(busybox_image(), &[]);
    let tmp = tempfile::tempdir().expect("temp dir");
    let log = tmp.path().join("kubectl.log");
    let run = |args: &[&str], input: &[u8]| {
        let mut cmd = Command::new(kubectl_standin());
        cmd.args(args).env("FERRY_KUBECTL_LOG", &log);
        output_with_stdin(&mut cmd, input, "the kubectl stand-in needs sh and docker")
    };
    let out = run(
        &[
            "--context",
            "kind-x",
            "exec",
            "-i",
            "-n",
            "ns1",
            &c.name,
            "-c",
            "main",
            "--",
            "sh",
            "-c",
            "echo hi",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    // Without the optional parts; stdin goes through and the exit code comes back.
    let out = run(
        &[
            "exec",
            "-i",
            "-n",
            "default",
            &c.name,
            "--",
            "sh",
            "-c",
            "cat; exit 7",
        ],
        b"piped",
    );
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    assert_eq!(out.stdout, b"piped");
    // Any other shape is refused before docker runs.
    for bad in [
        &["exec", "-n", "ns", &c.name, "--", "true"][..],
        &["exec", "-i", "-n", "ns", &c.name, "true"],
        &["exec", "-i", "-n", "ns", &c.name, "--"],
        &["get", "pods"],
        &["--context"],
    ] {
        let out = run(bad, b"");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{bad:?} was accepted\n{}",
            show(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("kubectl-standin:"),
            "{bad:?}: no message on stderr\n{}",
            show(&out)
        );
    }
    let logged = fs::read_to_string(&log).expect("reading the stand-in's log");
    let lines: Vec<&str> = logged.lines().collect();
    assert_eq!(lines.len(), 7, "{logged}");
    assert_eq!(
        lines[0],
        format!(
            "--context kind-x exec -i -n ns1 {} -c main -- sh -c echo hi",
            c.name
        )
    );
    assert_eq!(lines[6], "--context");
}

#[test]
fn fixtures_static_agent_path_logic() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let agent = tmp.path().join("ferry");
    let err = static_agent_from(Some(agent.clone())).expect_err("a missing FERRY_AGENT");
    assert!(err.starts_with("static agent missing: "), "{err}");
    assert!(
        err.contains("FERRY_AGENT") && err.contains("DEVELOPERS.md"),
        "{err}"
    );
    support::write(&agent, "elf");
    assert_eq!(static_agent_from(Some(agent.clone())), Ok(agent));
    // Without FERRY_AGENT: the musl release build in the workspace's target directory.
    let default = default_static_agent();
    let workspace = default
        .ancestors()
        .nth(4)
        .expect("the default path has 4 components under the workspace");
    let manifest = fs::read_to_string(workspace.join("Cargo.toml")).expect("workspace Cargo.toml");
    assert!(
        manifest.contains("[workspace]"),
        "{} is not the workspace root",
        workspace.display()
    );
    assert_eq!(
        default.strip_prefix(workspace),
        Ok(Path::new("target/x86_64-unknown-linux-musl/agent/ferry"))
    );
    match static_agent_from(None) {
        Ok(p) => assert_eq!(p, default),
        Err(e) => assert!(
            e.contains(&default.display().to_string())
                && e.contains(
                    "cargo build --profile agent --target x86_64-unknown-linux-musl -p ferry"
                ),
            "{e}"
        ),
    }
}

#[test]
fn fixtures_elf_check_tells_static_from_dynamic() {
    let bb = fs::read(BUSYBOX).expect("reading /bin/busybox");
    assert_eq!(elf_interpreter(&bb), Ok(None), "{BUSYBOX} should be static");
    let sh = fs::read("/bin/sh").expect("reading /bin/sh (a dynamically linked dash)");
    let interp = elf_interpreter(&sh);
    assert!(
        matches!(interp, Ok(Some(ref i)) if i.contains("ld-linux")),
        "{interp:?}"
    );
    assert!(elf_interpreter(b"#!/bin/sh\n").is_err());
}

#[test]
fn fixtures_wait_until_polls_until_true() {
    let mut n = 0;
    wait_until(DEADLINE, "n reaches 3", || {
        n += 1;
        n >= 3
    });
    assert_eq!(n, 3);
}

#[test]
#[should_panic(expected = "timed out after 50ms waiting until never")]
fn fixtures_wait_until_panics_at_the_deadline() {
    wait_until(Duration::from_millis(50), "never", || false);
}

/// The arguments of `ferry sync ALPHA BETA --json EXTRA...` for a fixture's alpha.
pub fn remote_args(fx: &crate::support::Fixture, beta: &str, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "sync".into(),
        fx.alpha.clone().into(),
        beta.into(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    args
}
