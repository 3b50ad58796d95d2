//! Regressions found by the second review: each test reproduces one of the reviewer's scripts
//! (races provoked by LD_PRELOAD shims built at test time, a tmpfs mounted inside a root,
//! kill -9 at a chosen moment) and asserts what ferry promises (README, "What ferry promises").
//!
//! Waits are for events or polled conditions with a deadline; the sleeps are the pauses the
//! scenarios need (the archive is saved at most once a second while cycles keep coming, a wipe
//! pauses, a file keeps changing).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Shims (C source, compiled by each test into its own temp dir)
// ---------------------------------------------------------------------------------------------

/// The reviewer's race.c, hardened: it also catches the glibc `renameat2` wrapper and paths
/// relative to a directory descriptor. Right before a `renameat2(RENAME_EXCHANGE)` onto
/// `RACE_PATH` (an absolute path) it simulates another program writing there: `RACE_MODE=append`
/// appends "USER EDIT\n" in place; `RACE_MODE=dir` replaces the file by a directory holding
/// `inner` ("USER DIR CONTENT\n"). `RACE_EINVAL=1` makes every RENAME_EXCHANGE fail with
/// EINVAL (as on NFS or FUSE) and also fires the race before the first plain rename onto
/// `RACE_PATH` (a fallback that never tries the exchange). Fires once; says so on stderr.
const RACE_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif


static int race_done = 0;

/* Called before a rename-like call onto (dirfd, path). Returns -1 (errno EINVAL) when the
   call must fail as if RENAME_EXCHANGE were unsupported. */
static int before(int dirfd, const char *path, unsigned long flags) {
    int exchange = (flags & RENAME_EXCHANGE) != 0;
    const char *trig = getenv("RACE_PATH");
    const char *mode = getenv("RACE_MODE");
    int einval = getenv("RACE_EINVAL") != 0;
    char to[8192];
    resolve(dirfd, path, to, sizeof to);
    if (trig && !race_done && !strcmp(to, trig) && (exchange || einval)) {
        race_done = 1;
        if (mode && !strcmp(mode, "dir")) {
            unlink(to);
            mkdir(to, 0755);
            char p[8300];
            snprintf(p, sizeof p, "%s/inner", to);
            FILE *f = fopen(p, "w");
            if (f) { fputs("USER DIR CONTENT\n", f); fclose(f); }
        } else {
            FILE *f = fopen(to, "a");
            if (f) { fputs("USER EDIT\n", f); fclose(f); }
        }
        fprintf(stderr, "[shim] raced a write into %s (%s)\n", to, mode ? mode : "append");
    }
    if (exchange && einval) { errno = EINVAL; return -1; }
    return 0;
}

long syscall(long n, ...) {
    va_list ap;
    va_start(ap, n);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    static long (*real)(long, ...) = 0;
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    if (n == SYS_renameat2 && before((int)a[2], (const char *)a[3], (unsigned long)a[4]) < 0)
        return -1;
    return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}

int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
              unsigned int flags) {
    static int (*real)(int, const char *, int, const char *, unsigned int) = 0;
    if (!real)
        real = (int (*)(int, const char *, int, const char *, unsigned int))dlsym(
            RTLD_NEXT, "renameat2");
    if (before(newdirfd, newpath, flags) < 0) return -1;
    return real(olddirfd, oldpath, newdirfd, newpath, flags);
}

int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath) {
    static int (*real)(int, const char *, int, const char *) = 0;
    if (!real) real = (int (*)(int, const char *, int, const char *))dlsym(RTLD_NEXT, "renameat");
    before(newdirfd, newpath, 0);
    return real(olddirfd, oldpath, newdirfd, newpath);
}

int rename(const char *oldpath, const char *newpath) {
    static int (*real)(const char *, const char *) = 0;
    if (!real) real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    before(AT_FDCWD, newpath, 0);
    return real(oldpath, newpath);
}
"#;

/// The reviewer's rootgone.c, hardened like [`RACE_C`]: after a successful rename-like call
/// whose source ends with `FROM_SUFFIX` (ferry moving that file aside to remove it), it renames
/// `MOVE_ROOT` to `MOVE_ROOT.gone`: the other side's root vanishes mid-cycle. Fires once.
const ROOTGONE_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>


static int (*real_rename)(const char *, const char *) = 0;
static int moved = 0;

static void after(long r, int dirfd, const char *from, const char *to) {
    const char *suf = getenv("FROM_SUFFIX"), *root = getenv("MOVE_ROOT");
    char full[8192];
    if (r != 0 || moved || !suf || !root) return;
    resolve(dirfd, from, full, sizeof full);
    size_t lf = strlen(full), ls = strlen(suf);
    if (lf < ls || strcmp(full + lf - ls, suf)) return;
    moved = 1;
    if (!real_rename) real_rename = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    char g[4200];
    snprintf(g, sizeof g, "%s.gone", root);
    real_rename(root, g);
    fprintf(stderr, "[shim] moved %s away after %s -> %s\n", root, full, to ? to : "?");
}

long syscall(long n, ...) {
    va_list ap;
    va_start(ap, n);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    static long (*real)(long, ...) = 0;
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    long r = real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (n == SYS_renameat2) after(r, (int)a[0], (const char *)a[1], (const char *)a[3]);
    return r;
}

int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
              unsigned int flags) {
    static int (*real)(int, const char *, int, const char *, unsigned int) = 0;
    if (!real)
        real = (int (*)(int, const char *, int, const char *, unsigned int))dlsym(
            RTLD_NEXT, "renameat2");
    int r = real(olddirfd, oldpath, newdirfd, newpath, flags);
    after(r, olddirfd, oldpath, newpath);
    return r;
}

int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath) {
    static int (*real)(int, const char *, int, const char *) = 0;
    if (!real) real = (int (*)(int, const char *, int, const char *))dlsym(RTLD_NEXT, "renameat");
    int r = real(olddirfd, oldpath, newdirfd, newpath);
    after(r, olddirfd, oldpath, newpath);
    return r;
}

int rename(const char *oldpath, const char *newpath) {
    if (!real_rename) real_rename = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    int r = real_rename(oldpath, newpath);
    after(r, AT_FDCWD, oldpath, newpath);
    return r;
}
"#;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Runs `ferry sync ALPHA BETA --once --json` with extra environment variables, waiting at most
/// [`DEADLINE`] for it to exit.
fn once_with_env(fx: &Fixture, envs: &[(&str, &OsStr)]) -> (ExitStatus, Session) {
    let mut cmd = fx.command();
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let args: Vec<OsString> = vec![
        "sync".into(),
        fx.alpha.clone().into(),
        fx.beta.clone().into(),
        "--once".into(),
        "--json".into(),
    ];
    let mut s = Session::spawn(cmd, args);
    let st = s.wait_exit("ferry --once to finish");
    (st, s)
}

/// The one session directory under the fixture's state directory.
fn session_dir(fx: &Fixture) -> PathBuf {
    let sessions = fx.state.join("ferry").join("sessions");
    let dirs: Vec<PathBuf> = fs::read_dir(&sessions)
        .unwrap_or_else(|e| panic!("{}: {e}", sessions.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "expected one session directory: {dirs:?}");
    dirs.into_iter().next().expect("one session")
}

/// Files in alpha, beta or the backup area whose content is exactly `data`.
fn holders(fx: &Fixture, data: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in [&fx.alpha, &fx.beta] {
        for (k, n) in tree(root) {
            if matches!(&n, Node::File { data: d, .. } if d == data) {
                out.push(root.join(k));
            }
        }
    }
    out.extend(
        fx.backup_files()
            .into_iter()
            .filter(|p| fs::read(p).is_ok_and(|d| d == data)),
    );
    out
}

/// Events of `log` that name `path` (any kind).
fn events_at<'a>(log: &'a [Value], path: &str) -> Vec<&'a Value> {
    log.iter().filter(|e| e["path"] == path).collect()
}

/// `dirs` directories `dN` of `per_dir` small files `fNNN`, each with its own content.
fn small_tree(root: &Path, dirs: usize, per_dir: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("d{d}"));
        mkdir(&dir);
        for f in 0..per_dir {
            fs::write(
                dir.join(format!("f{f:03}")),
                format!("file {f} of directory {d}\n"),
            )
            .unwrap_or_else(|e| panic!("writing {}: {e}", dir.display()));
        }
    }
}

fn to_beta(e: &Value) -> u64 {
    e["to_beta"].as_u64().unwrap_or(0)
}

/// Starts watching, lets more than a second pass and makes one change (so that cycle saves
/// the archive), then waits 0.3 s: the next cycle's changes stay in the pending journal until
/// the session has been quiet for 100 ms (the window in which these scenarios kill ferry).
fn watch_just_after_a_save(fx: &Fixture) -> Session {
    let mut s = fx.watch(&[]);
    thread::sleep(Duration::from_millis(1200));
    let mark = s.log.len();
    write(&fx.a("warm"), "w\n");
    s.wait_event(mark, "the cycle that copies `warm`", |e| {
        is(e, "cycle_end") && to_beta(e) > 0
    });
    thread::sleep(Duration::from_millis(300));
    s
}

fn pending_size(fx: &Fixture) -> Option<u64> {
    fs::metadata(session_dir(fx).join("pending"))
        .ok()
        .map(|m| m.len())
}

// ---------------------------------------------------------------------------------------------
// 1-3. A write landing right before ferry's RENAME_EXCHANGE
// ---------------------------------------------------------------------------------------------

const EDIT: &[u8] = b"old\nUSER EDIT\n";
const DIR_CONTENT: &[u8] = b"USER DIR CONTENT\n";

/// alpha/P and alpha/keep synced, then alpha/P edited ("new"): the next run replaces beta/P.
fn race_fixture() -> Fixture {
    let fx = Fixture::new();
    write(&fx.a("P"), "old\n");
    write(&fx.a("keep"), "k\n");
    fx.once(&[]).expect_code(0);
    // A distinct mtime for the edit.
    thread::sleep(Duration::from_millis(100));
    write(&fx.a("P"), "new\n");
    fx
}

/// Runs `--once` with the race shim firing at beta/P in `mode`.
fn racing_once(fx: &Fixture, mode: &str, einval: bool) -> (ExitStatus, Session) {
    let so = build_shim(fx, "race", RACE_C);
    let target = fx.b("P");
    let mut envs: Vec<(&str, &OsStr)> = vec![
        ("LD_PRELOAD", so.as_os_str()),
        ("RACE_PATH", target.as_os_str()),
        ("RACE_MODE", OsStr::new(mode)),
    ];
    if einval {
        envs.push(("RACE_EINVAL", OsStr::new("1")));
    }
    let (st, mut s) = once_with_env(fx, &envs);
    if !s.stderr().contains("[shim] raced") {
        s.fail(
            "the race shim never fired: ferry did not rename anything onto beta/P through \
             renameat2(RENAME_EXCHANGE) (syscall() or the glibc wrapper), so the scenario was \
             not reproduced",
        );
    }
    (st, s)
}

#[test]
fn a_write_landing_just_before_the_exchange_is_put_back_at_its_path() {
    let fx = race_fixture();
    let (st, mut s) = racing_once(&fx, "append", false);
    let got = fs::read(fx.b("P")).ok();
    if got.as_deref() != Some(EDIT) {
        let backups = files_containing(&fx.state, Some(&shim_dir(&fx)), b"USER EDIT");
        s.fail(&format!(
            "a write landed in beta/P right before ferry's RENAME_EXCHANGE; after the run \
             beta/P holds {:?} instead of the person's version {:?} (exit {st:?}; copies of the \
             edit in the state dir: {backups:?}): it must be put back at its path, not only \
             kept in a backup",
            got.as_deref().map(String::from_utf8_lossy),
            String::from_utf8_lossy(EDIT),
        ));
    }
    if events_at(&s.log, "P").is_empty() {
        s.fail("the run does not report beta/P (no change, error or conflict event names P)");
    }
    // The next run sees a real edit on beta: a conflict with alpha's, or propagated.
    let run = fx.once(&[]);
    let a = fs::read(fx.a("P")).ok();
    let b = fs::read(fx.b("P")).ok();
    assert!(
        a.as_deref() == Some(EDIT) || b.as_deref() == Some(EDIT),
        "after the next --once the person's version of P is at neither alpha/P ({a:?}) nor \
         beta/P ({b:?})\n{run}"
    );
    assert!(
        run.conflict_at("P") || (a.as_deref() == Some(EDIT) && b.as_deref() == Some(EDIT)),
        "the next --once neither reported a conflict at P nor propagated the person's version \
         (alpha/P {:?}, beta/P {:?}): ferry's content silently stays over a real edit\n{run}",
        a.as_deref().map(String::from_utf8_lossy),
        b.as_deref().map(String::from_utf8_lossy),
    );
}

#[test]
fn a_directory_replacing_the_file_just_before_the_exchange_is_put_back_at_its_path() {
    let fx = race_fixture();
    let (st, mut s) = racing_once(&fx, "dir", false);
    let inner = fx.b("P/inner");
    if !fs::symlink_metadata(fx.b("P")).is_ok_and(|m| m.is_dir())
        || fs::read(&inner).ok().as_deref() != Some(DIR_CONTENT)
    {
        let kept = files_containing(&fx.state, Some(&shim_dir(&fx)), DIR_CONTENT);
        s.fail(&format!(
            "beta/P was replaced by a directory (holding `inner`) right before ferry's \
             RENAME_EXCHANGE; after the run beta/P is {:?} (exit {st:?}; copies in the state \
             dir: {kept:?}): the person's directory must be back at its path with its content",
            tree(&fx.beta).get("P"),
        ));
    }
    if events_at(&s.log, "P").is_empty() {
        s.fail("the run does not report beta/P (no change, error or conflict event names P)");
    }
    let run = fx.once(&[]);
    let in_alpha = fs::read(fx.a("P/inner")).ok().as_deref() == Some(DIR_CONTENT);
    let in_beta = fs::read(fx.b("P/inner")).ok().as_deref() == Some(DIR_CONTENT);
    assert!(
        in_alpha || in_beta,
        "after the next --once the person's directory P (with `inner`) is on neither side\n{run}"
    );
    assert!(
        run.conflict_at("P") || (in_alpha && in_beta),
        "the next --once neither reported a conflict at P nor propagated the person's \
         directory: ferry's content silently stays over a real change\n{run}"
    );
}

#[test]
fn a_raced_write_survives_when_the_backup_area_is_unusable() {
    let fx = race_fixture();
    let backups = session_dir(&fx).join("backups");
    if exists(&backups) {
        remove(&backups);
    }
    write(&backups, "not a dir\n");
    let (st, mut s) = racing_once(&fx, "append", false);
    let found = files_containing(&fx.root, Some(&shim_dir(&fx)), b"USER EDIT");
    if found.is_empty() {
        s.fail(&format!(
            "with the backup area unusable (a regular file), a write that landed in beta/P \
             right before ferry's RENAME_EXCHANGE exists nowhere on disk after the run (searched \
             alpha, beta and the state dir; exit {st:?}): the person's bytes were lost"
        ));
    }
}

#[test]
fn a_concurrent_write_is_not_lost_without_rename_exchange() {
    let fx = race_fixture();
    let (st, mut s) = racing_once(&fx, "append", true);
    let at_path = contains(&fx.b("P"), b"USER EDIT");
    let backups: Vec<PathBuf> = fx
        .backup_files()
        .into_iter()
        .filter(|p| contains(p, b"USER EDIT"))
        .collect();
    if !at_path && backups.is_empty() {
        s.fail(&format!(
            "RENAME_EXCHANGE unsupported (EINVAL): a write that landed in beta/P while ferry \
             replaced it is neither at beta/P ({:?}) nor in a backup (backups: {:?}; exit \
             {st:?}): it was overwritten",
            fs::read(fx.b("P"))
                .ok()
                .map(|d| String::from_utf8_lossy(&d).into_owned()),
            fx.backup_files(),
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// 4. A nested mount inside a root
// ---------------------------------------------------------------------------------------------

/// A tmpfs mounted for the test's duration (unmounted on drop, even when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        mkdir(at);
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "ferry-it"])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Tmpfs(at.to_owned()),
            Ok(o) => panic!(
                "this test mounts a tmpfs inside beta and needs root (CAP_SYS_ADMIN): mount -t \
                 tmpfs {} failed ({}): {}",
                at.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("this test needs `mount` to mount a tmpfs inside beta: {e}"),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

#[test]
fn files_on_a_filesystem_mounted_inside_a_root_can_be_deleted_and_replaced() {
    let fx = Fixture::new();
    write(&fx.a("sub/f"), "1\n");
    write(&fx.a("sub/g"), "2\n");
    write(&fx.a("keep"), "k\n");
    let _mount = Tmpfs::mount(&fx.b("sub"));
    // Both sides agree (copied by hand: what ferry must handle here is deleting and replacing).
    write(&fx.b("sub/f"), "1\n");
    write(&fx.b("sub/g"), "2\n");
    write(&fx.b("keep"), "k\n");
    let run = fx.once(&[]);
    assert_eq!(run.code(), 0, "setup: identical sides should agree\n{run}");

    remove(&fx.a("sub/f"));
    let run = fx.once(&[]);
    assert!(
        !exists(&fx.b("sub/f")),
        "alpha/sub/f was deleted, but beta/sub/f (on a tmpfs mounted at beta/sub) is still \
         there after --once\n{run}"
    );
    assert_eq!(
        run.code(),
        0,
        "deleting a file on a filesystem mounted inside beta must succeed\n{run}"
    );

    write(&fx.a("sub/g"), "changed\n");
    write(&fx.a("sub/new"), "new\n");
    let run = fx.once(&[]);
    assert_eq!(
        run.code(),
        0,
        "replacing and creating under a nested mount must work\n{run}"
    );
    assert_content(&fx.b("sub/g"), "changed\n");
    assert_content(&fx.b("sub/new"), "new\n");
    // The temporary files placed next to their targets are gone.
    let left: Vec<String> = fs::read_dir(fx.b("sub"))
        .expect("read beta/sub")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ferry-tmp-"))
        .collect();
    assert!(
        left.is_empty(),
        "temporary files left in beta/sub: {left:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. The error path keeps the journal
// ---------------------------------------------------------------------------------------------

#[test]
fn a_run_stopped_by_a_vanished_root_keeps_the_journal_so_a_restored_file_is_not_deleted() {
    let _serial = serial();
    let fx = Fixture::new();
    let so = build_shim(&fx, "rootgone", ROOTGONE_C);
    write(&fx.a("keep"), "k\n");
    write(&fx.a("Q"), "A\n");
    fx.once(&[]).expect_code(0);

    // 1. Leave a pending journal behind: kill -9 right after a cycle that was not saved yet.
    let mut s = watch_just_after_a_save(&fx);
    let mark = s.log.len();
    write(&fx.a("x"), "x\n");
    s.wait_event(mark, "the cycle that copies `x`", |e| {
        is(e, "cycle_end") && to_beta(e) > 0
    });
    s.kill9();
    eprintln!("journal left by kill -9: {:?} bytes", pending_size(&fx));

    // 2. alpha deletes Q, beta creates T; alpha's root vanishes right after beta/Q is removed.
    remove(&fx.a("Q"));
    write(&fx.b("T"), "t\n");
    let gone = fx.root.join("alpha.gone");
    let (st, mut s) = once_with_env(
        &fx,
        &[
            ("LD_PRELOAD", so.as_os_str()),
            ("FROM_SUFFIX", OsStr::new("/beta/Q")),
            ("MOVE_ROOT", fx.alpha.as_os_str()),
        ],
    );
    if !exists(&gone) {
        s.fail(&format!(
            "the rootgone shim never fired (exit {st:?}): ferry did not remove beta/Q by \
             renaming it, so the scenario was not reproduced"
        ));
    }
    eprintln!(
        "interrupted run: {st:?}; journal after it: {:?} bytes",
        pending_size(&fx)
    );
    rename(&gone, &fx.alpha);

    // 3. The person restores Q on alpha (git checkout): the same content as before.
    write(&fx.a("Q"), "A\n");
    let run = fx.once(&[]);
    let deletions: Vec<&Value> = run
        .changes_at("Q")
        .into_iter()
        .filter(|e| e["action"] == "delete")
        .collect();
    assert!(
        deletions.is_empty() && exists(&fx.a("Q")),
        "after a run stopped by alpha's root vanishing (beta/Q already removed), Q was \
         restored on alpha; the next --once deleted it ({deletions:?}; alpha/Q exists: {}): the \
         error path dropped the journal that says beta's deletion was ferry's own\n{run}",
        exists(&fx.a("Q"))
    );
    assert_content(&fx.a("Q"), "A\n");
    assert_content(&fx.b("Q"), "A\n");
    assert_content(&fx.a("T"), "t\n");
}

// ---------------------------------------------------------------------------------------------
// 6. ABA after a crash
// ---------------------------------------------------------------------------------------------

/// `chattr +i` for the guard's lifetime (so ferry's write to that file fails).
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        let out = Command::new("chattr").arg("+i").arg(path).output();
        match out {
            Ok(o) if o.status.success() => Immutable(path.to_owned()),
            Ok(o) => panic!(
                "this test needs `chattr +i` (root, a filesystem with the immutable flag): {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("this test needs `chattr`: {e}"),
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// (inode, mtime s, mtime ns) of the session's archive.
fn archive_id(fx: &Fixture) -> Option<(u64, i64, i64)> {
    fs::metadata(session_dir(fx).join("archive"))
        .ok()
        .map(|m| (m.ino(), m.mtime(), m.mtime_nsec()))
}

/// The reviewer's aba.py: alpha edits P (A -> B), B reaches beta, and before the archive is
/// saved the person on beta reverts P to A while ferry's write to alpha fails; kill -9. The
/// restart must not take beta's A for the old version and overwrite it with B without a backup:
/// a conflict, both versions kept, or the revert propagated (as without the crash) are fine.
/// The kill must come before the archive is saved (checked; up to 3 attempts).
#[test]
fn a_revert_after_a_crash_is_not_overwritten_without_a_backup() {
    let _serial = serial();
    for attempt in 0..3 {
        let fx = Fixture::new();
        write(&fx.a("P"), "A\n");
        write(&fx.a("keep"), "k\n");
        fx.once(&[]).expect_code(0);
        let mut s = watch_just_after_a_save(&fx);
        let saved = archive_id(&fx);

        // alpha: A -> B, which reaches beta; the archive is not saved yet.
        let mark = s.log.len();
        write(&fx.root.join("P.tmp"), "B\n");
        rename(&fx.root.join("P.tmp"), &fx.a("P"));
        s.wait_event(mark, "the cycle that copies B to beta", |e| {
            is(e, "cycle_end") && to_beta(e) > 0
        });
        // ferry's next write to alpha/P fails; the person on beta reverts P to A.
        let immutable = Immutable::set(&fx.a("P"));
        let mark = s.log.len();
        write(&fx.root.join("P.tmp"), "A\n");
        rename(&fx.root.join("P.tmp"), &fx.b("P"));
        s.wait_event(
            mark,
            "the cycle that tries to copy beta's A to alpha",
            |e| {
                is(e, "cycle_end")
                    && (e["errors"].as_u64().unwrap_or(0) > 0
                        || e["to_alpha"].as_u64().unwrap_or(0) > 0)
            },
        );
        s.kill9();
        let reproduced = saved.is_some() && archive_id(&fx) == saved;
        drop(immutable);

        let run = fx.once(&[]);
        let a = holders(&fx, b"A\n");
        let b = holders(&fx, b"B\n");
        if !reproduced && attempt < 2 {
            eprintln!(
                "attempt {attempt}: the archive was saved before the kill; the scenario needs \
                 it unsaved, trying again"
            );
            continue;
        }
        // The person's revert (their last write) is what the restart must not lose. B may be
        // gone only the way it goes without a crash: replaced on both sides by the revert (B is
        // the agreed version beta's person replaced, which the archive holds).
        let revert_won = fs::read(fx.a("P")).ok().as_deref() == Some(b"A\n".as_slice())
            && fs::read(fx.b("P")).ok().as_deref() == Some(b"A\n".as_slice());
        assert!(
            !a.is_empty() && (run.conflict_at("P") || !b.is_empty() || revert_won),
            "alpha edited P (A -> B), B reached beta, the person on beta reverted P to A, ferry \
             failed to write A to alpha and was killed before saving its archive (reproduced: \
             {reproduced}); the restart reported no conflict and overwrote content without a \
             backup: files holding A: {a:?}, holding B: {b:?} (backups: {:?})\n{run}",
            fx.backup_files()
        );
        return;
    }
}

// ---------------------------------------------------------------------------------------------
// 7. --reset with a leftover journal
// ---------------------------------------------------------------------------------------------

#[test]
fn reset_with_a_leftover_journal_deletes_nothing() {
    let _serial = serial();
    let fx = Fixture::new();
    write(&fx.a("keep"), "k\n");
    fx.once(&[]).expect_code(0);
    let mut s = watch_just_after_a_save(&fx);
    // A directory appears on alpha in one rename and reaches beta; kill before the save.
    let tmp = fx.root.join("tmp/e");
    write(&tmp.join("g1"), "1\n");
    write(&tmp.join("g2"), "2\n");
    let mark = s.log.len();
    rename(&tmp, &fx.a("e"));
    s.wait_event(mark, "the cycle that copies e/ to beta", |e| {
        is(e, "cycle_end") && to_beta(e) > 0
    });
    s.kill9();
    eprintln!("journal left by kill -9: {:?} bytes", pending_size(&fx));
    remove(&fx.a("e/g1"));
    assert!(
        exists(&fx.b("e/g1")) && exists(&fx.b("e/g2")),
        "setup: e/ should have reached beta before the kill"
    );

    let before = (tree(&fx.alpha), tree(&fx.beta));
    let run = fx.once(&["--reset"]);
    let deletions: Vec<&Value> = run
        .events("change")
        .into_iter()
        .filter(|e| e["action"] == "delete")
        .collect();
    assert!(
        deletions.is_empty(),
        "--reset merges both sides as in a first sync and deletes nothing, but it made \
         `delete` changes: {deletions:?}\n{run}"
    );
    let after = (tree(&fx.alpha), tree(&fx.beta));
    for (side, b, a) in [
        ("alpha", &before.0, &after.0),
        ("beta", &before.1, &after.1),
    ] {
        let gone: Vec<&String> = b.keys().filter(|k| !a.contains_key(*k)).collect();
        assert!(
            gone.is_empty(),
            "--reset with a leftover journal removed {gone:?} from {side}\n{run}"
        );
    }
    assert_content(&fx.a("e/g2"), "2\n");
    assert_content(&fx.b("e/g1"), "1\n");
    assert_content(&fx.b("e/g2"), "2\n");
}

// ---------------------------------------------------------------------------------------------
// 8. The journal stays bounded
// ---------------------------------------------------------------------------------------------

/// How fast the journal grows depends on how many cycles the machine runs (each failed copy of
/// db.log is one), so the bound is not one size: the journal must either stay small (under
/// 64 KiB) or stop growing: its largest size in the last 2 s of a 6 s stretch of changes is
/// at most 1.3 times its largest in the first 2 s (a journal flushed by each archive save
/// saw-tooths within the same range; one that only grows has tripled by then).
#[test]
fn the_pending_journal_does_not_grow_while_a_file_keeps_changing() {
    const LIMIT: u64 = 64 << 10;
    const STEP: Duration = Duration::from_millis(250);
    const STEPS: u32 = 24;
    let _serial = serial();
    let fx = Fixture::new();
    // A big file that changes every few milliseconds, so nearly every copy of it fails and is
    // retried; under a long path (~1 KiB), so each journal record is big enough for growth to
    // show within seconds.
    let name = "x".repeat(250);
    let dir = [name.as_str(); 4].join("/");
    let log = fx.a(&format!("{dir}/db.log"));
    write(&log, pseudo_random(11, 20_000_000));
    for i in 1..=300 {
        write(&fx.a(&format!("dir/f{i}")), format!("{i}\n"));
    }
    fx.once(&[]).expect_code(0);
    let pending = session_dir(&fx).join("pending");
    let mut s = fx.watch(&[]);

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, log) = (stop.clone(), log.clone());
        thread::spawn(move || {
            use std::io::Write as _;
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let mut f = fs::OpenOptions::new()
                    .append(true)
                    .open(&log)
                    .expect("opening db.log");
                writeln!(f, "line {i}").expect("appending to db.log");
                drop(f);
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut samples = Vec::new();
    let start = Instant::now();
    for k in 1..=STEPS {
        let at = start + STEP * k;
        while Instant::now() < at {
            s.poll_events(Duration::from_millis(20));
        }
        if s.exited() {
            stop.store(true, Ordering::SeqCst);
            let _ = writer.join();
            panic!(
                "ferry exited while db.log kept changing\n--- stderr ---\n{}",
                s.stderr()
            );
        }
        samples.push(fs::metadata(&pending).map(|m| m.len()).unwrap_or(0));
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("the writer thread");
    let window = (STEPS / 3) as usize;
    let early = samples[..window].iter().copied().max().unwrap_or(0);
    let late = samples[samples.len() - window..]
        .iter()
        .copied()
        .max()
        .unwrap_or(0);
    let max = samples.iter().copied().max().unwrap_or(0);
    let cycles = s.events_since(0, "cycle_end").len();
    // (No event dump on failure: every event names db.log's 1 KiB path.)
    // The journal is cleared by every archive write: if it ever shrank, it is not growing
    // without bound (the bug only ever appended). Sizes alone vary with the machine's load.
    let shrank = samples.windows(2).any(|w| w[1] < w[0]);
    assert!(
        shrank || max < LIMIT || (late as f64) <= (early as f64) * 1.3,
        "while db.log kept changing for 6 s ({cycles} cycles), the pending journal kept \
         growing: {early} bytes at most in the first 2 s, {late} in the last 2 s, {max} at most \
         (samples every 250 ms: {samples:?}); it must stay bounded\n--- stderr ---\n{}",
        s.stderr()
    );
    s.stop();
}

// ---------------------------------------------------------------------------------------------
// 9. A wipe that pauses half way
// ---------------------------------------------------------------------------------------------

/// The reviewer deleted half of beta, paused, then deleted the rest. The first part is a bulk
/// deletion like any other: it propagates once things are quiet, with every file it removes
/// on alpha kept in alpha's backup area. The rest empties beta's root: that is a wipe, and the
/// session stops asking for --accept-wipe (or is still holding). Nothing is lost either way.
#[test]
fn a_wipe_that_pauses_does_not_cost_the_other_side_its_files() {
    let fx = Fixture::new();
    small_tree(&fx.alpha, 8, 100);
    fx.once(&[]).expect_code(0);
    assert_eq!(count_files(&fx.beta), Some(800), "setup: beta holds 800");
    let before = tree(&fx.alpha);
    let mut s = fx.watch(&[]);
    for d in 0..5 {
        fs::remove_dir_all(fx.b(&format!("d{d}"))).expect("rm -rf beta/dN");
    }
    // The wipe pauses (a slow disk, a prompt), then goes on.
    let pause = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < pause {
        s.poll_events(Duration::from_millis(20));
    }
    for d in 5..8 {
        fs::remove_dir_all(fx.b(&format!("d{d}"))).expect("rm -rf beta/dN");
    }
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end && !s.exited() {
        s.poll_events(Duration::from_millis(20));
    }
    let status = if s.exited() {
        Some(s.wait_exit("ferry's last output"))
    } else {
        None
    };
    fx.assert_kept(&before, "alpha");
    // The emptied root itself is never propagated: alpha keeps the last three directories.
    for d in 5..8 {
        assert!(exists(&fx.a(&format!("d{d}"))), "alpha lost d{d}");
    }
    match status {
        Some(st) if st.code() == Some(0) => {
            s.fail("ferry exited 0 on its own after beta was wiped");
        }
        Some(st) => {
            if !s.stderr().contains("--accept-wipe") {
                s.fail(&format!(
                    "ferry stopped ({st:?}) after beta was wiped, but stderr does not mention \
                     --accept-wipe"
                ));
            }
        }
        None => {
            // Holding: still fine, as long as alpha kept its files.
            s.signal_and_wait(libc::SIGTERM);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 10. Held deletions are not starved by churn
// ---------------------------------------------------------------------------------------------

/// 300 deletions on beta are held (a bulk deletion); a temporary file on beta that is created
/// and deleted every 0.4 s must not keep them waiting: they reach alpha within 15 s.
#[test]
fn held_deletions_are_applied_while_an_unrelated_file_keeps_changing() {
    let fx = Fixture::new();
    for i in 1..=300 {
        write(&fx.a(&format!("big/{i}")), "");
    }
    // 400 files that stay, so the deletion is less than half of each side (deleting half or
    // more while watching is refused as a wipe, which is not what this test is about).
    for i in 1..=400 {
        write(&fx.a(&format!("keep/{i}")), "");
    }
    write(&fx.a("keep/k"), "x\n");
    fx.once(&[]).expect_code(0);
    let mut s = fx.watch(&[]);
    fs::remove_dir_all(fx.b("big")).expect("rm -rf beta/big");
    let started = Instant::now();

    // A temporary file on beta, created and deleted every 0.4 s, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (stop, tmp) = (stop.clone(), fx.b("keep/tmp"));
        thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let _ = fs::write(&tmp, format!("{i}\n"));
                thread::sleep(Duration::from_millis(200));
                let _ = fs::remove_file(&tmp);
                thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let limit = Duration::from_secs(15);
    let mut left = count_files(&fx.a("big"));
    while left != Some(0) || exists(&fx.a("big")) {
        if s.exited() {
            stop.store(true, Ordering::SeqCst);
            s.fail("ferry exited while beta's deletions were held");
        }
        if started.elapsed() >= limit {
            stop.store(true, Ordering::SeqCst);
            let holds = s.events_since(0, "hold");
            s.fail(&format!(
                "300 deletions on beta were still not applied to alpha after {limit:?} \
                 (alpha/big holds {left:?} files; `hold` events: {holds:?}): held deletions \
                 wait for an unrelated temporary file that keeps changing on beta"
            ));
        }
        s.poll_events(Duration::from_millis(50));
        left = count_files(&fx.a("big"));
    }
    eprintln!("alpha/big gone {:?} after the deletion", started.elapsed());
    stop.store(true, Ordering::SeqCst);
    churn.join().expect("the churn thread");
    assert_content(&fx.a("keep/k"), "x\n");
    s.stop();
}
