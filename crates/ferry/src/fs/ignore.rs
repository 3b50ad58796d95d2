//! Ignore rules: gitignore syntax from `.ferryignore` and `--ignore`, VCS directories by default.

use ferry_core::RelPath;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::{Deserialize, Serialize};

/// Names never synced: ferry's own staging directory.
pub const STAGING_DIR_NAME: &str = ".ferry-staging";

/// Files ferry writes next to their target when staging is on another filesystem (a mount
/// nested in the root); never synced.
pub const TEMP_PREFIX: &str = ".ferry-tmp-";

/// The ignore settings of a session, as plain data so they can cross the wire unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoreSpec {
    /// Ignore `.git`, `.hg`, `.svn` (on unless `--no-ignore-vcs`).
    pub vcs: bool,
    /// Patterns in order: `.ferryignore` lines first, then `--ignore` values.
    pub patterns: Vec<String>,
}

/// A bad pattern.
#[derive(Debug, thiserror::Error)]
#[error("bad ignore pattern '{pattern}': {source}")]
pub struct IgnoreError {
    pattern: String,
    #[source]
    source: ignore::Error,
}

/// Compiled ignore rules.
#[derive(Clone, Debug)]
pub struct Ignorer {
    rules: Gitignore,
}

impl Ignorer {
    /// Compiles a spec.
    pub fn new(spec: &IgnoreSpec) -> Result<Self, IgnoreError> {
        // The builder's root only matters for anchored patterns; our paths are relative, so
        // give it the empty root and always pass relative paths.
        let mut b = GitignoreBuilder::new("");
        let mut lines: Vec<&str> = Vec::new();
        if spec.vcs {
            lines.extend([".git", ".hg", ".svn"]);
        }
        lines.extend(spec.patterns.iter().map(String::as_str));
        for line in lines {
            b.add_line(None, line).map_err(|source| IgnoreError {
                pattern: line.to_owned(),
                source,
            })?;
        }
        let rules = b.build().map_err(|source| IgnoreError {
            pattern: String::new(),
            source,
        })?;
        Ok(Ignorer { rules })
    }

    /// True if `path` itself is ignored (callers walk top-down, so parents are already checked).
    /// The staging directory at the root is always ignored, whatever the user's rules say.
    pub fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        path == STAGING_DIR_NAME
            || name.starts_with(TEMP_PREFIX)
            || self.rules.matched(path, is_dir).is_ignore()
    }

    /// True if `path` or any of its parents is ignored (for watch events, which arrive for any
    /// depth).
    pub fn is_ignored_or_below(&self, path: &RelPath) -> bool {
        let mut cur = String::new();
        let parts: Vec<&str> = path.components().collect();
        for (i, name) in parts.iter().enumerate() {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(name);
            // Every component but the last is a directory; the last may be either.
            let last = i + 1 == parts.len();
            if self.is_ignored(&cur, !last) || (last && self.is_ignored(&cur, true)) {
                return true;
            }
        }
        false
    }
}

/// Parses `.ferryignore` content into pattern lines (comments and blanks are kept: the
/// gitignore parser skips them itself).
pub fn parse_ignore_file(content: &str) -> Vec<String> {
    content
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ig(patterns: &[&str]) -> Ignorer {
        Ignorer::new(&IgnoreSpec {
            vcs: true,
            patterns: patterns.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn gitignore_semantics() {
        let i = ig(&[
            "*.log",
            "!keep.log",
            "/build",
            "node_modules/",
            "docs/**/tmp",
        ]);
        assert!(i.is_ignored("a.log", false));
        assert!(i.is_ignored("x/a.log", false));
        assert!(!i.is_ignored("keep.log", false));
        assert!(i.is_ignored("build", true));
        assert!(!i.is_ignored("src/build", true));
        assert!(i.is_ignored("node_modules", true));
        assert!(!i.is_ignored("node_modules", false));
        assert!(i.is_ignored("docs/a/b/tmp", true));
        assert!(i.is_ignored(".git", true));
        assert!(i.is_ignored(STAGING_DIR_NAME, true));
        assert!(
            !i.is_ignored("sub/.ferry-staging", true),
            "only the root's is ferry's"
        );
    }

    #[test]
    fn ferry_temp_files_are_always_ignored() {
        let i = ig(&["!.ferry-tmp-*"]);
        assert!(i.is_ignored(".ferry-tmp-12-3", false));
        assert!(i.is_ignored("vol/.ferry-tmp-12-3", false));
        assert!(!i.is_ignored("vol/ferry-tmp", false));
    }

    #[test]
    fn staging_cannot_be_reincluded() {
        let i = ig(&["!.ferry-staging", "!/.ferry-staging"]);
        assert!(i.is_ignored(STAGING_DIR_NAME, true));
    }

    #[test]
    fn vcs_can_be_included() {
        let i = Ignorer::new(&IgnoreSpec::default()).unwrap();
        assert!(!i.is_ignored(".git", true));
    }

    #[test]
    fn below_ignored_directory() {
        let i = ig(&["target/"]);
        assert!(i.is_ignored_or_below(&RelPath::new("target/debug/x").unwrap()));
        assert!(i.is_ignored_or_below(&RelPath::new(".git/index").unwrap()));
        assert!(!i.is_ignored_or_below(&RelPath::new("src/main.rs").unwrap()));
    }
}
