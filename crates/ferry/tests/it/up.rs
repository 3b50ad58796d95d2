//! `ferry up` against real Docker and real Compose v2, with the project in
//! `tests/up-projects/two` (two services, images built locally `FROM scratch` with the
//! machine's static busybox; nothing is pulled).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{Fixture, Session, assert_absent, is, read, write};

/// How long booting may take (a build under a loaded CI machine), before the first event.
const BOOT: Duration = Duration::from_secs(180);

/// A copy of a test compose project with a unique project name; `docker compose down` on drop.
struct Project {
    fx: Fixture,
    dir: PathBuf,
    name: String,
}

impl Project {
    fn new(which: &str) -> Project {
        static N: AtomicUsize = AtomicUsize::new(0);
        let fx = Fixture::new();
        let dir = fx.root.join("project");
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/up-projects")
            .join(which);
        copy_tree(&src, &dir);
        let busybox = fs::read("/bin/busybox").unwrap_or_else(|e| {
            panic!("the test images need a static busybox at /bin/busybox (busybox-static): {e}")
        });
        for ctx in ["web", "worker"] {
            if dir.join(ctx).is_dir() {
                let path = dir.join(ctx).join("busybox");
                fs::write(&path, &busybox).expect("writing busybox");
                crate::support::set_exec(&path, true);
            }
        }
        let name = format!(
            "ferry-up-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        Project { fx, dir, name }
    }

    fn command(&self) -> Command {
        let mut c = self.fx.command();
        c.current_dir(&self.dir)
            .env("COMPOSE_PROJECT_NAME", &self.name)
            .env_remove("COMPOSE_FILE");
        c
    }

    fn up(&self, args: &[&str]) -> Session {
        let mut all: Vec<OsString> = vec!["up".into(), "--json".into()];
        all.extend(args.iter().map(OsString::from));
        Session::spawn(self.command(), all)
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.command().args(args).output().expect("running ferry")
    }

    /// The project's containers of `service` (running or not).
    fn containers(&self, service: &str) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
            .arg(format!("label=com.docker.compose.project={}", self.name))
            .arg("--filter")
            .arg(format!("label=com.docker.compose.service={service}"))
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn running(&self, container: &str) -> bool {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Running}}", container])
            .output()
            .expect("docker inspect");
        String::from_utf8_lossy(&out.stdout).trim() == "true"
    }

    fn container(&self, service: &str) -> String {
        format!("{}-{service}-1", self.name)
    }

    /// `cat` in the service's container: `None` if the file is not there.
    fn cat(&self, service: &str, path: &str) -> Option<String> {
        let out = Command::new("docker")
            .args(["exec", &self.container(service), "cat", path])
            .output()
            .expect("docker exec");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn sh(&self, service: &str, script: &str) {
        let out = Command::new("docker")
            .args(["exec", &self.container(service), "sh", "-c", script])
            .output()
            .expect("docker exec");
        assert!(
            out.status.success(),
            "sh -c {script:?} in {service}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args([
                "compose", "-p", &self.name, "down", "-t", "0", "--rmi", "local", "-v",
            ])
            .current_dir(&self.dir)
            .output();
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("reading the test project") {
        let e = e.expect("dir entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).expect("copying the test project");
        }
    }
}

/// Waits up to [`BOOT`] for an event satisfying `pred` (the build comes first).
fn wait_boot(s: &mut Session, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + BOOT;
    let mut seen = 0;
    loop {
        while seen < s.log.len() {
            if pred(&s.log[seen]) {
                return s.log[seen].clone();
            }
            seen += 1;
        }
        if Instant::now() >= end || s.exited() {
            s.drain();
            if let Some(e) = s.log[seen..].iter().find(|e| pred(e)) {
                return e.clone();
            }
            s.fail(&format!("no {what} within {BOOT:?}"));
        }
        s.poll_events(Duration::from_millis(200));
    }
}

/// Waits up to [`BOOT`] until `n` events satisfy `pred` (every session of a service watching).
fn wait_boot_n(s: &mut Session, n: usize, what: &str, pred: impl Fn(&Value) -> bool) {
    let end = Instant::now() + BOOT;
    while s.log.iter().filter(|e| pred(e)).count() < n {
        if Instant::now() >= end || s.exited() {
            s.drain();
            if s.log.iter().filter(|e| pred(e)).count() >= n {
                return;
            }
            s.fail(&format!("not {n} times {what} within {BOOT:?}"));
        }
        s.poll_events(Duration::from_millis(200));
    }
}

fn log_line(e: &Value, service: &str, text: &str) -> bool {
    is(e, "log") && e["service"] == service && e["line"] == text
}

#[test]
fn up_syncs_a_service_both_ways_and_ctrl_c_stops_it() {
    let p = Project::new("two");
    let mut s = p.up(&["web"]);
    let session = wait_boot(&mut s, "web's session", |e| is(e, "up_session"));
    assert_eq!(session["service"], "web");
    assert_eq!(session["path"], "/app");
    let left_out = session["left_out"].to_string();
    assert!(left_out.contains("node_modules"), "{left_out}");
    wait_boot(&mut s, "web's log line", |e| {
        log_line(e, "web", "web started")
    });
    wait_boot(&mut s, "web watching", |e| {
        is(e, "watching") && e["service"] == "web"
    });

    // A host edit reaches the container; the host's own node_modules does not (it is the
    // container's: its build made one).
    write(&p.dir.join("web/node_modules/host-only.js"), "host\n");
    write(&p.dir.join("web/src/new.txt"), "from the host\n");
    s.wait_until("the host's new file is in the container", || {
        p.cat("web", "/app/src/new.txt").as_deref() == Some("from the host\n")
    });
    // A file the running container makes comes to the host.
    p.sh("web", "echo made in the container > /app/src/made.txt");
    let made = p.dir.join("web/src/made.txt");
    s.wait_until("the container's new file is on the host", || {
        fs::read(&made).is_ok_and(|d| d == b"made in the container\n")
    });
    // Left out both ways: the container-owned node_modules and the .dockerignored README.md.
    assert_absent(&p.dir.join("web/node_modules/dep"));
    assert_eq!(p.cat("web", "/app/node_modules/host-only.js"), None);
    assert_eq!(
        p.cat("web", "/app/node_modules/dep/index.js").as_deref(),
        Some("built\n")
    );
    assert_eq!(p.cat("web", "/app/README.md"), None);
    // Only the service asked for was started.
    assert!(p.containers("worker").is_empty(), "worker was started");

    let st = s.signal_and_wait(libc::SIGINT);
    assert_eq!(st.code(), Some(0), "Ctrl-C: {st:?}\n{}", s.stderr());
    assert!(
        !p.running(&p.container("web")),
        "web still runs after Ctrl-C"
    );
    assert_eq!(read(&made), b"made in the container\n");
}

#[test]
fn up_one_service_of_two() {
    let p = Project::new("two");
    let mut s = p.up(&["worker"]);
    let session = wait_boot(&mut s, "worker's session", |e| is(e, "up_session"));
    assert_eq!(session["service"], "worker");
    assert_eq!(session["path"], "/work/jobs");
    wait_boot(&mut s, "worker watching", |e| {
        is(e, "watching") && e["service"] == "worker"
    });
    write(&p.dir.join("worker/jobs/next.sh"), "echo next\n");
    s.wait_until("the new job is in the container", || {
        p.cat("worker", "/work/jobs/next.sh").as_deref() == Some("echo next\n")
    });
    assert!(p.containers("web").is_empty(), "web was started");
    assert!(
        s.log.iter().all(|e| e["service"] != "web"),
        "an event of web: {:?}",
        s.log
    );
    s.stop();
    assert!(!p.running(&p.container("worker")));
}

#[test]
fn up_no_sync_boots_and_streams_logs_only() {
    let p = Project::new("two");
    let mut s = p.up(&["--no-sync"]);
    wait_boot(&mut s, "web's log line", |e| {
        log_line(e, "web", "web started")
    });
    wait_boot(&mut s, "worker's log line", |e| {
        log_line(e, "worker", "worker started")
    });
    write(&p.dir.join("web/src/new.txt"), "not synced\n");
    s.stop();
    let sessions: Vec<&Value> = s
        .log
        .iter()
        .filter(|e| is(e, "up_session") || is(e, "session_start") || is(e, "watching"))
        .collect();
    assert!(sessions.is_empty(), "--no-sync ran sessions: {sessions:?}");
    assert!(!p.running(&p.container("web")));
    assert!(!p.running(&p.container("worker")));
}

fn one_line_error(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    err
}

#[test]
fn up_without_a_compose_file_is_a_usage_error() {
    let fx = Fixture::new();
    let out = fx
        .command()
        .current_dir(&fx.alpha)
        .env_remove("COMPOSE_FILE")
        .args(["up"])
        .output()
        .expect("running ferry");
    assert_eq!(out.status.code(), Some(2));
    let err = one_line_error(&out);
    assert!(
        err.starts_with("ferry: no compose file (compose.yaml"),
        "{err}"
    );

    let out = fx
        .command()
        .args(["up", "-f", "missing.yaml"])
        .output()
        .expect("running ferry");
    assert_eq!(out.status.code(), Some(2));
    let err = one_line_error(&out);
    assert_eq!(err, "ferry: compose file 'missing.yaml' does not exist\n");
}

#[test]
fn up_unknown_service_is_a_usage_error() {
    let p = Project::new("two");
    let out = p.run(&["up", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    let err = one_line_error(&out);
    assert_eq!(
        err,
        "ferry: unknown service 'nope' (services: web, worker)\n"
    );
    assert!(p.containers("web").is_empty());
}

#[test]
fn up_with_the_engine_unreachable_fails() {
    let p = Project::new("two");
    let out = p
        .command()
        .env(
            "DOCKER_HOST",
            format!("unix://{}/no.sock", p.fx.root.display()),
        )
        .args(["up"])
        .output()
        .expect("running ferry");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = one_line_error(&out);
    assert!(err.contains("cannot reach the Docker engine"), "{err}");
}

#[test]
fn up_build_failure_shows_the_builds_last_lines() {
    let p = Project::new("two");
    let dockerfile = p.dir.join("worker/Dockerfile");
    let mut text = String::from_utf8(read(&dockerfile)).expect("utf-8");
    text = text.replace(
        "WORKDIR /work",
        "RUN [\"/bin/sh\", \"-c\", \"echo build-broke-here; exit 3\"]\nWORKDIR /work",
    );
    write(&dockerfile, text);
    let out = p.run(&["up", "worker"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ferry: docker compose up failed") && err.contains("build-broke-here"),
        "{err}"
    );
}

#[test]
fn up_again_brings_host_edits_made_while_it_was_stopped() {
    let p = Project::new("two");
    let mut s = p.up(&["worker"]);
    wait_boot(&mut s, "worker watching", |e| {
        is(e, "watching") && e["service"] == "worker"
    });
    p.sh("worker", "echo kept > /work/jobs/from-container.sh");
    let from_container = p.dir.join("worker/jobs/from-container.sh");
    s.wait_until("the container's file is on the host", || {
        fs::read(&from_container).is_ok_and(|d| d == b"kept\n")
    });
    s.stop();

    // While ferry up is stopped: an edit and a new file on the host (the rebuild recreates the
    // container: a new endpoint, filled from the host and the archive, never a wipe).
    write(&p.dir.join("worker/jobs/run.sh"), "echo edited\n");
    write(&p.dir.join("worker/jobs/later.sh"), "echo later\n");
    let mut s = p.up(&["worker"]);
    wait_boot(&mut s, "worker watching again", |e| {
        is(e, "watching") && e["service"] == "worker"
    });
    s.wait_until("the edits made meanwhile are in the container", || {
        p.cat("worker", "/work/jobs/run.sh").as_deref() == Some("echo edited\n")
            && p.cat("worker", "/work/jobs/later.sh").as_deref() == Some("echo later\n")
    });
    assert_eq!(read(&from_container), b"kept\n");
    assert!(s.log.iter().all(|e| !is(e, "conflict")), "{:?}", s.log);
    s.stop();
}

/// `ferry up ARGS` without `--json`: its stdout lines until `watching` lines of web were
/// printed `sessions` times; then SIGTERM, which must exit 0.
fn human_lines(p: &Project, args: &[&str], sessions: usize) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let mut child = p
        .command()
        .arg("up")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning ferry up");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let end = Instant::now() + BOOT;
    while lines
        .iter()
        .filter(|l: &&String| l.starts_with("web | watching "))
        .count()
        < sessions
    {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(e) => {
                let _ = child.kill();
                panic!("not {sessions} 'watching' lines ({e}); stdout so far: {lines:#?}");
            }
        }
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().expect("waiting for ferry up");
    assert_eq!(st.code(), Some(0));
    lines
}

/// What a person reads at start, without `--json`: per service, where each session goes and
/// what is left out and why; logs and cycle lines prefixed by the service.
#[test]
fn up_start_lines_name_each_mapping_and_what_is_left_out() {
    let p = Project::new("two");
    let lines = human_lines(&p, &["web"], 1);
    let web = p.dir.join("web");
    let container = p.container("web");
    for expected in [
        "web | Dockerfile line 5: not synced: COPY --from=tools copies from another stage or image, not from the build context".to_owned(),
        format!(
            "web | {} -> {container}:/app (left out: .dockerignore: /*.md /Dockerfile; container-owned: node_modules (package.json))",
            web.display()
        ),
        "web | web started".to_owned(),
    ] {
        assert!(lines.contains(&expected), "no line {expected:?} in {lines:#?}");
    }
}

#[test]
fn up_names_a_service_that_exited_and_syncs_the_others() {
    let p = Project::new("two");
    let dockerfile = p.dir.join("worker/Dockerfile");
    let text = String::from_utf8(read(&dockerfile))
        .expect("utf-8")
        .replace("echo worker started; exec sleep 100000", "echo worker done");
    write(&dockerfile, text);
    let mut s = p.up(&[]);
    // The worker may still be running when ferry looks (it exits right after starting): then
    // its session fails and says so. Either way ferry names it and goes on with web.
    wait_boot(&mut s, "worker named as not running", |e| {
        e["service"] == "worker"
            && ((is(e, "up_note")
                && e["message"]
                    == "no running container after 'docker compose up' (did it exit? 'docker compose logs' tells): not synced")
                || is(e, "up_session_end"))
    });
    wait_boot(&mut s, "web watching", |e| {
        is(e, "watching") && e["service"] == "web"
    });
    s.stop();
}

/// The events after index `from` satisfying `pred`.
fn count_since(s: &Session, from: usize, pred: impl Fn(&Value) -> bool) -> usize {
    s.log[from..].iter().filter(|e| pred(e)).count()
}

/// `develop.watch` made two-way: `sync` both ways, `sync+restart` restarts the container after
/// the change is in it, `sync+exec` runs its command in the container (output in the logs).
#[test]
fn up_develop_watch_sync_restart_and_exec() {
    let p = Project::new("watch");
    let mut s = p.up(&[]);
    let first = wait_boot(&mut s, "web's first session", |e| is(e, "up_session"));
    assert_eq!(first["origin"], "develop.watch[0]");
    wait_boot(&mut s, "the rebuild rule", |e| is(e, "up_rebuild_rule"));
    wait_boot(&mut s, "web started", |e| {
        log_line(e, "web", "web started: hello")
    });
    wait_boot_n(&mut s, 3, "web watching", |e| {
        is(e, "watching") && e["service"] == "web"
    });
    let sessions: Vec<String> = s
        .log
        .iter()
        .filter(|e| is(e, "up_session"))
        .map(|e| e["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(sessions, ["/app/src", "/app/conf", "/app/scripts"]);

    // sync: both ways.
    write(&p.dir.join("web/src/new.js"), "from the host\n");
    s.wait_until("the host's file is in the container", || {
        p.cat("web", "/app/src/new.js").as_deref() == Some("from the host\n")
    });
    p.sh("web", "echo from the container > /app/src/made.js");
    let made = p.dir.join("web/src/made.js");
    s.wait_until("the container's file is on the host", || {
        fs::read(&made).is_ok_and(|d| d == b"from the container\n")
    });
    // Editors' temporaries stay on the host.
    write(&p.dir.join("web/src/.new.js.swp"), "swap\n");

    // sync+restart: the new greeting is in the container when it starts again.
    write(&p.dir.join("web/conf/greeting"), "hello again\n");
    wait_boot(&mut s, "web restarted with the new greeting", |e| {
        log_line(e, "web", "web started: hello again")
    });
    assert!(s.log.iter().any(|e| is(e, "up_restarted")));

    // sync+exec: the command ran in the container after the change arrived; what it wrote
    // comes back to the host through the src session.
    write(&p.dir.join("web/scripts/job"), "job-2\n");
    wait_boot(&mut s, "the exec's output line", |e| {
        is(e, "log") && e["service"] == "web" && e["line"] == "exec saw job-2"
    });
    let exec_out = p.dir.join("web/src/exec-out.txt");
    s.wait_until("the exec's file is on the host", || {
        fs::read(&exec_out).is_ok_and(|d| d == b"job-2\n")
    });
    let done = wait_boot(&mut s, "the exec's end", |e| is(e, "up_exec"));
    assert_eq!(done["ok"], true, "{done}");

    // After the restart, syncing goes on.
    write(&p.dir.join("web/src/after.js"), "after\n");
    s.wait_until("a file after the restart is in the container", || {
        p.cat("web", "/app/src/after.js").as_deref() == Some("after\n")
    });
    assert_eq!(p.cat("web", "/app/src/.new.js.swp"), None);
    s.stop();
}

/// `develop.watch`'s rebuild: a host change of its path rebuilds and recreates the service;
/// the new container has the change and syncing goes on into it.
#[test]
fn up_develop_watch_rebuild_recreates_and_syncing_continues() {
    let p = Project::new("watch");
    let mut s = p.up(&[]);
    wait_boot_n(&mut s, 3, "web watching", |e| {
        is(e, "watching") && e["service"] == "web"
    });
    let old_id = container_id(&p.container("web"));
    write(
        &p.dir.join("web/package.json"),
        "{\"name\": \"web\", \"version\": \"2.0.0\"}\n",
    );
    wait_boot(&mut s, "the rebuild", |e| is(e, "up_rebuilt"));
    assert_ne!(container_id(&p.container("web")), old_id, "not recreated");
    assert_eq!(
        p.cat("web", "/app/built-from-package.json").as_deref(),
        Some("{\"name\": \"web\", \"version\": \"2.0.0\"}\n")
    );
    write(&p.dir.join("web/src/after-rebuild.js"), "new container\n");
    s.wait_until("a host edit reaches the new container", || {
        p.cat("web", "/app/src/after-rebuild.js").as_deref() == Some("new container\n")
    });
    p.sh("web", "echo back > /app/src/from-new.js");
    let back = p.dir.join("web/src/from-new.js");
    s.wait_until("the new container's file is on the host", || {
        fs::read(&back).is_ok_and(|d| d == b"back\n")
    });

    // A directory created under a rebuild rule's path is watched too: creating it rebuilds,
    // and so does a file written in it afterwards.
    fs::create_dir(p.dir.join("web/deps/new")).expect("mkdir");
    wait_boot_n(&mut s, 2, "the second rebuild", |e| is(e, "up_rebuilt"));
    write(&p.dir.join("web/deps/new/x.txt"), "x\n");
    wait_boot_n(&mut s, 3, "the third rebuild", |e| is(e, "up_rebuilt"));
    assert_eq!(p.cat("web", "/app/deps/new/x.txt").as_deref(), Some("x\n"));
    s.stop();
}

fn container_id(name: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.Id}}", name])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// x-ferry: explicit paths, top-level ignore inherited, owned replacing the detected list, a
/// mirror (container to host, never back), sync: false, on-change hooks (one runs, one fails,
/// one restarts) and the stale-dependency line.
#[test]
fn up_x_ferry_paths_ignore_owned_mirror_hooks_and_stale_dependencies() {
    let p = Project::new("xferry");
    let mut s = p.up(&[]);
    wait_boot(&mut s, "worker's sync: false", |e| {
        is(e, "up_note")
            && e["service"] == "worker"
            && e["message"] == "x-ferry sync: false: not synced"
    });
    let main = wait_boot(&mut s, "web's session", |e| {
        is(e, "up_session") && e["service"] == "web" && e["mirror"] == false
    });
    assert_eq!(main["origin"], "x-ferry.paths[0]");
    assert_eq!(main["path"], "/app");
    let mirror = wait_boot(&mut s, "web's mirror", |e| {
        is(e, "up_session") && e["mirror"] == true
    });
    assert_eq!(mirror["path"], "/app/node_modules");
    assert_eq!(mirror["mode"], "one-way-replica");
    wait_boot_n(&mut s, 2, "web watching", |e| {
        is(e, "watching") && e["service"] == "web"
    });
    assert!(
        s.log
            .iter()
            .all(|e| !(is(e, "up_session") && e["service"] == "worker")),
        "worker synced"
    );

    // A service without a build, synced through x-ferry paths only.
    let st = wait_boot(&mut s, "static's session", |e| {
        is(e, "up_session") && e["service"] == "static"
    });
    assert_eq!(st["origin"], "x-ferry.paths[0]");
    assert_eq!(st["path"], "/work/site");
    wait_boot(&mut s, "static watching", |e| {
        is(e, "watching") && e["service"] == "static"
    });
    s.wait_until("the static page is in the container", || {
        p.cat("static", "/work/site/page.html").as_deref() == Some("<p>page</p>\n")
    });
    p.sh("static", "echo made > /work/site/made.html");
    let made = p.dir.join("static/made.html");
    s.wait_until("the static container's file is on the host", || {
        fs::read(&made).is_ok_and(|d| d == b"made\n")
    });

    // The mirror brings what the build put in node_modules, and what the container adds.
    let dep = p.dir.join("web/node_modules/dep/index.js");
    s.wait_until("the build's node_modules is on the host", || {
        fs::read(&dep).is_ok_and(|d| d == b"built\n")
    });
    p.sh(
        "web",
        "mkdir -p /app/node_modules/added && echo added > /app/node_modules/added/x.js",
    );
    let added = p.dir.join("web/node_modules/added/x.js");
    s.wait_until(
        "a package installed in the container is on the host",
        || fs::read(&added).is_ok_and(|d| d == b"added\n"),
    );
    // ... and never takes anything back.
    write(&p.dir.join("web/node_modules/host.js"), "host\n");
    write(&p.dir.join("web/cache/host.txt"), "host\n");
    write(&p.dir.join("web/debug.log"), "log\n");
    p.sh("web", "mkdir -p /app/cache && echo c > /app/cache/c.txt");
    write(&p.dir.join("web/src/marker.js"), "marker\n");
    s.wait_until("the marker is in the container", || {
        p.cat("web", "/app/src/marker.js").as_deref() == Some("marker\n")
    });
    p.sh("web", "echo again > /app/node_modules/added/y.js");
    s.wait_until("a later container change is on the host", || {
        p.dir.join("web/node_modules/added/y.js").is_file()
    });
    assert_eq!(p.cat("web", "/app/node_modules/host.js"), None);
    assert_eq!(
        p.cat("web", "/app/cache/host.txt"),
        None,
        "owned cache synced"
    );
    assert_eq!(p.cat("web", "/app/debug.log"), None, "*.log synced");
    assert_absent(&p.dir.join("web/cache/c.txt"));

    // A hook that runs: in the container's /app, its output in the events, its file back here.
    let from = s.log.len();
    write(&p.dir.join("web/hooks/ok.txt"), "ok\n");
    let hook = wait_boot(&mut s, "the hook's end", |e| {
        is(e, "hook") && e["service"] == "web"
    });
    assert_eq!(hook["ok"], true, "{hook}");
    assert!(
        hook["output"]
            .as_str()
            .unwrap_or_default()
            .contains("hook-ran"),
        "{hook}"
    );
    let copied = p.dir.join("web/hooks/ok.copied");
    s.wait_until("the hook's file is on the host", || {
        fs::read(&copied).is_ok_and(|d| d == b"ok\n")
    });
    // A hook that fails is reported, and syncing goes on.
    write(&p.dir.join("web/hooks/bad.txt"), "bad\n");
    let bad = wait_boot(&mut s, "the failing hook", |e| {
        is(e, "hook") && e["ok"] == false
    });
    assert_eq!(bad["exit_code"], 7, "{bad}");
    write(&p.dir.join("web/src/after-fail.js"), "still\n");
    s.wait_until("syncing goes on after a failed hook", || {
        p.cat("web", "/app/src/after-fail.js").as_deref() == Some("still\n")
    });
    assert_eq!(count_since(&s, from, |e| is(e, "hook")), 2);

    // restart: true without run: the container starts again.
    let from = s.log.len();
    write(&p.dir.join("web/restart/now"), "1\n");
    s.wait_event(from, "web restarted", |e| is(e, "up_restarted"));
    s.wait_event(from, "web started again", |e| {
        log_line(e, "web", "web started")
    });

    // A manifest edit no rule covers: one line saying what may be stale.
    write(
        &p.dir.join("web/package.json"),
        "{\"name\": \"web\", \"dependencies\": {\"left-pad\": \"1\"}}\n",
    );
    let stale = wait_boot(&mut s, "the stale-dependency line", |e| {
        is(e, "stale_dependencies")
    });
    assert_eq!(
        stale["message"],
        "package.json changed: node_modules in web may be stale; add an on-change rule or rebuild"
    );
    s.stop();
}

#[test]
fn up_unknown_x_ferry_key_is_a_usage_error() {
    let p = Project::new("xferry");
    let compose = p.dir.join("compose.yaml");
    let text = String::from_utf8(read(&compose))
        .expect("utf-8")
        .replace("      owned:", "      ownd:");
    write(&compose, text);
    let out = p.run(&["up"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = one_line_error(&out);
    assert_eq!(
        err,
        "ferry: unknown key services.web.x-ferry.ownd in the compose file\n"
    );
    assert!(p.containers("web").is_empty(), "web was started");

    let text = String::from_utf8(read(&compose))
        .expect("utf-8")
        .replace("      ownd:", "      owned:")
        .replace(
            "  ignore: [\"*.log\"]",
            "  ignore: [\"*.log\"]\n  watch: true",
        );
    write(&compose, text);
    let out = p.run(&["up"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        one_line_error(&out),
        "ferry: unknown key x-ferry.watch in the compose file\n"
    );
}

/// The start lines of a develop.watch project name what each session does after a change.
#[test]
fn up_start_lines_name_restart_and_exec_rules() {
    let p = Project::new("watch");
    let lines = human_lines(&p, &[], 3);
    let container = p.container("web");
    let web = p.dir.join("web");
    for expected in [
        format!("web | {}/src -> {container}:/app/src", web.display()),
        format!(
            "web | {}/conf -> {container}:/app/conf (on change: restart)",
            web.display()
        ),
        format!(
            "web | {}/scripts -> {container}:/app/scripts (on change: exec sh -c cp /app/scripts/job /app/src/exec-out.txt && sed 's/^/exec saw /' /app/scripts/job)",
            web.display()
        ),
        format!(
            "web | develop.watch[3]: rebuild when {}/package.json changes",
            web.display()
        ),
    ] {
        assert!(
            lines.contains(&expected),
            "no line {expected:?} in {lines:#?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Build products, restarts with host edits, ownership (issue 10 parts 2 and 7), with the
// project in `tests/up-projects/built` (and `owned`).
// ---------------------------------------------------------------------------------------------

/// Waits until `service`'s session watches, after its first cycle.
fn wait_watching(s: &mut Session, service: &str) {
    wait_boot(s, &format!("{service} watching"), |e| {
        is(e, "watching") && e["service"] == service
    });
}

#[test]
fn up_does_not_copy_build_products_back_but_what_the_container_makes_later() {
    let p = Project::new("built");
    let web = p.dir.join("web");
    let mut s = p.up(&[]);
    wait_watching(&mut s, "web");
    // What the container's process wrote at start (its writable layer) comes to the host ...
    s.wait_until(
        "the file the container wrote at start is on the host",
        || fs::read(web.join("src/started.txt")).is_ok_and(|d| d == b"at-start\n"),
    );
    // ... what the image build made in the synced directory does not.
    assert_absent(&web.join("dist"));
    assert_absent(&web.join("src/gen.js"));
    assert_eq!(
        p.cat("web", "/app/dist/bundle.js").as_deref(),
        Some("built\n")
    );
    assert_eq!(
        p.cat("web", "/app/src/gen.js").as_deref(),
        Some("generated\n")
    );
    // A copied file the build rewrote is not a conflict: the host's version is the source.
    s.wait_until(
        "the host's version of a file the build rewrote is in the container",
        || p.cat("web", "/app/src/index.js").as_deref() == Some("console.log(\"hi\")\n"),
    );
    assert_eq!(read(&web.join("src/index.js")), b"console.log(\"hi\")\n");

    // A host edit of a file both have flows to the container as usual.
    write(&web.join("src/index.js"), "console.log(\"edited\")\n");
    s.wait_until("the host edit is in the container", || {
        p.cat("web", "/app/src/index.js").as_deref() == Some("console.log(\"edited\")\n")
    });

    // A build product that a process in the container rewrites comes back, and so does a
    // file it adds beside one that stays as the build made it.
    p.sh("web", "echo rebuilt > /app/dist/bundle.js");
    s.wait_until("the rewritten bundle is on the host", || {
        fs::read(web.join("dist/bundle.js")).is_ok_and(|d| d == b"rebuilt\n")
    });
    p.sh("web", "echo more > /app/src/more.js");
    s.wait_until("the container's new source file is on the host", || {
        fs::read(web.join("src/more.js")).is_ok_and(|d| d == b"more\n")
    });
    assert_absent(&web.join("src/gen.js"));
    // Not a deletion either: the container keeps its generated file.
    assert_eq!(
        p.cat("web", "/app/src/gen.js").as_deref(),
        Some("generated\n")
    );
    assert!(s.log.iter().all(|e| !is(e, "conflict")), "{:?}", s.log);
    s.stop();
}

impl Project {
    /// `docker compose ARGS` in the project, as its user would run it.
    fn compose(&self, args: &[&str]) {
        let out = Command::new("docker")
            .arg("compose")
            .args(["-p", &self.name])
            .args(args)
            .current_dir(&self.dir)
            .env_remove("COMPOSE_FILE")
            .output()
            .expect("docker compose");
        assert!(
            out.status.success(),
            "docker compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The id of `service`'s container.
    fn container_id(&self, service: &str) -> String {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.Id}}", &self.container(service)])
            .output()
            .expect("docker inspect");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

#[test]
fn up_again_after_compose_recreated_the_container_brings_host_edits() {
    let p = Project::new("built");
    let web = p.dir.join("web");
    let mut s = p.up(&[]);
    wait_watching(&mut s, "web");
    p.sh("web", "echo kept > /app/src/made.txt");
    s.wait_until("the container's file is on the host", || {
        fs::read(web.join("src/made.txt")).is_ok_and(|d| d == b"kept\n")
    });
    s.stop();

    // Stopped: edits on the host, then compose makes a new container from the old image, and
    // later removes it altogether; `ferry up` starts again after each.
    let recreations = [
        &["up", "-d", "--force-recreate", "--no-build"][..],
        &["down", "-t", "0"][..],
    ];
    for (edits, recreate) in (1..).zip(recreations) {
        let before = p.container_id("web");
        write(&web.join("src/index.js"), format!("edit {edits}\n"));
        write(&web.join(format!("src/later{edits}.js")), "later\n");
        p.compose(recreate);
        let mut s = p.up(&[]);
        wait_watching(&mut s, "web");
        assert_ne!(
            p.container_id("web"),
            before,
            "after {recreate:?}: not a new container"
        );
        s.wait_until("the edits made meanwhile are in the container", || {
            p.cat("web", "/app/src/index.js") == Some(format!("edit {edits}\n"))
                && p.cat("web", &format!("/app/src/later{edits}.js"))
                    .as_deref()
                    == Some("later\n")
        });
        assert_eq!(read(&web.join("src/made.txt")), b"kept\n");
        assert_eq!(p.cat("web", "/app/src/made.txt").as_deref(), Some("kept\n"));
        // The new container's build products stay in it.
        assert_absent(&web.join("src/gen.js"));
        assert_absent(&web.join("dist"));
        assert!(s.log.iter().all(|e| !is(e, "conflict")), "{:?}", s.log);
        s.stop();
    }
}

#[test]
fn up_container_recreated_while_syncing_keeps_its_build_products_and_sends_its_own_files() {
    let p = Project::new("built");
    let web = p.dir.join("web");
    let mut s = p.up(&[]);
    wait_watching(&mut s, "web");
    write(&web.join("src/index.js"), "host edit\n");
    s.wait_until("the host edit is in the container", || {
        p.cat("web", "/app/src/index.js").as_deref() == Some("host edit\n")
    });
    let before = p.container_id("web");
    p.compose(&["up", "-d", "--force-recreate", "--no-build"]);
    let id = p.container_id("web");
    assert_ne!(id, before);
    // The new container (a new endpoint) is filled from the host; the file its process made
    // at start comes to the host; its image's build products stay where they are.
    let own = web.join(format!("src/host-{}.txt", &id[..12]));
    s.wait_until(
        "the new container has the host's edit and its file is on the host",
        || {
            p.cat("web", "/app/src/index.js").as_deref() == Some("host edit\n")
                && fs::read(&own).is_ok_and(|d| d.starts_with(&id.as_bytes()[..12]))
        },
    );
    assert_absent(&web.join("src/gen.js"));
    assert_absent(&web.join("dist"));
    s.stop();
}

impl Project {
    /// `uid:gid` of `path` in the service's container (a link itself, not its target).
    fn owner(&self, service: &str, path: &str) -> String {
        let out = Command::new("docker")
            .args([
                "exec",
                &self.container(service),
                "stat",
                "-c",
                "%u:%g",
                path,
            ])
            .output()
            .expect("docker exec stat");
        assert!(
            out.status.success(),
            "stat {path} in {service}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

#[test]
fn up_gives_what_it_creates_to_the_services_user_or_the_copys_chown() {
    let p = Project::new("owned");
    let mut s = p.up(&[]);
    wait_watching(&mut s, "web");
    wait_watching(&mut s, "worker");
    let web = p.dir.join("web/src");
    let worker = p.dir.join("worker/jobs");
    // web runs as `user: "1234:1234"`, which its FROM-scratch image has no passwd for, in a
    // directory root owns; worker as root, its jobs copied with --chown=2000:3000.
    write(&web.join("new.js"), "new\n");
    write(&web.join("lib/deep.js"), "deep\n");
    std::os::unix::fs::symlink("new.js", web.join("latest.js")).expect("symlink");
    write(&web.join("index.js"), "edited\n");
    write(&worker.join("next.sh"), "echo next\n");
    write(&worker.join("nightly/clean.sh"), "echo clean\n");
    s.wait_until("the host's files are in both containers", || {
        p.cat("web", "/app/src/lib/deep.js").as_deref() == Some("deep\n")
            && p.cat("web", "/app/src/latest.js").as_deref() == Some("new\n")
            && p.cat("web", "/app/src/index.js").as_deref() == Some("edited\n")
            && p.cat("worker", "/work/jobs/nightly/clean.sh").as_deref() == Some("echo clean\n")
            && p.cat("worker", "/work/jobs/next.sh").as_deref() == Some("echo next\n")
    });
    for path in [
        "/app/src/new.js",
        "/app/src/lib",
        "/app/src/lib/deep.js",
        "/app/src/latest.js",
        "/app/src/index.js",
    ] {
        assert_eq!(p.owner("web", path), "1234:1234", "{path}");
    }
    for path in [
        "/work/jobs/next.sh",
        "/work/jobs/nightly",
        "/work/jobs/nightly/clean.sh",
    ] {
        assert_eq!(p.owner("worker", path), "2000:3000", "{path}");
    }
    // The image's own file is left as the build made it.
    assert_eq!(p.owner("worker", "/work/jobs/run.sh"), "2000:3000");
    s.stop();
}

/// Run as root by `sudo`, ferry gives the files it creates on the host to the invoking user
/// (`SUDO_UID`/`SUDO_GID`), not to root.
#[test]
fn files_ferry_creates_under_sudo_belong_to_the_invoking_user() {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test plays sudo: it must run as root (scripts/test.sh runs as root or through sudo)"
    );
    let fx = Fixture::new();
    write(&fx.a("top.txt"), "top\n");
    write(&fx.a("dir/inner.txt"), "inner\n");
    std::os::unix::fs::symlink("top.txt", fx.a("link")).expect("symlink");
    let out = fx
        .command()
        .env("SUDO_UID", "4321")
        .env("SUDO_GID", "4322")
        .args(["sync", "--once"])
        .arg(&fx.alpha)
        .arg(&fx.beta)
        .output()
        .expect("running ferry");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for rel in ["top.txt", "dir", "dir/inner.txt", "link"] {
        let m = fs::symlink_metadata(fx.b(rel)).expect("synced");
        assert_eq!((m.uid(), m.gid()), (4321, 4322), "{rel}");
    }
    // Without sudo's variables, root's files stay root's.
    write(&fx.a("later.txt"), "later\n");
    let out = fx
        .command()
        .env_remove("SUDO_UID")
        .env_remove("SUDO_GID")
        .args(["sync", "--once"])
        .arg(&fx.alpha)
        .arg(&fx.beta)
        .output()
        .expect("running ferry");
    assert_eq!(out.status.code(), Some(0));
    let m = fs::symlink_metadata(fx.b("later.txt")).expect("synced");
    assert_eq!((m.uid(), m.gid()), (0, 0));
}

/// `ferry up` on the `copies` project, once its web service started and three of its sessions
/// watch.
fn up_copies() -> (Project, Session) {
    let p = Project::new("copies");
    let mut s = p.up(&[]);
    wait_boot(&mut s, "web started", |e| log_line(e, "web", "web started"));
    wait_boot_n(&mut s, 3, "web's sessions watching", |e| {
        is(e, "watching") && e["service"] == "web"
    });
    (p, s)
}

/// COPY forms that place host files under other paths: a file under another name
/// (`COPY site.conf /etc/web/default.conf`) and a glob with a wildcard above its last component
/// (`COPY */package.json ./`, where the last match wins), both ways.
#[test]
fn up_syncs_files_a_dockerfile_copies_under_other_names() {
    let (p, mut s) = up_copies();
    let sessions: Vec<&Value> = s.log.iter().filter(|e| is(e, "up_session")).collect();
    let etc = sessions
        .iter()
        .find(|e| e["path"] == "/etc/web")
        .unwrap_or_else(|| panic!("no session for /etc/web: {sessions:?}"));
    assert!(
        etc["left_out"]
            .to_string()
            .contains("site.conf is default.conf in the container"),
        "{etc}"
    );
    let app = sessions
        .iter()
        .find(|e| e["path"] == "/app")
        .unwrap_or_else(|| panic!("no session for /app: {sessions:?}"));
    assert!(
        app["host"].as_str().is_some_and(|h| h.ends_with("/web/ui")),
        "{app}"
    );
    assert!(
        s.log.iter().any(|e| is(e, "up_note")
            && e["message"].as_str().is_some_and(
                |m| m.contains("*/package.json matches api/package.json, ui/package.json")
            )),
        "no note on the glob's matches: {:?}",
        s.log
    );

    // The renamed file, both ways; the host never gets a default.conf.
    write(&p.dir.join("web/site.conf"), "listen 8080;\n");
    s.wait_until("the host's edit is default.conf in the container", || {
        p.cat("web", "/etc/web/default.conf").as_deref() == Some("listen 8080;\n")
    });
    p.sh("web", "echo 'listen 9090;' > /etc/web/default.conf");
    let conf = p.dir.join("web/site.conf");
    s.wait_until("the container's edit is site.conf on the host", || {
        fs::read(&conf).is_ok_and(|d| d == b"listen 9090;\n")
    });
    assert_absent(&p.dir.join("web/default.conf"));

    // The glob's last match, both ways; the overwritten match is not synced.
    write(
        &p.dir.join("web/ui/package.json"),
        "{\"name\": \"ui\", \"v\": 2}\n",
    );
    s.wait_until("ui/package.json is /app/package.json", || {
        p.cat("web", "/app/package.json").as_deref() == Some("{\"name\": \"ui\", \"v\": 2}\n")
    });
    p.sh(
        "web",
        "echo '{\"name\": \"ui\", \"v\": 3}' > /app/package.json",
    );
    let ui = p.dir.join("web/ui/package.json");
    s.wait_until(
        "the container's package.json is ui/package.json on the host",
        || fs::read(&ui).is_ok_and(|d| d == b"{\"name\": \"ui\", \"v\": 3}\n"),
    );
    assert_eq!(
        read(&p.dir.join("web/api/package.json")),
        b"{\"name\": \"api\"}\n"
    );
    write(
        &p.dir.join("web/api/package.json"),
        "{\"name\": \"api\", \"v\": 9}\n",
    );
    // A later edit of ui's shows api's edit never went (both would land at the same path).
    write(
        &p.dir.join("web/ui/package.json"),
        "{\"name\": \"ui\", \"v\": 4}\n",
    );
    s.wait_until("ui's later edit is in the container", || {
        p.cat("web", "/app/package.json").as_deref() == Some("{\"name\": \"ui\", \"v\": 4}\n")
    });
    // The plain glob session still works beside them.
    write(&p.dir.join("web/src/lib/b.js"), "export const b = 2;\n");
    s.wait_until("a new lib file is in the container", || {
        p.cat("web", "/app/lib/b.js").as_deref() == Some("export const b = 2;\n")
    });

    // A later COPY wins where a file and a directory land on one path: /srv/package.json is the
    // root's (COPY . /srv/ came after COPY ui/package.json /srv/package.json), and
    // /srv/default.conf is site.conf's (it came after COPY . /srv/), both ways.
    p.sh(
        "web",
        "echo '{\"name\": \"root\", \"v\": 2}' > /srv/package.json",
    );
    let root = p.dir.join("web/package.json");
    s.wait_until(
        "the container's /srv/package.json is the root's on the host",
        || fs::read(&root).is_ok_and(|d| d == b"{\"name\": \"root\", \"v\": 2}\n"),
    );
    assert_eq!(read(&ui), b"{\"name\": \"ui\", \"v\": 4}\n");
    write(&conf, "listen 7070;\n");
    s.wait_until("site.conf is default.conf and site.conf in /srv", || {
        p.cat("web", "/srv/default.conf").as_deref() == Some("listen 7070;\n")
            && p.cat("web", "/srv/site.conf").as_deref() == Some("listen 7070;\n")
            && p.cat("web", "/etc/web/default.conf").as_deref() == Some("listen 7070;\n")
    });
    p.sh("web", "echo 'listen 6060;' > /srv/default.conf");
    s.wait_until(
        "the container's /srv/default.conf is site.conf on the host",
        || fs::read(&conf).is_ok_and(|d| d == b"listen 6060;\n"),
    );
    assert_absent(&p.dir.join("web/default.conf"));
    assert!(
        s.log.iter().any(|e| is(e, "up_note")
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("/srv/package.json is overwritten by line 15"))),
        "no note on the overwritten placement"
    );
    s.stop();
}

/// A glob with a wildcard above its last component (`COPY */package.json ./`) follows the tree
/// while `ferry up` runs: a new match that a rebuild would copy last takes the container path
/// over (the earlier match's host file untouched), the container's edits go back to it, a new
/// match a rebuild would overwrite changes nothing, and once the last match is gone the path
/// is the earlier match's again, as a rebuild would make it.
#[test]
fn up_follows_new_matches_of_a_dockerfile_glob() {
    let (p, mut s) = up_copies();
    let web = p.dir.join("web");
    let ui = web.join("ui/package.json");
    let api = web.join("api/package.json");
    let ui_was = read(&ui);
    let api_was = read(&api);
    let app = |p: &Project| p.cat("web", "/app/package.json");

    // zz/ sorts after ui/: a rebuild would copy its package.json last.
    fs::create_dir(web.join("zz")).expect("mkdir zz");
    write(&web.join("zz/package.json"), "{\"name\": \"zz\"}\n");
    s.wait_until("zz/package.json is /app/package.json", || {
        app(&p).as_deref() == Some("{\"name\": \"zz\"}\n")
    });
    s.wait_event(0, "the re-plan event", |e| is(e, "up_replan"));
    p.sh(
        "web",
        "echo '{\"name\": \"zz\", \"v\": 2}' > /app/package.json",
    );
    let zz = web.join("zz/package.json");
    s.wait_until(
        "the container's edit is zz/package.json on the host",
        || fs::read(&zz).is_ok_and(|d| d == b"{\"name\": \"zz\", \"v\": 2}\n"),
    );
    assert_eq!(read(&ui), ui_was, "ui/package.json was changed");

    // aa/ sorts first: a rebuild would overwrite its package.json; nothing changes.
    fs::create_dir(web.join("aa")).expect("mkdir aa");
    write(&web.join("aa/package.json"), "{\"name\": \"aa\"}\n");
    // A later edit of zz's shows aa's never went (both would land at the same path).
    std::thread::sleep(Duration::from_millis(300));
    write(&zz, "{\"name\": \"zz\", \"v\": 3}\n");
    s.wait_until("zz's later edit is in the container", || {
        app(&p).as_deref() == Some("{\"name\": \"zz\", \"v\": 3}\n")
    });

    // zz/ removed: ui's is the last match again.
    fs::remove_dir_all(web.join("zz")).expect("rm zz");
    s.wait_until("ui/package.json is /app/package.json again", || {
        app(&p).as_deref().map(str::as_bytes) == Some(&ui_was[..])
    });
    assert_eq!(read(&ui), ui_was, "ui/package.json was changed");
    assert_eq!(read(&api), api_was, "api/package.json was changed");
    assert_eq!(read(&web.join("aa/package.json")), b"{\"name\": \"aa\"}\n");
    // And syncing goes on with it, both ways.
    write(&ui, "{\"name\": \"ui\", \"v\": 5}\n");
    s.wait_until("ui's edit is in the container", || {
        app(&p).as_deref() == Some("{\"name\": \"ui\", \"v\": 5}\n")
    });
    p.sh(
        "web",
        "echo '{\"name\": \"ui\", \"v\": 6}' > /app/package.json",
    );
    s.wait_until(
        "the container's edit is ui/package.json on the host",
        || fs::read(&ui).is_ok_and(|d| d == b"{\"name\": \"ui\", \"v\": 6}\n"),
    );
    assert_eq!(read(&web.join("aa/package.json")), b"{\"name\": \"aa\"}\n");
    assert_eq!(read(&api), api_was, "api/package.json was changed");
    // Nothing was a conflict; the sessions that no longer mapped a match were stopped.
    s.drain();
    let conflicts: Vec<&Value> = s.log.iter().filter(|e| is(e, "conflict")).collect();
    assert!(conflicts.is_empty(), "conflicts: {conflicts:?}");
    assert!(
        s.log.iter().filter(|e| is(e, "up_session_stop")).count() >= 2,
        "ui's session stopped for zz's, then zz's for ui's: {:?}",
        s.log
    );
    s.stop();
}

/// Compose's order within a cycle: rebuild, sync, restart, exec. A change of a path under both
/// a `sync+restart` rule and a `rebuild` rule rebuilds, and the container it replaces is not
/// restarted first; a `sync` rule's file synced under another name goes both ways.
#[test]
fn up_develop_watch_rebuild_comes_before_restart_and_renamed_files_sync() {
    let p = Project::new("order");
    let mut s = p.up(&[]);
    wait_boot(&mut s, "web started", |e| {
        log_line(e, "web", "web started: 1 hello")
    });
    wait_boot_n(&mut s, 2, "web's sessions watching", |e| {
        is(e, "watching") && e["service"] == "web"
    });

    // sync under another name, both ways.
    write(&p.dir.join("web/app.conf"), "mode=test\n");
    s.wait_until("app.conf is settings.conf in the container", || {
        p.cat("web", "/etc/app/settings.conf").as_deref() == Some("mode=test\n")
    });
    p.sh("web", "echo mode=prod > /etc/app/settings.conf");
    let conf = p.dir.join("web/app.conf");
    s.wait_until(
        "the container's settings.conf is app.conf on the host",
        || fs::read(&conf).is_ok_and(|d| d == b"mode=prod\n"),
    );
    assert_absent(&p.dir.join("web/settings.conf"));

    // A change only sync+restart covers restarts.
    write(&p.dir.join("web/conf/greeting"), "hi\n");
    wait_boot(&mut s, "web restarted", |e| {
        log_line(e, "web", "web started: 1 hi")
    });
    let restarts = s.log.iter().filter(|e| is(e, "up_restarted")).count();
    assert_eq!(restarts, 1);

    // A change the rebuild rule covers too: rebuilt, never restarted first.
    let from = s.log.len();
    write(&p.dir.join("web/conf/version"), "2\n");
    wait_boot(&mut s, "the rebuild", |e| is(e, "up_rebuilt"));
    wait_boot(&mut s, "the rebuilt web started", |e| {
        log_line(e, "web", "web started: 2 hi")
    });
    let after: Vec<&Value> = s.log[from..].iter().collect();
    assert!(
        !after.iter().any(|e| is(e, "up_restarted")),
        "restarted around a rebuild: {after:?}"
    );
    let skipped = after
        .iter()
        .find(|e| is(e, "up_after_skipped"))
        .unwrap_or_else(|| panic!("no up_after_skipped: {after:?}"));
    assert_eq!(skipped["reason"], "rebuild");
    s.stop();
}
