//! Bad usage and bad input: exit code 2 with exactly one line on stderr, nothing touched; and
//! entries ferry cannot sync (unreadable, special, badly named) reported while the rest syncs.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;

use crate::support::*;

/// Runs `ferry ARGS` and asserts the usage-error contract: exit 2, one line on stderr, nothing
/// on stdout, no session state created. Returns the stderr line.
#[track_caller]
fn refused<S: AsRef<OsStr>>(fx: &Fixture, args: &[S]) -> String {
    let run = fx.run(args);
    run.expect_code(2);
    let line = run.expect_one_stderr_line().to_owned();
    assert!(run.stdout.is_empty(), "stdout should be empty\n{run}");
    assert!(
        !fx.state.join("ferry").join("sessions").exists(),
        "a refused command created session state\n{run}"
    );
    line
}

fn sync_args(alpha: impl AsRef<OsStr>, beta: impl AsRef<OsStr>) -> Vec<OsString> {
    vec![
        "sync".into(),
        alpha.as_ref().to_owned(),
        beta.as_ref().to_owned(),
        "--once".into(),
    ]
}

#[test]
fn missing_alpha_directory() {
    let fx = Fixture::new();
    let beta = fx.root.join("new_beta");
    let line = refused(&fx, &sync_args(fx.root.join("nope"), &beta));
    assert!(line.contains("nope"), "{line}");
    assert_absent(&beta);
}

#[test]
fn a_file_instead_of_a_directory() {
    let fx = Fixture::new();
    let file = fx.root.join("file.txt");
    write(&file, "not a dir");
    refused(&fx, &sync_args(&file, &fx.beta));
    refused(&fx, &sync_args(&fx.alpha, &file));
    assert_content(&file, "not a dir");
}

#[test]
fn the_same_directory_twice() {
    let fx = Fixture::new();
    write(&fx.a("f"), "f");
    refused(&fx, &sync_args(&fx.alpha, &fx.alpha));
    refused(&fx, &sync_args(&fx.alpha, fx.alpha.join(".")));
    refused(&fx, &sync_args(&fx.alpha, fx.root.join("beta/../alpha")));
    let alias = fx.root.join("alias");
    symlink(fx.alpha.to_str().unwrap(), &alias);
    refused(&fx, &sync_args(&fx.alpha, &alias));
    refused(&fx, &sync_args(&alias, &fx.alpha));
    assert_eq!(tree(&fx.alpha).len(), 1);
}

#[test]
fn beta_inside_alpha_and_alpha_inside_beta() {
    let fx = Fixture::new();
    mkdir(&fx.a("sub"));
    mkdir(&fx.b("inner/deeper"));
    refused(&fx, &sync_args(&fx.alpha, fx.a("sub")));
    // Not existing yet (ferry would create it inside alpha).
    refused(&fx, &sync_args(&fx.alpha, fx.a("newsub")));
    assert_absent(&fx.a("newsub"));
    refused(&fx, &sync_args(fx.b("inner/deeper"), &fx.beta));
    // Through a symlink that hides the nesting.
    let link = fx.root.join("link-to-alpha-sub");
    symlink(fx.a("sub").to_str().unwrap(), &link);
    refused(&fx, &sync_args(&fx.alpha, &link));
}

#[test]
fn unknown_flag() {
    let fx = Fixture::new();
    let mut args = sync_args(&fx.alpha, &fx.beta);
    args.push("--frobnicate".into());
    let line = refused(&fx, &args);
    assert!(line.contains("frobnicate"), "{line}");
}

#[test]
fn unknown_mode() {
    let fx = Fixture::new();
    let mut args = sync_args(&fx.alpha, &fx.beta);
    args.extend(["--mode".into(), "sideways".into()]);
    let line = refused(&fx, &args);
    assert!(line.contains("sideways"), "{line}");
}

#[test]
fn missing_beta_argument_is_named() {
    let fx = Fixture::new();
    let line = refused(&fx, &["sync".as_ref(), fx.alpha.as_os_str()]);
    assert!(
        line.contains("BETA") || line.contains("beta"),
        "the one-line reason does not say what is missing: {line:?}"
    );
}

#[test]
fn bad_ignore_pattern() {
    let fx = Fixture::new();
    let mut args = sync_args(&fx.alpha, &fx.beta);
    args.extend(["--ignore".into(), "a/[z-a]".into()]);
    refused(&fx, &args);
}

#[test]
fn beta_whose_parent_does_not_exist() {
    let fx = Fixture::new();
    let beta = fx.root.join("no/such/parent/beta");
    refused(&fx, &sync_args(&fx.alpha, &beta));
    assert_absent(&fx.root.join("no"));
}

#[test]
fn malformed_remote_endpoints_are_refused() {
    let fx = Fixture::new();
    for remote in [
        "docker://web",
        "docker:///srv/app",
        "docker://web/",
        "docker://@web/srv",
        "ssh://host:99999/path",
        "ssh://-oProxyCommand=x/path",
        "-oProxyCommand=x:path",
        "host:",
        "k8s://pod/app",
        "k8s://Default/web/app",
        "ftp://host/path",
    ] {
        refused(&fx, &sync_args(&fx.alpha, remote));
        refused(&fx, &sync_args(remote, &fx.beta));
    }
}

#[test]
fn a_named_pipe_is_reported_and_the_rest_syncs() {
    let fx = Fixture::new();
    write(&fx.a("good.txt"), "good");
    write(&fx.a("d/also.txt"), "also");
    let fifo = fx.a("d/pipe");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let run = fx.once(&[]);
    run.expect_code(0);
    assert!(run.problem_at("d/pipe"), "{run}");
    assert_absent(&fx.b("d/pipe"));
    assert_content(&fx.b("good.txt"), "good");
    assert_content(&fx.b("d/also.txt"), "also");
}

/// An unreadable file. `chmod 000` does not stop root (these tests usually run as root in
/// containers), so as root ferry runs as `nobody` over a tree `nobody` owns, except for one
/// root-only file: a real `EACCES` on open, as a normal user would meet.
#[test]
fn an_unreadable_file_is_reported_and_the_rest_syncs() {
    let fx = Fixture::new();
    write(&fx.a("good.txt"), "good");
    write(&fx.a("d/also.txt"), "also");
    let secret = fx.a("d/secret.txt");
    write(&secret, "secret");
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let run = if is_root() {
        fx.chown_all(NOBODY);
        // ...but the secret stays root's, mode 000.
        std::os::unix::fs::chown(&secret, Some(0), Some(0)).unwrap();
        fx.once_as(NOBODY)
    } else {
        fx.once(&[])
    };
    run.expect_code(0);
    assert!(run.problem_at("d/secret.txt"), "{run}");
    assert_absent(&fx.b("d/secret.txt"));
    assert_content(&fx.b("good.txt"), "good");
    assert_content(&fx.b("d/also.txt"), "also");
    // Still there, untouched.
    assert_content(&secret, "secret");
}

#[test]
fn a_name_that_is_not_utf8_is_reported_and_the_rest_syncs() {
    let fx = Fixture::new();
    write(&fx.a("good.txt"), "good");
    let bad = fx.alpha.join(OsStr::from_bytes(b"bad-\xff\xfe-name.txt"));
    write(&bad, "bad name");
    let bad_dir = fx.alpha.join(OsStr::from_bytes(b"dir-\xc3\x28"));
    write(&bad_dir.join("inside.txt"), "inside");
    let run = fx.once(&[]);
    run.expect_code(0);
    let problems = run.events("problem");
    assert!(
        problems
            .iter()
            .any(|e| e["path"].as_str().is_some_and(|p| p.starts_with("bad-"))),
        "no problem reported for the non-UTF-8 file name\n{run}"
    );
    assert!(
        problems
            .iter()
            .any(|e| e["path"].as_str().is_some_and(|p| p.starts_with("dir-"))),
        "no problem reported for the non-UTF-8 directory name\n{run}"
    );
    assert_content(&fx.b("good.txt"), "good");
    let beta_names: Vec<_> = fs::read_dir(&fx.beta)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beta_names, vec![OsString::from("good.txt")]);
    assert_content(&bad, "bad name");
}

#[test]
fn names_differing_only_in_case_both_sync() {
    let fx = Fixture::new();
    write(&fx.a("A.txt"), "upper");
    write(&fx.a("a.txt"), "lower");
    write(&fx.b("Dir/x"), "upper dir");
    write(&fx.b("dir/x"), "lower dir");
    // A first sync that merges into alpha needs --yes (issue 9, item 6).
    let run = fx.once(&["--yes"]);
    run.expect_code(0);
    fx.assert_synced();
    assert_content(&fx.b("A.txt"), "upper");
    assert_content(&fx.b("a.txt"), "lower");
    assert_content(&fx.a("Dir/x"), "upper dir");
    assert_content(&fx.a("dir/x"), "lower dir");
}

/// Issue 9, item 24: `ferry sync --help` carries what a user otherwise has to find in the
/// README: the endpoint forms, the environment variables and the exit codes.
#[test]
fn sync_help_shows_endpoint_forms_environment_and_exit_codes() {
    let fx = Fixture::new();
    for args in [&["sync", "--help"][..], &["help", "sync"][..]] {
        let run = fx.run(args);
        run.expect_code(0);
        for needle in [
            "docker://[USER@]CONTAINER/abs/path",
            "ssh://[USER@]HOST[:PORT]/abs/path",
            "[USER@]HOST:path",
            "k8s://[CONTEXT@]NAMESPACE/POD[:CONTAINER]/abs/path",
            "FERRY_AGENT",
            "FERRY_SSH_COMMAND",
            "FERRY_KUBECTL",
            "DOCKER_HOST",
            "Exit codes:",
            "0  Done and in sync",
            "1  Failed",
            "2  Bad usage",
            "3  Finished with unresolved conflicts",
        ] {
            assert!(run.stdout.contains(needle), "no {needle:?} in\n{run}");
        }
        assert!(run.stderr.is_empty(), "{run}");
    }
    // The short help stays short and says where the rest is.
    let run = fx.run(["sync", "-h"]);
    run.expect_code(0);
    assert!(run.stdout.contains("'ferry sync --help'"), "{run}");
    assert!(!run.stdout.contains("FERRY_SSH_COMMAND"), "{run}");
}

/// Issue 9, item 24: a misspelt command or flag is refused (exit 2, one line) with clap's
/// suggestion in that line.
#[test]
fn a_misspelt_command_or_flag_suggests_the_right_one() {
    let fx = Fixture::new();
    let mut args = sync_args(&fx.alpha, &fx.beta);
    args[0] = "syn".into();
    let line = refused(&fx, &args);
    assert!(line.contains("'syn'") && line.contains("'sync'"), "{line}");
    let line = refused(&fx, &["syn"]);
    assert!(line.contains("'sync'"), "{line}");
    let mut args = sync_args(&fx.alpha, &fx.beta);
    args[3] = "--onc".into();
    let line = refused(&fx, &args);
    assert!(line.contains("'--once'"), "{line}");
}
