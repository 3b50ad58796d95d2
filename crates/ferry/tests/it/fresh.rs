//! A fresh machine just works (issue 12, part 1): a release build on a machine without
//! `musl-tools` still embeds a static agent (the stock gnu target with `+crt-static`) and that
//! ferry syncs with a container, installing the embedded agent.
//!
//! The musl C compiler is really out of reach: the nested build runs with a `PATH` holding
//! links to every program on this machine's `PATH` except the musl ones (`musl-gcc`,
//! `x86_64-linux-musl-gcc`), so build.rs finds no compiler for the musl target and falls back,
//! as it would on a machine where `musl-tools` was never installed. (The musl *target* stays in
//! the toolchain: hiding it would need a second toolchain; the missing compiler alone is what a
//! stock `rustup` install lacks, as its musl target ships no C compiler.)
//!
//! Cost: a release build of ferry plus the nested agent build, in `target/fresh-install`, kept
//! across runs so only what changed is rebuilt.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::remote_support::*;
use crate::support::*;

/// A directory of links to every program on `PATH` whose name does not mention musl.
fn path_without_musl(dir: &Path) -> OsString {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = std::env::var_os("PATH").expect("PATH is set");
    for d in std::env::split_paths(&path) {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().contains("musl") || dir.join(&name).exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), dir.join(&name));
        }
    }
    let musl = ["musl-gcc", "x86_64-linux-musl-gcc"];
    for m in musl {
        assert!(
            !dir.join(m).exists(),
            "{m} still reachable in {}",
            dir.display()
        );
    }
    dir.as_os_str().to_owned()
}

#[test]
fn release_build_without_musl_tools_embeds_a_static_gnu_agent_that_syncs() {
    let _serial = serial();
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = ws.join("target/fresh-install");
    let path = path_without_musl(&target.join("path-without-musl"));
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "ferry",
            "--bin",
            "ferry",
            "--target-dir",
        ])
        .arg(&target)
        .current_dir(&ws)
        .env("PATH", &path)
        .env_remove("FERRY_EMBED_AGENT")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()
        .expect("running cargo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the release build failed:\n{stderr}");
    assert!(
        !stderr.contains("no x86_64 agent embedded"),
        "the build without musl-tools embedded no agent:\n{stderr}"
    );

    let c = Container::start(busybox_image(), &[]);
    let fx = Fixture::new();
    write(&fx.a("hello.txt"), "from a fresh install\n");
    let mut cmd = Command::new(target.join("release/ferry"));
    cmd.env("XDG_STATE_HOME", &fx.state)
        .env("HOME", &fx.home)
        .env_remove("XDG_CACHE_HOME")
        .env_remove("FERRY_AGENT")
        .env_remove("FERRY_AGENT_ARCH")
        .current_dir(&fx.root);
    let beta = format!("docker://{}/srv/app", c.name);
    let args: Vec<OsString> = vec![
        "sync".into(),
        fx.alpha.clone().into(),
        beta.into(),
        "--once".into(),
        "--json".into(),
    ];
    let run = fx.run_command(cmd, args);
    run.expect_code(0);
    assert_eq!(
        c.read_file("/srv/app/hello.txt").as_deref(),
        Some(&b"from a fresh install\n"[..]),
        "{run}"
    );

    // What ran in the container is the embedded agent: the static glibc build.
    let agents = c.tree("/.ferry/agent");
    let tags: Vec<&String> = agents.keys().filter(|k| !k.contains('/')).collect();
    assert_eq!(
        tags.len(),
        1,
        "expected one agent in the container: {tags:?}\n{run}"
    );
    let tag = tags[0];
    let Some(Node::File { data, exec: true }) = agents.get(&format!("{tag}/ferry")) else {
        panic!("/.ferry/agent/{tag}/ferry is not an executable file\n{run}");
    };
    assert_eq!(
        data.get(0x12..0x14),
        Some(&[0x3e, 0][..]),
        "not an x86_64 agent"
    );
    assert!(
        data.windows(7).any(|w| w == b"glibc.m"),
        "the agent is not the static glibc fallback (no glibc tunables in it)"
    );
    let cached: PathBuf = fx.home.join(".cache/ferry/agent").join(tag).join("ferry");
    assert!(
        fs::read(&cached).is_ok_and(|b| b == *data),
        "the container's agent is not the one ferry wrote out of its binary at {}",
        cached.display()
    );
}
