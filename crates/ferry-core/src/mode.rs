use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How changes flow between alpha and beta (see `design.md`, "Modes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Mode {
    /// Both ways; real conflicts are reported and neither side is touched at that path.
    #[default]
    TwoWaySafe,
    /// Both ways; alpha wins conflicts (a deletion still never beats a modification).
    TwoWayResolved,
    /// Alpha to beta; beta's own files and edits are left alone, a path changed on both sides
    /// is a conflict.
    OneWaySafe,
    /// Beta becomes an exact copy of alpha.
    OneWayReplica,
    /// Both ways; a conflict between two files goes to the one modified last (the loser is
    /// kept in the backup area). Equal or unknown times, or anything but two files: a
    /// conflict, as in two-way-safe. A deletion still never beats a modification.
    TwoWayNewest,
}

impl Mode {
    /// Every mode, in the order the design lists them.
    pub const ALL: [Mode; 5] = [
        Mode::TwoWaySafe,
        Mode::TwoWayResolved,
        Mode::TwoWayNewest,
        Mode::OneWaySafe,
        Mode::OneWayReplica,
    ];

    /// The name used on the command line and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::TwoWaySafe => "two-way-safe",
            Mode::TwoWayResolved => "two-way-resolved",
            Mode::OneWaySafe => "one-way-safe",
            Mode::OneWayReplica => "one-way-replica",
            Mode::TwoWayNewest => "two-way-newest",
        }
    }

    /// True for the modes in which alpha is never changed.
    pub fn is_one_way(self) -> bool {
        matches!(self, Mode::OneWaySafe | Mode::OneWayReplica)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a mode name that is not one of [`Mode::ALL`].
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown mode '{0}' (expected two-way-safe, two-way-resolved, two-way-newest, one-way-safe or \
     one-way-replica)"
)]
pub struct UnknownMode(String);

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMode(s.to_owned()))
    }
}
