//! Which agent a far side needs: the architecture of the kernel that runs it (the Docker
//! engine's `Arch`, or `uname -m` over SSH and kubectl), or `FERRY_AGENT_ARCH` when set. An
//! amd64 image on an arm64 engine runs the aarch64 agent, natively.

/// An architecture ferry has (or can build) a static Linux agent for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The name used in agent paths and messages (`uname -m`'s).
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The Rust target the agent for this architecture is built for.
    pub fn target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
        }
    }

    /// The ELF `e_machine` of this architecture's binaries.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 0x3e,
            Arch::Aarch64 => 0xb7,
        }
    }

    /// The architecture of the machine this ferry runs on.
    pub fn host() -> Option<Arch> {
        parse(std::env::consts::ARCH).ok()
    }
}

/// An architecture as the Docker engine (`amd64`, `arm64`) or `uname -m` (`x86_64`, `aarch64`)
/// names it; anything else has no agent.
pub fn parse(answer: &str) -> Result<Arch, String> {
    match answer.trim() {
        "x86_64" | "amd64" | "x86-64" => Ok(Arch::X86_64),
        "aarch64" | "arm64" => Ok(Arch::Aarch64),
        "" => Err("the far side did not say its architecture".into()),
        other => Err(format!(
            "the far side's machine is {other}: ferry has agents for x86_64 and aarch64 only"
        )),
    }
}

/// The agent to use: `FERRY_AGENT_ARCH` (`override_`) wins over what the far side said.
pub fn choose(override_: Option<&str>, reported: Option<&str>) -> Result<Arch, String> {
    if let Some(o) = override_.filter(|o| !o.is_empty()) {
        return parse(o).map_err(|_| {
            format!("FERRY_AGENT_ARCH={o} is not an agent architecture (use x86_64 or aarch64)")
        });
    }
    match reported {
        Some(r) => parse(r),
        None => Arch::host().ok_or_else(|| "cannot tell which agent the far side needs".into()),
    }
}

/// `FERRY_AGENT_ARCH`, when set.
pub fn override_from_env() -> Option<String> {
    std::env::var("FERRY_AGENT_ARCH").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_and_uname_answers() {
        let table: &[(&str, Option<Arch>)] = &[
            ("x86_64", Some(Arch::X86_64)),
            ("amd64", Some(Arch::X86_64)),
            ("aarch64", Some(Arch::Aarch64)),
            ("arm64", Some(Arch::Aarch64)),
            ("aarch64\n", Some(Arch::Aarch64)),
            ("aarch64_be", None),
            ("armv7l", None),
            ("arm", None),
            ("i686", None),
            ("s390x", None),
            ("ppc64le", None),
            ("riscv64", None),
            ("", None),
        ];
        for (answer, want) in table {
            let got = parse(answer);
            assert_eq!(got.as_ref().ok(), want.as_ref(), "{answer:?}");
            if let Err(e) = got {
                assert!(!e.contains('\n'), "one line: {e}");
            }
        }
        assert!(parse("armv7l").unwrap_err().contains("armv7l"));
    }

    #[test]
    fn override_wins() {
        let table: &[(Option<&str>, Option<&str>, Option<Arch>)] = &[
            (Some("aarch64"), Some("x86_64"), Some(Arch::Aarch64)),
            (Some("arm64"), Some("amd64"), Some(Arch::Aarch64)),
            (Some("x86_64"), Some("aarch64"), Some(Arch::X86_64)),
            (Some("x86_64"), Some("armv7l"), Some(Arch::X86_64)),
            (Some(""), Some("arm64"), Some(Arch::Aarch64)),
            (None, Some("amd64"), Some(Arch::X86_64)),
            (None, Some("armv7l"), None),
            (Some("sparc"), Some("x86_64"), None),
        ];
        for (o, r, want) in table {
            assert_eq!(choose(*o, *r).ok(), *want, "{o:?} {r:?}");
        }
        assert!(
            choose(Some("sparc"), None)
                .unwrap_err()
                .contains("FERRY_AGENT_ARCH=sparc")
        );
        assert_eq!(choose(None, None).ok(), Arch::host());
    }
}
