//! Regressions found by the third review: each test reproduces one of the reviewer's scripts
//! (kill -9 at a chosen moment through an LD_PRELOAD shim built at test time, a torn journal,
//! a slow wipe, races with an editor's save) and asserts what ferry promises: a person's
//! version is never deleted, a refused wipe stays refused, a wipe never costs the other side
//! its files.
//!
//! Waits are for events, process exits or polled conditions with a deadline; the sleeps are
//! the pauses the scenarios need (distinct modification times, a wipe at a given pace).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Shims (C source, compiled by each test into its own temp dir)
// ---------------------------------------------------------------------------------------------

/// The reviewer's crash.c. `CRASH_AT` picks the moment ferry dies (SIGKILL), or pauses for
/// `PAUSE_SECS` instead (to let another process run):
/// - `xchg`: right after the first successful `renameat2(RENAME_EXCHANGE)` whose target contains
///   `CRASH_PATH` (the person's version is now in staging);
/// - `aside`: right after a successful `rename(CRASH_PATH.., *ferry-aside*)` (a file being
///   removed was just moved out of the way);
/// - `noreplace`: right after the `CRASH_N`th new file placed (by `renameat2(RENAME_NOREPLACE)`
///   or by `linkat`);
/// - `unlink_pending`: just before the `pending` journal is unlinked (the archive is written);
/// - `unlink_aside`: right after the first successful unlink of a `ferry-aside` file.
///
/// Says what it did on stderr ("[shim] ...").
const CRASH_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
static void hit(const char *what, const char *p) {
    const char *ps = getenv("PAUSE_SECS");
    fprintf(stderr, "[shim] after %s of %s: %s\n", what, p, ps ? "pausing" : "SIGKILL");
    fflush(stderr);
    if (ps) { sleep(atoi(ps)); return; }
    raise(SIGKILL);
}
/* New files are placed by renameat2(RENAME_NOREPLACE) from staging, or by linkat() from an
   unnamed file: CRASH_AT=noreplace counts both. */
static int placed = 0;
static void placed_one(const char *p) {
    const char *at = getenv("CRASH_AT");
    if (at && !strcmp(at, "noreplace") && ++placed == atoi(getenv("CRASH_N") ? getenv("CRASH_N") : "1"))
        hit("placing a new file at", p);
}
int linkat(int od, const char *op, int nd, const char *np, int flags) {
    static int (*real)(int, const char *, int, const char *, int) = 0;
    if (!real) real = (int (*)(int, const char *, int, const char *, int))dlsym(RTLD_NEXT, "linkat");
    int r = real(od, op, nd, np, flags);
    if (r == 0) placed_one(np);
    return r;
}
long syscall(long n, ...) {
    va_list ap; va_start(ap, n);
    long a[6]; for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    static long (*real)(long, ...) = 0;
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    char from[8192] = "", to[8192] = "";
    if (n == SYS_renameat2) {
        resolve((int)a[0], (const char *)a[1], from, sizeof from);
        resolve((int)a[2], (const char *)a[3], to, sizeof to);
    }
    long r = real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
    static int done = 0, done_aside = 0;
    const char *at = getenv("CRASH_AT"), *cp = getenv("CRASH_PATH");
    if (n == SYS_renameat2 && (a[4] & RENAME_EXCHANGE) && r == 0 && !done && at && !strcmp(at, "xchg")
        && cp && strstr(to, cp)) { done = 1; hit("exchange", to); }
    if (n == SYS_renameat2 && (a[4] & 1) && r == 0) placed_one(to);
    if (n == SYS_renameat2 && a[4] == 0 && r == 0 && !done_aside && at && !strcmp(at, "aside") && cp
        && strstr(from, cp) && strstr(to, "ferry-aside")) { done_aside = 1; hit("move aside", from); }
    return r;
}
int unlinkat(int d, const char *p0, int fl) {
    static int (*real)(int, const char *, int) = 0;
    if (!real) real = (int (*)(int, const char *, int))dlsym(RTLD_NEXT, "unlinkat");
    char p[8192];
    resolve(d, p0, p, sizeof p);
    int r = real(d, p0, fl);
    static int done = 0;
    const char *at = getenv("CRASH_AT");
    if (r == 0 && !done && at && !strcmp(at, "unlink_aside") && strstr(p, "ferry-aside")) {
        done = 1; hit("unlink", p);
    }
    return r;
}
int unlink(const char *p) {
    static int (*real)(const char *) = 0;
    if (!real) real = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
    const char *at0 = getenv("CRASH_AT"); size_t lp = strlen(p);
    if (at0 && !strcmp(at0, "unlink_pending") && lp >= 8 && !strcmp(p + lp - 8, "/pending"))
        hit("archive write, before unlink", p);
    int r = real(p);
    static int done = 0;
    const char *at = getenv("CRASH_AT");
    if (r == 0 && !done && at && !strcmp(at, "unlink_aside") && strstr(p, "ferry-aside")) {
        done = 1; hit("unlink", p);
    }
    return r;
}
int rename(const char *from, const char *to) {
    static int (*real)(const char *, const char *) = 0;
    if (!real) real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    int r = real(from, to);
    static int done = 0;
    const char *at = getenv("CRASH_AT"), *cp = getenv("CRASH_PATH");
    if (r == 0 && !done && at && !strcmp(at, "aside") && cp && strstr(from, cp) && strstr(to, "ferry-aside"))
        { done = 1; hit("move aside", from); }
    return r;
}
"#;

/// The reviewer's race3.c: around ferry's first `RENAME_EXCHANGE` into `RACE_PATH`, just
/// before it the person's program appends to the file (so the swap-back path runs); just after
/// it the person's editor saves a newer version (write tmp + rename over the path).
const RACE3_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
long syscall(long n, ...) {
    va_list ap; va_start(ap, n);
    long a[6]; for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    static long (*real)(long, ...) = 0;
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    static int done = 0;
    char to[8192] = "";
    if (n == SYS_renameat2) resolve((int)a[2], (const char *)a[3], to, sizeof to);
    const char *trig = getenv("RACE_PATH");
    int hit = n == SYS_renameat2 && (a[4] & RENAME_EXCHANGE) && !done && trig && strstr(to, trig);
    if (hit) { FILE *f = fopen(to, "a"); if (f) { fputs("USER EDIT 1 (older)\n", f); fclose(f); } }
    long r = real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (hit) {
        done = 1;
        char t[4096]; snprintf(t, sizeof t, "%s.editor-tmp", to);
        FILE *f = fopen(t, "w"); if (f) { fputs("USER EDIT 2 (newest save)\n", f); fclose(f); }
        rename(t, to);
        fprintf(stderr, "[shim] appended to %s before the exchange, saved a newer version after it\n", to);
    }
    return r;
}
"#;

/// The reviewer's s7 race, made independent of how ferry removes a symlink: right before
/// ferry's first `unlink`, `rename` or `renameat2` *of* `RACE_UNLINK` (an absolute path), an
/// editor saves a regular file there (write tmp + rename over the path).
const SYMRACE_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
static int (*real_rename)(const char *, const char *) = 0;
static int raced = 0;
static void race(const char *p) {
    const char *ru = getenv("RACE_UNLINK");
    if (!ru || raced || !p || strcmp(p, ru)) return;
    raced = 1;
    if (!real_rename) real_rename = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    char t[4096]; snprintf(t, sizeof t, "%s.editor-tmp", p);
    FILE *f = fopen(t, "w"); if (f) { fputs("USER'S NEW VERSION\n", f); fclose(f); }
    real_rename(t, p);
    fprintf(stderr, "[shim] an editor saved %s (write tmp + rename) just before ferry removed it\n", p);
}
int unlink(const char *p) {
    static int (*real)(const char *) = 0;
    if (!real) real = (int (*)(const char *))dlsym(RTLD_NEXT, "unlink");
    race(p);
    return real(p);
}
int unlinkat(int d, const char *p0, int fl) {
    static int (*real)(int, const char *, int) = 0;
    if (!real) real = (int (*)(int, const char *, int))dlsym(RTLD_NEXT, "unlinkat");
    char p[8192];
    resolve(d, p0, p, sizeof p);
    race(p);
    return real(d, p0, fl);
}
int rename(const char *from, const char *to) {
    if (!real_rename) real_rename = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    race(from);
    return real_rename(from, to);
}
long syscall(long n, ...) {
    va_list ap; va_start(ap, n);
    long a[6]; for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    static long (*real)(long, ...) = 0;
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    if (n == SYS_renameat2) {
        char from[8192];
        resolve((int)a[0], (const char *)a[1], from, sizeof from);
        race(from);
    }
    return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}
"#;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `ferry sync ALPHA BETA --json EXTRA...` with extra environment variables, not waited for.
fn spawn_with_env(fx: &Fixture, extra: &[&str], envs: &[(&str, &OsStr)]) -> Session {
    let mut cmd = fx.command();
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut args: Vec<OsString> = vec![
        "sync".into(),
        fx.alpha.clone().into(),
        fx.beta.clone().into(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    Session::spawn(cmd, args)
}

/// `ferry sync ALPHA BETA --once --json EXTRA...` with extra environment variables, waited for
/// (at most [`DEADLINE`]).
fn once_with_env(fx: &Fixture, extra: &[&str], envs: &[(&str, &OsStr)]) -> (ExitStatus, Session) {
    let mut all = vec!["--once"];
    all.extend_from_slice(extra);
    let mut s = spawn_with_env(fx, &all, envs);
    let st = s.wait_exit("ferry --once to finish");
    (st, s)
}

/// Fails the test (showing ferry's output) unless the shim said `marker` on stderr: the
/// scenario was not reproduced otherwise.
fn require_shim(s: &mut Session, marker: &str, what: &str) {
    if !s.stderr().contains(marker) {
        s.fail(&format!(
            "the shim never fired ({what}), so the scenario was not reproduced"
        ));
    }
}

/// The one session directory under `state`.
fn session_dir_in(state: &Path) -> PathBuf {
    let sessions = state.join("ferry").join("sessions");
    let dirs: Vec<PathBuf> = fs::read_dir(&sessions)
        .unwrap_or_else(|e| panic!("{}: {e}", sessions.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "expected one session directory: {dirs:?}");
    dirs.into_iter().next().expect("one session")
}

/// Files under the backup areas (`sessions/*/backups/`) of the state directory `state`.
fn backups_under(state: &Path) -> Vec<PathBuf> {
    let mut out = files_containing(&state.join("ferry").join("sessions"), None, b"");
    out.retain(|p| p.components().any(|c| c.as_os_str() == "backups"));
    out
}

/// Where a person can find `needle` again: files on alpha, on beta, or in the backup area.
fn recoverable(fx: &Fixture, needle: &[u8]) -> Vec<PathBuf> {
    let mut out = files_containing(&fx.alpha, None, needle);
    out.extend(files_containing(&fx.beta, None, needle));
    out.extend(
        fx.backup_files()
            .into_iter()
            .filter(|p| contains(p, needle)),
    );
    out
}

/// Every copy of `needle` anywhere in the fixture except the shims (for failure messages).
fn anywhere(fx: &Fixture, needle: &[u8]) -> Vec<PathBuf> {
    let mut out = files_containing(&fx.root, None, needle);
    out.retain(|p| !p.starts_with(shim_dir(fx)));
    out
}

/// Three directories `d1..d3` of 100 small files each.
fn three_hundred(root: &Path) {
    for d in 1..=3 {
        let dir = root.join(format!("d{d}"));
        mkdir(&dir);
        for f in 1..=100 {
            fs::write(dir.join(format!("f{f}")), format!("{d} {f}\n"))
                .unwrap_or_else(|e| panic!("writing {}: {e}", dir.display()));
        }
    }
}

/// Writes `data` to `path` the way editors do (a temporary file renamed over it).
fn save(fx: &Fixture, path: &Path, data: &str) {
    let tmp = fx.root.join("editor.tmp");
    write(&tmp, data);
    rename(&tmp, path);
}

fn deletions(log: &[Value]) -> Vec<&Value> {
    log.iter()
        .filter(|e| is(e, "change") && e["action"] == "delete")
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. A person's version left in staging by a kill is never deleted
// ---------------------------------------------------------------------------------------------

/// s1.sh: both sides edit P; two-way-resolved replaces beta's edit with alpha's, and ferry is
/// killed right after the RENAME_EXCHANGE (beta's edit is now the file in staging). The restart
/// must not delete it: it is on a side or in the backup area (e.g. backups/beta/recovered-*).
#[test]
fn a_version_swapped_into_staging_by_a_kill_survives_the_restart() {
    const BETA_EDIT: &[u8] = b"BETA PERSON'S EDIT\n";
    let fx = Fixture::new();
    let so = build_shim(&fx, "crash", CRASH_C);
    write(&fx.a("P"), "orig\n");
    write(&fx.a("keep"), "k\n");
    fx.once(&[]).expect_code(0);
    thread::sleep(Duration::from_millis(100));
    write(&fx.a("P"), "ALPHA EDIT\n");
    write(&fx.b("P"), BETA_EDIT);

    let target = fx.b("P");
    let (st, mut s) = once_with_env(
        &fx,
        &["--mode", "two-way-resolved"],
        &[
            ("LD_PRELOAD", so.as_os_str()),
            ("CRASH_AT", OsStr::new("xchg")),
            ("CRASH_PATH", target.as_os_str()),
        ],
    );
    require_shim(
        &mut s,
        "[shim] after exchange",
        "no RENAME_EXCHANGE onto beta/P",
    );
    eprintln!("crashed run: {st:?}");

    let run = fx.once(&["--mode", "two-way-resolved"]);
    let found = recoverable(&fx, BETA_EDIT);
    assert!(
        !found.is_empty(),
        "ferry was killed right after swapping alpha's P into beta (beta's edit now in \
         staging); the restart deleted beta's edit: it is on neither side nor in the backup \
         area (copies anywhere in the fixture: {:?})\n{run}",
        anywhere(&fx, BETA_EDIT)
    );
    eprintln!("beta's edit kept at {found:?}");
}

/// s2.sh: one-way-replica removes a file only beta has (it must be backed up); ferry is killed
/// right after moving it aside. The restart must not delete it.
#[test]
fn a_file_moved_aside_by_a_killed_removal_survives_the_restart() {
    const NOTES: &[u8] = b"BETA-ONLY NOTES\n";
    let fx = Fixture::new();
    let so = build_shim(&fx, "crash", CRASH_C);
    write(&fx.a("keep"), "k\n");
    fx.once(&["--mode", "one-way-replica"]).expect_code(0);
    write(&fx.b("notes.txt"), NOTES);

    let target = fx.b("notes.txt");
    let (st, mut s) = once_with_env(
        &fx,
        &["--mode", "one-way-replica"],
        &[
            ("LD_PRELOAD", so.as_os_str()),
            ("CRASH_AT", OsStr::new("aside")),
            ("CRASH_PATH", target.as_os_str()),
        ],
    );
    require_shim(
        &mut s,
        "[shim] after move aside",
        "beta/notes.txt was never renamed to a ferry-aside name",
    );
    eprintln!("crashed run: {st:?}");

    let run = fx.once(&["--mode", "one-way-replica"]);
    let found = recoverable(&fx, NOTES);
    assert!(
        !found.is_empty(),
        "ferry was killed right after moving beta-only notes.txt aside to remove it; the \
         restart deleted it: it is on neither side nor in the backup area (copies anywhere in \
         the fixture: {:?})\n{run}",
        anywhere(&fx, NOTES)
    );
    eprintln!("notes kept at {found:?}");
}

/// s3.sh: two sessions share a root, with the state directory on another filesystem (so both
/// stage inside that root). Session 1 (x -> shared, one-way-replica) has moved a file only the
/// shared root has aside to remove it and pauses; session 2 (y <-> shared) runs meanwhile and
/// must not delete what session 1 moved aside.
#[test]
fn a_second_session_on_a_shared_root_does_not_delete_what_the_first_moved_aside() {
    const NOTES: &[u8] = b"SHARED-ONLY NOTES\n";
    let fx = Fixture::new();
    let so = build_shim(&fx, "crash", CRASH_C);
    let shm = Path::new("/dev/shm");
    let state = match tempfile::Builder::new()
        .prefix("ferry-it-state-")
        .tempdir_in(shm)
    {
        Ok(t) => t,
        Err(e) => panic!(
            "this test needs a state directory on another filesystem than the roots and uses \
             /dev/shm for it: {e}"
        ),
    };
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).expect("stat");
    assert_ne!(
        dev(state.path()),
        dev(&fx.root),
        "this test needs /dev/shm on another filesystem than the temp directory (so ferry \
         stages inside the roots)"
    );
    let (x, shared, y) = (fx.alpha.clone(), fx.beta.clone(), fx.root.join("y"));
    mkdir(&y);
    let run_in = |from: &Path, to: &Path, extra: &[&str], envs: &[(&str, &OsStr)]| {
        let mut cmd = fx.command();
        cmd.env("XDG_STATE_HOME", state.path());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut args: Vec<OsString> = vec![
            "sync".into(),
            from.into(),
            to.into(),
            "--once".into(),
            "--json".into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        Session::spawn(cmd, args)
    };

    write(&x.join("keep"), "k\n");
    let mut first = run_in(&x, &shared, &["--mode", "one-way-replica"], &[]);
    let st = first.wait_exit("session 1's first sync");
    if st.code() != Some(0) {
        first.fail(&format!("session 1's first sync: {st:?}"));
    }
    write(&shared.join("notes.txt"), NOTES);

    let target = shared.join("notes.txt");
    let mut s1 = run_in(
        &x,
        &shared,
        &["--mode", "one-way-replica"],
        &[
            ("LD_PRELOAD", so.as_os_str()),
            ("CRASH_AT", OsStr::new("aside")),
            ("CRASH_PATH", target.as_os_str()),
            ("PAUSE_SECS", OsStr::new("3")),
        ],
    );
    s1.wait_until("session 1 moved shared/notes.txt aside", || {
        !exists(&target)
    });
    thread::sleep(Duration::from_millis(200));
    let mut s2 = run_in(&y, &shared, &[], &[]);
    let st2 = s2.wait_exit("session 2 (y <-> shared)");
    eprintln!("session 2: {st2:?}");
    let st1 = s1.wait_exit("session 1 after its pause");
    require_shim(
        &mut s1,
        "[shim] after move aside",
        "shared/notes.txt was never renamed to a ferry-aside name",
    );
    eprintln!("session 1: {st1:?}");

    let mut found = files_containing(&x, None, NOTES);
    found.extend(files_containing(&y, None, NOTES));
    found.extend(files_containing(&shared, None, NOTES));
    found.extend(
        backups_under(state.path())
            .into_iter()
            .filter(|p| contains(p, NOTES)),
    );
    if found.is_empty() {
        let elsewhere = files_containing(state.path(), None, NOTES);
        s1.fail(&format!(
            "session 1 moved shared/notes.txt aside to remove it (backing it up) and paused; \
             session 2 ran on the same root meanwhile; afterwards the notes are in no root and \
             in no backup area (copies in the state dir: {elsewhere:?}; session 2 {st2:?}, \
             stderr: {})",
            s2.stderr()
        ));
    }
    eprintln!("notes kept at {found:?}");
}

// ---------------------------------------------------------------------------------------------
// 2. A refused wipe stays refused
// ---------------------------------------------------------------------------------------------

/// s4.sh: `rm -rf alpha/*` (a .gitignore stays) while watching. The root is not emptied, so
/// this is a bulk deletion: it propagates, every file it removes on beta is kept in beta's
/// backup area, and the session goes on; a plain `--once` afterwards finds nothing to do.
#[test]
fn a_near_wipe_while_watching_propagates_with_every_file_kept() {
    let _serial = serial();
    let fx = Fixture::new();
    three_hundred(&fx.alpha);
    write(&fx.a(".gitignore"), "node_modules/\n");
    fx.once(&[]).expect_code(0);
    assert_eq!(
        count_files(&fx.beta),
        Some(301),
        "setup: beta holds 301 files"
    );
    let before = tree(&fx.beta);

    let mut s = fx.watch(&[]);
    for d in 1..=3 {
        fs::remove_dir_all(fx.a(&format!("d{d}"))).expect("rm -rf alpha/dN");
    }
    s.wait_until("the deletions to reach beta", || {
        count_files(&fx.beta) == Some(1)
    });
    assert!(!s.exited(), "the session stopped: {}", s.stderr());
    s.stop();
    fx.assert_kept(&before, "beta");
    let run = fx.once(&[]);
    run.expect_code(0);
    assert!(deletions(&run.events).is_empty(), "{run}");
}

// ---------------------------------------------------------------------------------------------
// 3. An interrupted --reset does not bring the old archive back
// ---------------------------------------------------------------------------------------------

/// s10.sh: alpha is wiped, ferry refuses, the person runs --reset as told; that run is killed
/// half way through refilling alpha. A plain re-run must not take the old archive for the
/// truth and delete beta's files.
#[test]
fn an_interrupted_reset_does_not_bring_the_old_archive_back() {
    let fx = Fixture::new();
    let so = build_shim(&fx, "crash", CRASH_C);
    three_hundred(&fx.alpha);
    fx.once(&[]).expect_code(0);
    assert_eq!(count_files(&fx.beta), Some(300), "setup: beta holds 300");
    for d in 1..=3 {
        fs::remove_dir_all(fx.a(&format!("d{d}"))).expect("rm -rf alpha/dN");
    }
    let refused = fx.once(&[]);
    assert!(
        refused.code() != 0 && count_files(&fx.beta) == Some(300),
        "setup: the run after alpha's wipe should refuse and delete nothing\n{refused}"
    );

    let (st, mut s) = once_with_env(
        &fx,
        &["--reset"],
        &[
            ("LD_PRELOAD", so.as_os_str()),
            ("CRASH_AT", OsStr::new("noreplace")),
            ("CRASH_N", OsStr::new("50")),
        ],
    );
    require_shim(
        &mut s,
        "[shim] after placing a new file",
        "the --reset run placed fewer than 50 new files",
    );
    let before = (count_files(&fx.alpha), count_files(&fx.beta));
    eprintln!("killed --reset run: {st:?}; (alpha, beta) files: {before:?}");

    let run = fx.once(&[]);
    let after = (count_files(&fx.alpha), count_files(&fx.beta));
    let dels = deletions(&run.events);
    assert!(
        dels.is_empty() && after.0 >= before.0 && after.1 >= before.1,
        "a --reset run was killed after refilling part of alpha; the plain re-run deleted \
         files ((alpha, beta) files {before:?} -> {after:?}, {} `delete` changes): the \
         interrupted reset brought the old archive back\n{run}",
        dels.len()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A slow wipe
// ---------------------------------------------------------------------------------------------

/// s8.sh: alpha's 300 files are deleted one by one at about 40 a second while watching (slower
/// than the rate the hold looks for). At least three quarters of beta's files must survive,
/// on beta or as copies in beta's backup area (deletions in a bulk episode keep a copy), and
/// ferry must end up refusing (a non-zero exit asking for --accept-wipe) or still be holding.
#[test]
fn a_slow_wipe_does_not_cost_the_other_side_its_files() {
    let _serial = serial();
    let fx = Fixture::new();
    three_hundred(&fx.alpha);
    fx.once(&[]).expect_code(0);
    assert_eq!(count_files(&fx.beta), Some(300), "setup: beta holds 300");
    let mut s = fx.watch(&[]);

    let alpha = fx.alpha.clone();
    let wiper = thread::spawn(move || {
        for d in 1..=3 {
            let dir = alpha.join(format!("d{d}"));
            let mut names: Vec<PathBuf> = fs::read_dir(&dir)
                .expect("listing alpha/dN")
                .flatten()
                .map(|e| e.path())
                .collect();
            names.sort();
            for p in names {
                fs::remove_file(&p).expect("rm alpha/dN/fN");
                thread::sleep(Duration::from_millis(25));
            }
            fs::remove_dir(&dir).expect("rmdir alpha/dN");
        }
    });
    while !wiper.is_finished() {
        s.poll_events(Duration::from_millis(20));
    }
    wiper.join().expect("the wiping thread");
    let end = Instant::now() + Duration::from_secs(6);
    while !s.exited() && Instant::now() < end {
        s.poll_events(Duration::from_millis(20));
    }
    let left = kept_on_beta_or_backed_up(&fx);
    let holds = s.events_since(0, "hold").len();
    let status = if s.exited() {
        Some(s.wait_exit("ferry's last output"))
    } else {
        None
    };
    if left.is_none_or(|n| n < 225) {
        s.fail(&format!(
            "alpha's 300 files were deleted at about 40 a second while watching; beta was left \
             with {left:?} of its 300 files ({holds} `hold` events; ferry {}): a slow wipe must \
             be held and refused, not applied file by file",
            match status {
                Some(st) => format!("exited {st:?}"),
                None => "still running".into(),
            }
        ));
    }
    match status {
        Some(st) if st.code() == Some(0) => {
            s.fail("ferry exited 0 on its own after alpha was wiped");
        }
        Some(st) => {
            if !s.stderr().contains("--accept-wipe") && !s.stderr().contains("wipe") {
                s.fail(&format!(
                    "ferry stopped ({st:?}) after alpha was wiped, but stderr mentions neither \
                     --accept-wipe nor the wipe"
                ));
            }
        }
        None => {
            // Still holding: fine, as long as beta keeps its files through the stop.
            s.signal_and_wait(libc::SIGTERM);
            let left = kept_on_beta_or_backed_up(&fx);
            if left.is_none_or(|n| n < 225) {
                s.fail(&format!(
                    "after SIGTERM, beta holds {left:?} of its 300 files (alpha was wiped slowly)"
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. A torn journal tail
// ---------------------------------------------------------------------------------------------

/// s5.sh: a run killed mid-change leaves a journal whose last record is torn (as a kill
/// mid-write leaves it). The next run deletes beta/P (alpha deleted it) and is killed before
/// saving its archive; its journal records come after the torn one. The person restores P on
/// alpha: the following run must not delete it (beta's deletion was ferry's own).
#[test]
fn a_torn_journal_tail_does_not_make_a_restored_file_deleted() {
    let fx = Fixture::new();
    let so = build_shim(&fx, "crash", CRASH_C);
    write(&fx.a("P"), "X\n");
    write(&fx.a("Q"), "q1\n");
    write(&fx.a("keep"), "k\n");
    fx.once(&[]).expect_code(0);
    let pending = session_dir_in(&fx.state).join("pending");

    // Run 1: a change to Q, killed right after beta/Q is exchanged.
    thread::sleep(Duration::from_millis(50));
    write(&fx.a("Q"), "q2\n");
    let target = fx.b("Q");
    let (_, mut s) = once_with_env(
        &fx,
        &[],
        &[
            ("LD_PRELOAD", so.as_os_str()),
            ("CRASH_AT", OsStr::new("xchg")),
            ("CRASH_PATH", target.as_os_str()),
        ],
    );
    require_shim(
        &mut s,
        "[shim] after exchange",
        "no RENAME_EXCHANGE onto beta/Q",
    );
    let len = fs::metadata(&pending).map(|m| m.len()).unwrap_or(0);
    if len <= 3 {
        s.fail(&format!(
            "run 1 was killed mid-change but left a journal of {len} bytes; the scenario needs \
             one to tear"
        ));
    }
    // Tear the last 3 bytes, as a kill mid-write leaves them.
    fs::OpenOptions::new()
        .write(true)
        .open(&pending)
        .and_then(|f| f.set_len(len - 3))
        .expect("tearing the journal");

    // Run 2 (watching): alpha deleted P; killed right after beta/P is removed.
    remove(&fx.a("P"));
    let mut s = spawn_with_env(
        &fx,
        &[],
        &[
            ("LD_PRELOAD", so.as_os_str()),
            ("CRASH_AT", OsStr::new("unlink_aside")),
        ],
    );
    let end = Instant::now() + DEADLINE;
    while !s.exited() && Instant::now() < end {
        s.poll_events(Duration::from_millis(20));
    }
    if !s.exited() {
        s.fail(
            "run 2 (watching) was never killed: ferry did not unlink a ferry-aside file to \
             remove beta/P, so the scenario was not reproduced",
        );
    }
    s.wait_exit("run 2's last output");
    require_shim(
        &mut s,
        "[shim] after unlink",
        "no ferry-aside file unlinked",
    );
    if exists(&fx.b("P")) {
        s.fail("run 2 was killed but beta/P still exists: the scenario was not reproduced");
    }

    // The person restores P on alpha (git checkout P).
    write(&fx.a("P"), "X\n");
    let run = fx.once(&[]);
    let dels: Vec<&Value> = run
        .changes_at("P")
        .into_iter()
        .filter(|e| e["action"] == "delete")
        .collect();
    assert!(
        dels.is_empty() && exists(&fx.a("P")),
        "a run left a torn journal tail; the next run removed beta/P (alpha had deleted it) \
         and was killed; the person restored P on alpha and the following run deleted it \
         ({dels:?}; alpha/P exists: {}): the records after the torn tail were never read\n{run}",
        exists(&fx.a("P"))
    );
    assert_content(&fx.a("P"), "X\n");
    assert_content(&fx.b("P"), "X\n");
}

// ---------------------------------------------------------------------------------------------
// 6. A crash between writing the archive and removing the journal
// ---------------------------------------------------------------------------------------------

/// s6.py: while alpha/P keeps changing (C, B, C, ...), ferry is killed after writing its
/// archive and before removing the journal. The person on beta then undoes P's last change.
/// The restart must not replay the stale journal over the newer archive and overwrite the
/// undo without a backup.
#[test]
fn a_stale_journal_does_not_overwrite_a_later_edit() {
    let _serial = serial();
    for attempt in 0..3 {
        let fx = Fixture::new();
        let so = build_shim(&fx, "crash", CRASH_C);
        write(&fx.a("P"), "B\n");
        write(&fx.a("keep"), "k\n");
        fx.once(&[]).expect_code(0);
        let mut s = spawn_with_env(
            &fx,
            &[],
            &[
                ("LD_PRELOAD", so.as_os_str()),
                ("CRASH_AT", OsStr::new("unlink_pending")),
            ],
        );
        s.wait_event(0, "the `watching` event", |e| is(e, "watching"));
        let vals = ["C\n", "B\n"];
        let mut i = 0;
        while !s.exited() && i < 400 {
            save(&fx, &fx.a("P"), vals[i % 2]);
            i += 1;
            let until = Instant::now() + Duration::from_millis(25);
            while Instant::now() < until {
                s.poll_events(Duration::from_millis(5));
            }
        }
        let end = Instant::now() + Duration::from_secs(5);
        while !s.exited() && Instant::now() < end {
            s.poll_events(Duration::from_millis(20));
        }
        let pending = session_dir_in(&fx.state).join("pending");
        let reproduced =
            s.exited() && s.stderr().contains("[shim] after archive write") && exists(&pending);
        if !reproduced {
            if attempt < 2 {
                eprintln!(
                    "attempt {attempt}: ferry was not killed between writing its archive and \
                     removing a journal; trying again"
                );
                continue;
            }
            s.fail(
                "ferry was never killed between writing its archive and removing the pending \
                 journal (3 attempts): the scenario was not reproduced",
            );
        }
        s.wait_exit("the killed session's last output");
        let a = String::from_utf8_lossy(&read(&fx.a("P"))).into_owned();
        let b = String::from_utf8_lossy(&read(&fx.b("P"))).into_owned();
        if a != b {
            // As if the last write had been synced.
            save(&fx, &fx.a("P"), &b);
        }
        let undo = if b == "B\n" { "C\n" } else { "B\n" };
        thread::sleep(Duration::from_millis(50));
        save(&fx, &fx.b("P"), undo);
        let old_backups = fx.backup_files();

        let run = fx.once(&[]);
        let at_paths: Vec<PathBuf> = [fx.a("P"), fx.b("P")]
            .into_iter()
            .filter(|p| fs::read(p).ok().as_deref() == Some(undo.as_bytes()))
            .collect();
        let new_backups: Vec<PathBuf> = fx
            .backup_files()
            .into_iter()
            .filter(|p| !old_backups.contains(p))
            .filter(|p| fs::read(p).ok().as_deref() == Some(undo.as_bytes()))
            .collect();
        assert!(
            !at_paths.is_empty() || !new_backups.is_empty() || run.conflict_at("P"),
            "ferry was killed after writing its archive, before removing the journal (alpha/P \
             = beta/P = {b:?}); the person on beta then undid P to {undo:?}; the restart \
             overwrote the undo without a backup and without a conflict (alpha/P = {:?}, \
             beta/P = {:?}): the stale journal was replayed over the newer archive\n{run}",
            String::from_utf8_lossy(&read(&fx.a("P"))),
            String::from_utf8_lossy(&read(&fx.b("P")))
        );
        return;
    }
}

// ---------------------------------------------------------------------------------------------
// 7. A symlink replaced by a file just before its removal
// ---------------------------------------------------------------------------------------------

/// s7.sh: alpha deletes a symlink; right before ferry removes beta's link, an editor saves a
/// regular file at that path. The file's content must not be lost.
#[test]
fn a_file_saved_over_a_symlink_being_removed_is_not_lost() {
    const NEW: &[u8] = b"USER'S NEW VERSION\n";
    let fx = Fixture::new();
    let so = build_shim(&fx, "symrace", SYMRACE_C);
    symlink("keep", &fx.a("link"));
    write(&fx.a("keep"), "k\n");
    fx.once(&[]).expect_code(0);
    assert!(
        fs::symlink_metadata(fx.b("link")).is_ok_and(|m| m.file_type().is_symlink()),
        "setup: beta/link should be a symlink"
    );
    remove(&fx.a("link"));

    let target = fx.b("link");
    let (st, mut s) = once_with_env(
        &fx,
        &[],
        &[
            ("LD_PRELOAD", so.as_os_str()),
            ("RACE_UNLINK", target.as_os_str()),
        ],
    );
    require_shim(
        &mut s,
        "[shim] an editor saved",
        "ferry neither unlinked nor renamed beta/link",
    );
    let found = recoverable(&fx, NEW);
    if found.is_empty() {
        let elsewhere = anywhere(&fx, NEW);
        s.fail(&format!(
            "an editor saved a file at beta/link just before ferry removed the (deleted on \
             alpha) symlink there; afterwards the file's content is on neither side nor in the \
             backup area (exit {st:?}; copies anywhere: {elsewhere:?})"
        ));
    }
    eprintln!("the editor's save kept at {found:?}");
}

// ---------------------------------------------------------------------------------------------
// 8. The swap-back does not put an older version over the newest save
// ---------------------------------------------------------------------------------------------

/// s9.sh: ferry replaces beta/P; right before its RENAME_EXCHANGE a program appends to beta/P
/// (so ferry swaps back), and right after it an editor saves a newer version. The newest save
/// must be at beta/P afterwards; the older one must not be lost either.
#[test]
fn the_swap_back_does_not_put_an_older_version_over_the_newest_save() {
    const OLDER: &[u8] = b"old\nUSER EDIT 1 (older)\n";
    const NEWEST: &[u8] = b"USER EDIT 2 (newest save)\n";
    let fx = Fixture::new();
    let so = build_shim(&fx, "race3", RACE3_C);
    write(&fx.a("P"), "old\n");
    write(&fx.a("keep"), "k\n");
    fx.once(&[]).expect_code(0);
    thread::sleep(Duration::from_millis(100));
    write(&fx.a("P"), "new\n");

    let target = fx.b("P");
    let (st, mut s) = once_with_env(
        &fx,
        &[],
        &[
            ("LD_PRELOAD", so.as_os_str()),
            ("RACE_PATH", target.as_os_str()),
        ],
    );
    require_shim(&mut s, "[shim] appended", "no RENAME_EXCHANGE onto beta/P");
    let got = fs::read(fx.b("P")).ok();
    if got.as_deref() != Some(NEWEST) {
        s.fail(&format!(
            "an editor saved beta/P right after ferry's RENAME_EXCHANGE (an append had landed \
             just before it); afterwards beta/P holds {:?} instead of the newest save {:?} \
             (exit {st:?}; newest save anywhere: {:?})",
            got.as_deref().map(String::from_utf8_lossy),
            String::from_utf8_lossy(NEWEST),
            anywhere(&fx, NEWEST)
        ));
    }
    let older = recoverable(&fx, OLDER);
    if older.is_empty() {
        s.fail(&format!(
            "the newest save is at beta/P, but the appended version {:?} is on neither side \
             nor in the backup area (copies anywhere: {:?})",
            String::from_utf8_lossy(OLDER),
            anywhere(&fx, OLDER)
        ));
    }
}

/// Distinct beta files (`dN/fN`) still on beta or copied into beta's backup area.
fn kept_on_beta_or_backed_up(fx: &Fixture) -> Option<usize> {
    let mut kept = std::collections::BTreeSet::new();
    for (rel, node) in try_tree(&fx.beta).ok()? {
        if matches!(node, Node::File { .. }) {
            kept.insert(rel);
        }
    }
    let marker = format!(
        "backups{}beta{}",
        std::path::MAIN_SEPARATOR,
        std::path::MAIN_SEPARATOR
    );
    for b in fx.backup_files() {
        let p = b.to_string_lossy().into_owned();
        if let Some(i) = p.find(&marker) {
            // backups/beta/<time>/<rel>
            let rest = &p[i + marker.len()..];
            if let Some((_, rel)) = rest.split_once(std::path::MAIN_SEPARATOR) {
                kept.insert(rel.to_owned());
            }
        }
    }
    Some(kept.len())
}
