//! Release builds embed the static agents ferry installs on the far side, so a plain
//! `cargo build --release` or `cargo install --path crates/ferry` gives a ferry that can sync
//! with a container. The agents are ferry itself (profile `agent`), built by a nested cargo in
//! this build's own output directory: for x86_64 with `x86_64-unknown-linux-musl`, or, where the
//! musl target or `musl-tools` is missing, the stock gnu target linked with `+crt-static`; for
//! aarch64 with `aarch64-unknown-linux-gnu` and `+crt-static` through Debian's
//! `gcc-aarch64-linux-gnu`. An agent that cannot be built is not embedded, one warning line
//! says the command that fixes it, and ferry looks for one at run time instead (see
//! DEVELOPERS.md). Debug builds never embed (tests and
//! `.ci/run` build the agent once, separately).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-env-changed=FERRY_EMBED_AGENT");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    if let Some(dir) = kept_target_dir(&out) {
        println!("cargo:rustc-env=FERRY_BUILD_TARGET_DIR={}", dir.display());
    }
    let wanted = std::env::var("PROFILE").as_deref() == Ok("release")
        && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() != Ok("musl")
        && std::env::var_os("FERRY_AGENT_NESTED").is_none()
        && std::env::var("FERRY_EMBED_AGENT").as_deref() != Ok("0");
    let mut x86_64 = Vec::new();
    let mut aarch64 = Vec::new();
    if wanted {
        // Where musl-tools and the cross compiler are looked for.
        println!("cargo:rerun-if-env-changed=PATH");
        match build_x86_64(&out) {
            Ok(b) => x86_64 = b,
            Err(e) => println!(
                "cargo:warning=no x86_64 agent embedded ({e}); ferry will look for one at run time (see DEVELOPERS.md)"
            ),
        }
        match build_aarch64(&out) {
            Ok(b) => aarch64 = b,
            Err(e) => {
                println!("cargo:warning=no aarch64 agent embedded (arm64 containers need one): {e}")
            }
        }
    }
    std::fs::write(out.join("agent.bin"), x86_64).expect("writing the embedded agent");
    std::fs::write(out.join("agent-aarch64.bin"), aarch64).expect("writing the embedded agent");
}

/// The x86_64 agent: musl when its target and C compiler are here, else the gnu target linked
/// statically (`+crt-static`: glibc cannot look up user names then, which the agent never does),
/// which a stock toolchain can build.
fn build_x86_64(out: &Path) -> Result<Vec<u8>, String> {
    const MUSL: &str = "x86_64-unknown-linux-musl";
    const GNU: &str = "x86_64-unknown-linux-gnu";
    let musl_here = target_installed(MUSL)
        && on_path("x86_64-linux-musl-gcc")
            .or_else(|| on_path("musl-gcc"))
            .is_some();
    let mut why = String::from("the musl target or musl-tools is missing");
    if musl_here {
        match build_agent(out, MUSL, &[]) {
            Ok(b) => return Ok(b),
            Err(e) => why = e,
        }
    }
    build_agent(
        out,
        GNU,
        &[(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        )],
    )
    .map_err(|e| {
        format!(
            "{why}, and the static gnu fallback failed too ({e}); fix: `rustup target add {MUSL}` and \
             `apt-get install musl-tools`"
        )
    })
}

/// The aarch64 agent: the gnu target linked statically by Debian's cross compiler.
fn build_aarch64(out: &Path) -> Result<Vec<u8>, String> {
    const TARGET: &str = "aarch64-unknown-linux-gnu";
    const FIX: &str = "fix: `rustup target add aarch64-unknown-linux-gnu` and `apt-get install gcc-aarch64-linux-gnu`";
    if !target_installed(TARGET) {
        return Err(format!("no {TARGET} target; {FIX}"));
    }
    if on_path("aarch64-linux-gnu-gcc").is_none() {
        return Err(format!("no aarch64-linux-gnu-gcc; {FIX}"));
    }
    build_agent(
        out,
        TARGET,
        &[
            (
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
                "aarch64-linux-gnu-gcc",
            ),
            (
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static",
            ),
        ],
    )
    .map_err(|e| format!("{e}; {FIX}"))
}

/// Whether rustup (or the sysroot) has the standard library for `target`.
fn target_installed(target: &str) -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .is_some_and(|root| {
            Path::new(root.trim())
                .join("lib/rustlib")
                .join(target)
                .join("lib")
                .is_dir()
        })
}

/// `prog` found on `PATH`.
fn on_path(prog: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// The target directory of this build, where an agent built beside ferry lands (it honours
/// `CARGO_TARGET_DIR` and `build.target-dir`, as `OUT_DIR` is inside it), unless it is a
/// throwaway: `cargo install`'s temporary directory, or anything under the temp directory,
/// where another user could plant an agent once it is gone.
/// `OUT_DIR` is `<target>/[<triple>/]<profile>/build/ferry-<hash>/out`.
fn kept_target_dir(out: &std::path::Path) -> Option<PathBuf> {
    let mut dir = out.ancestors().nth(4)?;
    let triple = std::env::var("TARGET").ok()?;
    if dir.file_name().is_some_and(|n| n == triple.as_str()) {
        dir = dir.parent()?;
    }
    let throwaway = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("cargo-install"))
        || dir.starts_with(std::env::temp_dir())
        || dir.to_str().is_none_or(|d| d.contains('\n'));
    (!throwaway && dir.is_absolute()).then(|| dir.to_path_buf())
}

fn build_agent(out: &Path, target: &str, env: &[(&str, &str)]) -> Result<Vec<u8>, String> {
    let cargo = std::env::var_os("CARGO").ok_or("CARGO is not set")?;
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or("no manifest dir")?);
    let target_dir = out.join("agent-target");
    let built = Command::new(cargo)
        .args([
            "build",
            "--profile",
            "agent",
            "--target",
            target,
            "-p",
            "ferry",
            "--bin",
            "ferry",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&manifest)
        .env("FERRY_AGENT_NESTED", "1")
        // Its errors are read below.
        .env("CARGO_TERM_COLOR", "never")
        // The outer build's settings are not the agent's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .envs(env.iter().copied())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    // Kept where cargo keeps a build script's output (`-vv` shows it); the warning names the
    // first error.
    let stderr = String::from_utf8_lossy(&built.stderr);
    eprint!("{stderr}");
    if !built.status.success() {
        let first_error = stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .map(|l| format!(": {}", l.trim()))
            .unwrap_or_default();
        return Err(format!(
            "the {target} build failed ({}){first_error}",
            built.status
        ));
    }
    std::fs::read(target_dir.join(target).join("agent/ferry"))
        .map_err(|e| format!("reading the built agent: {e}"))
}
