//! A fresh machine just works (issue 12, part 1): ferry built as a user with only the stock
//! Rust toolchain builds it, then that very binary syncing with a container through the agent
//! it embeds.
//!
//! "Stock toolchain" here is this machine's `PATH` with musl-tools and the cross compilers taken
//! out (`x86_64-linux-musl-gcc`, `musl-gcc`, `aarch64-linux-gnu-*`): build.rs then cannot build
//! the musl agent (it needs both the target and its C compiler; without the compiler it does not
//! try, exactly as on a machine where the target was never added) nor the aarch64 one, and must
//! fall back to the stock gnu target linked with `+crt-static`. The build is
//! `cargo build --profile fresh-machine` (a `release` profile to build.rs, so it embeds the
//! agents, built with the `agent` profile as for users; see the root Cargo.toml) in a kept target
//! directory, `target/fresh-machine`, so a second run only rebuilds what changed (CI starts
//! clean: the whole build is this test's cost, see DEVELOPERS.md).
//!
//! The run: no `FERRY_AGENT`, a private `HOME` (the embedded agent is written out under it), and
//! the proof of which agent ran is the agent's bytes in the container: those of the gnu build in
//! this build's output directory, not the musl agent the other tests use.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::remote::{assert_trees, edit_host, expected_after_edits, file, populate_host};
use crate::remote_support::*;
use crate::support::*;

/// The profile of the outer build (root Cargo.toml).
const PROFILE: &str = "fresh-machine";

const GNU: &str = "x86_64-unknown-linux-gnu";
const MUSL: &str = "x86_64-unknown-linux-musl";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root")
}

/// Programs a stock toolchain does not have: musl-tools and the aarch64 cross toolchain.
fn not_stock(name: &str) -> bool {
    name.contains("musl") || name.starts_with("aarch64-linux-gnu-")
}

/// A directory of links to every program on this `PATH` (the first of each name) except those
/// `hide` names: the `PATH` of a machine without them.
fn path_without(dir: &Path, hide: impl Fn(&str) -> bool) -> OsString {
    mkdir(dir);
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let link = dir.join(&name);
            if hide(&name.to_string_lossy()) || link.symlink_metadata().is_ok() {
                continue;
            }
            if fs::metadata(e.path()).is_ok_and(|m| m.is_file()) {
                std::os::unix::fs::symlink(e.path(), &link).unwrap_or_else(|err| {
                    panic!(
                        "linking {} to {}: {err}",
                        link.display(),
                        e.path().display()
                    )
                });
            }
        }
    }
    for needed in ["cargo", "rustc", "cc"] {
        assert!(
            dir.join(needed).exists(),
            "building ferry needs `{needed}` on PATH (a Rust toolchain through rustup and a C \
             compiler: `apt-get install gcc`)"
        );
    }
    for hidden in ["x86_64-linux-musl-gcc", "musl-gcc", "aarch64-linux-gnu-gcc"] {
        assert!(
            !dir.join(hidden).exists() || !hide(hidden),
            "{hidden} is still reachable"
        );
    }
    dir.as_os_str().to_owned()
}

/// `cargo build --profile fresh-machine -p ferry --bin ferry` with `path` as `PATH` and none of
/// this test process's build settings, in `target_dir`.
fn release_build(path: &OsStr, target_dir: &Path) -> Output {
    let cargo = std::env::split_paths(path)
        .map(|d| d.join("cargo"))
        .find(|c| c.exists())
        .expect("cargo on the PATH (checked by path_without)");
    let mut cmd = Command::new(&cargo);
    cmd.args([
        "build",
        "--profile",
        PROFILE,
        "-p",
        "ferry",
        "--bin",
        "ferry",
    ])
    .arg("--target-dir")
    .arg(target_dir)
    .current_dir(workspace())
    .env("PATH", path)
    .env("CARGO_TERM_COLOR", "never");
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "FERRY_EMBED_AGENT",
        "FERRY_AGENT_NESTED",
    ] {
        cmd.env_remove(var);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("running {}: {e}", cargo.display()))
}

/// What the last run of ferry's build script in `target_dir` left: its `OUT_DIR` and the lines
/// it printed (cargo keeps them in `output` beside `out/`, also when the build was up to date).
fn build_script_run(target_dir: &Path) -> (PathBuf, String) {
    let build = target_dir.join(PROFILE).join("build");
    let runs = fs::read_dir(&build)
        .unwrap_or_else(|e| panic!("{}: {e}", build.display()))
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ferry-"))
        .map(|e| e.path().join("output"))
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)));
    let (_, output) = runs
        .max()
        .unwrap_or_else(|| panic!("no ferry build script output under {}", build.display()));
    let dir = output.parent().expect("output has a parent");
    let text =
        fs::read_to_string(&output).unwrap_or_else(|e| panic!("reading {}: {e}", output.display()));
    (dir.join("out"), text)
}

/// The ferry built in `target_dir`, run in `fx`'s private world with no agent override.
fn fresh_ferry(bin: &Path, fx: &Fixture) -> Command {
    let mut c = Command::new(bin);
    c.env("XDG_STATE_HOME", &fx.state)
        .env("HOME", &fx.home)
        .current_dir(&fx.root)
        .stdin(std::process::Stdio::null());
    for var in [
        "XDG_DATA_HOME",
        "XDG_CONFIG_HOME",
        "XDG_CACHE_HOME",
        "RUST_LOG",
        "FERRY_AGENT",
        "FERRY_AGENT_AARCH64",
        "FERRY_AGENT_ARCH",
    ] {
        c.env_remove(var);
    }
    c
}

fn once(fx: &Fixture, bin: &Path, beta: &str) -> Run {
    let run = fx.run_command(
        fresh_ferry(bin, fx),
        vec![
            "sync".into(),
            fx.alpha.clone().into(),
            beta.into(),
            "--once".into(),
            "--json".into(),
        ],
    );
    run.expect_code(0);
    run
}

fn show(out: &Output) -> String {
    format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A `PATH` like `stock` whose `cc` finds no static C library (as on a machine without glibc's
/// static archive, e.g. Fedora without `glibc-static`): for a static link it runs the real
/// compiler in a mount namespace where `libc.a` is empty, so the real linker fails (undefined
/// `malloc`, ...); every other use is the real `cc`. Needs root (for the namespace).
fn path_without_static_libc(dir: &Path, stock: &OsStr) -> OsString {
    assert!(
        is_root(),
        "this test hides the static C library from the linker in a mount namespace: run it as \
         root (scripts/test.sh does)"
    );
    let stock_dir = Path::new(stock);
    assert!(
        stock_dir.join("unshare").exists(),
        "this test needs `unshare` (util-linux) on PATH"
    );
    let cc = fs::canonicalize(stock_dir.join("cc")).expect("cc on the stock PATH");
    let bin = dir.join("bin");
    mkdir(&bin);
    let script = r#"#!/bin/sh
for a in "$@"; do
  case "$a" in -static|-static-pie)
    exec unshare --mount sh -c 'mount --bind /dev/null "$("$0" -print-file-name=libc.a)" && exec "$0" "$@"' CC "$@" ;;
  esac
done
exec CC "$@"
"#
    .replace("CC", &format!("'{}'", cc.display()));
    write(&bin.join("cc"), script);
    set_exec(&bin.join("cc"), true);
    std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(stock))).expect("a PATH")
}

/// Removes the gnu agent a previous run linked in `target_dir`, so the next build links it again
/// (cargo relinks a binary whose output is gone; a fresh CI checkout has none).
fn forget_linked_gnu_agent(target_dir: &Path) {
    let build = target_dir.join(PROFILE).join("build");
    let Ok(entries) = fs::read_dir(&build) else {
        return;
    };
    for e in entries.flatten() {
        let agent = e.path().join("out/agent-target").join(GNU).join("agent");
        let _ = fs::remove_file(agent.join("ferry"));
        let Ok(deps) = fs::read_dir(agent.join("deps")) else {
            continue;
        };
        for d in deps.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            if name.starts_with("ferry-") && !name.contains('.') {
                remove(&d.path());
            }
        }
    }
}

#[test]
fn a_release_build_without_musl_embeds_the_static_gnu_agent_and_syncs_with_a_container() {
    // The build keeps both cores busy for minutes: not beside the timing-sensitive tests.
    let _serial = serial();
    let fx = Fixture::new();
    let stock = path_without(&fx.root.join("stock-bin"), not_stock);
    let target_dir = workspace().join("target").join("fresh-machine");

    // Where even the gnu fallback cannot link: the build still succeeds, and says once, in one
    // line, what fixes it. (The agent's dependencies it compiles are the next build's too.)
    forget_linked_gnu_agent(&target_dir);
    let no_static_libc = path_without_static_libc(&fx.root.join("no-static-libc"), &stock);
    let out = release_build(&no_static_libc, &target_dir);
    assert!(
        out.status.success(),
        "the release build without a static C library failed ({})\n{}",
        out.status,
        show(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let x86_64: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("x86_64 agent"))
        .collect();
    assert!(
        x86_64.len() == 1
            && x86_64[0].starts_with("warning: ferry@")
            && x86_64[0].contains("no x86_64 agent embedded")
            && x86_64[0].contains("static gnu fallback failed")
            && x86_64[0].contains("error: linking with `cc` failed")
            && x86_64[0].contains("`rustup target add x86_64-unknown-linux-musl`")
            && x86_64[0].contains("`apt-get install musl-tools`"),
        "expected one warning line with the fix, got {x86_64:?}\n{stderr}"
    );
    let (out_dir, _) = build_script_run(&target_dir);
    assert!(
        read(&out_dir.join("agent.bin")).is_empty(),
        "an agent was embedded although its link failed"
    );

    // The stock toolchain, with a static C library.
    let out = release_build(&stock, &target_dir);
    assert!(
        out.status.success(),
        "the release build with a stock toolchain failed ({})\n{}",
        out.status,
        show(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("no x86_64 agent embedded"),
        "the stock-toolchain build embedded no x86_64 agent:\n{stderr}"
    );

    // What build.rs did: no x86_64 warning, the aarch64 one (its cross compiler is hidden), and
    // the embedded agent is the gnu build; musl was never tried.
    let (out_dir, printed) = build_script_run(&target_dir);
    let warnings: Vec<&str> = printed
        .lines()
        .filter(|l| l.starts_with("cargo:warning="))
        .collect();
    assert!(
        !warnings.iter().any(|w| w.contains("x86_64")),
        "build.rs warned about the x86_64 agent: {warnings:?}"
    );
    assert!(
        warnings.len() == 1
            && warnings[0].contains("no aarch64 agent embedded")
            && warnings[0].contains("apt-get install gcc-aarch64-linux-gnu"),
        "expected exactly the aarch64 warning (its cross compiler is hidden), got {warnings:?}"
    );
    let gnu_agent = out_dir.join("agent-target").join(GNU).join("agent/ferry");
    let gnu = fs::read(&gnu_agent).unwrap_or_else(|e| {
        panic!(
            "the gnu fallback agent {}: {e}\n{printed}",
            gnu_agent.display()
        )
    });
    assert!(
        ferry::remote::is_static_x86_64(&gnu),
        "{} is not a static x86_64 binary",
        gnu_agent.display()
    );
    assert!(
        gnu.windows(b"GNU C Library".len())
            .any(|w| w == b"GNU C Library"),
        "{} does not carry glibc",
        gnu_agent.display()
    );
    assert!(
        !out_dir.join("agent-target").join(MUSL).exists(),
        "build.rs tried the musl target although musl-tools were hidden"
    );
    assert!(
        read(&out_dir.join("agent.bin")) == gnu,
        "the embedded agent is not the gnu build"
    );
    let built = target_dir.join(PROFILE).join("ferry");
    assert!(
        fs::metadata(&built).is_ok_and(|m| m.len() > gnu.len() as u64),
        "{} is missing or smaller than the agent it embeds",
        built.display()
    );

    // That ferry, both ways with a container.
    let c = Container::start(busybox_image(), &[]);
    let beta = format!("docker://{}/srv/app", c.name);
    populate_host(&fx.alpha);
    let run = once(&fx, &built, &beta);
    assert_trees(
        "first sync into the container",
        &tree(&fx.alpha),
        &c.tree("/srv/app"),
        &run,
    );
    edit_host(&fx.alpha);
    let run = once(&fx, &built, &beta);
    let mut want = expected_after_edits();
    assert_trees(
        "the host's edits, in the container",
        &want,
        &c.tree("/srv/app"),
        &run,
    );
    c.sh("set -e; cd /srv/app; printf 'from the container\\n' > nested/c.txt; rm top.txt");
    let run = once(&fx, &built, &beta);
    want.remove("top.txt");
    want.insert("nested/c.txt".into(), file("from the container\n", false));
    assert_trees(
        "the container's edits, on the host",
        &want,
        &tree(&fx.alpha),
        &run,
    );
    let run = once(&fx, &built, &beta);
    assert_eq!(
        run.transferred(),
        (0, 0),
        "a --once run after the sync still changed something:\n{run}"
    );

    // The agent that ran in the container is the embedded gnu one, written out under HOME.
    let agents = c.tree("/.ferry/agent");
    let tags: Vec<&String> = agents.keys().filter(|k| !k.contains('/')).collect();
    assert_eq!(
        tags.len(),
        1,
        "expected one agent in the container: {tags:?}"
    );
    let tag = tags[0];
    assert!(
        tag.starts_with(&format!("{}-x86_64-", env!("CARGO_PKG_VERSION"))),
        "agent directory {tag:?} does not name x86_64"
    );
    match agents.get(&format!("{tag}/ferry")) {
        Some(Node::File { data, exec: true }) => assert!(
            *data == gnu,
            "/.ferry/agent/{tag}/ferry is not the embedded gnu agent"
        ),
        other => panic!("/.ferry/agent/{tag}/ferry: expected an executable file, got {other:?}"),
    }
    let cached = fx.home.join(".cache/ferry/agent").join(tag).join("ferry");
    assert!(
        fs::read(&cached).is_ok_and(|b| b == gnu),
        "the embedded agent was not written out to {}",
        cached.display()
    );
}
