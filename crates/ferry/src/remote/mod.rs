//! Remote endpoints: ferry's agent on the far side of a byte stream (see `docs/protocol.md`).
//!
//! - [`wire`]: the protocol (preface, frames, messages, checks on everything the peer sends).
//! - [`agent`]: `ferry agent`, serving one local directory over stdin/stdout.
//! - [`client`]: [`client::RemoteEndpoint`], the engine's side of the conversation.
//! - [`transport`]: how the stream is opened: Docker's exec API, the system `ssh`, `kubectl
//!   exec`; and how the agent gets there.

pub mod agent;
pub mod arch;
pub mod client;
pub mod transport;
pub mod wire;

use arch::Arch;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where an endpoint is, as written on the command line (see the README's URL table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(String),
    Docker {
        user: Option<String>,
        /// `ferry up`, never a URL: the agent runs as root and gives what it creates to this
        /// `USER[:GROUP]` (the service's user, or the mapping's `COPY --chown`).
        owner: Option<String>,
        container: String,
        path: String,
    },
    Ssh {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        path: String,
    },
    K8s {
        context: Option<String>,
        namespace: String,
        pod: String,
        container: Option<String>,
        path: String,
    },
}

impl Location {
    /// Parses an endpoint argument; `Err` is a one-line reason (usage error).
    pub fn parse(which: &str, s: &str) -> Result<Location, String> {
        if s.is_empty() {
            return Err(format!("{which} is empty"));
        }
        let bad = |why: &str| Err(format!("{which} '{s}': {why}"));
        if let Some(rest) = s.strip_prefix("docker://") {
            let Some((auth, path)) = rest.split_once('/') else {
                return bad("expected docker://[USER@]CONTAINER/abs/path");
            };
            let (user, container) = split_user(auth);
            if container.is_empty() || user.as_deref() == Some("") {
                return bad("expected docker://[USER@]CONTAINER/abs/path");
            }
            return Ok(Location::Docker {
                user,
                owner: None,
                container: container.to_owned(),
                path: remote_path(which, s, path)?,
            });
        }
        if let Some(rest) = s.strip_prefix("ssh://") {
            let Some((auth, path)) = rest.split_once('/') else {
                return bad("expected ssh://[USER@]HOST[:PORT]/path");
            };
            let (user, hostport) = split_user(auth);
            let (host, port) = match hostport.rsplit_once(':') {
                Some((h, p)) => match p.parse::<u16>() {
                    Ok(p) if p > 0 => (h, Some(p)),
                    _ => return bad("the port must be a number from 1 to 65535"),
                },
                None => (hostport, None),
            };
            if host.is_empty() || host.starts_with('-') || user.as_deref() == Some("") {
                return bad("expected ssh://[USER@]HOST[:PORT]/path");
            }
            return Ok(Location::Ssh {
                user,
                host: host.to_owned(),
                port,
                path: remote_path(which, s, path)?,
            });
        }
        if let Some(rest) = s.strip_prefix("k8s://") {
            return parse_k8s(rest).map_or_else(
                || bad("expected k8s://[CONTEXT@]NAMESPACE/POD[:CONTAINER]/abs/path"),
                Ok,
            );
        }
        if s.contains("://") {
            return bad("unknown scheme (docker://, ssh:// and k8s:// are known)");
        }
        // scp-like `[user@]host:path`: a colon before any slash, not a relative or absolute path.
        if let Some(i) = s.find(':') {
            if !s.starts_with('/') && !s.starts_with('.') && !s[..i].contains('/') {
                let (auth, path) = (&s[..i], &s[i + 1..]);
                let (user, host) = split_user(auth);
                if host.is_empty() || host.starts_with('-') || user.as_deref() == Some("") {
                    return bad("expected [USER@]HOST:path");
                }
                if path.is_empty() {
                    return bad("no path after the ':' (write HOST:. for the home directory)");
                }
                return Ok(Location::Ssh {
                    user,
                    host: host.to_owned(),
                    port: None,
                    path: path.to_owned(),
                });
            }
        }
        Ok(Location::Local(s.to_owned()))
    }

    /// The canonical spelling, for messages and the session's key.
    pub fn url(&self) -> String {
        let at = |u: &Option<String>| u.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
        match self {
            Location::Local(p) => p.clone(),
            Location::Docker {
                user,
                container,
                path,
                ..
            } => format!("docker://{}{container}{path}", at(user)),
            Location::Ssh {
                user,
                host,
                port,
                path,
            } => match port {
                Some(p) => format!("ssh://{}{host}:{p}{}", at(user), with_slash(path)),
                None => format!("{}{host}:{path}", at(user)),
            },
            Location::K8s {
                context,
                namespace,
                pod,
                container,
                path,
            } => format!(
                "k8s://{}{namespace}/{pod}{}{path}",
                at(&context.as_deref().map(percent_encode_context)),
                container
                    .as_ref()
                    .map(|c| format!(":{c}"))
                    .unwrap_or_default()
            ),
        }
    }
}

fn with_slash(p: &str) -> String {
    if p.starts_with('/') {
        p.to_owned()
    } else {
        format!("/{p}")
    }
}

fn split_user(auth: &str) -> (Option<String>, &str) {
    match auth.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_owned()), h),
        None => (None, auth),
    }
}

/// An absolute path from a URL's path part (`rest` is what follows the authority's `/`).
fn remote_path(which: &str, s: &str, rest: &str) -> Result<String, String> {
    let path = format!("/{}", rest.trim_end_matches('/'));
    if path == "/" {
        return Err(format!(
            "{which} '{s}': refusing to sync a whole filesystem ('/'); name a directory"
        ));
    }
    if path.contains('\0') {
        return Err(format!("{which} '{s}': the path holds a NUL byte"));
    }
    Ok(path)
}

/// `[CONTEXT@]NAMESPACE/POD[:CONTAINER]/abs/path`. Namespaces, pods and containers are DNS
/// names; a context name holding `@`, `/` or `%` writes them `%40`, `%2F`, `%25`.
fn parse_k8s(rest: &str) -> Option<Location> {
    let dns = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    let (auth, rest) = rest.split_once('/')?;
    let (context, namespace) = match auth.split_once('@') {
        Some((c, ns)) => (Some(percent_decode(c)?), ns),
        None => (None, auth),
    };
    let (podc, path) = rest.split_once('/')?;
    let (pod, container) = match podc.split_once(':') {
        Some((p, c)) => (p, Some(c.to_owned())),
        None => (podc, None),
    };
    if !dns(namespace)
        || !dns(pod)
        || container.as_deref().is_some_and(|c| !dns(c))
        || context.as_deref() == Some("")
    {
        return None;
    }
    let path = format!("/{}", path.trim_end_matches('/'));
    if path == "/" || path.contains('\0') {
        return None;
    }
    Some(Location::K8s {
        context,
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        container,
        path,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode_context(s: &str) -> String {
    s.replace('%', "%25")
        .replace('@', "%40")
        .replace('/', "%2F")
}

/// The static agent binary ferry installs on the far side, and the tag naming its version
/// (`<version>-<hash>`: a rebuilt agent gets a new path, so a stale one is never run).
#[derive(Clone, Debug)]
pub struct AgentBinary {
    pub path: PathBuf,
    pub tag: String,
}

/// Finds the static agent: `$FERRY_AGENT`; this very binary when it is static (a musl build);
/// the copy a release build embeds (written out once to the user's cache directory); else a
/// musl build on disk (see [`agent_candidates`]).
pub fn agent_binary(arch: Arch) -> Result<AgentBinary, String> {
    static FOUND: [OnceLock<Result<AgentBinary, String>>; 2] = [OnceLock::new(), OnceLock::new()];
    let slot = match arch {
        Arch::X86_64 => &FOUND[0],
        Arch::Aarch64 => &FOUND[1],
    };
    slot.get_or_init(|| find_agent(arch)).clone()
}

/// The variable naming an agent binary for `arch` explicitly.
fn agent_env(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "FERRY_AGENT",
        Arch::Aarch64 => "FERRY_AGENT_AARCH64",
    }
}

fn find_agent(arch: Arch) -> Result<AgentBinary, String> {
    let mut candidates = Vec::new();
    let var = agent_env(arch);
    if let Some(p) = std::env::var_os(var) {
        candidates.push(PathBuf::from(p));
    } else {
        let exe = std::env::current_exe().ok();
        if let Some(exe) = &exe {
            // The program headers follow the ELF header: the file's head tells (a release
            // ferry is tens of MB, not worth reading whole at every start).
            if read_head(exe).is_some_and(|b| is_static_elf(&b, arch)) {
                candidates.push(exe.clone());
            } else if let Some(found) = embedded_agent(arch) {
                return found;
            }
        }
        candidates.extend(agent_candidates(arch, exe.as_deref(), &build_target_dirs()));
    }
    for c in &candidates {
        match std::fs::read(c) {
            Ok(bytes) if is_static_elf(&bytes, arch) => {
                return Ok(AgentBinary {
                    path: c.clone(),
                    tag: tag(arch, &bytes),
                });
            }
            Ok(_) if std::env::var_os(var).is_some() => {
                return Err(format!(
                    "{var}={} is not a static {} Linux binary",
                    c.display(),
                    arch.name()
                ));
            }
            _ => {}
        }
    }
    let checkout = checkout_root().filter(|r| r.join("Cargo.toml").is_file());
    Err(no_agent_message(
        arch,
        checkout,
        build_target_dirs().first(),
    ))
}

/// The musl builds ferry looks for, in order: in the cargo target directory the running binary
/// sits in, if it is one (`target/{debug,release}/ferry`: tests and `cargo run`); `ferry-agent`
/// beside the binary; then in the target directories of the checkout this ferry was built from
/// (so a ferry installed with `cargo install --path crates/ferry` finds an agent built there).
fn agent_candidates(arch: Arch, exe: Option<&Path>, build_targets: &[PathBuf]) -> Vec<PathBuf> {
    let musl = |target: &Path| {
        ["agent", "release", "debug"]
            .map(|profile| target.join(arch.target()).join(profile).join("ferry"))
    };
    let mut out = Vec::new();
    if let Some(dir) = exe.and_then(Path::parent) {
        // Only from cargo's own layout: for a ferry in /tmp/x/ the directory above would be
        // /tmp, where anyone can plant an "agent".
        let in_target = dir
            .file_name()
            .is_some_and(|n| n == "debug" || n == "release");
        if let Some(target) = dir.parent().filter(|_| in_target) {
            out.extend(musl(target));
        }
        out.push(dir.join(match arch {
            Arch::X86_64 => "ferry-agent",
            Arch::Aarch64 => "ferry-agent-aarch64",
        }));
    }
    for target in build_targets {
        for c in musl(target) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

/// The workspace this ferry was built from, when it was built from a checkout of it (not from a
/// packaged crate): `crates/ferry/../..`.
fn checkout_root() -> Option<&'static Path> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ends_with("crates/ferry")
        .then(|| manifest.ancestors().nth(2))
        .flatten()
}

/// The target directories an agent built beside this ferry's checkout lands in: the one this
/// build used if it was kept (`CARGO_TARGET_DIR` or `build.target-dir`; see build.rs), then the
/// checkout's `target/`.
fn build_target_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = option_env!("FERRY_BUILD_TARGET_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    let checkout_target = checkout_root().map(|r| r.join("target"));
    dirs.extend(checkout_target.filter(|t| !dirs.contains(t)));
    dirs
}

/// What to do when no agent is found: the one command that builds it where this ferry looks
/// (`checkout`: the checkout it was built from, if it is still there).
fn no_agent_message(arch: Arch, checkout: Option<&Path>, target_dir: Option<&PathBuf>) -> String {
    let (target, needs) = match arch {
        Arch::X86_64 => (
            arch.target(),
            "`rustup target add x86_64-unknown-linux-musl` and musl-tools",
        ),
        Arch::Aarch64 => (
            arch.target(),
            "`rustup target add aarch64-unknown-linux-gnu` and Debian's gcc-aarch64-linux-gnu",
        ),
    };
    let var = agent_env(arch);
    let name = arch.name();
    match (checkout, target_dir) {
        (Some(root), Some(dir)) => format!(
            "no static {name} agent binary found: build one with `cargo build --profile agent \
             --target {target} --manifest-path {} --target-dir {}` (needs {needs}) or \
             point {var} at one",
            root.join("Cargo.toml").display(),
            dir.display()
        ),
        _ => format!(
            "no static {name} agent binary found and this ferry embeds none: reinstall it with \
             {needs} present (`cargo install --force --path crates/ferry` in a checkout) or point \
             {var} at a static {name} ferry"
        ),
    }
}

/// An agent's install name: ferry's version and a hash of the agent's bytes.
fn tag(arch: Arch, agent: &[u8]) -> String {
    let hash = blake3::hash(agent).to_hex();
    format!(
        "{}-{}-{}",
        env!("CARGO_PKG_VERSION"),
        arch.name(),
        &hash.as_str()[..16]
    )
}

/// The first 64 KiB of a file.
fn read_head(p: &std::path::Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(p)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut head))
        .ok()?;
    Some(head)
}

/// The agent this release build embeds, written out once to the user's cache directory.
fn embedded_agent(arch: Arch) -> Option<Result<AgentBinary, String>> {
    let embedded = match arch {
        Arch::X86_64 => EMBEDDED,
        Arch::Aarch64 => EMBEDDED_AARCH64,
    };
    if embedded.is_empty() || !is_static_elf(embedded, arch) {
        return None;
    }
    Some((|| {
        let tag = tag(arch, embedded);
        let dir = directories::ProjectDirs::from("", "", "ferry")
            .map(|d| d.cache_dir().join("agent").join(&tag))
            .ok_or("no cache directory for the embedded agent: set HOME or FERRY_AGENT")?;
        let path = dir.join("ferry");
        let present = std::fs::read(&path).is_ok_and(|b| b == embedded);
        if !present {
            let tmp = dir.join(format!("ferry.{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&tmp, embedded))
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| format!("writing the embedded agent to {}: {e}", dir.display()))?;
        }
        Ok(AgentBinary { path, tag })
    })())
}

/// The static agent a release build embeds (empty otherwise; see build.rs).
static EMBEDDED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/agent.bin"));
/// The aarch64 agent a release build embeds when it could build one (empty otherwise).
static EMBEDDED_AARCH64: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/agent-aarch64.bin"));

/// True for an x86_64 ELF executable without a program interpreter (statically linked).
pub fn is_static_x86_64(elf: &[u8]) -> bool {
    is_static_elf(elf, Arch::X86_64)
}

/// True for an ELF executable for `arch` without a program interpreter (statically linked).
pub fn is_static_elf(elf: &[u8], arch: Arch) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    if elf.get(..5) != Some(b"\x7fELF\x02") || u16_at(0x12) != Some(arch.elf_machine()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    for i in 0..phnum as usize {
        let Some(at) = (phoff as usize).checked_add(i * phentsize as usize) else {
            return false;
        };
        match u32_at(at) {
            // PT_INTERP: dynamically linked.
            Some(3) => return false,
            Some(_) => {}
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_locations() {
        let p = |s: &str| Location::parse("beta", s);
        assert_eq!(
            p("docker://node@web/srv/app/"),
            Ok(Location::Docker {
                user: Some("node".into()),
                owner: None,
                container: "web".into(),
                path: "/srv/app".into()
            })
        );
        assert_eq!(
            p("ssh://dev@build-box:2222/home/dev/app"),
            Ok(Location::Ssh {
                user: Some("dev".into()),
                host: "build-box".into(),
                port: Some(2222),
                path: "/home/dev/app".into()
            })
        );
        assert_eq!(
            p("dev@build-box:app"),
            Ok(Location::Ssh {
                user: Some("dev".into()),
                host: "build-box".into(),
                port: None,
                path: "app".into()
            })
        );
        assert_eq!(
            p("k8s://me%40prod@default/web-1:app/srv/app"),
            Ok(Location::K8s {
                context: Some("me@prod".into()),
                namespace: "default".into(),
                pod: "web-1".into(),
                container: Some("app".into()),
                path: "/srv/app".into()
            })
        );
        assert_eq!(
            p("k8s://arn:aws:eks:eu-west-1:1:cluster%2Fx@dev/api/srv")
                .map(|l| l.url())
                .as_deref(),
            Ok("k8s://arn:aws:eks:eu-west-1:1:cluster%2Fx@dev/api/srv")
        );
        assert_eq!(p("./a:b"), Ok(Location::Local("./a:b".into())));
        assert_eq!(p("/x/y"), Ok(Location::Local("/x/y".into())));
        for bad in [
            "docker://web",
            "docker:///srv",
            "docker://web/",
            "ssh://h:99999/x",
            "ssh://-oProxyCommand=x/y",
            "-oProxyCommand=x:y",
            "host:",
            "k8s://default/web",
            "k8s://Default/web/x",
            "k8s://%zz@default/web/x",
            "ftp://h/x",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn static_binaries_are_told_from_dynamic_ones() {
        let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
        // Test binaries are built for the gnu target: dynamically linked.
        assert!(!is_static_x86_64(&me));
        assert!(!is_static_x86_64(b"\x7fELF\x02junk"));
        // Debian's busybox-static (installed by .ci/run).
        let bb =
            std::fs::read("/bin/busybox").expect("/bin/busybox (apt-get install busybox-static)");
        assert!(is_static_x86_64(&bb));
    }

    fn paths(v: &[&str]) -> Vec<PathBuf> {
        v.iter().map(PathBuf::from).collect()
    }

    /// Issue 9, item 23: a ferry installed in ~/.cargo/bin finds the agent built in the
    /// checkout's target directory; one run from the target directory still prefers its own.
    #[test]
    fn agent_candidates_include_the_checkout_target_dir() {
        const MUSL: &str = "x86_64-unknown-linux-musl";
        let installed = agent_candidates(
            Arch::X86_64,
            Some(Path::new("/home/u/.cargo/bin/ferry")),
            &paths(&["/src/ferry/target"]),
        );
        assert_eq!(
            installed,
            paths(&[
                "/home/u/.cargo/bin/ferry-agent",
                &format!("/src/ferry/target/{MUSL}/agent/ferry"),
                &format!("/src/ferry/target/{MUSL}/release/ferry"),
                &format!("/src/ferry/target/{MUSL}/debug/ferry"),
            ])
        );
        // Run from the checkout itself, with CARGO_TARGET_DIR=/build at build time: no
        // duplicates, the running binary's own target directory first.
        let in_tree = agent_candidates(
            Arch::X86_64,
            Some(Path::new("/src/ferry/target/release/ferry")),
            &paths(&["/build", "/src/ferry/target"]),
        );
        assert_eq!(
            in_tree,
            paths(&[
                &format!("/src/ferry/target/{MUSL}/agent/ferry"),
                &format!("/src/ferry/target/{MUSL}/release/ferry"),
                &format!("/src/ferry/target/{MUSL}/debug/ferry"),
                "/src/ferry/target/release/ferry-agent",
                &format!("/build/{MUSL}/agent/ferry"),
                &format!("/build/{MUSL}/release/ferry"),
                &format!("/build/{MUSL}/debug/ferry"),
            ])
        );
        // Not in a target directory: nothing from the directory above it.
        assert_eq!(
            agent_candidates(Arch::X86_64, Some(Path::new("/tmp/x/ferry")), &[]),
            paths(&["/tmp/x/ferry-agent"])
        );
        // No executable path known: only the build's directories.
        assert_eq!(
            agent_candidates(Arch::X86_64, None, &paths(&["/b"])).len(),
            3
        );
    }

    /// This build's own candidates: the checkout it was built from (this one, when tests run).
    #[test]
    fn this_build_looks_in_its_checkout() {
        let root = checkout_root().expect("tests run from a checkout");
        assert!(root.join("Cargo.toml").is_file(), "{}", root.display());
        assert!(root.join("crates/ferry/Cargo.toml").is_file());
        let dirs = build_target_dirs();
        assert!(dirs.contains(&root.join("target")), "{dirs:?}");
        let mut unique = dirs.clone();
        unique.dedup();
        assert_eq!(unique, dirs);
    }

    /// The message names a command that builds the agent where [`agent_candidates`] looks.
    #[test]
    fn no_agent_message_gives_a_command_that_builds_where_ferry_looks() {
        let target = PathBuf::from("/src/ferry/target");
        let m = no_agent_message(Arch::X86_64, Some(Path::new("/src/ferry")), Some(&target));
        assert!(
            m.contains(
                "`cargo build --profile agent --target x86_64-unknown-linux-musl \
                 --manifest-path /src/ferry/Cargo.toml --target-dir /src/ferry/target`"
            ),
            "{m}"
        );
        let built = target.join("x86_64-unknown-linux-musl/agent/ferry");
        assert!(
            agent_candidates(Arch::X86_64, None, std::slice::from_ref(&target)).contains(&built)
        );
        assert!(!m.contains('\n'), "{m}");
        // The checkout is gone: reinstall, or FERRY_AGENT.
        let m = no_agent_message(Arch::X86_64, None, None);
        assert!(
            m.contains("cargo install") && m.contains("FERRY_AGENT"),
            "{m}"
        );
        // The aarch64 agent: its own target, its own variable.
        let m = no_agent_message(Arch::Aarch64, Some(Path::new("/src/ferry")), Some(&target));
        assert!(
            m.contains("--target aarch64-unknown-linux-gnu")
                && m.contains("gcc-aarch64-linux-gnu")
                && m.contains("FERRY_AGENT_AARCH64")
                && !m.contains('\n'),
            "{m}"
        );
        let built = target.join("aarch64-unknown-linux-gnu/agent/ferry");
        assert!(agent_candidates(Arch::Aarch64, None, &[target]).contains(&built));
    }
}
