//! Metadata users expect (issue 9 items 7, 8, 10): permission bits, modification times and
//! symlinks, locally and through the agent over SSH.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::remote_support::*;
use crate::support::*;

fn assert_changed(run: &Run, path: &str, to: &str, action: &str) {
    let direction = if to == "beta" {
        "alpha->beta"
    } else {
        "beta->alpha"
    };
    assert!(
        run.changes_at(path)
            .iter()
            .any(|e| e["side"] == to && e["direction"] == direction && e["action"] == action),
        "expected a `change` event {{path: {path}, side: {to}, direction: {direction}, action: \
         {action}}}\n{run}"
    );
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

fn mtime(p: &Path) -> SystemTime {
    fs::symlink_metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn set_mtime(p: &Path, t: SystemTime) {
    fs::File::options()
        .write(true)
        .open(p)
        .and_then(|f| f.set_modified(t))
        .unwrap_or_else(|e| panic!("setting the mtime of {}: {e}", p.display()));
}

/// A fixed, recognisable time in the past (with nanoseconds).
fn long_ago() -> SystemTime {
    UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789)
}

fn assert_mode(p: &Path, want: u32, what: &str, run: &dyn std::fmt::Display) {
    let got = mode(p);
    assert_eq!(
        got,
        want,
        "{what}: {} is {got:o}, expected {want:o}\n{run}",
        p.display()
    );
}

/// Issue 9 item 7: `chmod 600 .env` arrived as 644, `chmod 700 private/` as 755.
#[test]
fn permission_bits_sync_both_ways_for_files_and_directories() {
    let fx = Fixture::new();
    write(&fx.a(".env"), "SECRET=1\n");
    chmod(&fx.a(".env"), 0o600);
    write(&fx.a("private/key"), "k\n");
    chmod(&fx.a("private/key"), 0o640);
    chmod(&fx.a("private"), 0o700);
    write(&fx.a("shared.txt"), "s\n");
    chmod(&fx.a("shared.txt"), 0o664);
    write(&fx.a("run.sh"), "#!/bin/sh\n");
    chmod(&fx.a("run.sh"), 0o750);
    // A directory without write permission can still be filled (its bits come last).
    write(&fx.a("ro/inside"), "i\n");
    chmod(&fx.a("ro"), 0o555);
    let run = fx.once(&[]);
    run.expect_code(0);
    fx.assert_synced();
    assert_mode(&fx.b(".env"), 0o600, "a private file", &run);
    assert_mode(&fx.b("private"), 0o700, "a private directory", &run);
    assert_mode(&fx.b("private/key"), 0o640, "a file in it", &run);
    assert_mode(&fx.b("shared.txt"), 0o664, "group-writable", &run);
    assert_mode(&fx.b("run.sh"), 0o750, "an executable", &run);
    assert_mode(&fx.b("ro"), 0o555, "a read-only directory", &run);
    assert_content(&fx.b("ro/inside"), "i\n");

    // Mode-only changes, one on each side, files and directories: each is a "chmod".
    chmod(&fx.b(".env"), 0o640);
    chmod(&fx.a("shared.txt"), 0o644);
    chmod(&fx.b("private"), 0o750);
    let run = fx.once(&[]);
    run.expect_code(0);
    assert_mode(&fx.a(".env"), 0o640, "beta's chmod", &run);
    assert_mode(&fx.b("shared.txt"), 0o644, "alpha's chmod", &run);
    assert_mode(&fx.a("private"), 0o750, "beta's directory chmod", &run);
    assert_changed(&run, ".env", "alpha", "chmod");
    assert_changed(&run, "shared.txt", "beta", "chmod");
    assert_changed(&run, "private", "alpha", "chmod");

    // New content keeps the file's new bits.
    write(&fx.a(".env"), "SECRET=2\n");
    chmod(&fx.a(".env"), 0o600);
    let run = fx.once(&[]);
    run.expect_code(0);
    assert_content(&fx.b(".env"), "SECRET=2\n");
    assert_mode(&fx.b(".env"), 0o600, "a modified private file", &run);
    // Nothing left to do.
    fx.once(&[]).expect_code(0);
    let settled = fx.once(&[]);
    assert!(settled.events("change").is_empty(), "{settled}");
    // So that the temporary directories can be removed.
    chmod(&fx.a("ro"), 0o755);
    chmod(&fx.b("ro"), 0o755);
}

/// Logs the mode every file and directory is created with (`open*` with `O_CREAT` or
/// `O_TMPFILE`, `mkdir*`).
const CREATE_MODES_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
static void note(const char *what, const char *path, int flags, mode_t mode) {
    if (what[0] == 'm' || (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
        fprintf(stderr, "[shim] %s %o %s\n", what, (unsigned)mode, path);
}
#define OPEN(name, ...) \
    mode_t mode = 0; \
    if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) { \
        va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); } \
    note("open", path, flags, mode);
int open(const char *path, int flags, ...) {
    static int (*real)(const char *, int, ...) = 0;
    if (!real) real = dlsym(RTLD_NEXT, "open");
    OPEN(open)
    return real(path, flags, mode);
}
int open64(const char *path, int flags, ...) {
    static int (*real)(const char *, int, ...) = 0;
    if (!real) real = dlsym(RTLD_NEXT, "open64");
    OPEN(open64)
    return real(path, flags, mode);
}
int openat(int dir, const char *path, int flags, ...) {
    static int (*real)(int, const char *, int, ...) = 0;
    if (!real) real = dlsym(RTLD_NEXT, "openat");
    OPEN(openat)
    return real(dir, path, flags, mode);
}
int openat64(int dir, const char *path, int flags, ...) {
    static int (*real)(int, const char *, int, ...) = 0;
    if (!real) real = dlsym(RTLD_NEXT, "openat64");
    OPEN(openat64)
    return real(dir, path, flags, mode);
}
int mkdirat(int dir, const char *path, mode_t mode) {
    static int (*real)(int, const char *, mode_t) = 0;
    if (!real) real = dlsym(RTLD_NEXT, "mkdirat");
    note("mkdir", path, 0, mode);
    return real(dir, path, mode);
}
"#;

/// Issue 9 item 7: a file is never created more readable than its source, not even for a
/// moment (created `0600`, or with its final mode, never `0644` first).
#[test]
fn files_are_never_created_more_readable_than_their_source() {
    let fx = Fixture::new();
    write(&fx.a(".env"), "SECRET=1\n");
    chmod(&fx.a(".env"), 0o600);
    write(&fx.a("secrets/token"), "t\n");
    chmod(&fx.a("secrets/token"), 0o600);
    chmod(&fx.a("secrets"), 0o700);
    let so = build_shim(&fx, "create-modes", CREATE_MODES_C);
    let env = [("LD_PRELOAD", so.as_os_str())];
    let first = fx.once_with_env(&env);
    first.expect_code(0);
    // A new version goes through staging (a replacement), not an unnamed file.
    write(&fx.a(".env"), "SECRET=2, longer\n");
    let second = fx.once_with_env(&env);
    second.expect_code(0);
    assert_mode(&fx.b(".env"), 0o600, "the replaced file", &second);
    assert_mode(&fx.b("secrets"), 0o700, "the new directory", &second);
    let mut seen = 0;
    for run in [&first, &second] {
        for line in run.stderr.lines().filter(|l| l.starts_with("[shim] ")) {
            let mut parts = line["[shim] ".len()..].splitn(3, ' ');
            let (what, m, path) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let m = u32::from_str_radix(m, 8).unwrap_or(0o777);
            // Content ferry places: an unnamed file in beta's directories, a staged file, a
            // temporary beside its target; and the directory it makes in beta.
            let content = (what.starts_with("open")
                && (path == "." || path.ends_with(".part") || path.contains(".ferry-tmp-")))
                || (what == "mkdir" && path == "secrets");
            if content {
                seen += 1;
                assert_eq!(
                    m & 0o077,
                    0,
                    "created readable by others ({m:o}) before getting its source's 0600/0700: \
                     {line}\n{run}"
                );
            }
        }
    }
    assert!(
        seen >= 3,
        "the shim saw {seen} creations of synced content (placement changed?)\n{first}\n{second}"
    );
}

/// Issue 9 item 7: `--permissions exec` keeps only the executable bit (today's behaviour, for
/// filesystems that cannot keep modes).
#[test]
fn permissions_exec_syncs_only_the_executable_bit() {
    let fx = Fixture::new();
    write(&fx.a("a.txt"), "a\n");
    chmod(&fx.a("a.txt"), 0o600);
    write(&fx.a("tool"), "#!/bin/sh\n");
    chmod(&fx.a("tool"), 0o700);
    let run = fx.once(&["--permissions", "exec"]);
    run.expect_code(0);
    assert_mode(&fx.b("a.txt"), 0o644, "exec mode: plain file", &run);
    assert_mode(&fx.b("tool"), 0o755, "exec mode: executable", &run);
    // A group-bit change alone is not synced...
    chmod(&fx.a("a.txt"), 0o660);
    let run = fx.once(&["--permissions", "exec"]);
    run.expect_code(0);
    assert!(run.events("change").is_empty(), "{run}");
    // ... the executable bit is.
    chmod(&fx.b("tool"), 0o644);
    let run = fx.once(&["--permissions", "exec"]);
    run.expect_code(0);
    assert_eq!(mode(&fx.a("tool")) & 0o100, 0, "{run}");
    assert_changed(&run, "tool", "alpha", "chmod");
    let bad = fx.once(&["--permissions", "some"]);
    bad.expect_code(2);
}

/// Issue 9 item 8: modification times are kept (as `rsync -a`), `--no-times` opts out; a touch
/// is not a change.
#[test]
fn modification_times_are_kept_and_a_touch_is_not_a_change() {
    let fx = Fixture::new();
    write(&fx.a("old.txt"), "old\n");
    set_mtime(&fx.a("old.txt"), long_ago());
    write(&fx.a("d/nested.txt"), "nested\n");
    set_mtime(&fx.a("d/nested.txt"), long_ago());
    write(&fx.b("from-beta.txt"), "b\n");
    set_mtime(&fx.b("from-beta.txt"), long_ago());
    // A first sync that copies into alpha too: confirmed.
    let run = fx.once(&["--yes"]);
    run.expect_code(0);
    for p in ["old.txt", "d/nested.txt"] {
        assert_eq!(mtime(&fx.b(p)), long_ago(), "{p} on beta\n{run}");
    }
    assert_eq!(mtime(&fx.a("from-beta.txt")), long_ago(), "{run}");

    // A replaced file takes its new version's time.
    write(&fx.a("old.txt"), "new content\n");
    let later = long_ago() + Duration::from_secs(86_400);
    set_mtime(&fx.a("old.txt"), later);
    let run = fx.once(&[]);
    run.expect_code(0);
    assert_content(&fx.b("old.txt"), "new content\n");
    assert_eq!(mtime(&fx.b("old.txt")), later, "{run}");

    // A touch on each side, to different times: nothing to sync, no conflict.
    set_mtime(&fx.a("d/nested.txt"), SystemTime::now());
    set_mtime(&fx.b("d/nested.txt"), later);
    let run = fx.once(&[]);
    run.expect_code(0);
    assert!(run.events("change").is_empty(), "{run}");
    assert!(!run.conflict_at("d/nested.txt"), "{run}");

    // --no-times: the copy keeps the time it was written at.
    write(&fx.a("fresh.txt"), "fresh\n");
    set_mtime(&fx.a("fresh.txt"), long_ago());
    let before = SystemTime::now() - Duration::from_secs(5);
    let run = fx.once(&["--no-times"]);
    run.expect_code(0);
    assert_content(&fx.b("fresh.txt"), "fresh\n");
    assert!(mtime(&fx.b("fresh.txt")) > before, "{run}");
}

/// Issue 9 item 10: `--symlinks raw` syncs absolute and escaping links as they are, never
/// following them; `ignore` syncs none; `portable` (the default) reports them.
#[test]
fn symlinks_raw_portable_and_ignore() {
    let fx = Fixture::new();
    let outside = tempfile::tempdir().expect("tempdir");
    write(&outside.path().join("secret"), "outside\n");
    let abs = outside.path().display().to_string();
    symlink(&abs, &fx.a("abs"));
    symlink("../../escape", &fx.a("esc"));
    symlink("inside.txt", &fx.a("in"));
    write(&fx.a("inside.txt"), "i\n");

    // Portable: the escaping ones are problems, reported, not synced.
    let run = fx.once(&[]);
    assert!(run.problem_at("abs") && run.problem_at("esc"), "{run}");
    assert_absent(&fx.b("abs"));
    assert!(fs::symlink_metadata(fx.b("in")).is_ok_and(|m| m.is_symlink()));

    // Raw: synced as they are.
    let run = fx.once(&["--symlinks", "raw"]);
    run.expect_code(0);
    assert_eq!(
        fs::read_link(fx.b("abs")).ok().as_deref(),
        Some(outside.path()),
        "{run}"
    );
    assert_eq!(
        fs::read_link(fx.b("esc")).ok().as_deref(),
        Some(Path::new("../../escape")),
        "{run}"
    );
    // Replacing the link by a directory with a file removes the link, never writing through it.
    remove(&fx.a("abs"));
    write(&fx.a("abs/secret"), "inside now\n");
    let run = fx.once(&["--symlinks", "raw"]);
    run.expect_code(0);
    assert_content(&fx.b("abs/secret"), "inside now\n");
    assert_content(&outside.path().join("secret"), "outside\n");
    assert_eq!(
        fs::read_dir(outside.path()).map(|d| d.count()).ok(),
        Some(1),
        "{run}"
    );

    // Ignore: no link is synced (nor deleted).
    symlink("inside.txt", &fx.a("in2"));
    let run = fx.once(&["--symlinks", "ignore"]);
    run.expect_code(0);
    assert_absent(&fx.b("in2"));
    assert!(fs::symlink_metadata(fx.b("in")).is_ok(), "{run}");
    let bad = fx.once(&["--symlinks", "follow"]);
    bad.expect_code(2);
}

/// Through the agent over SSH: a private file stays private (the issue's "secret made
/// world-readable"), a private directory stays private, times are kept, both ways; raw links
/// cross the wire.
#[test]
fn ssh_keeps_permission_bits_times_and_raw_links() {
    let sshd = Sshd::start();
    let ssh = OsString::from(sshd.ssh_command());
    let fx = Fixture::new();
    let remote = sshd.home().join("meta");
    let url = format!("{}:meta", Sshd::HOST);
    write(&fx.a(".env"), "SECRET=1\n");
    chmod(&fx.a(".env"), 0o600);
    set_mtime(&fx.a(".env"), long_ago());
    write(&fx.a("private/key"), "k\n");
    chmod(&fx.a("private"), 0o700);
    symlink("/etc/hostname", &fx.a("abs"));
    let run_once = |extra: &[&str]| {
        let mut cmd = fx.command();
        cmd.env("FERRY_AGENT", static_agent());
        cmd.env("FERRY_SSH_COMMAND", &ssh);
        let mut args: Vec<OsString> = vec![
            "sync".into(),
            fx.alpha.as_os_str().into(),
            OsStr::new(&url).into(),
            "--once".into(),
            "--json".into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        fx.run_command(cmd, args)
    };
    let run = run_once(&["--symlinks", "raw"]);
    run.expect_code(0);
    assert_mode(&remote.join(".env"), 0o600, "over ssh", &run);
    assert_mode(&remote.join("private"), 0o700, "over ssh", &run);
    assert_eq!(mtime(&remote.join(".env")), long_ago(), "{run}");
    assert_eq!(
        fs::read_link(remote.join("abs")).ok().as_deref(),
        Some(Path::new("/etc/hostname")),
        "{run}"
    );
    assert_eq!(
        fs::metadata(remote.join(".env")).map(|m| m.uid()).ok(),
        Some(sshd.uid())
    );

    // Back: a chmod and a new file on the remote side.
    let out = sshd.run(
        "chmod 640 ~/meta/.env && printf 'r\\n' > ~/meta/back.txt && chmod 600 ~/meta/back.txt \
         && touch -d @1600000000 ~/meta/back.txt",
    );
    assert!(out.status.success(), "{out:?}");
    let run = run_once(&["--symlinks", "raw"]);
    run.expect_code(0);
    assert_mode(&fx.a(".env"), 0o640, "a chmod from the remote side", &run);
    assert_mode(&fx.a("back.txt"), 0o600, "a new remote file", &run);
    assert_eq!(
        mtime(&fx.a("back.txt")),
        UNIX_EPOCH + Duration::from_secs(1_600_000_000),
        "{run}"
    );
}

/// Issue 9 item 7 while watching: a chmod alone (an inotify attribute event) is synced, for a
/// file and for a directory, both ways.
#[test]
fn a_chmod_alone_is_synced_while_watching() {
    let fx = Fixture::new();
    write(&fx.a(".env"), "SECRET=1\n");
    write(&fx.a("private/key"), "k\n");
    let mut s = fx.watch(&[]);
    assert_content(&fx.b(".env"), "SECRET=1\n");
    chmod(&fx.a(".env"), 0o600);
    s.wait_until("alpha's chmod 600 .env reaches beta", || {
        mode(&fx.b(".env")) == 0o600
    });
    chmod(&fx.a("private"), 0o700);
    s.wait_until("alpha's chmod 700 private/ reaches beta", || {
        mode(&fx.b("private")) == 0o700
    });
    chmod(&fx.b("private/key"), 0o640);
    s.wait_until("beta's chmod 640 private/key reaches alpha", || {
        mode(&fx.a("private/key")) == 0o640
    });
    s.stop();
}

const MIB: u64 = 1024 * 1024;

/// A 64 MiB file holding 8 KiB of data: 4 KiB at 1 MiB and 4 KiB at 40 MiB (`tail_hole`: the
/// rest is a hole, else the last 4 KiB are data too).
fn make_sparse(p: &Path, tail_hole: bool) {
    use std::io::{Seek, SeekFrom, Write};
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).expect("mkdir");
    }
    let mut f = fs::File::create(p).expect("create sparse file");
    f.set_len(64 * MIB).expect("set_len");
    for (at, byte) in [(MIB, 1u8), (40 * MIB, 2)] {
        f.seek(SeekFrom::Start(at)).expect("seek");
        f.write_all(&[byte; 4096]).expect("write");
    }
    if !tail_hole {
        f.seek(SeekFrom::Start(64 * MIB - 4096)).expect("seek");
        f.write_all(&[3u8; 4096]).expect("write");
    }
}

fn allocated(p: &Path) -> u64 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .blocks()
        * 512
}

fn assert_sparse_copy(src: &Path, dst: &Path, run: &dyn std::fmt::Display) {
    assert!(
        read(src) == read(dst),
        "{} differs from its source\n{run}",
        dst.display()
    );
    let got = allocated(dst);
    assert!(
        got < MIB,
        "{} has {got} bytes allocated for {} of data: its holes were filled\n{run}",
        dst.display(),
        allocated(src)
    );
}

/// Issue 9 item 9: holes are kept (a 2 GB file holding 4 KB arrived as 2 GB allocated).
#[test]
fn sparse_files_keep_their_holes() {
    let fx = Fixture::new();
    make_sparse(&fx.a("disk.img"), true);
    make_sparse(&fx.a("d/ends-in-data.img"), false);
    assert!(
        allocated(&fx.a("disk.img")) < MIB,
        "this filesystem has no holes"
    );
    let run = fx.once(&[]);
    run.expect_code(0);
    assert_sparse_copy(&fx.a("disk.img"), &fx.b("disk.img"), &run);
    assert_sparse_copy(
        &fx.a("d/ends-in-data.img"),
        &fx.b("d/ends-in-data.img"),
        &run,
    );
    assert_eq!(
        fs::metadata(fx.b("disk.img")).map(|m| m.len()).ok(),
        Some(64 * MIB)
    );

    // A new version (placed through staging) keeps its holes too.
    make_sparse(&fx.a("disk.img"), false);
    let run = fx.once(&[]);
    run.expect_code(0);
    assert_sparse_copy(&fx.a("disk.img"), &fx.b("disk.img"), &run);
}

/// Issue 9 item 9 through the agent: only data crosses the wire (a local Docker socket is not
/// compressed), and the container's copy keeps its holes; and back.
#[test]
fn docker_sparse_files_send_only_data() {
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    make_sparse(&fx.a("disk.img"), true);
    let mut cmd = fx.command();
    cmd.env("FERRY_AGENT", static_agent());
    let args: Vec<OsString> = vec![
        "sync".into(),
        fx.alpha.as_os_str().into(),
        beta.into(),
        "--once".into(),
        "--json".into(),
    ];
    let run = fx.run_command(cmd, args.clone());
    run.expect_code(0);
    let wire: u64 = run
        .events("cycle_end")
        .iter()
        .filter_map(|e| e["wire_bytes"].as_u64())
        .sum();
    assert!(
        wire < 4 * MIB,
        "{wire} bytes crossed the wire for 8 KiB of data in a 64 MiB file\n{run}"
    );
    let blocks = c.sh("stat -c '%b %B' /srv/app/disk.img");
    let mut it = blocks
        .split_whitespace()
        .map(|w| w.parse::<u64>().unwrap_or(u64::MAX));
    let bytes = it
        .next()
        .unwrap_or(u64::MAX)
        .saturating_mul(it.next().unwrap_or(u64::MAX));
    assert!(
        bytes < MIB,
        "the container's copy has {bytes} bytes allocated ({blocks:?})\n{run}"
    );
    assert_eq!(
        c.sh("stat -c %s /srv/app/disk.img").trim(),
        (64 * MIB).to_string()
    );

    // Back: a sparse file made in the container.
    c.sh(
        "dd if=/dev/zero of=/srv/app/back.img bs=1 count=0 seek=33554432 2>/dev/null; \
          echo data | dd of=/srv/app/back.img bs=1 seek=1048576 conv=notrunc 2>/dev/null",
    );
    let mut cmd = fx.command();
    cmd.env("FERRY_AGENT", static_agent());
    let run = fx.run_command(cmd, args);
    run.expect_code(0);
    let wire: u64 = run
        .events("cycle_end")
        .iter()
        .filter_map(|e| e["wire_bytes"].as_u64())
        .sum();
    assert!(
        wire < 4 * MIB,
        "{wire} bytes for a 32 MiB sparse file\n{run}"
    );
    assert_eq!(
        fs::metadata(fx.a("back.img")).map(|m| m.len()).ok(),
        Some(32 * MIB)
    );
    assert!(allocated(&fx.a("back.img")) < MIB, "{run}");
}

/// A filesystem that keeps no permission bits (vfat, some FUSE ones), as an `fchmod` that does
/// nothing.
const NO_CHMOD_C: &str = r#"
#include <sys/stat.h>
#include <stdio.h>
int fchmod(int fd, mode_t mode) {
    static int said = 0;
    if (!said++) fprintf(stderr, "[shim] fchmod ignored\n");
    return 0;
}
"#;

/// Issue 9 item 7, as issue 12 part 4 changed it: on a filesystem that cannot keep modes, ferry
/// syncs the files anyway, says once that the modes are not kept, and never lets the bits
/// the disk shows travel back as changes (the scan reports the modes ferry knows).
#[test]
fn a_filesystem_without_modes_gets_the_files_and_one_note() {
    let fx = Fixture::new();
    write(&fx.a("shared.txt"), "s\n");
    chmod(&fx.a("shared.txt"), 0o644);
    write(&fx.a("tool"), "t\n");
    chmod(&fx.a("tool"), 0o755);
    let so = build_shim(&fx, "no-chmod", NO_CHMOD_C);
    let env = [("LD_PRELOAD", so.as_os_str())];
    let run = fx.once_with_env(&env);
    assert!(run.stderr.contains("[shim] fchmod ignored"), "{run}");
    run.expect_code(0);
    let notes = run
        .events("problem")
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot keep permission bits"))
        })
        .count();
    // Both sides (the shim is in the one process serving both), once each.
    assert_eq!(notes, 2, "{run}");
    assert_content(&fx.b("shared.txt"), "s\n");
    assert_content(&fx.b("tool"), "t\n");
    // Again: nothing to do, alpha's bits untouched.
    let run = fx.once_with_env(&env);
    run.expect_code(0);
    assert!(run.events("change").is_empty(), "{run}");
    assert_eq!(mode(&fx.a("tool")), 0o755, "{run}");
    assert_eq!(mode(&fx.a("shared.txt")), 0o644, "{run}");
    let mut cmd = fx.command();
    cmd.env("LD_PRELOAD", &so);
    let run = fx.run_command(cmd, fx.once_args(&["--permissions", "exec"]));
    run.expect_code(0);
    assert_content(&fx.b("shared.txt"), "s\n");
}
