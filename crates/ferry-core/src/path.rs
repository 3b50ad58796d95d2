//! The one gate every relative path passes before code touches a filesystem with it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest relative path accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest single name accepted, in bytes (Linux `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// Why a path or name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path starts with `/`.
    #[error("path '{0}' is absolute")]
    Absolute(String),
    /// A component is empty (`a//b`, trailing `/`).
    #[error("path '{0}' has an empty component")]
    EmptyComponent(String),
    /// A component is `.` or `..`.
    #[error("path '{0}' has a '.' or '..' component")]
    DotComponent(String),
    /// The path holds a NUL byte.
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    /// The path or one of its names is too long.
    #[error("path '{0}…' is too long")]
    TooLong(String),
    /// A name holds a `/`.
    #[error("name '{0}' contains '/'")]
    Slash(String),
}

/// Checks one name (a single path component).
pub fn validate_name(name: &str) -> Result<(), PathError> {
    if name.is_empty() {
        return Err(PathError::EmptyComponent(name.to_owned()));
    }
    if name == "." || name == ".." {
        return Err(PathError::DotComponent(name.to_owned()));
    }
    if name.contains('\0') {
        return Err(PathError::Nul(name.to_owned()));
    }
    if name.contains('/') {
        return Err(PathError::Slash(name.to_owned()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(PathError::TooLong(truncate(name)));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// A validated path relative to an endpoint's root: `/`-separated, normalised, no `.`/`..`,
/// no empty components, no NUL, length-capped. The empty path is the root itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RelPath(String);

impl RelPath {
    /// The root.
    pub fn root() -> Self {
        RelPath(String::new())
    }

    /// Validates `s` and wraps it. This is the gate for anything from the user, disk or wire.
    pub fn new(s: &str) -> Result<Self, PathError> {
        if s.is_empty() {
            return Ok(Self::root());
        }
        if s.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong(truncate(s)));
        }
        if s.contains('\0') {
            return Err(PathError::Nul(s.to_owned()));
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute(s.to_owned()));
        }
        for name in s.split('/') {
            match validate_name(name) {
                Ok(()) => {}
                Err(PathError::EmptyComponent(_)) => {
                    return Err(PathError::EmptyComponent(s.to_owned()));
                }
                Err(PathError::DotComponent(_)) => {
                    return Err(PathError::DotComponent(s.to_owned()));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(RelPath(s.to_owned()))
    }

    /// The path as a string (`""` for the root).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// This path with `name` appended. `name` must be a valid name.
    pub fn join(&self, name: &str) -> Result<Self, PathError> {
        validate_name(name)?;
        let joined = if self.0.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{}", self.0, name)
        };
        if joined.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong(truncate(&joined)));
        }
        Ok(RelPath(joined))
    }

    /// The parent, or `None` for the root.
    pub fn parent(&self) -> Option<RelPath> {
        if self.0.is_empty() {
            return None;
        }
        Some(match self.0.rfind('/') {
            Some(i) => RelPath(self.0[..i].to_owned()),
            None => RelPath::root(),
        })
    }

    /// The last name, or `None` for the root.
    pub fn name(&self) -> Option<&str> {
        if self.0.is_empty() {
            None
        } else {
            Some(self.0.rsplit('/').next().unwrap_or(&self.0))
        }
    }

    /// The names from the root down.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// True if `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.0.is_empty()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for RelPath {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        RelPath::new(&s).map_err(serde::de::Error::custom)
    }
}

/// True if a symlink at `link` with `target` stays inside the root, whatever the other links
/// in the tree are. Only relative targets whose `..` all come first (no more of them than the
/// link's depth) qualify; `.` and empty components are allowed anywhere (they stay put).
/// Every link in a tree passing this check can only lead to places inside the root: leading
/// `..` climb real directories (a scan never follows links), and each name descends, through
/// a directory or through another link that passed the same check. A `..` after a name could
/// climb out of a link's target: `u -> .` with `e -> u/..` leads to the root's parent.
pub fn link_stays_inside(link: &RelPath, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return false;
    }
    let depth = link.components().count().saturating_sub(1);
    let (mut ups, mut names) = (0usize, 0usize);
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." if names == 0 => ups += 1,
            ".." => return false,
            _ => names += 1,
        }
    }
    ups <= depth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_paths() {
        for ok in [
            "",
            "a",
            "a/b",
            "a/b/c.txt",
            ".hidden",
            "a/..b",
            "...",
            "a b/c",
        ] {
            assert!(RelPath::new(ok).is_ok(), "{ok:?} should pass");
        }
    }

    #[test]
    fn refuses_traversal_and_junk() {
        let long_name = "x".repeat(256);
        let long_path = "a/".repeat(2100);
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            ".",
            "..",
            "a//b",
            "a/",
            "a\0b",
            long_name.as_str(),
            long_path.as_str(),
        ] {
            assert!(RelPath::new(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn symlink_confinement() {
        let l = |p: &str| RelPath::new(p).unwrap();
        for (link, target) in [
            ("a", "b"),
            ("d/a", "../b"),
            ("d/e/a", "../../b/c"),
            ("d/a", ".."),
            ("a", "b/c"),
            ("g", "./x"),
            ("u", "."),
            ("i", "x//y"),
            ("j", "x/"),
            ("d/k", "./../x"),
        ] {
            assert!(
                link_stays_inside(&l(link), target),
                "{link} -> {target} should stay inside"
            );
        }
        for (link, target) in [
            ("a", "../b"),
            ("d/a", "../../b"),
            ("a", "/etc/passwd"),
            ("d/a", "x/../../../y"),
            ("a", ""),
            ("e", "u/.."),
            ("f", "u/u/../../.."),
            ("h", "x/../y"),
            ("w", "d/../d/inner.txt"),
        ] {
            assert!(
                !link_stays_inside(&l(link), target),
                "{link} -> {target} must be refused"
            );
        }
    }

    #[test]
    fn parent_name_and_prefix() {
        let p = RelPath::new("a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "a/b");
        assert_eq!(p.name(), Some("c"));
        assert_eq!(
            RelPath::new("a").unwrap().parent().unwrap(),
            RelPath::root()
        );
        assert!(p.starts_with(&RelPath::new("a/b").unwrap()));
        assert!(p.starts_with(&RelPath::root()));
        assert!(
            !RelPath::new("a/bc")
                .unwrap()
                .starts_with(&RelPath::new("a/b").unwrap())
        );
        assert!(RelPath::new("x").unwrap().join("..").is_err());
    }
}
