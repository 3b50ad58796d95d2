//! Release builds embed the static agent ferry installs on the far side, so a plain
//! `cargo build --release` or `cargo install --path crates/ferry` gives a ferry that can sync
//! with a container. The agent is ferry itself built for `x86_64-unknown-linux-musl` (profile
//! `agent`), by a nested cargo in this build's own output directory. Where that cannot be done
//! (no musl target or `musl-tools`), nothing is embedded, a warning says why, and ferry looks
//! for an agent at run time instead (see DEVELOPERS.md). Debug builds never embed (tests and
//! `.ci/run` build the agent once, separately).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-env-changed=FERRY_EMBED_AGENT");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    if let Some(dir) = kept_target_dir(&out) {
        println!("cargo:rustc-env=FERRY_BUILD_TARGET_DIR={}", dir.display());
    }
    let embedded = out.join("agent.bin");
    let wanted = std::env::var("PROFILE").as_deref() == Ok("release")
        && std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() != Ok("musl")
        && std::env::var_os("FERRY_AGENT_NESTED").is_none()
        && std::env::var("FERRY_EMBED_AGENT").as_deref() != Ok("0");
    let mut bytes = Vec::new();
    if wanted {
        match build_agent(&out) {
            Ok(b) => bytes = b,
            Err(e) => println!(
                "cargo:warning=no agent embedded ({e}); ferry will look for one at run time (see DEVELOPERS.md)"
            ),
        }
    }
    std::fs::write(&embedded, bytes).expect("writing the embedded agent");
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

fn build_agent(out: &std::path::Path) -> Result<Vec<u8>, String> {
    let cargo = std::env::var_os("CARGO").ok_or("CARGO is not set")?;
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or("no manifest dir")?);
    let target_dir = out.join("agent-target");
    let status = Command::new(cargo)
        .args([
            "build",
            "--profile",
            "agent",
            "--target",
            "x86_64-unknown-linux-musl",
            "-p",
            "ferry",
            "--bin",
            "ferry",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&manifest)
        .env("FERRY_AGENT_NESTED", "1")
        // The outer build's settings are not the agent's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "the musl build failed ({status}); install it with `rustup target add x86_64-unknown-linux-musl` and Debian's musl-tools"
        ));
    }
    std::fs::read(target_dir.join("x86_64-unknown-linux-musl/agent/ferry"))
        .map_err(|e| format!("reading the built agent: {e}"))
}
