//! Which metadata a session syncs besides content (issue 9 items 7, 8, 10): permission bits,
//! modification times and symlinks. Plain data, so it crosses the wire inside the
//! [`IgnoreSpec`](super::ignore::IgnoreSpec) both sides scan and apply with.

use std::str::FromStr;

use ferry_core::{DIR_MODE, FILE_MODE, PERMISSION_BITS};
use serde::{Deserialize, Serialize};

/// Which permission bits are synced (`--permissions`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Permissions {
    /// Read, write and execute for user, group and other (`0o777`), as rsync and Unison do.
    #[default]
    Full,
    /// Only the owner's executable bit, for filesystems that cannot keep modes: files are
    /// `0o755` or `0o644` as far as ferry knows, directories always `0o755`.
    Exec,
}

impl FromStr for Permissions {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(Permissions::Full),
            "exec" => Ok(Permissions::Exec),
            _ => Err(format!(
                "unknown --permissions '{s}' (expected full or exec)"
            )),
        }
    }
}

/// How symlinks are synced (`--symlinks`, Mutagen's choice).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Symlinks {
    /// Links whose target stays inside the root are synced; others are reported, not synced.
    #[default]
    Portable,
    /// Every link is synced as it is (absolute and escaping targets too), never followed.
    Raw,
    /// No link is synced.
    Ignore,
}

impl FromStr for Symlinks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "portable" => Ok(Symlinks::Portable),
            "raw" => Ok(Symlinks::Raw),
            "ignore" => Ok(Symlinks::Ignore),
            _ => Err(format!(
                "unknown --symlinks '{s}' (expected portable, raw or ignore)"
            )),
        }
    }
}

/// The metadata settings of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaSpec {
    pub permissions: Permissions,
    /// Give files ferry writes their source's modification time (off with `--no-times`).
    pub times: bool,
    pub symlinks: Symlinks,
}

impl Default for MetaSpec {
    fn default() -> Self {
        MetaSpec {
            permissions: Permissions::Full,
            times: true,
            symlinks: Symlinks::Portable,
        }
    }
}

impl MetaSpec {
    /// A file's mode as its entry carries it, from `st_mode`.
    pub fn file_mode(&self, st_mode: u32) -> u32 {
        match self.permissions {
            Permissions::Full => st_mode & PERMISSION_BITS,
            Permissions::Exec if st_mode & 0o100 != 0 => DIR_MODE,
            Permissions::Exec => FILE_MODE,
        }
    }

    /// A directory's mode as its entry carries it, from `st_mode`.
    pub fn dir_mode(&self, st_mode: u32) -> u32 {
        match self.permissions {
            Permissions::Full => st_mode & PERMISSION_BITS,
            Permissions::Exec => DIR_MODE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_as_entries_carry_them() {
        let full = MetaSpec::default();
        let exec = MetaSpec {
            permissions: Permissions::Exec,
            ..full
        };
        assert_eq!(full.file_mode(0o100600), 0o600);
        assert_eq!(full.file_mode(0o104751), 0o751, "setuid is not synced");
        assert_eq!(exec.file_mode(0o100600), 0o644);
        assert_eq!(exec.file_mode(0o100700), 0o755);
        assert_eq!(full.dir_mode(0o40700), 0o700);
        assert_eq!(exec.dir_mode(0o40700), 0o755);
        assert!("bad".parse::<Permissions>().is_err());
        assert_eq!("raw".parse::<Symlinks>(), Ok(Symlinks::Raw));
    }
}
