//! Promises under races (issue "the first hour of real use", A and B): a directory swapped for
//! a symlink while ferry writes into it never redirects a write outside the root, and a write
//! through a descriptor opened before ferry replaced a file is never destroyed.
//!
//! The swap is made at the worst moment by an LD_PRELOAD shim (right before the call that
//! places the file), so the window is always hit; the append race runs for real, many times.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::thread;
use std::time::Duration;

use crate::support::*;

/// Right before the first link or rename whose target resolves to a path ending with
/// `SWAP_SUFFIX` (ferry placing that file), renames `SWAP_DIR` to `SWAP_DIR.moved` and puts a
/// symlink to `SWAP_TO` in its place: the stress run's `mv b/d b/d.moved; ln -s OUTSIDE b/d`,
/// at the worst moment. Fires once; says so on stderr.
const SWAP_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>


static int fired = 0;

static void before(int dirfd, const char *path) {
    const char *suf = getenv("SWAP_SUFFIX"), *dir = getenv("SWAP_DIR"), *to = getenv("SWAP_TO");
    char full[8192];
    if (fired || !suf || !dir || !to) return;
    resolve(dirfd, path, full, sizeof full);
    size_t lf = strlen(full), ls = strlen(suf);
    if (lf < ls || strcmp(full + lf - ls, suf)) return;
    fired = 1;
    char moved[4200];
    snprintf(moved, sizeof moved, "%s.moved", dir);
    static int (*real_rename)(const char *, const char *) = 0;
    if (!real_rename) real_rename = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    real_rename(dir, moved);
    symlink(to, dir);
    fprintf(stderr, "[shim] swapped %s for a link to %s before placing %s\n", dir, to, full);
}

int linkat(int od, const char *op, int nd, const char *np, int flags) {
    static int (*real)(int, const char *, int, const char *, int) = 0;
    if (!real) real = (int (*)(int, const char *, int, const char *, int))dlsym(RTLD_NEXT, "linkat");
    before(nd, np);
    return real(od, op, nd, np, flags);
}

long syscall(long n, ...) {
    va_list ap;
    va_start(ap, n);
    long a[6];
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    static long (*real)(long, ...) = 0;
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    if (n == SYS_renameat2) before((int)a[2], (const char *)a[3]);
    return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}

int renameat2(int od, const char *op, int nd, const char *np, unsigned int flags) {
    static int (*real)(int, const char *, int, const char *, unsigned int) = 0;
    if (!real)
        real = (int (*)(int, const char *, int, const char *, unsigned int))dlsym(RTLD_NEXT, "renameat2");
    before(nd, np);
    return real(od, op, nd, np, flags);
}

int renameat(int od, const char *op, int nd, const char *np) {
    static int (*real)(int, const char *, int, const char *) = 0;
    if (!real) real = (int (*)(int, const char *, int, const char *))dlsym(RTLD_NEXT, "renameat");
    before(nd, np);
    return real(od, op, nd, np);
}

int rename(const char *op, const char *np) {
    static int (*real)(const char *, const char *) = 0;
    if (!real) real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    before(AT_FDCWD, np);
    return real(op, np);
}
"#;

/// True once the session reported a conflict at `f` (its human line goes to stderr; with
/// --json it is an event): read from the fixture's view, alpha and beta both changed `f`.
fn s_has_conflict(fx: &Fixture) -> bool {
    let (a, b) = (fs::read(fx.a("f")), fs::read(fx.b("f")));
    matches!((a, b), (Ok(a), Ok(b)) if a != b
        && String::from_utf8_lossy(&b).contains("beta append")
        && String::from_utf8_lossy(&a).starts_with("alpha save"))
}

/// Every file under `dir` (recursively), by path.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => out.extend(files_under(&p)),
            Ok(m) if m.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}

/// Runs `--once` with the swap shim aimed at beta's `b/d` while ferry places `b/d/<name>`;
/// `outside` is where the link points. Returns the run.
fn once_with_swap(fx: &Fixture, name: &str, outside: &Path, walk: bool) -> Run {
    let so = build_shim(fx, "swap", SWAP_C);
    let dir = fx.b("b/d");
    let suffix = format!("/b/d/{name}");
    let mut env: Vec<(&str, &OsStr)> = vec![
        ("LD_PRELOAD", so.as_os_str()),
        ("SWAP_SUFFIX", OsStr::new(&suffix)),
        ("SWAP_DIR", dir.as_os_str()),
        ("SWAP_TO", outside.as_os_str()),
    ];
    if walk {
        // The descriptor walk that kernels without openat2 use.
        env.push(("FERRY_TEST_NO_OPENAT2", OsStr::new("1")));
    }
    let run = fx.once_with_env(&env);
    assert!(
        run.stderr.contains("[shim] swapped"),
        "the shim never fired: ferry did not place beta/b/d/{name}\n{run}"
    );
    run
}

fn new_file_streaming_into_a_swapped_directory_stays_inside(walk: bool) {
    let fx = Fixture::new();
    let outside = fx.root.join("outside");
    mkdir(&outside);
    let big = pseudo_random(7, 8 << 20);
    write(&fx.a("b/d/big"), &big);
    write(&fx.a("b/d/zzz"), "after the swap");
    let run = once_with_swap(&fx, "big", &outside, walk);
    let escaped = files_under(&outside);
    assert!(
        escaped.is_empty(),
        "files were written outside beta's root: {escaped:?}\n{run}"
    );
    // The big file went where its directory went: inside the root.
    assert_eq!(read(&fx.b("b/d.moved/big")), big, "{run}");
    // The rest of the directory, created through the same held descriptor, went there too.
    assert_content(&fx.b("b/d.moved/zzz"), "after the swap");
}

#[test]
fn a_new_file_streaming_into_a_directory_swapped_for_a_symlink_stays_inside_the_root() {
    new_file_streaming_into_a_swapped_directory_stays_inside(false);
}

#[test]
fn a_new_file_streaming_into_a_swapped_directory_stays_inside_without_openat2() {
    new_file_streaming_into_a_swapped_directory_stays_inside(true);
}

#[test]
fn a_replacement_in_a_directory_swapped_for_a_symlink_never_touches_the_outside() {
    let fx = Fixture::new();
    let outside = fx.root.join("outside");
    mkdir(&outside);
    // A file outside with the same name: a swap through the link would trade it for ours.
    write(&outside.join("f"), "secret outside");
    write(&fx.a("b/d/f"), "v1");
    fx.once(&[]).expect_code(0);
    write(&fx.a("b/d/f"), pseudo_random(3, 300 << 10));
    let run = once_with_swap(&fx, "f", &outside, false);
    assert_content(&outside.join("f"), "secret outside");
    assert_eq!(files_under(&outside).len(), 1, "{run}");
    // Ferry's version is in the moved directory, inside the root.
    assert_eq!(
        read(&fx.b("b/d.moved/f")),
        pseudo_random(3, 300 << 10),
        "{run}"
    );
}

/// A program on beta opens `f` for append; alpha saves a new `f` (temp file and rename) and
/// ferry puts it on beta; only then does the program write its line and close. The line went
/// into the version ferry swapped out: it must be kept (in the backup area) and reported, never
/// destroyed. Forty rounds, each waiting for the swap, so the window is always hit.
#[test]
fn appends_through_a_descriptor_opened_before_a_replacement_are_never_lost() {
    const ROUNDS: u32 = 40;
    let fx = Fixture::new();
    write(&fx.a("f"), "start\n");
    fx.once(&[]).expect_code(0);
    let mut s = fx.watch(&[]);
    let mut written = Vec::new();
    for j in 0..ROUNDS {
        let alpha_version = format!("alpha save {j}\n");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(fx.b("f"))
            .expect("open beta/f for append");
        let tmp = fx.a(".f.tmp");
        write(&tmp, &alpha_version);
        fs::rename(&tmp, fx.a("f")).expect("save alpha/f");
        // The save reaches beta, or (on a loaded machine) an earlier round's append landed in
        // the instant between ferry's swap and its check of what came out: then ferry swapped
        // back and the path is a real conflict (both sides changed it), which stays.
        let mut conflict = false;
        s.wait_until("alpha's save to reach beta (or a conflict)", || {
            conflict = s_has_conflict(&fx);
            conflict || fs::read(fx.b("f")).is_ok_and(|d| d == alpha_version.as_bytes())
        });
        if conflict {
            // The rounds' precondition (beta/f as ferry last placed it) no longer holds: stop
            // before writing through a descriptor whose file is now a conflict's.
            break;
        }
        f.write_all(format!("beta append {j}\n").as_bytes())
            .expect("append");
        drop(f);
        written.push(j);
    }
    if !s_has_conflict(&fx) {
        // One more save: the cycle it starts looks at the last swapped-out version too.
        write(&fx.a("f"), "last\n");
        s.wait_until("the last save to reach beta", || {
            fs::read(fx.b("f")).is_ok_and(|d| d == b"last\n")
        });
    }
    thread::sleep(Duration::from_millis(200));
    // Exit 3 when a round ended in a conflict (it is listed), else 0.
    let st = s.signal_and_wait(libc::SIGTERM);
    assert!(matches!(st.code(), Some(0 | 3)), "{st:?}\n{}", s.stderr());
    let mut seen = String::new();
    for p in [fx.a("f"), fx.b("f")]
        .into_iter()
        .chain(files_under(&fx.state))
    {
        if let Ok(b) = fs::read(&p) {
            seen.push_str(&String::from_utf8_lossy(&b));
        }
    }
    let lost: Vec<&u32> = written
        .iter()
        .filter(|j| !seen.contains(&format!("beta append {j}\n")))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} appends were lost: {lost:?}\nstderr:\n{}",
        lost.len(),
        written.len(),
        s.stderr()
    );
    // Each report names the kept version, which holds a late line.
    let reports: Vec<&str> = s
        .log
        .iter()
        .filter(|e| is(e, "problem"))
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.contains("written after ferry replaced it"))
        .collect();
    assert!(
        !reports.is_empty(),
        "no late write was reported\n{:#?}",
        s.log
    );
    for m in &reports {
        let kept = m.rsplit(" at ").next().unwrap_or_default();
        let data = fs::read_to_string(kept).unwrap_or_default();
        assert!(data.contains("beta append "), "{m}: {data:?}");
    }
}
