//! Placing new files. Content that arrives for a new file is written into an unnamed file in
//! the target's directory (`O_TMPFILE`) and linked at its name; content used more than once,
//! or arriving where that cannot be done, goes through staging and a rename. Both ways must
//! give whole files, the right bits, nothing left behind and nothing clobbered.

use std::ffi::OsStr;
use std::path::Path;

use crate::support::*;

/// A tree that takes both ways: unique files, files sharing content (staged once, placed
/// several times), empty files, executables, nested directories.
fn mixed_tree(root: &Path) {
    for i in 0..120 {
        write(
            &root.join(format!("d{}/s{}/u{i}.bin", i % 3, i % 5)),
            pseudo_random(i, 100 + (i as usize * 37) % 5000),
        );
    }
    for i in 0..15 {
        let shared = format!("shared content {i}\n").repeat(i + 1);
        write(&root.join(format!("d0/same-{i}-a.txt")), &shared);
        write(&root.join(format!("d1/deep/same-{i}-b.txt")), &shared);
        write(&root.join(format!("same-{i}-c.txt")), &shared);
    }
    for i in 0..4 {
        write(&root.join(format!("d2/empty-{i}")), "");
    }
    for i in 0..5 {
        let p = root.join(format!("bin/tool-{i}"));
        write(&p, format!("#!/bin/sh\necho {i}\n"));
        set_exec(&p, true);
    }
}

/// Names in a staging directory of the fixture's session (ferry's leftovers would be there).
fn staging_leftovers(fx: &Fixture) -> Vec<String> {
    let sessions = fx.state.join("ferry").join("sessions");
    let mut out = Vec::new();
    for s in std::fs::read_dir(&sessions).into_iter().flatten().flatten() {
        for side in ["staging-alpha", "staging-beta"] {
            for e in std::fs::read_dir(s.path().join(side))
                .into_iter()
                .flatten()
                .flatten()
            {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out
}

fn check_placed(fx: &Fixture, run: &Run) {
    run.expect_code(0);
    assert!(
        run.events("error").is_empty(),
        "errors placing new files\n{run}"
    );
    assert_same_trees(&fx.alpha, &fx.beta);
    for i in 0..5 {
        assert!(
            is_exec(&fx.b(&format!("bin/tool-{i}"))),
            "bin/tool-{i} lost its exec bit"
        );
    }
    assert!(
        !is_exec(&fx.b("d0/s0/u0.bin")),
        "a plain file became executable"
    );
    let left = staging_leftovers(fx);
    assert!(left.is_empty(), "staging not emptied: {left:?}");
    let temp = temp_like_entries(&tree(&fx.beta));
    assert!(temp.is_empty(), "temporary names left in beta: {temp:?}");
}

#[test]
fn new_files_are_placed_whole_shared_content_empty_files_and_exec_bits_included() {
    let fx = Fixture::new();
    mixed_tree(&fx.alpha);
    let run = fx.once(&[]);
    check_placed(&fx, &run);
    // And back the other way, into a side that already has most of it.
    mixed_tree(&fx.beta.join("copy"));
    let back = fx.once(&[]);
    back.expect_code(0);
    assert_same_trees(&fx.alpha, &fx.beta);
}

/// Placement as an unprivileged user (as root the run is made as `nobody` over a tree
/// `nobody` owns).
#[test]
fn an_unprivileged_user_gets_the_same_placement() {
    let fx = Fixture::new();
    mixed_tree(&fx.alpha);
    let run = if is_root() {
        fx.chown_all(NOBODY);
        fx.once_as(NOBODY)
    } else {
        fx.once(&[])
    };
    check_placed(&fx, &run);
}

/// Refuses `linkat` the way some systems do: `AT_EMPTY_PATH` (before Linux 6.10, without
/// `CAP_DAC_READ_SEARCH`), and with `LINK_REFUSE=all` also the `/proc/self/fd` way (no /proc).
const REFUSE_LINK_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int linkat(int od, const char *op, int nd, const char *np, int flags) {
    static int (*real)(int, const char *, int, const char *, int) = 0;
    if (!real) real = (int (*)(int, const char *, int, const char *, int))dlsym(RTLD_NEXT, "linkat");
    const char *mode = getenv("LINK_REFUSE");
    if (mode && (flags & AT_EMPTY_PATH)) {
        fprintf(stderr, "[shim] refused AT_EMPTY_PATH\n");
        errno = ENOENT;
        return -1;
    }
    if (mode && !strcmp(mode, "all") && !strncmp(op, "/proc/self/fd/", 14)) {
        fprintf(stderr, "[shim] refused /proc/self/fd\n");
        errno = ENOENT;
        return -1;
    }
    int r = real(od, op, nd, np, flags);
    if (r == 0 && !strncmp(op, "/proc/self/fd/", 14)) {
        static int said = 0;
        if (!said++) fprintf(stderr, "[shim] linked through /proc/self/fd\n");
    }
    return r;
}
"#;

fn once_refusing_links(fx: &Fixture, mode: &str) -> Run {
    let so = build_shim(fx, "refuse-link", REFUSE_LINK_C);
    fx.once_with_env(&[
        ("LD_PRELOAD", so.as_os_str()),
        ("LINK_REFUSE", OsStr::new(mode)),
    ])
}

#[test]
fn without_linking_by_descriptor_new_files_are_linked_through_proc() {
    let fx = Fixture::new();
    mixed_tree(&fx.alpha);
    let run = once_refusing_links(&fx, "empty");
    assert!(
        run.stderr.contains("[shim] refused AT_EMPTY_PATH"),
        "shim never fired\n{run}"
    );
    assert!(
        run.stderr.contains("[shim] linked through /proc/self/fd"),
        "no file was linked through /proc/self/fd\n{run}"
    );
    check_placed(&fx, &run);
}

#[test]
fn when_unnamed_files_cannot_be_linked_at_all_new_files_go_through_staging() {
    let fx = Fixture::new();
    mixed_tree(&fx.alpha);
    let run = once_refusing_links(&fx, "all");
    assert!(
        run.stderr.contains("[shim] refused /proc/self/fd"),
        "shim never fired\n{run}"
    );
    check_placed(&fx, &run);
}

/// Creates a file at the target name just before ferry links its new file there (the
/// moment a program in the other root writes the same name): ferry's `linkat` must fail
/// rather than replace it, and the other program's content must stay.
const RACE_LINK_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int linkat(int od, const char *op, int nd, const char *np, int flags) {
    static int (*real)(int, const char *, int, const char *, int) = 0;
    if (!real) real = (int (*)(int, const char *, int, const char *, int))dlsym(RTLD_NEXT, "linkat");
    const char *race = getenv("RACE_NAME");
    static int done = 0;
    char full[8192];
    resolve(nd, np, full, sizeof full);
    if (race && !done && strstr(full, race)) {
        done = 1;
        int fd = openat(nd, np, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd >= 0) { write(fd, "theirs", 6); close(fd); }
        fprintf(stderr, "[shim] wrote %s before ferry linked it\n", full);
    }
    return real(od, op, nd, np, flags);
}
"#;

#[test]
fn a_file_written_at_the_name_just_before_linking_is_not_replaced() {
    let fx = Fixture::new();
    write(&fx.a("d/one.txt"), "one");
    write(&fx.a("d/target.txt"), "ours");
    write(&fx.a("d/three.txt"), "three");
    let so = build_shim(&fx, "race-link", RACE_LINK_C);
    let run = fx.once_with_env(&[
        ("LD_PRELOAD", so.as_os_str()),
        ("RACE_NAME", OsStr::new("d/target.txt")),
    ]);
    assert!(
        run.stderr.contains("[shim] wrote"),
        "the shim never fired: ferry did not link d/target.txt (placement changed?)\n{run}"
    );
    assert_content(&fx.b("d/target.txt"), "theirs");
    assert_content(&fx.b("d/one.txt"), "one");
    assert_content(&fx.b("d/three.txt"), "three");
    assert_content(&fx.a("d/target.txt"), "ours");
    let errors = run.events("error");
    assert!(
        errors
            .iter()
            .any(|e| e["path"].as_str() == Some("d/target.txt") && e["retry"] == true),
        "the refused placement should be reported as an error to retry\n{run}"
    );
    // The next run sees both versions: a conflict, neither lost.
    let next = fx.once(&[]);
    assert!(next.conflict_at("d/target.txt"), "{next}");
    assert_content(&fx.b("d/target.txt"), "theirs");
    assert_content(&fx.a("d/target.txt"), "ours");
}
