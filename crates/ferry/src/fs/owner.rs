//! Who owns what ferry creates on a side. By default whoever runs ferry (or the agent). Two
//! cases give it to someone else:
//! - ferry run as root through `sudo`: the invoking user (`SUDO_UID`/`SUDO_GID`), so files
//!   synced to the host belong to the person, not to root;
//! - an agent started as root to write for a container's user (`ferry up`: the service's
//!   `user:`, its image's `USER`, or the mapping's `COPY --chown`), told by [`ENV`]. Names are
//!   looked up in the container's own `/etc/passwd` and `/etc/group`; numeric ids need neither
//!   (`FROM scratch` images have no such files).

/// The variable the Docker transport sets on an agent it starts as root: `USER[:GROUP]`, each
/// a name or a number, as Docker's `--user` and `COPY --chown` take them.
pub const ENV: &str = "FERRY_OWNER";

/// A numeric owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// The owner `spec` (`USER[:GROUP]`) names, with `passwd` and `group` the contents of
/// `/etc/passwd` and `/etc/group` (empty when missing). As Docker does: a user alone takes its
/// primary group from `passwd`, or group 0 when `passwd` does not list it.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Owner, String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || grp.is_some_and(str::is_empty) {
        return Err(format!("bad owner '{spec}': expected USER[:GROUP]"));
    }
    // name:password:id:... (passwd's fourth field is the primary group)
    let entries = |file: &str| -> Vec<Vec<String>> {
        file.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(|l| l.split(':').map(str::to_owned).collect())
            .filter(|f: &Vec<String>| f.len() >= 3)
            .collect()
    };
    let users = entries(passwd);
    let groups = entries(group);
    let by_uid = |uid: u32| {
        users
            .iter()
            .find(|f| f[2].parse::<u32>() == Ok(uid))
            .and_then(|f| f.get(3)?.parse::<u32>().ok())
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, by_uid(uid)),
        Err(_) => {
            let f = users
                .iter()
                .find(|f| f[0] == user)
                .ok_or_else(|| format!("no user '{user}' in /etc/passwd"))?;
            let uid = f[2]
                .parse::<u32>()
                .map_err(|_| format!("user '{user}': bad uid in /etc/passwd"))?;
            (uid, f.get(3).and_then(|g| g.parse::<u32>().ok()))
        }
    };
    let gid = match grp {
        None => primary.unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse::<u32>().ok())
                .ok_or_else(|| format!("no group '{g}' in /etc/group"))?,
        },
    };
    Ok(Owner { uid, gid })
}

/// The owner `sudo` left in the environment of a process it runs as root.
pub fn from_sudo(euid: u32, sudo_uid: Option<&str>, sudo_gid: Option<&str>) -> Option<Owner> {
    if euid != 0 {
        return None;
    }
    let uid = sudo_uid?.trim().parse().ok()?;
    let gid = sudo_gid?.trim().parse().ok()?;
    (uid != 0).then_some(Owner { uid, gid })
}

/// This process's owner for what it creates, when it is not itself (see the module's doc).
pub fn from_env() -> Result<Option<Owner>, String> {
    if let Ok(spec) = std::env::var(ENV) {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        return resolve(&spec, &read("/etc/passwd"), &read("/etc/group")).map(Some);
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let var = |k: &str| std::env::var(k).ok();
    Ok(from_sudo(
        euid,
        var("SUDO_UID").as_deref(),
        var("SUDO_GID").as_deref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nnode:x:1000:1000::/home/node:/bin/sh\napp:x:1001:50::/app:/bin/false\n";
    const GROUP: &str = "root:x:0:\nnode:x:1000:\nstaff:x:50:\n";

    #[test]
    fn owners_as_docker_reads_them() {
        let ok = |uid, gid| Ok(Owner { uid, gid });
        let cases: [(&str, &str, &str, Result<Owner, String>); 11] = [
            ("1234:1234", "", "", ok(1234, 1234)),
            // Numeric without passwd: group 0, as Docker runs it.
            ("1234", "", "", ok(1234, 0)),
            ("1000", PASSWD, GROUP, ok(1000, 1000)),
            ("node", PASSWD, GROUP, ok(1000, 1000)),
            ("app", PASSWD, GROUP, ok(1001, 50)),
            ("app:node", PASSWD, GROUP, ok(1001, 1000)),
            ("node:50", PASSWD, GROUP, ok(1000, 50)),
            ("1000:staff", PASSWD, GROUP, ok(1000, 50)),
            (
                "nobody",
                PASSWD,
                GROUP,
                Err("no user 'nobody' in /etc/passwd".into()),
            ),
            (
                "node:wheel",
                PASSWD,
                GROUP,
                Err("no group 'wheel' in /etc/group".into()),
            ),
            (
                ":5",
                "",
                "",
                Err("bad owner ':5': expected USER[:GROUP]".into()),
            ),
        ];
        for (spec, passwd, group, want) in cases {
            assert_eq!(resolve(spec, passwd, group), want, "{spec}");
        }
    }

    #[test]
    fn sudo_gives_files_to_the_invoking_user_only_when_root() {
        let me = Some(Owner { uid: 1234, gid: 99 });
        assert_eq!(from_sudo(0, Some("1234"), Some("99")), me);
        assert_eq!(from_sudo(1234, Some("1234"), Some("99")), None);
        assert_eq!(from_sudo(0, None, Some("99")), None);
        assert_eq!(from_sudo(0, Some("x"), Some("99")), None);
        // sudo from root to root: nothing to give.
        assert_eq!(from_sudo(0, Some("0"), Some("0")), None);
    }
}
