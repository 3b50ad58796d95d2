//! "Would a rebuild put it there?": the two predicates that decide what `ferry up` syncs.
//!
//! - A host path syncs to the container iff a rebuild would copy it: [`Scope::host_to_container`].
//! - A path created in the container comes to the host at host path P iff a rebuild with that
//!   file at P would put it at the same container path: [`Scope::container_to_host`]. Under
//!   `COPY config/*.yml ./config/` a new `config/x.yml` comes back and `config/x.txt` does not;
//!   under `COPY a b /tasks/` nothing new comes back.
//!
//! Both honour `.dockerignore` (Docker's rules) and each COPY's `--exclude`. A later COPY that
//! places a file at the same container path overrides an earlier one, as in the image. When a
//! container path could come from several host paths that cannot be told apart without listing
//! the context (a directory matched by a glob), nothing comes back: ferry never guesses a host path.

use globset::{GlobBuilder, GlobMatcher};

use crate::dockerfile::{CopyPlan, Mapping, MappingSource, PlanError};
use crate::{DockerIgnore, PatternError, path};

/// The sync scope of one service built from a Dockerfile.
#[derive(Debug, Clone)]
pub struct Scope {
    mappings: Vec<Compiled>,
    ignore: DockerIgnore,
}

#[derive(Debug, Clone)]
struct Compiled {
    mapping: Mapping,
    excludes: DockerIgnore,
    glob: Option<Glob>,
    include: Option<DockerIgnore>,
}

#[derive(Debug, Clone)]
struct Glob {
    matcher: GlobMatcher,
    parts: usize,
    /// The directory part when it has no wildcard (unescaped).
    literal_dir: Option<String>,
}

enum Inverse {
    No,
    Yes(String),
    Ambiguous,
}

/// Go's `filepath.Match` syntax as a globset glob: runs of `*` are one `*` (Go has no `**`),
/// braces are literal (Go has no alternation).
pub(crate) fn go_glob(pattern: &str) -> Result<GlobMatcher, PatternError> {
    let mut out = String::new();
    let mut chars = pattern.chars().peekable();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push('\\');
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    out.push('!');
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            '*' if !in_class => {
                out.push('*');
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
            }
            '{' | '}' | ',' if !in_class => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    GlobBuilder::new(&out)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|_| PatternError {
            pattern: pattern.to_string(),
            reason: "not a valid glob",
        })
}

/// A glob or gitignore component with its `\\` escapes removed: the literal name.
pub fn unescape(part: &str) -> String {
    let mut out = String::new();
    let mut chars = part.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

/// `rel` of a container path below a container directory ("" when equal).
fn below_abs<'p>(dir: &str, container: &'p str) -> Option<&'p str> {
    if dir == "/" {
        return Some(container.trim_start_matches('/'));
    }
    path::below(dir, container)
}

fn join_rel(base: &str, rel: &str) -> String {
    match (base.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_string(),
        (false, true) => base.to_string(),
        (false, false) => format!("{base}/{rel}"),
    }
}

impl Scope {
    /// The scope of a plan, with the build context's `.dockerignore` (see
    /// [`crate::dockerignore::choose`] for which file that is).
    pub fn new(plan: &CopyPlan, ignore: DockerIgnore) -> Result<Scope, PlanError> {
        let mut mappings = Vec::new();
        for m in &plan.mappings {
            let excludes = DockerIgnore::new(&m.excludes)?;
            let (glob, include) = match &m.source {
                MappingSource::Glob(g) => {
                    let parts: Vec<&str> = g.split('/').collect();
                    let dir = &parts[..parts.len() - 1];
                    let literal_dir = (!dir
                        .iter()
                        .any(|p| crate::dockerfile::contains_wildcards(p)))
                    .then(|| {
                        dir.iter()
                            .map(|p| unescape(p))
                            .collect::<Vec<_>>()
                            .join("/")
                    });
                    (
                        Some(Glob {
                            matcher: go_glob(g)?,
                            parts: parts.len(),
                            literal_dir,
                        }),
                        None,
                    )
                }
                MappingSource::Parents { pattern, .. } => {
                    (None, Some(DockerIgnore::new([pattern])?))
                }
                _ => (None, None),
            };
            mappings.push(Compiled {
                mapping: m.clone(),
                excludes,
                glob,
                include,
            });
        }
        Ok(Scope { mappings, ignore })
    }

    /// The mappings, in Dockerfile order.
    pub fn mappings(&self) -> impl Iterator<Item = &Mapping> {
        self.mappings.iter().map(|c| &c.mapping)
    }

    /// Whether `.dockerignore` leaves this context-relative path out.
    pub fn ignored(&self, host: &str) -> bool {
        !host.is_empty() && self.ignore.matches(host)
    }

    /// Where a rebuild would put the host path (context-relative; `is_dir` says whether it is a
    /// directory), if anywhere: the placement by the last COPY that places it. See
    /// [`Scope::host_placements`] for every placement.
    pub fn host_to_container(&self, host: &str, is_dir: bool) -> Option<String> {
        self.host_placements(host, is_dir).pop()
    }

    /// Every container path a rebuild would put the host path at, in Dockerfile order, leaving
    /// out placements a later COPY overrides.
    pub fn host_placements(&self, host: &str, is_dir: bool) -> Vec<String> {
        let cleaned = path::clean(host);
        if cleaned == ".." || cleaned.starts_with("../") || cleaned.starts_with('/') {
            return Vec::new(); // outside the build context
        }
        let host = path::context_relative(&cleaned);
        if self.ignored(&host) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, c) in self.mappings.iter().enumerate() {
            let Some(container) = self.forward(c, &host, is_dir) else {
                continue;
            };
            // Directories merge; a file is replaced by a later COPY placing another one there.
            let shadowed = !is_dir
                && self.mappings[i + 1..].iter().any(|later| {
                    match self.inverse(later, &container) {
                        Inverse::No => false,
                        Inverse::Yes(h) => h != host,
                        Inverse::Ambiguous => true,
                    }
                });
            if !shadowed && !out.contains(&container) {
                out.push(container);
            }
        }
        out
    }

    /// The host path (context-relative) that, copied by a rebuild, would land at this container
    /// path; `None` when no host path would, or when it cannot be told which.
    pub fn container_to_host(&self, container: &str) -> Option<String> {
        if !container.starts_with('/') {
            return None;
        }
        let container = path::clean(container);
        for c in self.mappings.iter().rev() {
            match self.inverse(c, &container) {
                Inverse::No => continue,
                Inverse::Yes(h) => return Some(h),
                Inverse::Ambiguous => return None,
            }
        }
        None
    }

    fn forward(&self, c: &Compiled, host: &str, is_dir: bool) -> Option<String> {
        let m = &c.mapping;
        match &m.source {
            MappingSource::File(s) => (host == s && !is_dir).then(|| m.container.clone()),
            MappingSource::Dir(s) => {
                let rel = path::below(s, host)?;
                if rel.is_empty() {
                    return is_dir.then(|| m.container.clone());
                }
                (!c.excludes.matches(rel)).then(|| path::join(&m.container, rel))
            }
            MappingSource::Glob(_) => {
                let glob = c.glob.as_ref()?;
                let parts: Vec<&str> = host.split('/').collect();
                if host.is_empty() || parts.len() < glob.parts {
                    return None;
                }
                let matched = parts[..glob.parts].join("/");
                if !glob.matcher.is_match(&matched) {
                    return None;
                }
                let rest = parts[glob.parts..].join("/");
                if rest.is_empty() {
                    if is_dir || !m.into_dir {
                        return Some(m.container.clone());
                    }
                    return Some(path::join(&m.container, path::base(host)));
                }
                (!c.excludes.matches(&rest)).then(|| path::join(&m.container, &rest))
            }
            MappingSource::Parents { pivot, .. } => {
                let rel = path::below(pivot, host)?;
                if rel.is_empty() {
                    return is_dir.then(|| m.container.clone());
                }
                let include = c.include.as_ref()?;
                (include.matches(rel) && !c.excludes.matches(rel))
                    .then(|| path::join(&m.container, rel))
            }
        }
    }

    fn inverse(&self, c: &Compiled, container: &str) -> Inverse {
        let m = &c.mapping;
        let yes = |h: String| {
            if self.ignored(&h) {
                Inverse::No
            } else {
                Inverse::Yes(h)
            }
        };
        match &m.source {
            MappingSource::File(s) => {
                if container == m.container {
                    yes(s.clone())
                } else {
                    Inverse::No
                }
            }
            MappingSource::Dir(s) => match below_abs(&m.container, container) {
                None => Inverse::No,
                Some("") => Inverse::Yes(s.clone()),
                Some(rel) if c.excludes.matches(rel) => Inverse::No,
                Some(rel) => yes(join_rel(s, rel)),
            },
            MappingSource::Glob(_) => {
                let Some(glob) = &c.glob else {
                    return Inverse::No;
                };
                if !m.into_dir {
                    return if container == m.container {
                        Inverse::Ambiguous
                    } else {
                        Inverse::No
                    };
                }
                match below_abs(&m.container, container) {
                    None => Inverse::No,
                    Some("") => Inverse::Ambiguous,
                    Some(rel) if !rel.contains('/') => match &glob.literal_dir {
                        None => Inverse::Ambiguous,
                        Some(dir) => {
                            let h = join_rel(dir, rel);
                            if glob.matcher.is_match(&h) {
                                yes(h)
                            } else {
                                Inverse::No
                            }
                        }
                    },
                    // Deeper paths come only from a directory the glob matched: which one is
                    // not known here, so this COPY gives no answer (an earlier one may).
                    Some(_) => Inverse::No,
                }
            }
            MappingSource::Parents { pivot, .. } => match below_abs(&m.container, container) {
                None => Inverse::No,
                Some("") => Inverse::Yes(pivot.clone()),
                Some(rel) => {
                    let included = c.include.as_ref().is_some_and(|i| i.matches(rel));
                    if included && !c.excludes.matches(rel) {
                        yes(join_rel(pivot, rel))
                    } else {
                        Inverse::No
                    }
                }
            },
        }
    }
}
