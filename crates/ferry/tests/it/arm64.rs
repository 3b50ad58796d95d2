//! The aarch64 agent end to end, under emulation (issue 12, part 2): an arm64 busybox container
//! built `FROM scratch` runs every process through qemu-user (binfmt_misc, F flag), and
//! `FERRY_AGENT_ARCH=aarch64` makes ferry install the static aarch64 agent there. The session
//! passes the checks the x86_64 container passes: both ways with `--once`, watching, and
//! reconnecting after the agent is killed and after the container restarts. Missing emulation,
//! image parts or agent are failures that say how to get them.

use std::ffi::OsStr;
use std::fs;

use crate::remote::{
    assert_settled, assert_trees, edit_host, expected_after_edits, file, once_ok, populate_host,
    wait_reconnect, watch,
};
use crate::remote_support::*;
use crate::support::*;

/// The environment that makes ferry use the aarch64 agent built for the tests.
fn aarch64_env() -> Vec<(&'static str, std::ffi::OsString)> {
    vec![
        ("FERRY_AGENT_ARCH", "aarch64".into()),
        ("FERRY_AGENT_AARCH64", aarch64_agent().into_os_string()),
    ]
}

fn refs<'a>(env: &'a [(&'static str, std::ffi::OsString)]) -> Vec<(&'static str, &'a OsStr)> {
    env.iter().map(|(k, v)| (*k, v.as_os_str())).collect()
}

/// The one agent in the container is the aarch64 agent, under a name that says so, and it is
/// what runs: an aarch64 ELF (the container can run nothing else natively).
fn assert_aarch64_agent_installed(c: &Container) {
    let agents = c.tree("/.ferry/agent");
    let tags: Vec<&String> = agents.keys().filter(|k| !k.contains('/')).collect();
    assert_eq!(
        tags.len(),
        1,
        "expected one agent in the container: {tags:?}"
    );
    let tag = tags[0];
    let prefix = format!("{}-aarch64-", env!("CARGO_PKG_VERSION"));
    assert!(
        tag.starts_with(&prefix),
        "agent directory {tag:?} does not name aarch64"
    );
    match agents.get(&format!("{tag}/ferry")) {
        Some(Node::File { data, exec: true }) => {
            assert_eq!(
                data.get(0x12..0x14),
                Some(&[0xb7, 0][..]),
                "/.ferry/agent/{tag}/ferry is not an aarch64 binary"
            );
            assert!(
                *data == read(&aarch64_agent()),
                "/.ferry/agent/{tag}/ferry is not the aarch64 agent"
            );
        }
        other => panic!("/.ferry/agent/{tag}/ferry: expected an executable file, got {other:?}"),
    }
}

#[test]
fn arm64_container_once_both_ways_with_the_aarch64_agent() {
    let _serial = serial();
    let c = Container::start(arm64_busybox_image(), &[]);
    assert_eq!(
        c.sh("uname -m").trim(),
        "aarch64",
        "the arm64 image is not emulated"
    );
    let env = aarch64_env();
    let env = refs(&env);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);

    // Host -> container: create, then modify, delete, rename.
    populate_host(&fx.alpha);
    let run = once_ok(&fx, &fx.alpha, &beta, &env);
    assert_trees(
        "first sync into the arm64 container",
        &tree(&fx.alpha),
        &c.tree("/srv/app"),
        &run,
    );
    assert_aarch64_agent_installed(&c);
    edit_host(&fx.alpha);
    let run = once_ok(&fx, &fx.alpha, &beta, &env);
    let want = expected_after_edits();
    assert_trees(
        "the host's edits, in the container",
        &want,
        &c.tree("/srv/app"),
        &run,
    );

    // Container -> host.
    c.sh(
        "set -e; cd /srv/app; printf 'from arm64\\n' > nested/arm.txt; rm top.txt; \
          mv bin/run.sh bin/go.sh",
    );
    let run = once_ok(&fx, &fx.alpha, &beta, &env);
    let mut want = want;
    want.remove("top.txt");
    let run_sh = want
        .remove("bin/run.sh")
        .expect("bin/run.sh in the expected tree");
    want.insert("bin/go.sh".into(), run_sh);
    want.insert("nested/arm.txt".into(), file("from arm64\n", false));
    assert_trees(
        "the container's edits, on the host",
        &want,
        &tree(&fx.alpha),
        &run,
    );
    assert_settled(&fx, &fx.alpha, &beta, &env);
    assert_aarch64_agent_installed(&c);
}

#[test]
fn arm64_container_watch_and_reconnect_with_the_aarch64_agent() {
    let _serial = serial();
    let c = Container::start(arm64_busybox_image(), &[]);
    let env = aarch64_env();
    let env = refs(&env);
    let fx = Fixture::new();
    let beta = format!("docker://{}/srv/app", c.name);
    write(&fx.a("seed.txt"), "seed\n");
    let mut s = watch(&fx, &fx.alpha, &beta, &env);
    assert_eq!(
        c.read_file("/srv/app/seed.txt").as_deref(),
        Some(&b"seed\n"[..]),
        "the first cycle did not copy seed.txt"
    );
    assert_aarch64_agent_installed(&c);

    // Live, both ways.
    c.sh("echo 'written in the arm64 container' > /srv/app/from-container.txt");
    s.wait_until("from-container.txt reaches the host", || {
        fs::read(fx.a("from-container.txt")).is_ok_and(|d| d == b"written in the arm64 container\n")
    });
    write(&fx.a("seed.txt"), "seed, edited on the host\n");
    s.wait_until("the host's edit reaches the container", || {
        c.read_file("/srv/app/seed.txt").as_deref() == Some(&b"seed, edited on the host\n"[..])
    });
    rename(&fx.a("seed.txt"), &fx.a("seed-renamed.txt"));
    s.wait_until("the host's rename reaches the container", || {
        c.read_file("/srv/app/seed-renamed.txt").is_some()
            && c.read_file("/srv/app/seed.txt").is_none()
    });
    c.sh("rm /srv/app/from-container.txt");
    s.wait_until("the container's delete reaches the host", || {
        !exists(&fx.a("from-container.txt"))
    });

    // The emulated agent killed: ferry starts it again.
    let pids = c.sh("pidof ferry || true");
    if pids.split_whitespace().count() != 1 {
        s.fail(&format!(
            "expected one agent process in the container, pidof says {pids:?}"
        ));
    }
    let mark = s.log.len();
    c.sh(&format!("kill -9 {}", pids.trim()));
    wait_reconnect(&mut s, mark, "beta");
    write(&fx.a("after-kill.txt"), "host, after the kill\n");
    s.wait_until(
        "the host's file after the kill reaches the container",
        || {
            c.read_file("/srv/app/after-kill.txt").as_deref()
                == Some(&b"host, after the kill\n"[..])
        },
    );

    // The container restarted: ferry connects again.
    let mark = s.log.len();
    c.restart();
    wait_reconnect(&mut s, mark, "beta");
    c.sh("echo 'container, after the restart' > /srv/app/after-restart.txt");
    s.wait_until(
        "the container's file after the restart reaches the host",
        || {
            fs::read(fx.a("after-restart.txt"))
                .is_ok_and(|d| d == b"container, after the restart\n")
        },
    );

    let want = Tree::from([
        (
            "seed-renamed.txt".into(),
            file("seed, edited on the host\n", false),
        ),
        (
            "after-kill.txt".into(),
            file("host, after the kill\n", false),
        ),
        (
            "after-restart.txt".into(),
            file("container, after the restart\n", false),
        ),
    ]);
    for (what, got) in [("host", tree(&fx.alpha)), ("container", c.tree("/srv/app"))] {
        if let Some(d) = diff_trees(&want, &got) {
            s.fail(&format!(
                "the {what} does not hold what both sides wrote:\n{d}"
            ));
        }
    }
    assert_aarch64_agent_installed(&c);
    s.stop();
}

/// Over kubectl (and SSH, the same code) ferry picks the agent by the far side's `uname -m`:
/// without `FERRY_AGENT_ARCH`, the arm64 "pod" answers `aarch64` and gets the aarch64 agent. The
/// first try is this machine's agent; the far side's answer switches to its own, installed
/// once; a later run finds it installed.
#[test]
fn arm64_pod_gets_the_aarch64_agent_by_uname() {
    let _serial = serial();
    let c = Container::start(arm64_busybox_image(), &[]);
    let fx = Fixture::new();
    let log = fx.root.join("kubectl.log");
    let standin = kubectl_standin();
    let agent = aarch64_agent();
    let envs: &[(&str, &OsStr)] = &[
        ("FERRY_KUBECTL", standin.as_os_str()),
        ("FERRY_KUBECTL_LOG", log.as_os_str()),
        ("FERRY_AGENT_AARCH64", agent.as_os_str()),
    ];
    let url = format!("k8s://ctx-a@ns1/{}:main/srv/app", c.name);
    write(&fx.a("from-host.txt"), "from the host\n");
    let run = once_ok(&fx, &fx.alpha, &url, envs);
    assert_eq!(
        c.read_file("/srv/app/from-host.txt").as_deref(),
        Some(&b"from the host\n"[..]),
        "{run}"
    );
    let tags: Vec<String> = c
        .sh("ls /root/.ferry/agent")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(tags.len(), 1, "one agent in the pod: {tags:?}\n{run}");
    let tag = &tags[0];
    assert!(
        tag.starts_with(&format!("{}-aarch64-", env!("CARGO_PKG_VERSION"))),
        "the pod got {tag}, not the aarch64 agent\n{run}"
    );
    assert!(
        c.read_file(&format!("/root/.ferry/agent/{tag}/ferry"))
            .is_some_and(|b| b == read(&agent)),
        "the pod's agent is not the aarch64 agent"
    );
    let starts = |log: &str| -> Vec<String> {
        log.lines()
            .map(|l| {
                if l.contains("mkdir -p") {
                    "install".to_owned()
                } else if l.contains("-aarch64-") {
                    "start aarch64".to_owned()
                } else if l.contains("-x86_64-") {
                    "start x86_64".to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect()
    };
    let first = starts(&fs::read_to_string(&log).expect("the stand-in's log"));
    assert_eq!(
        first,
        ["start x86_64", "start aarch64", "install", "start aarch64"],
        "{run}"
    );
    // A second run: the guess misses, the far side's agent is there already.
    c.sh("echo 'edited in the pod' > /srv/app/from-host.txt");
    let run = once_ok(&fx, &fx.alpha, &url, envs);
    assert_eq!(
        fs::read(fx.a("from-host.txt")).ok().as_deref(),
        Some(&b"edited in the pod\n"[..]),
        "{run}"
    );
    let all = starts(&fs::read_to_string(&log).expect("the stand-in's log"));
    assert_eq!(
        all[first.len()..],
        ["start x86_64", "start aarch64"],
        "{run}"
    );
}
