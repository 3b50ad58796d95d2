//! Convergence under kills (issue 9, item C): with a container as beta, files written slowly on
//! alpha and the agent or ferry killed every few seconds, files stayed on beta as an earlier
//! version for good. Two windows, each with a test:
//!
//! - The agent killed while content streams to it: Docker stops taking the stream without
//!   closing it, so ferry's next write waited forever. The session hung mid-cycle, never to
//!   notice the loss nor sync anything again.
//! - The agent killed after a cycle placed a file and before that cycle ended: the cycle never
//!   agreed on anything, so the archive still held the version before the copy. The writer
//!   then changed the file on alpha again, and the cycle after the reconnection saw beta
//!   "modified" (by ferry itself) and alpha modified: a conflict that nothing resolves. (A
//!   killed ferry does not have this problem: at its next start the journal says what the
//!   unfinished cycle did.)
//!
//! Both tests hit their window on purpose: a new directory moves into alpha whole, `a-small`
//! first and the big `z-big` after it (changes are made in name order); once `a-small` is on
//! beta, `z-big` is still streaming, and the agent is killed.

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::remote_support::*;
use crate::support::*;

/// Kills per test: each must land inside a transfer (see [`kill_agent_behind`]).
const TRIES: usize = 3;
/// The file streaming behind the small one: big enough that its transfer outlasts a few
/// `docker exec` round trips.
const BIG: usize = 48 << 20;

/// `ferry sync ALPHA docker://CONTAINER/srv/app --json`, watching, once a first file arrived.
fn start(c: &Container, fx: &Fixture) -> Session {
    write(&fx.a("ready"), "up\n");
    let mut cmd = fx.command();
    cmd.env("FERRY_AGENT", static_agent());
    let args: Vec<OsString> = vec![
        "sync".into(),
        fx.alpha.clone().into(),
        format!("docker://{}/srv/app", c.name).into(),
        "--json".into(),
    ];
    let mut s = Session::spawn(cmd, args);
    s.wait_event(0, "the `watching` event", |e| is(e, "watching"));
    s.wait_until("a first file reaches the container", || {
        c.read_file("/srv/app/ready").as_deref() == Some(&b"up\n"[..])
    });
    s
}

/// What [`kill_agent_behind`] saw.
struct Kill {
    /// Where the events of this try start.
    mark: usize,
    /// The kill landed inside the cycle that placed `a-small`: that cycle never reported its
    /// change (a cycle reports its changes once its transition is done).
    interrupted: bool,
}

/// The directory try `attempt` moves into alpha.
fn dir_of(attempt: usize) -> String {
    format!("d{attempt}")
}

/// Moves a new directory ([`dir_of`] `attempt`) holding `a-small` (`small`) and `z-big` into
/// alpha, waits until `a-small` is on beta (`z-big` then streams behind it), runs `meanwhile`,
/// kills the agent and waits until ferry reconnects.
fn kill_agent_behind(
    c: &Container,
    fx: &Fixture,
    s: &mut Session,
    outside: &Path,
    attempt: usize,
    small: &str,
    meanwhile: impl FnOnce(),
) -> Kill {
    let dir = dir_of(attempt);
    let dir = dir.as_str();
    let mark = s.log.len();
    let made = outside.join(dir);
    fs::create_dir(&made).expect("mkdir");
    write(&made.join("z-big"), pseudo_random(attempt as u64, BIG));
    write(&made.join("a-small"), small);
    fs::rename(&made, fx.a(dir)).expect("moving the directory in");
    let in_container = format!("/srv/app/{dir}/a-small");
    s.wait_until(&format!("{dir}/a-small is on beta"), || {
        c.read_file(&in_container).as_deref() == Some(small.as_bytes())
    });
    meanwhile();
    let pid = c.sh("pidof ferry || true");
    if pid.split_whitespace().count() != 1 {
        s.fail(&format!(
            "expected one agent in the container, pidof says {pid:?}"
        ));
    }
    c.sh(&format!("kill -9 {}", pid.trim()));
    let reconnecting = |e: &Value| is(e, "reconnecting") && e["side"] == "beta";
    s.wait_event(
        mark,
        "a `reconnecting` event once the agent was killed (a session whose write to the dead \
         agent never returns never sees the loss)",
        reconnecting,
    );
    let lost = mark
        + s.log[mark..]
            .iter()
            .position(reconnecting)
            .expect("wait_event found it");
    let interrupted = !s.log[mark..lost]
        .iter()
        .any(|e| is(e, "change") && e["path"] == dir);
    Kill { mark, interrupted }
}

/// Waits until `z-big` of `dir` is on beta whole.
fn wait_big(c: &Container, s: &mut Session, dir: &str) {
    let cmd = format!("wc -c < /srv/app/{dir}/z-big 2>/dev/null || true");
    s.wait_until(&format!("{dir}/z-big reaches the container whole"), || {
        c.sh(&cmd).trim() == BIG.to_string()
    });
}

/// Asserts the host's and the container's trees are the same.
fn assert_same(c: &Container, fx: &Fixture, s: &mut Session) {
    let (host, cont) = (tree(&fx.alpha), c.tree("/srv/app"));
    if let Some(d) = diff_trees(&host, &cont) {
        s.fail(&format!("host and container differ after the kills:\n{d}"));
    }
}

#[test]
fn docker_agent_killed_while_content_streams_to_it_is_noticed_and_the_copy_completes() {
    let _serial = serial();
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let outside = tempfile::tempdir().expect("a scratch directory");
    let mut s = start(&c, &fx);
    let mut landed = 0;
    for attempt in 1..=TRIES {
        let dir = dir_of(attempt);
        let kill = kill_agent_behind(&c, &fx, &mut s, outside.path(), attempt, "first\n", || {});
        landed += usize::from(kill.interrupted);
        wait_big(&c, &mut s, &dir);
    }
    if landed == 0 {
        s.fail(&format!(
            "in {TRIES} tries no kill landed during a transfer: the window this test is about \
             was not exercised"
        ));
    }
    assert_same(&c, &fx, &mut s);
    s.stop();
}

#[test]
fn docker_agent_killed_after_a_copy_the_writer_then_changes_converges_without_conflict() {
    let _serial = serial();
    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    let outside = tempfile::tempdir().expect("a scratch directory");
    let mut s = start(&c, &fx);
    for attempt in 1..=TRIES {
        let copied = format!("v{attempt}: the version the interrupted cycle copies\n");
        let newer = format!("v{attempt}: written on alpha after that copy\n");
        let dir = dir_of(attempt);
        let path = format!("{dir}/a-small");
        // The writer goes on (as a save does) while z-big still streams.
        let save = || {
            let tmp = outside.path().join("a-small");
            write(&tmp, &newer);
            fs::rename(&tmp, fx.a(&path)).expect("saving a-small");
        };
        let kill = kill_agent_behind(&c, &fx, &mut s, outside.path(), attempt, &copied, save);
        let in_container = format!("/srv/app/{path}");
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(e) = s.log[kill.mark..]
                .iter()
                .find(|e| is(e, "conflict") && e["path"] == path.as_str())
            {
                let e = e.clone();
                s.fail(&format!(
                    "try {attempt}: {path} became a conflict ({e}); beta keeps the copy made \
                     before the kill ({:?}) and alpha's newer version never arrives",
                    c.read_file(&in_container)
                        .map(|d| String::from_utf8_lossy(&d).into_owned())
                ));
            }
            if c.read_file(&in_container).as_deref() == Some(newer.as_bytes()) {
                break;
            }
            if Instant::now() >= end {
                s.fail(&format!(
                    "try {attempt}: alpha's newer {path} did not reach beta within {DEADLINE:?} \
                     of the reconnection"
                ));
            }
            s.poll_events(Duration::from_millis(100));
        }
        wait_big(&c, &mut s, &dir);
        if kill.interrupted {
            assert_same(&c, &fx, &mut s);
            s.stop();
            return;
        }
    }
    s.fail(&format!(
        "in {TRIES} tries the kill never landed between the copy of a-small and the end of its \
         cycle: the window this test is about was not exercised"
    ));
}
