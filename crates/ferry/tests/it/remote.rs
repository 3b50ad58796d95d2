//! Remote endpoints end to end: `ferry sync` against a real Docker container (busybox, no-shell
//! and non-root variants), a real `sshd` on 127.0.0.1, and a pod reached through the kubectl
//! stand-in. Every test installs the static agent the product would ship (`FERRY_AGENT`) and
//! checks what actually ended up on each side: contents, executable bits, symlinks, owners,
//! absence, and the bytes the connection carried.
//!
//! No fixed sleeps: every wait polls a condition (or waits for an event) with a deadline, and
//! every failure shows what ferry printed.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::remote_support::*;
use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The ferry command of `fx` with the static agent and `envs` added.
pub(crate) fn command(fx: &Fixture, envs: &[(&str, &OsStr)]) -> Command {
    let mut c = fx.command();
    c.env("FERRY_AGENT", static_agent());
    for (k, v) in envs {
        c.env(k, v);
    }
    c
}

/// `ferry sync ALPHA BETA --once --json EXTRA...` to completion.
pub(crate) fn once(
    fx: &Fixture,
    alpha: impl AsRef<OsStr>,
    beta: impl AsRef<OsStr>,
    envs: &[(&str, &OsStr)],
    extra: &[&str],
) -> Run {
    let mut args: Vec<OsString> = vec![
        "sync".into(),
        alpha.as_ref().into(),
        beta.as_ref().into(),
        "--once".into(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    fx.run_command(command(fx, envs), args)
}

/// Like [`once`], and asserts exit code 0.
pub(crate) fn once_ok(
    fx: &Fixture,
    alpha: impl AsRef<OsStr>,
    beta: impl AsRef<OsStr>,
    envs: &[(&str, &OsStr)],
) -> Run {
    let run = once(fx, alpha, beta, envs, &[]);
    run.expect_code(0);
    run
}

/// Asserts one more `--once` run finds nothing to do (the sides agree with the archive).
pub(crate) fn assert_settled(
    fx: &Fixture,
    alpha: impl AsRef<OsStr>,
    beta: impl AsRef<OsStr>,
    envs: &[(&str, &OsStr)],
) {
    let run = once_ok(fx, alpha, beta, envs);
    assert_eq!(
        run.transferred(),
        (0, 0),
        "a --once run after the sync still changed something:\n{run}"
    );
}

/// `ferry sync ALPHA BETA --json` (watching), once it printed `watching`.
pub(crate) fn watch(
    fx: &Fixture,
    alpha: impl AsRef<OsStr>,
    beta: impl AsRef<OsStr>,
    envs: &[(&str, &OsStr)],
) -> Session {
    let args: Vec<OsString> = vec![
        "sync".into(),
        alpha.as_ref().into(),
        beta.as_ref().into(),
        "--json".into(),
    ];
    let mut s = Session::spawn(command(fx, envs), args);
    s.wait_event(0, "the `watching` event", |e| is(e, "watching"));
    s
}

/// `wire_bytes` summed over a run's `cycle_end` events (each must carry the field).
fn wire_bytes(run: &Run) -> u64 {
    let ends = run.events("cycle_end");
    assert!(!ends.is_empty(), "no cycle_end event\n{run}");
    ends.iter()
        .map(|e| {
            e["wire_bytes"]
                .as_u64()
                .unwrap_or_else(|| panic!("cycle_end without a numeric wire_bytes: {e}\n{run}"))
        })
        .sum()
}

/// Panics with both trees' differences (and `context`, ferry's output) unless they are equal.
#[track_caller]
pub(crate) fn assert_trees(what: &str, want: &Tree, got: &Tree, context: &dyn std::fmt::Display) {
    if let Some(d) = diff_trees(want, got) {
        panic!(
            "{what}: the trees differ (\"alpha\" = expected, \"beta\" = found):\n{d}\n{context}"
        );
    }
}

/// A file node for tree literals.
pub(crate) fn file(data: &str, exec: bool) -> Node {
    Node::File {
        data: data.as_bytes().to_vec(),
        exec,
    }
}

fn link(target: &str) -> Node {
    Node::Link(PathBuf::from(target))
}

/// `md5sum`'s digest of a host file (coreutils).
fn host_md5(p: &Path) -> String {
    let out = Command::new("md5sum")
        .arg(p)
        .output()
        .expect("running md5sum (coreutils)");
    assert!(out.status.success(), "md5sum {} failed", p.display());
    first_word(&String::from_utf8_lossy(&out.stdout))
}

/// busybox `md5sum`'s digest of a file in the container.
fn container_md5(c: &Container, path: &str) -> String {
    first_word(&c.sh(&format!("md5sum '{path}'")))
}

fn first_word(s: &str) -> String {
    s.split_whitespace().next().unwrap_or_default().to_owned()
}

/// Sets a file's mtime `secs` seconds into the future (so no stat cache can mistake it).
fn bump_mtime(p: &Path, secs: u64) {
    let f = fs::File::options()
        .write(true)
        .open(p)
        .unwrap_or_else(|e| panic!("opening {}: {e}", p.display()));
    f.set_modified(SystemTime::now() + Duration::from_secs(secs))
        .unwrap_or_else(|e| panic!("setting the mtime of {}: {e}", p.display()));
}

/// The one agent version directory under `dir` (`<version>-x86_64-<16 hex>`).
fn only_agent_tag(entries: Vec<String>, where_: &str) -> String {
    assert_eq!(
        entries.len(),
        1,
        "expected exactly one agent version under {where_}, found {entries:?}"
    );
    let tag = entries.into_iter().next().expect("one entry");
    let prefix = format!("{}-x86_64-", env!("CARGO_PKG_VERSION"));
    let hash = tag.strip_prefix(&prefix).unwrap_or_else(|| {
        panic!("agent directory {tag:?} under {where_} does not start with {prefix:?}")
    });
    assert!(
        hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "agent directory {tag:?} under {where_}: expected 16 hex digits after the version and arch"
    );
    tag
}

/// The tree ferry is given on the host in the create/modify/delete/rename tests: nested
/// directories, an executable, an empty directory, a symlink inside the tree.
pub(crate) fn populate_host(root: &Path) {
    write(&root.join("top.txt"), "top v1\n");
    write(&root.join("nested/a/b/deep.txt"), "deep\n");
    write(&root.join("nested/a/sibling.txt"), "sibling\n");
    write(&root.join("bin/run.sh"), "#!/bin/sh\necho run\n");
    set_exec(&root.join("bin/run.sh"), true);
    mkdir(&root.join("empty"));
    write(&root.join("doomed.txt"), "to be deleted\n");
    write(&root.join("old-name.txt"), "renamed later\n");
    symlink("nested/a/b/deep.txt", &root.join("link"));
}

/// The second round of host edits: modify, delete, rename (and one more new file).
pub(crate) fn edit_host(root: &Path) {
    write(&root.join("top.txt"), "top v2, longer than before\n");
    bump_mtime(&root.join("top.txt"), 2);
    remove(&root.join("doomed.txt"));
    rename(
        &root.join("old-name.txt"),
        &root.join("nested/new-name.txt"),
    );
    write(&root.join("nested/a/b/added.txt"), "added in round two\n");
}

/// What [`populate_host`] then [`edit_host`] leave (also the container-side script's result).
pub(crate) fn expected_after_edits() -> Tree {
    Tree::from([
        (
            "top.txt".into(),
            file("top v2, longer than before\n", false),
        ),
        ("nested".into(), Node::Dir),
        ("nested/a".into(), Node::Dir),
        ("nested/a/b".into(), Node::Dir),
        ("nested/a/b/deep.txt".into(), file("deep\n", false)),
        (
            "nested/a/b/added.txt".into(),
            file("added in round two\n", false),
        ),
        ("nested/a/sibling.txt".into(), file("sibling\n", false)),
        ("nested/new-name.txt".into(), file("renamed later\n", false)),
        ("bin".into(), Node::Dir),
        ("bin/run.sh".into(), file("#!/bin/sh\necho run\n", true)),
        ("empty".into(), Node::Dir),
        ("link".into(), link("nested/a/b/deep.txt")),
    ])
}

// ---------------------------------------------------------------------------------------------
// Docker
// ---------------------------------------------------------------------------------------------

#[test]
fn docker_once_host_to_container_create_modify_delete_rename() {
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    populate_host(&fx.alpha);

    let run = once_ok(&fx, &fx.alpha, &beta, &[]);
    assert_trees(
        "first sync into the container",
        &tree(&fx.alpha),
        &c.tree("/srv/app"),
        &run,
    );
    // Not just the bit the snapshot records: the mode itself.
    assert_eq!(
        c.sh("stat -c %a /srv/app/bin/run.sh").trim(),
        "755",
        "{run}"
    );
    assert_eq!(c.sh("readlink /srv/app/link").trim(), "nested/a/b/deep.txt");

    edit_host(&fx.alpha);
    let run = once_ok(&fx, &fx.alpha, &beta, &[]);
    let want = expected_after_edits();
    assert_trees("the host's edits", &want, &tree(&fx.alpha), &run);
    assert_trees(
        "the host's edits, in the container",
        &want,
        &c.tree("/srv/app"),
        &run,
    );
    assert_settled(&fx, &fx.alpha, &beta, &[]);
}

#[test]
fn docker_once_container_to_host_create_modify_delete_rename() {
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let alpha = format!("docker://{}/srv/app", c.name);
    c.sh(
        "set -e; mkdir -p /srv/app/nested/a/b /srv/app/bin /srv/app/empty; cd /srv/app
          printf 'top v1\\n' > top.txt
          printf 'deep\\n' > nested/a/b/deep.txt
          printf 'sibling\\n' > nested/a/sibling.txt
          printf '#!/bin/sh\\necho run\\n' > bin/run.sh; chmod 755 bin/run.sh
          printf 'to be deleted\\n' > doomed.txt
          printf 'renamed later\\n' > old-name.txt
          ln -s nested/a/b/deep.txt link",
    );

    let run = once_ok(&fx, &alpha, &fx.beta, &[]);
    assert_trees(
        "first sync out of the container",
        &c.tree("/srv/app"),
        &tree(&fx.beta),
        &run,
    );
    assert!(is_exec(&fx.b("bin/run.sh")), "run.sh lost its x bit\n{run}");

    c.sh("set -e; cd /srv/app
          printf 'top v2, longer than before\\n' > top.txt
          rm doomed.txt
          mv old-name.txt nested/new-name.txt
          printf 'added in round two\\n' > nested/a/b/added.txt");
    let run = once_ok(&fx, &alpha, &fx.beta, &[]);
    let want = expected_after_edits();
    assert_trees(
        "the container's edits, in the container",
        &want,
        &c.tree("/srv/app"),
        &run,
    );
    assert_trees(
        "the container's edits, on the host",
        &want,
        &tree(&fx.beta),
        &run,
    );
    assert_settled(&fx, &alpha, &fx.beta, &[]);
}

#[test]
fn docker_watch_both_ways_live() {
    let _serial = serial();
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    write(&fx.a("seed.txt"), "seed\n");
    let mut s = watch(&fx, &fx.alpha, &beta, &[]);
    assert_eq!(
        c.read_file("/srv/app/seed.txt").as_deref(),
        Some(&b"seed\n"[..]),
        "the first cycle did not copy seed.txt"
    );

    // A process inside the container writes a file.
    c.sh("echo 'written in the container' > /srv/app/from-container.txt");
    s.wait_until("from-container.txt reaches the host", || {
        fs::read(fx.a("from-container.txt")).is_ok_and(|d| d == b"written in the container\n")
    });

    // A generator makes a directory of files.
    c.sh(
        "mkdir /srv/app/gen; i=0; while [ $i -lt 60 ]; do echo \"line $i\" > /srv/app/gen/f$i; \
          i=$((i+1)); done",
    );
    s.wait_until("the 60 generated files reach the host", || {
        (0..60).all(|i| {
            fs::read(fx.a(&format!("gen/f{i}")))
                .is_ok_and(|d| d == format!("line {i}\n").as_bytes())
        })
    });

    // A host edit reaches the container.
    write(&fx.a("seed.txt"), "seed, edited on the host\n");
    s.wait_until("the host's edit reaches the container", || {
        c.read_file("/srv/app/seed.txt").as_deref() == Some(&b"seed, edited on the host\n"[..])
    });

    // Renames, both ways.
    rename(&fx.a("seed.txt"), &fx.a("seed-renamed.txt"));
    s.wait_until("the host's rename reaches the container", || {
        c.list("/srv/app").contains(&"seed-renamed.txt".to_owned())
            && c.read_file("/srv/app/seed.txt").is_none()
    });
    c.sh("mv /srv/app/from-container.txt /srv/app/gen/moved.txt");
    s.wait_until("the container's rename reaches the host", || {
        fs::read(fx.a("gen/moved.txt")).is_ok_and(|d| d == b"written in the container\n")
            && !exists(&fx.a("from-container.txt"))
    });

    // Deletes, both ways.
    remove(&fx.a("seed-renamed.txt"));
    s.wait_until("the host's delete reaches the container", || {
        c.read_file("/srv/app/seed-renamed.txt").is_none()
    });
    c.sh("rm /srv/app/gen/moved.txt");
    s.wait_until("the container's delete reaches the host", || {
        !exists(&fx.a("gen/moved.txt"))
    });

    let (host, cont) = (tree(&fx.alpha), c.tree("/srv/app"));
    if let Some(d) = diff_trees(&host, &cont) {
        s.fail(&format!("host and container differ at the end:\n{d}"));
    }
    let names: Vec<&String> = host.keys().collect();
    assert_eq!(
        names.len(),
        61,
        "expected gen/ and its 60 files, got {names:?}"
    );
    s.stop();
}

/// A directory removed with its files inside the container, while watching (`rm -r`, or the
/// files then the directory in one burst): the deletion reaches the host and the session goes
/// on. Kept apart from the test above because, as written, it fails: the agent answers the
/// partial scan with a patch for `d` (now absent) followed by patches for `d/f`..., and ferry
/// rejects the second ("the agent broke the protocol: a scan patch does not fit: parent of
/// 'd/f' is not a directory", exit 1).
#[test]
fn docker_watch_container_removes_a_directory_tree() {
    let _serial = serial();
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    write(&fx.a("keep.txt"), "keep\n");
    write(&fx.a("d/f"), "f\n");
    write(&fx.a("d/e/g"), "g\n");
    write(&fx.a("d2/h"), "h\n");
    let mut s = watch(&fx, &fx.alpha, &beta, &[]);
    assert_eq!(c.list("/srv/app"), ["d/e/g", "d/f", "d2/h", "keep.txt"]);

    c.sh("rm -r /srv/app/d");
    s.wait_until("the container's `rm -r d` reaches the host", || {
        !exists(&fx.a("d"))
    });
    c.sh("rm /srv/app/d2/h && rmdir /srv/app/d2");
    s.wait_until(
        "the container's `rm d2/h; rmdir d2` reaches the host",
        || !exists(&fx.a("d2")),
    );
    // Still syncing afterwards.
    write(&fx.a("after.txt"), "after\n");
    s.wait_until(
        "a host file after the deletions reaches the container",
        || c.read_file("/srv/app/after.txt").as_deref() == Some(&b"after\n"[..]),
    );
    let (host, cont) = (tree(&fx.alpha), c.tree("/srv/app"));
    if let Some(d) = diff_trees(&host, &cont) {
        s.fail(&format!("host and container differ:\n{d}"));
    }
    s.stop();
}

#[test]
fn docker_container_without_a_shell() {
    let c = Container::start(noshell_image(), &[]);
    // The premise: nothing in there can run a script.
    assert!(
        !c.exec(&["sh", "-c", "true"]).status.success(),
        "the no-shell image has a shell"
    );
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    write(&fx.a("hello.txt"), "hello from the host\n");
    write(&fx.a("dir/tool"), "#!/bin/tool\n");
    set_exec(&fx.a("dir/tool"), true);
    symlink("dir/tool", &fx.a("tool-link"));
    mkdir(&fx.a("empty"));

    let run = once_ok(&fx, &fx.alpha, &beta, &[]);
    assert_trees(
        "first sync into the no-shell container",
        &tree(&fx.alpha),
        &c.tree("/srv/app"),
        &run,
    );
    // The agent went in through the archive API, at the documented place.
    let agent_dir = c.tree("/.ferry/agent");
    let tags: Vec<String> = agent_dir
        .keys()
        .filter(|k| !k.contains('/'))
        .cloned()
        .collect();
    let tag = only_agent_tag(tags, "/.ferry/agent in the container");
    match agent_dir.get(&format!("{tag}/ferry")) {
        Some(Node::File { data, exec: true }) => assert!(
            *data == read(&static_agent()),
            "/.ferry/agent/{tag}/ferry is not the static agent"
        ),
        other => panic!("/.ferry/agent/{tag}/ferry: expected an executable file, got {other:?}"),
    }

    // An edit in the container (docker cp, no shell needed) comes back.
    c.cp_write_file("/srv/app/hello.txt", "edited inside the container\n");
    c.cp_write_file("/srv/app/dir/new.txt", "new inside\n");
    let run = once_ok(&fx, &fx.alpha, &beta, &[]);
    assert_content(&fx.a("hello.txt"), "edited inside the container\n");
    assert_content(&fx.a("dir/new.txt"), "new inside\n");
    assert_trees(
        "after the container's edit",
        &tree(&fx.alpha),
        &c.tree("/srv/app"),
        &run,
    );
    assert_eq!(
        c.cp_read_file("/srv/app/hello.txt").as_deref(),
        Some(&b"edited inside the container\n"[..])
    );
}

#[test]
fn docker_non_root_container_user() {
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://node@{}/home/node/app", c.name);
    write(&fx.a("a.txt"), "from the host\n");
    write(&fx.a("sub/b.txt"), "nested\n");
    write(&fx.a("sub/x.sh"), "#!/bin/sh\n");
    set_exec(&fx.a("sub/x.sh"), true);
    mkdir(&fx.a("sub/empty"));

    let run = once_ok(&fx, &fx.alpha, &beta, &[]);
    assert_trees(
        "first sync as node",
        &tree(&fx.alpha),
        &c.tree("/home/node/app"),
        &run,
    );
    // Everything ferry made there belongs to node (uid 1000), the root included.
    let owners = c.sh("find /home/node/app -exec stat -c '%u:%g %n' {} +");
    let wrong: Vec<&str> = owners
        .lines()
        .filter(|l| !l.starts_with("1000:1000 "))
        .collect();
    assert!(
        wrong.is_empty() && owners.lines().count() == 6,
        "expected 6 entries owned by 1000:1000 under /home/node/app:\n{owners}\n{run}"
    );

    // The container user changes things; they come back to the host.
    let out = c.exec_as(
        "node",
        &[
            "sh",
            "-c",
            "cd /home/node/app && echo 'by node' > from-node.txt && echo 'edited by node' > a.txt \
             && rm sub/b.txt",
        ],
    );
    assert!(out.status.success(), "node's edits failed: {out:?}");
    let run = once_ok(&fx, &fx.alpha, &beta, &[]);
    assert_content(&fx.a("from-node.txt"), "by node\n");
    assert_content(&fx.a("a.txt"), "edited by node\n");
    assert_absent(&fx.a("sub/b.txt"));

    // And the host's next change goes in, still as node.
    write(&fx.a("sub/later.txt"), "later\n");
    let run2 = once_ok(&fx, &fx.alpha, &beta, &[]);
    assert_eq!(
        c.sh("stat -c %u /home/node/app/sub/later.txt").trim(),
        "1000",
        "{run}\n{run2}"
    );
    assert_trees(
        "after both directions",
        &tree(&fx.alpha),
        &c.tree("/home/node/app"),
        &run2,
    );
}

/// Waits for a `reconnecting` then a `reconnected` event for `side` after index `since`.
pub(crate) fn wait_reconnect(s: &mut Session, since: usize, side: &str) {
    let at = wait_index(
        s,
        since,
        &format!("a `reconnecting` event for {side}"),
        |e| is(e, "reconnecting") && e["side"] == side,
    );
    wait_index(s, at, &format!("a `reconnected` event for {side}"), |e| {
        is(e, "reconnected") && e["side"] == side
    });
}

/// Waits for the first event at index `since` or later satisfying `pred`; returns its index.
pub(crate) fn wait_index(
    s: &mut Session,
    since: usize,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> usize {
    s.wait_event(since, what, &pred);
    (since..s.log.len())
        .find(|&i| pred(&s.log[i]))
        .expect("wait_event returned a matching event")
}

/// `docker ARGS` (stop/start), panicking on failure.
fn docker_cli(args: &[&str]) {
    docker_run_ok(args);
}

#[test]
fn docker_container_restart_mid_session_reconnects_and_loses_nothing() {
    let _serial = serial();
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    write(&fx.a("before.txt"), "before the restart\n");
    let mut s = watch(&fx, &fx.alpha, &beta, &[]);
    assert_eq!(
        c.read_file("/srv/app/before.txt").as_deref(),
        Some(&b"before the restart\n"[..])
    );

    // 1. docker restart: the agent dies with the container, ferry connects again.
    let mark = s.log.len();
    c.restart();
    wait_reconnect(&mut s, mark, "beta");
    write(&fx.a("after-restart.txt"), "host, after the restart\n");
    s.wait_until(
        "the host's file after the restart reaches the container",
        || {
            c.read_file("/srv/app/after-restart.txt").as_deref()
                == Some(&b"host, after the restart\n"[..])
        },
    );
    c.sh("echo 'container, after the restart' > /srv/app/from-container.txt");
    s.wait_until(
        "the container's file after the restart reaches the host",
        || {
            fs::read(fx.a("from-container.txt"))
                .is_ok_and(|d| d == b"container, after the restart\n")
        },
    );

    // 2. The container stays down for a while; the host changes meanwhile.
    let mark = s.log.len();
    docker_cli(&["stop", "-t", "0", &c.name]);
    let down = wait_index(
        &mut s,
        mark,
        "a `reconnecting` event while the container is down",
        |e| is(e, "reconnecting") && e["side"] == "beta",
    );
    write(
        &fx.a("while-down.txt"),
        "written while the container was down\n",
    );
    write(&fx.a("before.txt"), "edited while the container was down\n");
    let early = s.events_since(down, "reconnected");
    if !early.is_empty() {
        s.fail(&format!(
            "`reconnected` while the container was stopped: {early:?}"
        ));
    }
    docker_cli(&["start", &c.name]);
    s.wait_event(down, "a `reconnected` event after docker start", |e| {
        is(e, "reconnected") && e["side"] == "beta"
    });
    s.wait_until(
        "what the host wrote during the outage reaches the container",
        || {
            c.read_file("/srv/app/while-down.txt").as_deref()
                == Some(&b"written while the container was down\n"[..])
                && c.read_file("/srv/app/before.txt").as_deref()
                    == Some(&b"edited while the container was down\n"[..])
        },
    );
    c.sh("echo 'container, after the outage' > /srv/app/after-outage.txt");
    s.wait_until(
        "the container's file after the outage reaches the host",
        || fs::read(fx.a("after-outage.txt")).is_ok_and(|d| d == b"container, after the outage\n"),
    );

    let want = Tree::from([
        (
            "before.txt".into(),
            file("edited while the container was down\n", false),
        ),
        (
            "after-restart.txt".into(),
            file("host, after the restart\n", false),
        ),
        (
            "from-container.txt".into(),
            file("container, after the restart\n", false),
        ),
        (
            "while-down.txt".into(),
            file("written while the container was down\n", false),
        ),
        (
            "after-outage.txt".into(),
            file("container, after the outage\n", false),
        ),
    ]);
    let (host, cont) = (tree(&fx.alpha), c.tree("/srv/app"));
    for (what, got) in [("host", &host), ("container", &cont)] {
        if let Some(d) = diff_trees(&want, got) {
            s.fail(&format!(
                "the {what} does not hold what both sides wrote:\n{d}"
            ));
        }
    }
    s.stop();
}

#[test]
fn docker_killed_agent_reconnects_and_sync_continues() {
    let _serial = serial();
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    write(&fx.a("one.txt"), "one\n");
    let mut s = watch(&fx, &fx.alpha, &beta, &[]);

    let pids = c.sh("pidof ferry || true");
    if pids.split_whitespace().count() != 1 {
        s.fail(&format!(
            "expected one `ferry agent` process in the container, pidof says {pids:?}; ps:\n{}",
            c.sh("ps")
        ));
    }
    let mark = s.log.len();
    c.sh(&format!("kill -9 {}", pids.trim()));
    wait_reconnect(&mut s, mark, "beta");
    let ev = s.events_since(mark, "reconnecting");
    assert!(
        ev.iter()
            .all(|e| e["message"].as_str().is_some_and(|m| !m.is_empty())),
        "a reconnecting event without a reason: {ev:?}"
    );
    // A new agent runs, and sync goes on both ways.
    s.wait_until("a new agent process runs in the container", || {
        let now = c.sh("pidof ferry || true");
        !now.trim().is_empty() && now.trim() != pids.trim()
    });
    write(&fx.a("two.txt"), "two, after the kill\n");
    s.wait_until(
        "the host's file after the kill reaches the container",
        || c.read_file("/srv/app/two.txt").as_deref() == Some(&b"two, after the kill\n"[..]),
    );
    c.sh("echo 'three, from the container' > /srv/app/three.txt");
    s.wait_until(
        "the container's file after the kill reaches the host",
        || fs::read(fx.a("three.txt")).is_ok_and(|d| d == b"three, from the container\n"),
    );
    let (host, cont) = (tree(&fx.alpha), c.tree("/srv/app"));
    if let Some(d) = diff_trees(&host, &cont) {
        s.fail(&format!("host and container differ after the kill:\n{d}"));
    }
    s.stop();
}

#[test]
fn docker_bad_input_is_a_usage_error() {
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    write(&fx.a("f"), "f\n");

    // No such container.
    let missing = format!("no-such-container-{}", std::process::id());
    let run = once(&fx, &fx.alpha, format!("docker://{missing}/x"), &[], &[]);
    run.expect_code(2);
    let line = run.expect_one_stderr_line();
    assert!(
        line.contains(&missing),
        "the message does not name the container\n{run}"
    );

    // Beta's parent does not exist in the container: nothing is created there.
    let run = once(
        &fx,
        &fx.alpha,
        format!("docker://{}/nope/deeper/app", c.name),
        &[],
        &[],
    );
    run.expect_code(2);
    let line = run.expect_one_stderr_line();
    assert!(
        line.contains("does not exist and neither does its parent"),
        "unexpected message\n{run}"
    );
    assert!(
        !c.exec(&["test", "-e", "/nope"]).status.success(),
        "ferry created /nope in the container\n{run}"
    );

    // A missing alpha in the container.
    let run = once(&fx, format!("docker://{}/nope", c.name), &fx.beta, &[], &[]);
    run.expect_code(2);
    let line = run.expect_one_stderr_line();
    assert!(
        line.contains("/nope") && line.contains("does not exist"),
        "unexpected message\n{run}"
    );
    assert!(tree(&fx.beta).is_empty(), "beta was written to\n{run}");
    assert_content(&fx.a("f"), "f\n");
}

const MIB: usize = 1024 * 1024;

/// The delta bound of the big-file tests: a one-byte edit costs one 64 KiB block plus metadata.
const SMALL_WIRE: u64 = 256 * 1024;

#[test]
fn docker_one_byte_edit_of_a_big_file_crosses_as_a_delta_both_ways() {
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    let mut data = pseudo_random(91, 4 * MIB);
    write(&fx.a("big.bin"), &data);
    let first = once_ok(&fx, &fx.alpha, &beta, &[]);
    let full = wire_bytes(&first);
    assert!(
        full >= (4 * MIB) as u64,
        "the first copy should carry the whole file, wire_bytes = {full}\n{first}"
    );
    assert_eq!(
        container_md5(&c, "/srv/app/big.bin"),
        host_md5(&fx.a("big.bin"))
    );

    // Host -> container: one byte in the middle.
    data[2 * MIB + 12345] ^= 0x5a;
    write(&fx.a("big.bin"), &data);
    bump_mtime(&fx.a("big.bin"), 2);
    let run = once_ok(&fx, &fx.alpha, &beta, &[]);
    let wire = wire_bytes(&run);
    eprintln!("wire_bytes: {wire}");
    assert_eq!(run.transferred(), (0, 1), "{run}");
    assert!(
        wire < SMALL_WIRE,
        "a one-byte edit of a 4 MiB file cost {wire} wire bytes (want < {SMALL_WIRE})\n{run}"
    );
    assert_eq!(
        container_md5(&c, "/srv/app/big.bin"),
        host_md5(&fx.a("big.bin")),
        "the container's copy does not have the edit\n{run}"
    );

    // Container -> host: one byte near the start, written in place by busybox dd.
    c.sh(
        "printf Z | dd of=/srv/app/big.bin bs=1 seek=777 conv=notrunc 2>/dev/null && \
          touch -d '@4000000000' /srv/app/big.bin",
    );
    data[777] = b'Z';
    let run = once_ok(&fx, &fx.alpha, &beta, &[]);
    let wire = wire_bytes(&run);
    eprintln!("wire_bytes: {wire}");
    assert_eq!(run.transferred(), (1, 0), "{run}");
    assert!(
        wire < SMALL_WIRE,
        "a one-byte edit in the container cost {wire} wire bytes (want < {SMALL_WIRE})\n{run}"
    );
    if read(&fx.a("big.bin")) != data {
        panic!("the host's big.bin is not the container's edited version\n{run}");
    }
    assert_eq!(
        container_md5(&c, "/srv/app/big.bin"),
        host_md5(&fx.a("big.bin"))
    );
}

#[test]
fn docker_renamed_big_file_is_rebuilt_from_the_containers_copy() {
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    write(&fx.a("data/blob.bin"), pseudo_random(17, MIB));
    let first = once_ok(&fx, &fx.alpha, &beta, &[]);
    assert!(wire_bytes(&first) >= MIB as u64, "{first}");
    let md5 = host_md5(&fx.a("data/blob.bin"));
    assert_eq!(container_md5(&c, "/srv/app/data/blob.bin"), md5);

    mkdir(&fx.a("moved"));
    rename(&fx.a("data/blob.bin"), &fx.a("moved/blob-renamed.bin"));
    let run = once_ok(&fx, &fx.alpha, &beta, &[]);
    let wire = wire_bytes(&run);
    eprintln!("wire_bytes: {wire}");
    assert!(
        wire < (MIB / 8) as u64,
        "renaming a 1 MiB file cost {wire} wire bytes (want < 128 KiB: the container has it)\n{run}"
    );
    assert_eq!(
        container_md5(&c, "/srv/app/moved/blob-renamed.bin"),
        md5,
        "the renamed file in the container is not the original\n{run}"
    );
    assert_eq!(
        c.list("/srv/app"),
        ["moved/blob-renamed.bin"],
        "the old name is still there\n{run}"
    );
    assert_trees(
        "after the rename",
        &tree(&fx.alpha),
        &c.tree("/srv/app"),
        &run,
    );
}

// ---------------------------------------------------------------------------------------------
// SSH
// ---------------------------------------------------------------------------------------------

/// Runs `script` on the ssh "remote" as its user and panics unless it succeeds.
fn ssh_ok(sshd: &Sshd, script: &str) {
    let out = sshd.run(script);
    assert!(
        out.status.success(),
        "over ssh: {script:?} failed ({})\n{}\n{}\n--- sshd log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
}

/// Waits until no process of the ssh user is left (the agent ended with ferry).
fn assert_no_agent_left(sshd: &Sshd, after: &dyn std::fmt::Display) {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let procs = sshd.user_processes();
        if procs.is_empty() {
            return;
        }
        if std::time::Instant::now() >= end {
            panic!(
                "processes of {} outlived ferry: {procs:?}\n{after}",
                sshd.user()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts everything under `root` belongs to the ssh user.
fn assert_owned_by(root: &Path, uid: u32) {
    let mut bad = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        if m.uid() != uid {
            bad.push(format!("{} (uid {})", p.display(), m.uid()));
        }
        if m.is_dir() {
            for e in fs::read_dir(&p).expect("read_dir") {
                stack.push(e.expect("entry").path());
            }
        }
    }
    assert!(bad.is_empty(), "not owned by uid {uid}: {bad:?}");
}

#[test]
fn ssh_once_both_ways_installs_the_agent_and_leaves_nothing_running() {
    let sshd = Sshd::start();
    let ssh = OsString::from(sshd.ssh_command());
    let envs: &[(&str, &OsStr)] = &[("FERRY_SSH_COMMAND", &ssh)];
    let fx = Fixture::new();
    let remote = sshd.home().join("app");

    // Host -> remote, with a path relative to the home directory.
    let url = format!("{}:app", Sshd::HOST);
    populate_host(&fx.alpha);
    let run = once_ok(&fx, &fx.alpha, &url, envs);
    assert_trees(
        "first sync over ssh",
        &tree(&fx.alpha),
        &tree(&remote),
        &run,
    );
    assert_owned_by(&remote, sshd.uid());
    assert_no_agent_left(&sshd, &run);

    // The agent was installed under ~/.ferry/agent/<tag>/ferry, by and for the ssh user.
    let agent_root = sshd.home().join(".ferry/agent");
    let tags: Vec<String> = fs::read_dir(&agent_root)
        .unwrap_or_else(|e| panic!("{}: {e}\n{run}", agent_root.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let tag = only_agent_tag(tags, &agent_root.display().to_string());
    let installed = agent_root.join(&tag).join("ferry");
    assert!(
        read(&installed) == read(&static_agent()),
        "{} is not the static agent",
        installed.display()
    );
    let m = fs::metadata(&installed).expect("agent metadata");
    assert_eq!(m.permissions().mode() & 0o777, 0o755, "agent mode");
    assert_eq!(m.uid(), sshd.uid(), "agent owner");

    edit_host(&fx.alpha);
    let run = once_ok(&fx, &fx.alpha, &url, envs);
    let want = expected_after_edits();
    assert_trees("the host's edits over ssh", &want, &tree(&remote), &run);
    assert_settled(&fx, &fx.alpha, &url, envs);
    assert_no_agent_left(&sshd, &run);

    // Remote -> host, with an absolute ssh:// URL; the remote changes are made as its user.
    let remote2 = sshd.home().join("app2");
    let url2 = format!("ssh://{}{}", Sshd::HOST, remote2.display());
    ssh_ok(
        &sshd,
        "set -e; mkdir -p ~/app2/nested/a/b ~/app2/bin ~/app2/empty; cd ~/app2
         printf 'top v1\\n' > top.txt
         printf 'deep\\n' > nested/a/b/deep.txt
         printf 'sibling\\n' > nested/a/sibling.txt
         printf '#!/bin/sh\\necho run\\n' > bin/run.sh; chmod 755 bin/run.sh
         printf 'to be deleted\\n' > doomed.txt
         printf 'renamed later\\n' > old-name.txt
         ln -s nested/a/b/deep.txt link",
    );
    let run = once_ok(&fx, &url2, &fx.beta, envs);
    assert_trees(
        "first sync from ssh",
        &tree(&remote2),
        &tree(&fx.beta),
        &run,
    );
    ssh_ok(
        &sshd,
        "set -e; cd ~/app2
         printf 'top v2, longer than before\\n' > top.txt
         rm doomed.txt
         mv old-name.txt nested/new-name.txt
         printf 'added in round two\\n' > nested/a/b/added.txt",
    );
    let run = once_ok(&fx, &url2, &fx.beta, envs);
    assert_trees(
        "the remote's edits, on the host",
        &want,
        &tree(&fx.beta),
        &run,
    );
    assert_trees("the remote's edits, remotely", &want, &tree(&remote2), &run);
    // Still one installed agent: the second connection reused it.
    assert_eq!(
        fs::read_dir(&agent_root).expect("agent dir").count(),
        1,
        "another agent version was installed"
    );
    assert_no_agent_left(&sshd, &run);
}

#[test]
fn ssh_watch_remote_change_appears_on_the_host() {
    let _serial = serial();
    let sshd = Sshd::start();
    let ssh = OsString::from(sshd.ssh_command());
    let envs: &[(&str, &OsStr)] = &[("FERRY_SSH_COMMAND", &ssh)];
    let fx = Fixture::new();
    write(&fx.a("hello.txt"), "hello\n");
    let url = format!("{}:app", Sshd::HOST);
    let remote = sshd.home().join("app");
    let mut s = watch(&fx, &fx.alpha, &url, envs);
    assert_content(&remote.join("hello.txt"), "hello\n");

    ssh_ok(
        &sshd,
        "echo 'made remotely' > ~/app/remote.txt && mkdir ~/app/d && echo x > ~/app/d/x",
    );
    s.wait_until("the remote's files reach the host", || {
        fs::read(fx.a("remote.txt")).is_ok_and(|d| d == b"made remotely\n")
            && fs::read(fx.a("d/x")).is_ok_and(|d| d == b"x\n")
    });
    write(&fx.a("hello.txt"), "hello, edited on the host\n");
    s.wait_until("the host's edit reaches the remote", || {
        fs::read(remote.join("hello.txt")).is_ok_and(|d| d == b"hello, edited on the host\n")
    });
    ssh_ok(&sshd, "rm ~/app/remote.txt");
    s.wait_until("the remote's delete reaches the host", || {
        !exists(&fx.a("remote.txt"))
    });
    if let Some(d) = diff_trees(&tree(&fx.alpha), &tree(&remote)) {
        s.fail(&format!("host and remote differ:\n{d}"));
    }
    if sshd.user_processes().is_empty() {
        s.fail("no agent process runs as the ssh user while ferry watches");
    }
    s.stop();
    let stderr = s.stderr();
    assert_no_agent_left(&sshd, &stderr);
}

// ---------------------------------------------------------------------------------------------
// Kubernetes (through the stand-in)
// ---------------------------------------------------------------------------------------------

/// This tests the command line ferry builds for `kubectl exec` and its stream handling (install
/// step, agent conversation over the exec's stdio) — not a real cluster: the stand-in script
/// maps the "pod" to a Docker container and runs `docker exec -i` there.
#[test]
fn k8s_through_the_kubectl_standin_builds_the_right_commands() {
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let log = fx.root.join("kubectl.log");
    let standin = kubectl_standin();
    let envs: &[(&str, &OsStr)] = &[
        ("FERRY_KUBECTL", standin.as_os_str()),
        ("FERRY_KUBECTL_LOG", log.as_os_str()),
    ];
    let url = format!("k8s://ctx-a@ns1/{}:main/srv/app", c.name);
    write(&fx.a("from-host.txt"), "from the host\n");
    write(&fx.a("d/tool"), "#!/bin/sh\n");
    set_exec(&fx.a("d/tool"), true);
    symlink("d/tool", &fx.a("tool"));
    c.write_file("/srv/app/from-pod.txt", "from the pod\n");

    // A first sync that merges into alpha needs --yes (issue 9, item 6).
    let run = once(&fx, &fx.alpha, &url, envs, &["--yes"]);
    run.expect_code(0);
    assert_content(&fx.a("from-pod.txt"), "from the pod\n");
    assert_trees(
        "first sync through kubectl",
        &tree(&fx.alpha),
        &c.tree("/srv/app"),
        &run,
    );

    // The installed agent (as root in the container, so under /root).
    let tags: Vec<String> = c
        .sh("ls /root/.ferry/agent")
        .lines()
        .map(str::to_owned)
        .collect();
    let tag = only_agent_tag(tags, "/root/.ferry/agent in the pod");
    assert_eq!(
        container_md5(&c, &format!("/root/.ferry/agent/{tag}/ferry")),
        host_md5(&static_agent()),
        "the installed agent is not the static agent"
    );

    let logged = fs::read_to_string(&log).expect("the stand-in's log");
    let lines: Vec<&str> = logged.lines().collect();
    let prefix = format!(
        "--context ctx-a exec -i -n ns1 {} -c main -- sh -c ",
        c.name
    );
    let dir = format!("\"${{HOME:-/tmp}}/.ferry/agent/{tag}\"");
    let start = format!(
        "{prefix}if [ -x {dir}/ferry ]; then exec {dir}/ferry agent; \
         else echo FERRY-NEED \"$(uname -s)\" \"$(uname -m)\"; fi"
    );
    let install = format!(
        "{prefix}mkdir -p {dir} && cat > {dir}/ferry.$$ && chmod 755 {dir}/ferry.$$ && \
         mv -f {dir}/ferry.$$ {dir}/ferry"
    );
    assert_eq!(
        lines,
        [start.as_str(), install.as_str(), start.as_str()],
        "the first run: start (agent missing), install, start again\n{run}"
    );

    // An edit in the pod comes back; the second run starts the installed agent directly.
    c.sh("echo 'edited in the pod' > /srv/app/from-host.txt && rm /srv/app/tool");
    let run = once_ok(&fx, &fx.alpha, &url, envs);
    assert_content(&fx.a("from-host.txt"), "edited in the pod\n");
    assert_absent(&fx.a("tool"));
    assert_trees(
        "after the pod's edit",
        &tree(&fx.alpha),
        &c.tree("/srv/app"),
        &run,
    );
    let logged = fs::read_to_string(&log).expect("the stand-in's log");
    let lines: Vec<&str> = logged.lines().collect();
    assert_eq!(
        lines[3..],
        [start.as_str()],
        "the second run should only start the installed agent\n{run}"
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 9: remote endpoints in daily use
// ---------------------------------------------------------------------------------------------

/// `ferry sync ALPHA BETA --once --json` started (not waited for), with agent `agent`.
fn spawn_once(fx: &Fixture, agent: &Path, alpha: &Path, beta: &str) -> std::process::Child {
    command(fx, &[("FERRY_AGENT", agent.as_os_str())])
        .args([
            OsStr::new("sync"),
            alpha.as_os_str(),
            OsStr::new(beta),
            OsStr::new("--once"),
            OsStr::new("--json"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawning ferry")
}

/// Issue 9 item 21: sessions connecting at once to a fresh container all install the agent and
/// start it (today: `exec /.ferry/agent/...: text file busy` in 2 of 5 trials with three).
#[test]
fn docker_sessions_starting_together_on_a_fresh_container_all_succeed() {
    // A big agent (the static one padded: the kernel ignores bytes past its segments) keeps
    // each install long enough for the sessions to overlap on this machine too.
    let padded = tempfile::Builder::new()
        .prefix("ferry-padded-agent-")
        .tempdir()
        .expect("temp dir");
    let agent = padded.path().join("ferry");
    let mut bytes = read(&static_agent());
    bytes.resize(bytes.len() + (32 << 20), 0);
    fs::write(&agent, &bytes).expect("writing the padded agent");
    fs::set_permissions(&agent, fs::Permissions::from_mode(0o755)).expect("chmod");
    for trial in 0..3 {
        let c = Container::start(busybox_image(), &[]);
        let fxs: Vec<Fixture> = (0..6).map(|_| Fixture::new()).collect();
        for (i, fx) in fxs.iter().enumerate() {
            write(&fx.a("f.txt"), format!("session {i}\n"));
        }
        let children: Vec<_> = fxs
            .iter()
            .enumerate()
            .map(|(i, fx)| {
                spawn_once(
                    fx,
                    &agent,
                    &fx.alpha,
                    &format!("docker://{}/srv/app{i}", c.name),
                )
            })
            .collect();
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().expect("waiting for ferry");
            assert!(
                out.status.success(),
                "trial {trial}: session {i} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                c.read_file(&format!("/srv/app{i}/f.txt")).as_deref(),
                Some(format!("session {i}\n").as_bytes()),
                "trial {trial}: session {i}'s file"
            );
        }
        // One agent in place, no installer's copy left beside it.
        let listing = c.sh("ls -A /.ferry/agent/*/");
        assert_eq!(
            listing.split_whitespace().collect::<Vec<_>>(),
            ["ferry"],
            "trial {trial}: the agent's directory"
        );
    }

    // An installer caught mid-write (the file open for writing: `text file busy` for whoever
    // runs it) does not stop a session: it puts a complete copy in place of the name.
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    write(&fx.a("f.txt"), "first\n");
    let beta = format!("docker://{}/srv/app", c.name);
    once_ok(&fx, &fx.alpha, &beta, &[]);
    let out = c.exec(&[
        "sh",
        "-c",
        "for f in /.ferry/agent/*/ferry; do sleep 1000 3>>\"$f\" & done; echo started",
    ]);
    assert!(out.status.success(), "holding the agent open for writing");
    let busy = c.exec(&["sh", "-c", "/.ferry/agent/*/ferry --version"]);
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("busy")
            || String::from_utf8_lossy(&busy.stdout).contains("busy"),
        "the premise: running the agent now says `text file busy` ({busy:?})"
    );
    write(&fx.a("f.txt"), "second\n");
    once_ok(&fx, &fx.alpha, &beta, &[]);
    assert_eq!(
        c.read_file("/srv/app/f.txt").as_deref(),
        Some(&b"second\n"[..])
    );
}

/// Issue 9 item 4: `docker run --read-only` with a volume for the app: the agent runs from the
/// volume (under the root's never-synced `.ferry-staging`), both ways.
#[test]
fn docker_read_only_root_with_a_volume_runs_the_agent_from_the_volume() {
    let c = Container::start(busybox_image(), &["--read-only", "-v", "/srv/app"]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    write(&fx.a("hello.txt"), "hello\n");
    let run = once_ok(&fx, &fx.alpha, &beta, &[]);
    assert_eq!(
        c.read_file("/srv/app/hello.txt").as_deref(),
        Some(&b"hello\n"[..]),
        "{run}"
    );
    let agents = c.sh("ls /srv/app/.ferry-staging/agent/*/ferry");
    assert!(
        agents.trim().ends_with("/ferry"),
        "no agent in the volume: {agents:?}\n{run}"
    );
    c.write_file("/srv/app/back.txt", "from the container\n");
    let run = once_ok(&fx, &fx.alpha, &beta, &[]);
    assert_content(&fx.a("back.txt"), "from the container\n");
    assert!(
        !exists(&fx.a(".ferry-staging")),
        "the agent's place was synced to alpha\n{run}"
    );
    assert_settled(&fx, &fx.alpha, &beta, &[]);
}

/// Issue 9 item 4: `--read-only` with only a (noexec) tmpfs for the app: the agent runs from
/// the container's own `/dev`, and nothing of the failed try stays in the app's directory.
#[test]
fn docker_read_only_root_with_only_a_tmpfs_runs_the_agent_from_dev() {
    let c = Container::start(busybox_image(), &["--read-only", "--tmpfs", "/srv/app"]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    write(&fx.a("hello.txt"), "hello\n");
    let run = once_ok(&fx, &fx.alpha, &beta, &[]);
    assert_eq!(
        c.read_file("/srv/app/hello.txt").as_deref(),
        Some(&b"hello\n"[..]),
        "{run}"
    );
    let agents = c.sh("ls /dev/.ferry/agent/*/ferry");
    assert!(
        agents.trim().ends_with("/ferry"),
        "no agent in /dev: {agents:?}\n{run}"
    );
    assert!(
        !c.exec(&["test", "-e", "/srv/app/.ferry-staging/agent"])
            .status
            .success(),
        "the noexec try left the agent's directory in the app\n{run}"
    );
    // A second session (another user's view of the same container) finds it there.
    c.write_file("/srv/app/back.txt", "from the container\n");
    once_ok(&fx, &fx.alpha, &beta, &[]);
    assert_content(&fx.a("back.txt"), "from the container\n");
}

/// Issue 9 item 4: read-only, no shell, only a tmpfs: no way in; one line says why and what to
/// change. With the volume it suggests (at `/.ferry`), the same container works.
#[test]
fn docker_read_only_root_without_a_shell_says_why_in_one_line() {
    let c = Container::start(noshell_image(), &["--read-only", "--tmpfs", "/srv/app"]);
    let fx = Fixture::new();
    write(&fx.a("f"), "f\n");
    let run = once(
        &fx,
        &fx.alpha,
        format!("docker://{}/srv/app", c.name),
        &[],
        &[],
    );
    run.expect_code(1);
    let line = run.expect_one_stderr_line();
    let head = format!("container '{}' has a read-only root filesystem", c.name);
    for want in [
        head.as_str(),
        "no shell",
        "docker run -v ferry-agent:/.ferry",
    ] {
        assert!(line.contains(want), "{want:?} missing from: {line}");
    }

    let c = Container::start(
        noshell_image(),
        &["--read-only", "--tmpfs", "/srv/app", "-v", "/.ferry"],
    );
    let fx = Fixture::new();
    write(&fx.a("f"), "f\n");
    let beta = format!("docker://{}/srv/app", c.name);
    let run = once_ok(&fx, &fx.alpha, &beta, &[]);
    assert_eq!(run.transferred(), (0, 1), "{run}");
    assert!(
        c.tree("/.ferry/agent")
            .keys()
            .any(|k| k.ends_with("/ferry")),
        "no agent in the /.ferry volume\n{run}"
    );
    assert_settled(&fx, &fx.alpha, &beta, &[]);
}

/// Issue 9 item 18: messages a person reads, exactly.
#[test]
fn docker_messages_name_the_user_the_path_and_the_engine() {
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    write(&fx.a("f"), "f\n");

    // An unknown user (today: `the far side is not a ferry agent (it sent "unable to fi")`).
    let run = once(
        &fx,
        &fx.alpha,
        format!("docker://nobody@{}/srv/app", c.name),
        &[],
        &[],
    );
    run.expect_code(2);
    assert_eq!(
        run.expect_one_stderr_line(),
        format!("ferry: beta: no user 'nobody' in container '{}'", c.name)
    );

    // A missing alpha (today: `alpha: alpha '/opt/app' does not exist`).
    let run = once(
        &fx,
        format!("docker://{}/srv/app", c.name),
        &fx.beta,
        &[],
        &[],
    );
    run.expect_code(2);
    assert_eq!(
        run.expect_one_stderr_line(),
        format!("ferry: alpha 'docker://{}/srv/app' does not exist", c.name)
    );

    // The engine is not there (today: `Error in the hyper legacy client: client error
    // (Connect)`): a socket nobody listens on.
    let sock = fx.root.join("docker.sock");
    // Bound and closed: the file stays, connecting is refused.
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("binding a socket"));
    let host = OsString::from(format!("unix://{}", sock.display()));
    let run = once(
        &fx,
        &fx.alpha,
        format!("docker://{}/srv/app", c.name),
        &[("DOCKER_HOST", &host)],
        &[],
    );
    run.expect_code(1);
    let line = run.expect_one_stderr_line();
    let want = format!(
        "cannot reach the Docker engine at unix://{}: Connection refused (os error 111); is it running?",
        sock.display()
    );
    assert!(line.contains(&want), "{want:?} missing from: {line}");
}

/// Issue 9 item 20: runs that fail before both sides are connected leave no session directory.
#[test]
fn failed_runs_leave_no_session_directory() {
    let fx = Fixture::new();
    write(&fx.a("f"), "f\n");
    let sessions = fx.state.join("ferry/sessions");
    let count = || fs::read_dir(&sessions).map_or(0, |d| d.count());

    let run = once(
        &fx,
        &fx.alpha,
        "docker://no-such-container-h2/app",
        &[],
        &[],
    );
    run.expect_code(2);
    assert_eq!(count(), 0, "a bad container left a session dir\n{run}");

    let unreachable = OsString::from("ssh -o ConnectTimeout=5 -p 1");
    let run = once(
        &fx,
        &fx.alpha,
        "127.0.0.1:app",
        &[("FERRY_SSH_COMMAND", &unreachable)],
        &[],
    );
    run.expect_code(1);
    assert_eq!(count(), 0, "an unreachable host left a session dir\n{run}");

    // A run that did sync keeps its state.
    let c = Container::start(busybox_image(), &[]);
    once_ok(&fx, &fx.alpha, format!("docker://{}/srv/app", c.name), &[]);
    assert_eq!(count(), 1, "the successful run's session dir");
}

/// Issue 9 item 19: `docker://SERVICE/path` in a Compose project resolves through the labels
/// Compose sets, from the project's directory or below it; otherwise the candidates are named.
#[test]
fn docker_compose_service_name_resolves_in_the_projects_directory() {
    let fx = Fixture::new();
    let project = fx.root.join("project");
    mkdir(&project.join("sub"));
    let service = format!("web-h2-{}", std::process::id());
    let labels = |dir: &Path| {
        [
            "--label".to_owned(),
            format!("com.docker.compose.service={service}"),
            "--label".to_owned(),
            format!("com.docker.compose.project.working_dir={}", dir.display()),
        ]
    };
    let ours_args = labels(&project);
    let ours = Container::start(
        busybox_image(),
        &ours_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let other_args = labels(Path::new("/somewhere/else"));
    let other = Container::start(
        busybox_image(),
        &other_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    write(&fx.a("f.txt"), "from the host\n");
    let url = format!("docker://{service}/srv/app");
    let from = |dir: &Path| {
        let mut cmd = command(&fx, &[]);
        cmd.current_dir(dir);
        fx.run_command(
            cmd,
            vec![
                "sync".into(),
                fx.alpha.clone().into(),
                url.clone().into(),
                "--once".into(),
                "--json".into(),
            ],
        )
    };

    // From a subdirectory of the project: the project's container.
    let run = from(&project.join("sub"));
    run.expect_code(0);
    assert_eq!(
        ours.read_file("/srv/app/f.txt").as_deref(),
        Some(&b"from the host\n"[..]),
        "{run}"
    );
    assert!(
        !other.exec(&["test", "-e", "/srv/app"]).status.success(),
        "the other project's container was written to\n{run}"
    );

    // From elsewhere: no project here; the candidates are named.
    let run = from(&fx.beta);
    run.expect_code(2);
    let line = run.expect_one_stderr_line();
    for want in [
        &ours.name,
        &other.name,
        &format!("no container named '{service}'"),
    ] {
        assert!(
            line.contains(want.as_str()),
            "{want:?} missing from: {line}"
        );
    }

    // Two containers of the project run the service: which one is for the user to say.
    let twin = Container::start(
        busybox_image(),
        &ours_args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let run = from(&project);
    run.expect_code(2);
    let line = run.expect_one_stderr_line();
    for want in [&ours.name, &twin.name] {
        assert!(
            line.contains(want.as_str()),
            "{want:?} missing from: {line}"
        );
    }
    assert!(!line.contains(&other.name), "{line}");
}

/// A child process killed (and reaped) when dropped, so a failing test leaves none behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ferry sync ALPHA BETA` (human output) with stdout and stderr in files under the fixture.
fn spawn_human(fx: &Fixture, alpha: &Path, beta: &str, name: &str) -> (KillOnDrop, PathBuf) {
    let err = fx.root.join(format!("{name}.stderr"));
    let child = command(fx, &[])
        .args([OsStr::new("sync"), alpha.as_os_str(), OsStr::new(beta)])
        .stdout(fs::File::create(fx.root.join(format!("{name}.stdout"))).expect("stdout file"))
        .stderr(fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawning ferry");
    (KillOnDrop(child), err)
}

/// Issue 9 item 18: a stopped container is reported once, then ferry waits quietly (today: a
/// line every 5 s, forever); `--json` keeps every attempt; the session resumes once it starts.
#[test]
fn docker_stopped_container_is_reported_once_then_waited_for_quietly() {
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    write(&fx.a("f.txt"), "one\n");
    let (mut human, err) = spawn_human(&fx, &fx.alpha, &format!("docker://{}/srv/a", c.name), "h");
    let twin_fx = Fixture::new();
    let mut twin = watch(
        &twin_fx,
        &twin_fx.alpha,
        format!("docker://{}/srv/b", c.name),
        &[],
    );
    wait_until(DEADLINE, "the first sync", || {
        c.read_file("/srv/a/f.txt").is_some()
    });
    let since = twin.log.len();
    docker_cli(&["kill", &c.name]);
    // The twin (started with the human one, same backoff) has tried five times: so has the
    // human one, give or take one.
    twin.wait_event(since, "the fifth reconnect attempt", |e| {
        is(e, "reconnecting") && e["attempt"].as_u64() >= Some(5)
    });
    let said = fs::read_to_string(&err).expect("reading stderr");
    let lines: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("connection lost"))
        .collect();
    let mut distinct = lines.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        !lines.is_empty(),
        "the lost connection was not reported:\n{said}"
    );
    assert_eq!(
        lines.len(),
        distinct.len(),
        "a reason was repeated:\n{said}"
    );
    assert!(
        !said.contains("connection lost: "),
        "a doubled prefix:\n{said}"
    );
    docker_cli(&["start", &c.name]);
    let end = std::time::Instant::now() + Duration::from_secs(30);
    let out = fx.root.join("h.stdout");
    while !fs::read_to_string(&out).is_ok_and(|s| s.contains("reconnected")) {
        assert!(
            std::time::Instant::now() < end,
            "no reconnection within 30 s of the restart:\n{}",
            fs::read_to_string(&err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    write(&fx.a("g.txt"), "two\n");
    wait_until(DEADLINE, "an edit after the restart", || {
        c.read_file("/srv/a/g.txt").is_some()
    });
    // SAFETY: kill(2) on our own child; no memory involved.
    unsafe { libc::kill(human.0.id() as i32, libc::SIGTERM) };
    let st = human.0.wait().expect("waiting for ferry");
    assert_eq!(
        st.code(),
        Some(0),
        "{}",
        fs::read_to_string(&err).unwrap_or_default()
    );
    twin.stop();
}

/// The pid of `parent`'s child process named `comm`.
fn child_named(parent: i32, comm: &str) -> i32 {
    let mut found = None;
    wait_until(DEADLINE, &format!("a child {comm} of {parent}"), || {
        found = fs::read_dir("/proc").ok().and_then(|d| {
            d.flatten().find_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let stat = fs::read_to_string(e.path().join("stat")).ok()?;
                // pid (comm) state ppid ...
                let (head, tail) = stat.rsplit_once(") ")?;
                let name = head.split_once(" (")?.1;
                let ppid: i32 = tail.split_whitespace().nth(1)?.parse().ok()?;
                (ppid == parent && name == comm).then_some(pid)
            })
        });
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no child {comm} of {parent}"))
}

/// True while `pid` exists and is not a zombie.
fn running(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, t)| !t.starts_with('Z')))
        .unwrap_or(false)
}

/// Issue 9 item 18: Ctrl-C (SIGINT to the whole process group, as a terminal sends it, so ssh
/// gets it too) ends an SSH session without a reconnect line.
#[test]
fn ssh_ctrl_c_stops_without_a_reconnect_line() {
    use std::os::unix::process::CommandExt;
    let sshd = Sshd::start();
    let ssh = OsString::from(sshd.ssh_command());
    for trial in 0..3 {
        let fx = Fixture::new();
        write(&fx.a("f.txt"), format!("trial {trial}\n"));
        let mut cmd = command(&fx, &[("FERRY_SSH_COMMAND", &ssh)]);
        cmd.process_group(0);
        let args: Vec<OsString> = vec![
            "sync".into(),
            fx.alpha.clone().into(),
            format!("{}:app{trial}", Sshd::HOST).into(),
            "--json".into(),
        ];
        let mut s = Session::spawn(cmd, args);
        s.wait_event(0, "the `watching` event", |e| is(e, "watching"));
        let remote = sshd.home().join(format!("app{trial}/f.txt"));
        assert_content(&remote, format!("trial {trial}\n"));
        // The terminal signals the whole group at once; the order in which the processes act
        // on it is the scheduler's. The worst order: ssh is gone before ferry hears of it.
        let ssh_pid = child_named(s.pid(), "ssh");
        // SAFETY: kill(2) on a child of our child; no memory involved.
        let rc = unsafe { libc::kill(ssh_pid, libc::SIGINT) };
        assert_eq!(rc, 0, "kill ssh");
        wait_until(DEADLINE, "ssh to exit", || !running(ssh_pid));
        // SAFETY: kill(2) on our own child's process group; no memory involved.
        let rc = unsafe { libc::kill(-s.pid(), libc::SIGINT) };
        assert_eq!(rc, 0, "killpg");
        let st = s.wait_exit("ferry to stop after Ctrl-C");
        let lost = s.events_since(0, "reconnecting");
        assert!(
            lost.is_empty(),
            "trial {trial}: a stop looked like a lost connection: {lost:?}\n{}",
            s.stderr()
        );
        assert_eq!(st.code(), Some(0), "trial {trial}: {}", s.stderr());
    }
}
