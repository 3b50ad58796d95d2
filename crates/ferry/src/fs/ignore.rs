//! Ignore rules: gitignore syntax from `.ferryignore` and `--ignore`; VCS directories and
//! editors' temporary files by default; and, per side, ferry's own directories.

use std::path::{Path, PathBuf};

use ferry_core::{Entry, RelPath};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::{Deserialize, Serialize};

use super::meta::MetaSpec;

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
    /// Ignore editors' temporary files, [`EDITOR_TEMPORARIES`] (on unless
    /// `--no-default-ignores`).
    pub editor_temps: bool,
    /// Patterns in order: `.ferryignore` lines first, then `--ignore` values.
    pub patterns: Vec<String>,
    /// Which metadata is synced (permission bits, times, symlinks): scans and transitions on
    /// both sides follow it, so it travels with the ignore rules.
    pub meta: MetaSpec,
    /// Files bigger than this many bytes are not synced (`--max-file-size`): a scan reports
    /// each as a problem entry, never propagated nor deleted.
    pub max_file_size: Option<u64>,
}

/// Editors' temporary files, never synced unless `--no-default-ignores` (issue 9 item 11):
/// vim's swap files (`.x.swp`, `.x.swo`, ...) and the `4913` it writes to probe a directory,
/// backup files (`x~`), emacs lock and auto-save files (`.#x`, `#x#`), and JetBrains' safe-write
/// temporaries (`___jb_tmp___`, `___jb_old___`). Synced, a swap file makes vim on the other side
/// warn that the file is being edited. In gitignore syntax (a leading `#` is escaped: it would
/// start a comment).
pub const EDITOR_TEMPORARIES: &[&str] = &[".*.sw?", "4913", "*~", ".#*", "\\#*#", "___jb_*"];

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
    /// Paths below the root that are never synced on this side, whatever the rules say:
    /// ferry's own directories (an agent's install and state when the root holds them).
    own: Vec<String>,
    meta: MetaSpec,
    max_file_size: Option<u64>,
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
        if spec.editor_temps {
            lines.extend(EDITOR_TEMPORARIES);
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
        Ok(Ignorer {
            rules,
            own: Vec::new(),
            meta: spec.meta,
            max_file_size: spec.max_file_size,
        })
    }

    /// The session's metadata settings (see [`MetaSpec`]).
    pub fn meta(&self) -> MetaSpec {
        self.meta
    }

    /// The problem a file of `size` bytes is, if it is over `--max-file-size`. The message
    /// names the limit, not the size, so a growing file is reported once.
    pub fn too_big(&self, size: u64) -> Option<Entry> {
        let max = self.max_file_size?;
        (size > max).then(|| {
            Entry::Problem(format!(
                "bigger than --max-file-size {}; not synced",
                crate::engine::human_bytes(max)
            ))
        })
    }

    /// Also hides `dirs` (absolute) wherever they lie below `root` (absolute, canonical): a
    /// side-local rule for ferry's own directories, which no pattern can re-include.
    pub fn hide_own(&mut self, root: &Path, dirs: &[PathBuf]) {
        self.own = own_below(root, dirs);
    }

    /// True if `path` itself is ignored (callers walk top-down, so parents are already checked).
    /// The staging directory at the root is always ignored, whatever the user's rules say.
    pub fn is_ignored(&self, path: &str, is_dir: bool) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        path == STAGING_DIR_NAME
            || name.starts_with(TEMP_PREFIX)
            || self.own.iter().any(|o| o == path)
            || self.rules.matched(path, is_dir).is_ignore()
    }

    /// True if `path` or any of its parents is ignored (for watch events, which arrive for any
    /// depth).
    pub fn is_ignored_or_below(&self, path: &RelPath) -> bool {
        // Every component but the last is a directory; the last may be either.
        self.walk_ignored(path, |cur| {
            self.is_ignored(cur, false) || self.is_ignored(cur, true)
        })
    }

    /// True if a watch event for `path`, whose kind the event does not say, can be dropped: a
    /// parent directory is ignored, or the path is ignored as a file and as a directory alike.
    /// (`/*/` leaves out directories only: an edit of a file at the top is not dropped.)
    pub fn event_ignored(&self, path: &RelPath) -> bool {
        self.walk_ignored(path, |cur| {
            self.is_ignored(cur, false) && self.is_ignored(cur, true)
        })
    }

    /// True if a parent directory of `path` is ignored, or `last` says the path itself is.
    fn walk_ignored(&self, path: &RelPath, last: impl Fn(&str) -> bool) -> bool {
        let parts: Vec<&str> = path.components().collect();
        let mut cur = String::new();
        for (i, name) in parts.iter().enumerate() {
            if !cur.is_empty() {
                cur.push('/');
            }
            cur.push_str(name);
            let ignored = if i + 1 == parts.len() {
                last(&cur)
            } else {
                self.is_ignored(&cur, true)
            };
            if ignored {
                return true;
            }
        }
        false
    }
}

/// The relative paths of `dirs` that lie strictly below `root` (the root itself is never
/// hidden: syncing it is what the user asked for).
pub fn own_below(root: &Path, dirs: &[PathBuf]) -> Vec<String> {
    let mut out = Vec::new();
    for d in dirs {
        // Canonical where it exists (a symlinked home), as the root is.
        let d = d.canonicalize().unwrap_or_else(|_| d.clone());
        let Ok(rel) = d.strip_prefix(root) else {
            continue;
        };
        let Some(rel) = rel.to_str().filter(|r| !r.is_empty()) else {
            continue;
        };
        if !out.iter().any(|o: &String| o == rel) {
            out.push(rel.to_owned());
        }
    }
    out
}

/// The name of the files `--gitignore` reads.
pub const GITIGNORE: &str = ".gitignore";

/// The lines of the `.gitignore` in directory `dir` (relative, `""` at the root) as patterns
/// of one matcher rooted at the root, as git reads them: a pattern with a slash (other than a
/// trailing one) is relative to `dir`, one without matches at any depth below `dir`. Listed
/// shallowest file first, later (deeper) patterns win, as a deeper `.gitignore` does in git.
pub fn gitignore_patterns(dir: &str, content: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in content.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if dir.is_empty() {
            out.push(line.to_owned());
            continue;
        }
        let (neg, body) = match line.strip_prefix('!') {
            Some(b) => ("!", b),
            None => ("", line),
        };
        let anchored = body.trim_end_matches('/').contains('/');
        let body = body.strip_prefix('/').unwrap_or(body);
        // The directory's own name is literal: its glob characters are escaped.
        let mut prefix = String::with_capacity(dir.len());
        for c in dir.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\' | '{' | '}') {
                prefix.push('\\');
            }
            prefix.push(c);
        }
        if anchored {
            out.push(format!("{neg}/{prefix}/{body}"));
        } else {
            out.push(format!("{neg}/{prefix}/**/{body}"));
        }
    }
    out
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
            editor_temps: true,
            patterns: patterns.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    /// Each directory's `.gitignore`, hoisted to the root, means what git makes of it.
    #[test]
    fn nested_gitignores_as_git_reads_them() {
        let mut patterns = gitignore_patterns("", "*.log\n/top-only\n# comment\n\n");
        patterns.extend(gitignore_patterns(
            "sub",
            "!keep.log\ntmp/\n/anchored\nx/y\n",
        ));
        patterns.extend(gitignore_patterns("we[i]rd*", "a\n"));
        let i = Ignorer::new(&IgnoreSpec {
            patterns,
            ..Default::default()
        })
        .unwrap();
        assert!(i.is_ignored("a.log", false));
        assert!(i.is_ignored("other/a.log", false));
        assert!(
            !i.is_ignored("sub/keep.log", false),
            "a deeper file re-includes"
        );
        assert!(!i.is_ignored("sub/deeper/keep.log", false));
        assert!(
            i.is_ignored("other/keep.log", false),
            "only below its directory"
        );
        assert!(i.is_ignored("top-only", false));
        assert!(!i.is_ignored("sub/top-only", false));
        assert!(i.is_ignored("sub/tmp", true));
        assert!(i.is_ignored("sub/deep/tmp", true));
        assert!(
            !i.is_ignored("sub/deep/tmp", false),
            "tmp/ matches directories only"
        );
        assert!(!i.is_ignored("tmp", true), "not above its directory");
        assert!(i.is_ignored("sub/anchored", false));
        assert!(!i.is_ignored("sub/deep/anchored", false));
        assert!(i.is_ignored("sub/x/y", false));
        assert!(!i.is_ignored("sub/deep/x/y", false));
        assert!(i.is_ignored("we[i]rd*/a", false));
        assert!(!i.is_ignored("weird/a", false));
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

    #[test]
    fn a_watch_event_is_dropped_only_when_ignored_whatever_its_kind() {
        // A session of single files (`ferry up`'s `COPY a.txt ./`): `/*/` leaves directories
        // out, not the file an event names without saying its kind.
        let i = ig(&["/*", "!/a.txt", "/*/"]);
        let rel = |s: &str| RelPath::new(s).unwrap();
        assert!(!i.event_ignored(&rel("a.txt")));
        assert!(i.event_ignored(&rel("b.txt")));
        assert!(i.event_ignored(&rel("sub/a.txt")));
        let i = ig(&["target/"]);
        assert!(!i.event_ignored(&rel("target")), "target may be a file");
        assert!(i.event_ignored(&rel("target/debug/x")));
        assert!(!i.event_ignored(&rel("src/main.rs")));
    }

    #[test]
    fn editor_temporaries_by_default() {
        let i = ig(&[]);
        for p in [
            ".x.swp",
            "src/.main.rs.swo",
            ".x.swx",
            "4913",
            "src/4913",
            "notes.txt~",
            ".#main.rs",
            "#main.rs#",
            "___jb_tmp___",
            "src/___jb_old___",
        ] {
            assert!(i.is_ignored(p, false), "{p} should be ignored");
        }
        for p in ["x.swp", "swap.c", "49130", "a#b", "main.rs", "jb_tmp"] {
            assert!(!i.is_ignored(p, false), "{p} should be synced");
        }
        let keep = Ignorer::new(&IgnoreSpec {
            vcs: true,
            editor_temps: false,
            patterns: vec![],
            ..Default::default()
        })
        .unwrap();
        assert!(!keep.is_ignored(".x.swp", false));
        assert!(!keep.is_ignored("notes.txt~", false));
        let reinclude = ig(&["!4913"]);
        assert!(!reinclude.is_ignored("4913", false));
    }

    #[test]
    fn own_directories_are_hidden_below_the_root_only() {
        let root = Path::new("/home/u");
        let mut i = ig(&["!.ferry"]);
        i.hide_own(
            root,
            &[
                PathBuf::from("/home/u/.ferry"),
                PathBuf::from("/home/u/.local/state/ferry"),
                PathBuf::from("/elsewhere/ferry"),
                PathBuf::from("/home/u"),
            ],
        );
        assert!(i.is_ignored(".ferry", true));
        assert!(i.is_ignored(".local/state/ferry", true));
        assert!(!i.is_ignored(".local/state", true));
        assert!(!i.is_ignored("app/.ferry", true));
        assert!(i.is_ignored_or_below(&RelPath::new(".ferry/agent/x/ferry").unwrap()));
        assert!(!i.is_ignored_or_below(&RelPath::new("src/a").unwrap()));
    }
}
