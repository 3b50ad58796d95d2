//! The first hour of real use (issue 9): the pair in either order, editors' temporaries,
//! ferry's own files on the far side, and what a person reads (exact lines, like an API).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::PathBuf;

use crate::remote_support::{Sshd, static_agent};
use crate::support::*;

/// `ferry sync ALPHA BETA --once EXTRA...` (alpha and beta as given).
fn once_pair(
    fx: &Fixture,
    alpha: impl AsRef<OsStr>,
    beta: impl AsRef<OsStr>,
    extra: &[&str],
) -> Run {
    let mut args: Vec<OsString> = vec![
        "sync".into(),
        alpha.as_ref().into(),
        beta.as_ref().into(),
        "--once".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    fx.run(args)
}

/// stdout's lines with the durations (`in 3 ms`, `(3 ms)`) written as `N`.
fn human_lines(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| {
            let mut s = l.to_owned();
            for (open, close) in [(" in ", " ms"), ("(", " ms)")] {
                if let Some(i) = s.rfind(open) {
                    let num = &s[i + open.len()..];
                    if let Some(j) = num.find(close) {
                        if num[..j].chars().all(|c| c.is_ascii_digit()) && j > 0 {
                            s = format!("{}{open}N{}", &s[..i], &num[j..]);
                        }
                    }
                }
            }
            s
        })
        .collect()
}

/// The session directories under the fixture's state.
fn session_dirs(fx: &Fixture) -> Vec<PathBuf> {
    let sessions = fx.state.join("ferry").join("sessions");
    let Ok(rd) = fs::read_dir(&sessions) else {
        return Vec::new();
    };
    rd.map(|e| e.expect("a session entry").path()).collect()
}

fn only_session(fx: &Fixture) -> PathBuf {
    let dirs = session_dirs(fx);
    assert_eq!(dirs.len(), 1, "expected one session directory: {dirs:?}");
    dirs[0].clone()
}

/// True if `name` is a backup folder name: `2026-12-06T11-30-05Z`, perhaps with `-N`.
fn is_stamp(name: &str) -> bool {
    let (stamp, rest) = name.split_at(name.len().min(20));
    let b = stamp.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 | 13 | 16 => *c == b'-',
            10 => *c == b'T',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
        && (rest.is_empty()
            || rest
                .strip_prefix('-')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit())))
}

// ---------------------------------------------------------------------------------------------
// Item 5: the same pair in the other order
// ---------------------------------------------------------------------------------------------

#[test]
fn regression_issue9_5_reversed_pair_is_locked_while_a_session_runs() {
    let fx = Fixture::new();
    write(&fx.a("f"), "f");
    let mut s = fx.watch(&[]);
    // The other order, a trailing slash, and a symlink to alpha: all the same pair.
    let alias = fx.root.join("alias");
    std::os::unix::fs::symlink(&fx.alpha, &alias).expect("symlink");
    let slash = format!("{}/", fx.beta.display());
    for (a, b) in [
        (
            fx.beta.clone().into_os_string(),
            fx.alpha.clone().into_os_string(),
        ),
        (OsString::from(&slash), alias.clone().into_os_string()),
        (alias.clone().into_os_string(), OsString::from(&slash)),
    ] {
        let run = once_pair(&fx, &a, &b, &[]);
        run.expect_code(1);
        let line = run.expect_one_stderr_line();
        assert!(
            line.starts_with("ferry: another ferry is already syncing this pair, in this order or the other (state "),
            "{line}\n{run}"
        );
    }
    assert_eq!(session_dirs(&fx).len(), 1, "{:?}", session_dirs(&fx));
    s.stop();
}

#[test]
fn regression_issue9_5_reversed_run_resumes_the_session() {
    let fx = Fixture::new();
    write(&fx.a("edited"), "v1");
    write(&fx.a("gone"), "soon deleted");
    write(&fx.a("d/kept"), "kept");
    fx.once(&[]).expect_code(0);
    fx.assert_synced();
    // Changes on both sides while nothing runs, then the pair named the other way round: a
    // resumed session (not a first sync, which would conflict at `edited` and bring `gone`
    // back).
    write(&fx.b("edited"), "v2 on beta");
    remove(&fx.a("gone"));
    write(&fx.a("d/new"), "new on alpha");
    let mut args = vec![
        OsString::from("sync"),
        fx.beta.clone().into(),
        fx.alpha.clone().into(),
    ];
    args.extend(["--once", "--json"].map(OsString::from));
    let run = fx.run(args);
    run.expect_code(0);
    assert!(run.events("conflict").is_empty(), "{run}");
    assert_content(&fx.a("edited"), "v2 on beta");
    assert_absent(&fx.b("gone"));
    assert_content(&fx.b("d/new"), "new on alpha");
    // ... and the first order again finds nothing to do, in the same session.
    fx.assert_converged(&[]);
    assert_eq!(session_dirs(&fx).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Item 11: editors' temporary files
// ---------------------------------------------------------------------------------------------

const TEMPS: &[&str] = &[
    ".main.rs.swp",
    "src/.lib.rs.swo",
    "4913",
    "notes.txt~",
    ".#main.rs",
    "#main.rs#",
    "___jb_tmp___",
    "src/___jb_old___",
];

#[test]
fn regression_issue9_11_editor_temporaries_are_not_synced() {
    let fx = Fixture::new();
    write(&fx.a("main.rs"), "fn main() {}");
    write(&fx.a("src/lib.rs"), "");
    for t in TEMPS {
        write(&fx.a(t), "temporary");
    }
    let run = fx.once(&[]);
    run.expect_code(0);
    assert_content(&fx.b("main.rs"), "fn main() {}");
    assert_content(&fx.b("src/lib.rs"), "");
    for t in TEMPS {
        assert_absent(&fx.b(t));
        // Never deleted either: invisible.
        assert_content(&fx.a(t), "temporary");
    }
    // `--no-default-ignores` syncs them.
    let run = fx.once(&["--no-default-ignores"]);
    run.expect_code(0);
    for t in TEMPS {
        assert_content(&fx.b(t), "temporary");
    }
    fx.assert_synced();
}

// ---------------------------------------------------------------------------------------------
// Items 14, 15, 16: what a person reads
// ---------------------------------------------------------------------------------------------

#[test]
fn regression_issue9_15_small_cycles_name_their_paths_big_ones_count() {
    let fx = Fixture::new();
    write(&fx.a("a.txt"), "a");
    write(&fx.a("lib/x"), "x");
    let run = once_pair(&fx, &fx.alpha, &fx.beta, &[]);
    run.expect_code(0);
    assert_eq!(
        human_lines(&run.stdout),
        ["synced 3 → beta (a.txt, lib/) in N ms"],
        "{run}"
    );
    assert_eq!(run.stderr, "", "{run}");

    remove(&fx.b("a.txt"));
    for i in 0..5 {
        write(&fx.a(&format!("many/{i}")), "m");
    }
    let run = once_pair(&fx, &fx.alpha, &fx.beta, &[]);
    run.expect_code(0);
    assert_eq!(
        human_lines(&run.stdout),
        ["synced 6 → beta (many/), 1 → alpha (a.txt deleted) in N ms"],
        "{run}"
    );

    for i in 0..4 {
        write(&fx.a(&format!("more{i}")), "m");
    }
    let run = once_pair(&fx, &fx.alpha, &fx.beta, &[]);
    assert_eq!(
        human_lines(&run.stdout),
        ["synced 4 → beta in N ms"],
        "{run}"
    );

    for i in 0..4 {
        write(&fx.a(&format!("more{i}")), "changed");
    }
    let run = once_pair(&fx, &fx.alpha, &fx.beta, &["-v"]);
    assert_eq!(
        human_lines(&run.stdout),
        ["synced 4 → beta (more0, more1, more2, more3) in N ms"],
        "{run}"
    );
}

#[test]
fn regression_issue9_14_one_conflict_is_singular() {
    let fx = Fixture::new();
    write(&fx.a("c"), "alpha's");
    write(&fx.b("c"), "beta's");
    write(&fx.a("ok"), "ok");
    let run = once_pair(&fx, &fx.alpha, &fx.beta, &[]);
    run.expect_code(3);
    assert_eq!(
        human_lines(&run.stdout),
        ["synced 1 → beta (ok), 1 conflict in N ms"],
        "{run}"
    );
    // The wording is issue 9 item 17's: what each side did, and the command that resolves it.
    assert_eq!(
        run.stderr,
        format!(
            "conflict: c: alpha created a file (7 B), beta created a file (6 B); neither side \
             touched. To keep one: ferry resolve {} {} c --keep alpha (or --keep beta)\n",
            fx.alpha.display(),
            fx.beta.display()
        ),
        "{run}"
    );
}

#[test]
fn regression_issue9_16_backups_one_line_per_cycle_in_readable_folders() {
    let fx = Fixture::new();
    for i in 0..5 {
        write(&fx.a(&format!("f{i}")), "alpha's");
        write(&fx.b(&format!("f{i}")), format!("beta's {i}"));
    }
    let run = once_pair(&fx, &fx.alpha, &fx.beta, &["--mode", "two-way-resolved"]);
    run.expect_code(0);
    let session = only_session(&fx);
    let area = session.join("backups").join("beta");
    let folders: Vec<String> = fs::read_dir(&area)
        .unwrap_or_else(|e| panic!("{}: {e}\n{run}", area.display()))
        .map(|e| e.expect("entry").file_name().into_string().expect("UTF-8"))
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}\n{run}");
    assert!(is_stamp(&folders[0]), "{folders:?}");
    let folder = area.join(&folders[0]);
    for i in 0..5 {
        assert_content(&folder.join(format!("f{i}")), format!("beta's {i}"));
    }
    assert_eq!(
        human_lines(&run.stdout),
        [
            format!("kept copies of 5 beta files under {}", folder.display()),
            "synced 5 → beta in N ms".to_owned(),
        ],
        "{run}"
    );
}

#[test]
fn regression_issue9_16_backups_are_pruned_by_the_retention_policy() {
    let fx = Fixture::new();
    write(&fx.a("f"), "v1");
    fx.once(&[]).expect_code(0);
    let area = only_session(&fx).join("backups").join("alpha");
    let old = [
        "2001-01-01T00-00-00Z",
        "2001-01-02T00-00-00Z-2",
        "recovered-2001-01-03T00-00-00Z",
    ];
    let recent = backup_name_now();
    for name in old.iter().copied().chain([recent.as_str()]) {
        write(&area.join(name).join("f"), "old copy");
    }
    write(&area.join("not-ferrys").join("f"), "kept");
    // `forever` keeps them all.
    fx.once(&["--keep-backups", "forever"]).expect_code(0);
    for name in old.iter().copied().chain([recent.as_str()]) {
        assert!(
            exists(&area.join(name)),
            "{name} was pruned under 'forever'"
        );
    }
    // The default (7 days or 1 GiB) removes the old ones at the start of a session.
    fx.once(&[]).expect_code(0);
    for name in old {
        assert_absent(&area.join(name));
    }
    assert_content(&area.join(&recent).join("f"), "old copy");
    assert_content(&area.join("not-ferrys").join("f"), "kept");
    // The newest folder is never pruned, however small the limit.
    fx.once(&["--keep-backups", "1B"]).expect_code(0);
    assert_content(&area.join(&recent).join("f"), "old copy");
    // A policy that cannot be read is bad usage.
    let run = fx.run(fx.once_args(&["--keep-backups", "soon"]));
    run.expect_code(2);
    assert_eq!(
        run.expect_one_stderr_line(),
        "ferry: --keep-backups 'soon': expected DAYS (7d, 12h), SIZE (500MB, 1GiB), both (7d,1GiB) or 'forever'"
    );
}

/// A backup folder name for a moment ago (the test's clock and ferry's agree).
fn backup_name_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        - 60;
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H-%M-%SZ"])
        .output()
        .expect("running date");
    String::from_utf8(out.stdout)
        .expect("date prints UTF-8")
        .trim()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Item 13: ferry's own files on the far side
// ---------------------------------------------------------------------------------------------

#[test]
fn regression_issue9_13_the_agent_never_syncs_its_install_or_state() {
    let sshd = Sshd::start();
    let ssh = OsString::from(sshd.ssh_command());
    let fx = Fixture::new();
    write(&fx.a("hello.txt"), "hello\n");
    let url = format!("{}:.", Sshd::HOST);
    let run_once = || {
        let mut c = fx.command();
        c.env("FERRY_AGENT", static_agent())
            .env("FERRY_SSH_COMMAND", &ssh);
        let args = [
            "sync".into(),
            fx.alpha.clone().into_os_string(),
            OsString::from(&url),
        ]
        .into_iter()
        // The account's home has files of its own: a first sync merging into alpha needs --yes.
        .chain(["--once", "--json", "--yes"].map(OsString::from))
        .collect();
        fx.run_command(c, args)
    };
    let run = run_once();
    run.expect_code(0);
    let home = sshd.home();
    assert_content(&home.join("hello.txt"), "hello\n");
    // The far side holds the agent and its state, and neither came over.
    assert!(
        exists(&home.join(".ferry/agent")),
        "no agent installed?\n{run}"
    );
    assert!(
        exists(&home.join(".local/state/ferry/agent")),
        "no agent state?\n{run}"
    );
    assert_absent(&fx.a(".ferry"));
    assert_absent(&fx.a(".local/state/ferry"));
    for e in run.events("change") {
        let p = e["path"].as_str().unwrap_or_default();
        assert!(
            !p.starts_with(".ferry") && !p.starts_with(".local/state/ferry"),
            "{p} was synced\n{run}"
        );
    }
    // A second run finds nothing to do (the agent's state changed meanwhile: invisible).
    let run = run_once();
    run.expect_code(0);
    assert_eq!(run.transferred(), (0, 0), "{run}");
    assert_absent(&fx.a(".ferry"));
}
