//! From a Dockerfile to the list of build-context paths its built stage copies, and where.
//!
//! The stage that is built is `target`, else the last one; `FROM <stage>` chains are followed,
//! so the stage's ancestors' COPYs count and no other stage's do (Convox read COPY lines of
//! every stage). Each COPY/ADD of build-context files becomes a [`Mapping`] resolved the way
//! BuildKit's `dockerfile2llb` and `fsutil/copy` place files: WORKDIR-relative destinations,
//! ARG/ENV expansion with BuildKit's lexer, globs, directory sources copying their contents,
//! the trailing-slash rule, `--parents`, `--exclude`, `--chown`. What is not a host file
//! (`COPY --from`, ADD of URLs, git repositories and local archives, heredocs) is a [`Skipped`]
//! note saying why.

use std::collections::{BTreeMap, BTreeSet};

use parse_dockerfile::{Flag, Instruction, Source};
use thiserror::Error;

use crate::path;
use crate::shell::{Env, Lex, ShellError, split_words};
use crate::{DockerIgnore, PatternError};

/// Why no plan could be made (the build would fail as well).
#[derive(Debug, Error)]
pub enum PlanError {
    /// The Dockerfile does not parse.
    #[error("Dockerfile{}: {source}", if *line == 0 { String::new() } else { format!(" line {line}") })]
    Parse {
        /// 1-based line of the error (0 when it is about the whole file).
        line: usize,
        /// The parser's error.
        #[source]
        source: parse_dockerfile::Error,
    },
    /// There is no `FROM`.
    #[error("Dockerfile has no FROM instruction")]
    NoStage,
    /// `build.target` names no stage.
    #[error("Dockerfile has no stage named {target:?} (stages: {known})")]
    UnknownTarget {
        /// The target asked for.
        target: String,
        /// The stage names there are, comma-separated.
        known: String,
    },
    /// A word does not expand (BuildKit fails the build the same way).
    #[error("Dockerfile line {line}: cannot expand {word:?}: {source}")]
    Expand {
        /// 1-based line.
        line: usize,
        /// The word as written.
        word: String,
        /// The lexer's error.
        #[source]
        source: ShellError,
    },
    /// An instruction BuildKit would reject.
    #[error("Dockerfile line {line}: {message}")]
    Invalid {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A `.dockerignore` or `--exclude` pattern Docker would refuse.
    #[error(transparent)]
    Pattern(#[from] PatternError),
}

/// What the planner needs to know about a base image (from the Engine API's image inspect).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Config.WorkingDir` ("" means `/`).
    pub working_dir: String,
    /// `Config.Env` as name/value pairs.
    pub env: Vec<(String, String)>,
    /// `Config.User` ("" means root).
    pub user: String,
}

/// Build settings: the compose service's `build.target` and `build.args`, and the base images'
/// configurations (by the image reference written in `FROM`, after expansion). An image not
/// listed has an empty configuration (working directory `/`), as `FROM scratch` does.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The stage to build; the last one when `None`.
    pub target: Option<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// Base image configurations, by reference.
    pub images: BTreeMap<String, ImageConfig>,
}

/// Whether a build-context path is a file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A file (or anything that is not a directory).
    File,
    /// A directory.
    Dir,
}

/// The build context as the planner sees it: what kind of entry a context-relative path is.
/// `""` is the context root. The caller reads the disk; tests pass a list.
pub trait Context {
    /// The entry at `path`, or `None` if there is none.
    fn kind(&self, path: &str) -> Option<EntryKind>;

    /// The names in directory `path`, sorted, with their kinds; `None` when this context
    /// cannot list (then a glob with wildcards above its last component is not expanded).
    fn list(&self, path: &str) -> Option<Vec<(String, EntryKind)>> {
        let _ = path;
        None
    }
}

/// A context given as a list of file paths (directories are implied by their files, or listed
/// with a trailing `/`).
#[derive(Debug, Clone, Default)]
pub struct ContextList {
    files: BTreeSet<String>,
    dirs: BTreeSet<String>,
}

impl<S: AsRef<str>> FromIterator<S> for ContextList {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> ContextList {
        let mut list = ContextList::default();
        list.dirs.insert(String::new());
        for p in iter {
            let p = p.as_ref();
            let is_dir = p.ends_with('/');
            let p = p.trim_end_matches('/');
            let mut parent = p;
            while let Some(i) = parent.rfind('/') {
                parent = &parent[..i];
                list.dirs.insert(parent.to_string());
            }
            if is_dir {
                list.dirs.insert(p.to_string());
            } else {
                list.files.insert(p.to_string());
            }
        }
        list
    }
}

impl Context for ContextList {
    fn kind(&self, path: &str) -> Option<EntryKind> {
        if self.dirs.contains(path) {
            Some(EntryKind::Dir)
        } else if self.files.contains(path) {
            Some(EntryKind::File)
        } else {
            None
        }
    }

    fn list(&self, path: &str) -> Option<Vec<(String, EntryKind)>> {
        if !self.dirs.contains(path) {
            return None;
        }
        let child = |p: &String| -> Option<String> {
            let rest = if path.is_empty() {
                p.as_str()
            } else {
                p.strip_prefix(path)?.strip_prefix('/')?
            };
            (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_owned())
        };
        let mut out: Vec<(String, EntryKind)> = self
            .dirs
            .iter()
            .filter_map(|d| Some((child(d)?, EntryKind::Dir)))
            .chain(
                self.files
                    .iter()
                    .filter_map(|f| Some((child(f)?, EntryKind::File))),
            )
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Some(out)
    }
}

/// What a COPY/ADD source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingSource {
    /// One file, placed at the mapping's container path.
    File(String),
    /// A directory ("" for the context root) whose contents land in the container directory.
    Dir(String),
    /// A glob (Go `filepath.Match` syntax, `*` never crosses `/`): each matching file lands in
    /// the container directory under its own name, each matching directory's contents land in
    /// it directly.
    Glob(String),
    /// `COPY --parents`: files matching `pattern` (a `.dockerignore`-style pattern, relative to
    /// `pivot`) land in the container directory under their path relative to `pivot`.
    Parents {
        /// The part before `/./` ("" when there is none).
        pivot: String,
        /// The pattern after it.
        pattern: String,
    },
}

/// One source of one COPY/ADD of the built stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// What is copied from the build context.
    pub source: MappingSource,
    /// Where: the file's path for [`MappingSource::File`], otherwise the directory things land in.
    pub container: String,
    /// For a glob: whether the destination is a directory (a trailing `/` or a known
    /// directory); a glob into a non-directory destination places its one match at `container`.
    pub into_dir: bool,
    /// `--chown` as written (expanded), if given.
    pub chown: Option<String>,
    /// `--exclude` patterns, matched against paths relative to the copied directory.
    pub excludes: Vec<String>,
    /// 1-based line of the instruction.
    pub line: usize,
}

/// A COPY/ADD source that is not a host file, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// 1-based line of the instruction.
    pub line: usize,
    /// The source as written ("" when the whole instruction is skipped).
    pub source: String,
    /// Why it is not synced.
    pub reason: String,
}

/// The COPY/ADD scope of the built stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyPlan {
    /// The stage built (its name, or its index when unnamed).
    pub stage: String,
    /// Mappings in instruction order (a later one overrides an earlier one at the same path).
    pub mappings: Vec<Mapping>,
    /// Sources left out, with reasons.
    pub skipped: Vec<Skipped>,
    /// The stage's final working directory.
    pub workdir: String,
    /// The stage's final `USER` (expanded), if any.
    pub user: Option<String>,
}

/// BuildKit's default global build args for a linux/amd64 build.
const BUILTIN_ARGS: [(&str, &str); 8] = [
    ("BUILDPLATFORM", "linux/amd64"),
    ("BUILDOS", "linux"),
    ("BUILDARCH", "amd64"),
    ("BUILDVARIANT", ""),
    ("TARGETPLATFORM", "linux/amd64"),
    ("TARGETOS", "linux"),
    ("TARGETARCH", "amd64"),
    ("TARGETVARIANT", ""),
];

struct StageInfo<'d, 'a> {
    name: Option<String>,
    base: Option<usize>,
    image: String,
    instructions: &'d [Instruction<'a>],
}

struct State {
    env: Env,
    workdir: String,
    user: Option<String>,
    known_dirs: BTreeSet<String>,
}

impl State {
    fn add_dir(&mut self, dir: &str) {
        let mut d = path::clean(dir);
        loop {
            let parent = path::dir(&d);
            self.known_dirs.insert(d);
            if parent == "/" || parent == "." {
                break;
            }
            d = parent;
        }
    }
}

/// Plans the COPY/ADD scope of the stage `options` builds.
pub fn plan_copies(
    dockerfile: &str,
    options: &BuildOptions,
    context: &dyn Context,
    ignore: &DockerIgnore,
) -> Result<CopyPlan, PlanError> {
    let line_of = |offset: usize| {
        dockerfile[..offset.min(dockerfile.len())]
            .matches('\n')
            .count()
            + 1
    };
    let df = parse_dockerfile::parse(dockerfile).map_err(|source| PlanError::Parse {
        line: source.line(),
        source,
    })?;
    if df.stages().len() == 0 {
        return Err(PlanError::NoStage);
    }
    let escape = df
        .parser_directives
        .escape
        .as_ref()
        .map_or('\\', |d| d.value.value);
    let lex = Lex::new(escape);
    let expand = |word: &str, env: &Env, line: usize| {
        lex.process_word(word, env)
            .map_err(|source| PlanError::Expand {
                line,
                word: word.to_string(),
                source,
            })
    };

    // Global ARGs (before the first FROM) are for FROM lines, and the defaults of stage ARGs.
    let mut globals: Env = BUILTIN_ARGS.iter().copied().collect();
    for arg in df.global_args() {
        let line = line_of(arg.arg.span.start);
        for (key, value) in arg_pairs(&arg.arguments.value, escape) {
            if let Some(v) = options.build_args.get(&key) {
                globals.set(&key, v);
            } else if let Some(v) = value {
                let v = expand(&v, &globals, line)?;
                globals.set(&key, &v);
            }
        }
    }

    let mut stages: Vec<StageInfo<'_, '_>> = Vec::new();
    for stage in df.stages() {
        let line = line_of(stage.from.from.span.start);
        let image = expand(&stage.from.image.value, &globals, line)?;
        let lower = image.to_ascii_lowercase();
        let base = stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()));
        let name = stage
            .from
            .as_
            .as_ref()
            .map(|(_, n)| n.value.to_ascii_lowercase());
        stages.push(StageInfo {
            name,
            base,
            image,
            instructions: stage.instructions,
        });
    }
    let target = match &options.target {
        None => stages.len() - 1,
        Some(t) => {
            let lower = t.to_ascii_lowercase();
            stages
                .iter()
                .position(|s| s.name.as_deref() == Some(lower.as_str()))
                .ok_or_else(|| {
                    let known: Vec<String> = stages
                        .iter()
                        .enumerate()
                        .map(|(i, s)| s.name.clone().unwrap_or_else(|| i.to_string()))
                        .collect();
                    PlanError::UnknownTarget {
                        target: t.clone(),
                        known: known.join(", "),
                    }
                })?
        }
    };
    let mut chain = vec![target];
    while let Some(base) = stages[*chain.last().unwrap_or(&target)].base {
        chain.push(base);
    }
    chain.reverse();

    let root = &stages[chain[0]];
    let image = options.images.get(&root.image).cloned().unwrap_or_default();
    let mut state = State {
        env: image
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        workdir: "/".to_string(),
        user: (!image.user.is_empty()).then(|| image.user.clone()),
        known_dirs: BTreeSet::from(["/".to_string()]),
    };
    if state.env.get("PATH").is_none() {
        state.env.set(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
    if !image.working_dir.is_empty() {
        state.workdir = normalize_workdir("/", &image.working_dir);
        let wd = state.workdir.clone();
        state.add_dir(&wd);
    }

    let mut plan = CopyPlan::default();
    for &index in &chain {
        for instruction in stages[index].instructions {
            dispatch(
                instruction,
                &mut state,
                &mut plan,
                &Dispatch {
                    lex: &lex,
                    escape,
                    globals: &globals,
                    options,
                    context,
                    ignore,
                    line_of: &line_of,
                },
            )?;
        }
    }
    plan.stage = stages[target]
        .name
        .clone()
        .unwrap_or_else(|| target.to_string());
    plan.workdir = state.workdir;
    plan.user = state.user;
    Ok(plan)
}

struct Dispatch<'x> {
    lex: &'x Lex,
    escape: char,
    globals: &'x Env,
    options: &'x BuildOptions,
    context: &'x dyn Context,
    ignore: &'x DockerIgnore,
    line_of: &'x dyn Fn(usize) -> usize,
}

impl Dispatch<'_> {
    fn expand(&self, word: &str, env: &Env, line: usize) -> Result<String, PlanError> {
        self.lex
            .process_word(word, env)
            .map_err(|source| PlanError::Expand {
                line,
                word: word.to_string(),
                source,
            })
    }
}

/// `ARG a=1 b c="x y"` as (name, default) pairs, quotes left for the lexer.
fn arg_pairs(arguments: &str, escape: char) -> Vec<(String, Option<String>)> {
    split_words(arguments, escape)
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (w, None),
        })
        .collect()
}

/// BuildKit's `NormalizeWorkdir`: a relative WORKDIR is joined to the current one.
fn normalize_workdir(current: &str, new: &str) -> String {
    if new.starts_with('/') {
        path::clean(new)
    } else {
        path::clean(&path::join(current, new))
    }
}

fn dispatch(
    instruction: &Instruction<'_>,
    state: &mut State,
    plan: &mut CopyPlan,
    d: &Dispatch<'_>,
) -> Result<(), PlanError> {
    match instruction {
        Instruction::Arg(arg) => {
            let line = (d.line_of)(arg.arg.span.start);
            for (key, value) in arg_pairs(&arg.arguments.value, d.escape) {
                let value = if let Some(v) = d.options.build_args.get(&key) {
                    Some(v.clone())
                } else if let Some(v) = value {
                    Some(d.expand(&v, &state.env, line)?)
                } else {
                    d.globals.get(&key).map(str::to_string)
                };
                if let Some(v) = value {
                    state.env.set(&key, &v);
                }
            }
        }
        Instruction::Env(env) => {
            let line = (d.line_of)(env.env.span.start);
            let rest = env.arguments.value.as_ref();
            let words = split_words(rest, d.escape);
            let mut pairs = Vec::new();
            if words.first().is_some_and(|w| !w.contains('=')) {
                // The old form: `ENV name value with spaces`.
                let rest = rest.trim_start();
                let split =
                    rest.find(|c: char| c.is_whitespace())
                        .ok_or_else(|| PlanError::Invalid {
                            line,
                            message: "ENV must have two arguments".to_string(),
                        })?;
                pairs.push((
                    rest[..split].to_string(),
                    rest[split..].trim_start().to_string(),
                ));
            } else {
                for w in words {
                    let (k, v) = w.split_once('=').ok_or_else(|| PlanError::Invalid {
                        line,
                        message: format!("can't find = in {w:?}; ENV wants name=value"),
                    })?;
                    pairs.push((k.to_string(), v.to_string()));
                }
            }
            // Every pair expands against the environment before this line.
            let mut expanded = Vec::new();
            for (k, v) in pairs {
                expanded.push((
                    d.expand(&k, &state.env, line)?,
                    d.expand(&v, &state.env, line)?,
                ));
            }
            for (k, v) in expanded {
                state.env.set(&k, &v);
            }
        }
        Instruction::Workdir(w) => {
            let line = (d.line_of)(w.workdir.span.start);
            let dir = d.expand(&w.arguments.value, &state.env, line)?;
            state.workdir = normalize_workdir(&state.workdir, &dir);
            let wd = state.workdir.clone();
            state.add_dir(&wd);
        }
        Instruction::User(u) => {
            let line = (d.line_of)(u.user.span.start);
            state.user = Some(d.expand(&u.arguments.value, &state.env, line)?);
        }
        Instruction::Copy(c) => {
            let line = (d.line_of)(c.copy.span.start);
            copy(
                &c.options,
                &c.src,
                &c.dest.value,
                false,
                line,
                state,
                plan,
                d,
            )?;
        }
        Instruction::Add(a) => {
            let line = (d.line_of)(a.add.span.start);
            copy(
                &a.options,
                &a.src,
                &a.dest.value,
                true,
                line,
                state,
                plan,
                d,
            )?;
        }
        _ => {}
    }
    Ok(())
}

fn flag<'f>(flags: &'f [Flag<'_>], name: &str) -> Option<Option<&'f str>> {
    flags
        .iter()
        .rev()
        .find(|f| f.name.value == name)
        .map(|f| f.value.as_ref().map(|v| v.value.as_ref()))
}

fn flag_bool(flags: &[Flag<'_>], name: &str, line: usize) -> Result<Option<bool>, PlanError> {
    match flag(flags, name) {
        None => Ok(None),
        Some(None) => Ok(Some(true)),
        Some(Some(v)) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(Some(true)),
            "false" | "0" => Ok(Some(false)),
            _ => Err(PlanError::Invalid {
                line,
                message: format!("--{name}={v} is not a boolean"),
            }),
        },
    }
}

/// Names ADD unpacks when the file is a local tar archive (BuildKit looks at the content; a
/// name is what a planner has, so these are treated as archives).
fn looks_like_archive(src: &str) -> bool {
    let lower = path::base(src).to_ascii_lowercase();
    [
        ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz", ".tar.zst",
        ".tzst",
    ]
    .iter()
    .any(|ext| lower.ends_with(ext))
}

fn is_git_source(src: &str) -> bool {
    src.starts_with("git@")
        || src.starts_with("git://")
        || src.starts_with("ssh://")
        || ((src.starts_with("http://") || src.starts_with("https://"))
            && (src.ends_with(".git") || src.contains(".git#")))
}

/// BuildKit's `containsWildcards`.
pub(crate) fn contains_wildcards(name: &str) -> bool {
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' | '[' => return true,
            '\\' => {
                chars.next();
            }
            _ => {}
        }
    }
    false
}

#[allow(clippy::too_many_arguments)]
fn copy(
    flags: &[Flag<'_>],
    sources: &[Source<'_>],
    dest: &str,
    is_add: bool,
    line: usize,
    state: &mut State,
    plan: &mut CopyPlan,
    d: &Dispatch<'_>,
) -> Result<(), PlanError> {
    let what = if is_add { "ADD" } else { "COPY" };
    if let Some(from) = flag(flags, "from") {
        plan.skipped.push(Skipped {
            line,
            source: String::new(),
            reason: format!(
                "{what} --from={} copies from another stage or image, not from the build context",
                from.unwrap_or("")
            ),
        });
        return Ok(());
    }
    let chown = match flag(flags, "chown") {
        Some(Some(c)) if !c.is_empty() => Some(d.expand(c, &state.env, line)?),
        _ => None,
    };
    let parents = flag_bool(flags, "parents", line)?.unwrap_or(false);
    let unpack = flag_bool(flags, "unpack", line)?;
    let excludes: Vec<String> = flags
        .iter()
        .filter(|f| f.name.value == "exclude")
        .filter_map(|f| f.value.as_ref().map(|v| v.value.to_string()))
        .collect();
    // An invalid --exclude fails the build: check it here.
    DockerIgnore::new(&excludes)?;

    let dest_word = d.expand(dest, &state.env, line)?;
    let dest_raw = if dest_word.is_empty() || dest_word == "." {
        "./".to_string()
    } else {
        dest_word
    };
    let dest_dir_syntax = dest_raw.ends_with('/') || dest_raw.ends_with("/.");
    let dest_abs = if dest_raw.starts_with('/') {
        path::clean(&dest_raw)
    } else {
        path::clean(&path::join(&state.workdir, &dest_raw))
    };

    for source in sources {
        let raw = match source {
            Source::HereDoc(_) => {
                plan.skipped.push(Skipped {
                    line,
                    source: "<<heredoc".to_string(),
                    reason: format!("{what} of a heredoc writes inline text, not a host file"),
                });
                continue;
            }
            Source::Path(p) => p.value.as_ref(),
            _ => {
                plan.skipped.push(Skipped {
                    line,
                    source: String::new(),
                    reason: format!("{what} source of a kind this ferry does not know"),
                });
                continue;
            }
        };
        let src = d.expand(raw, &state.env, line)?;
        let skip = |plan: &mut CopyPlan, reason: String| {
            plan.skipped.push(Skipped {
                line,
                source: src.clone(),
                reason,
            });
        };
        if is_git_source(&src) {
            if is_add {
                skip(
                    plan,
                    "ADD of a git repository: not from the build context".to_string(),
                );
                continue;
            }
            return Err(PlanError::Invalid {
                line,
                message: "COPY cannot copy a git repository".to_string(),
            });
        }
        if src.starts_with("http://") || src.starts_with("https://") {
            if is_add {
                skip(plan, "ADD of a URL: not from the build context".to_string());
                continue;
            }
            return Err(PlanError::Invalid {
                line,
                message: "COPY cannot copy a URL".to_string(),
            });
        }
        if is_add && unpack != Some(false) && looks_like_archive(&src) {
            skip(
                plan,
                "ADD unpacks a local archive: the image holds its contents, not this file"
                    .to_string(),
            );
            continue;
        }
        let mapping = |source: MappingSource, container: String, into_dir: bool| Mapping {
            source,
            container,
            into_dir,
            chown: chown.clone(),
            excludes: excludes.clone(),
            line,
        };
        if parents {
            let (pivot, pattern) = match src.split_once("/./") {
                Some((pivot, pattern)) => (
                    path::context_relative(pivot),
                    path::context_relative(pattern),
                ),
                None => (String::new(), path::context_relative(&src)),
            };
            plan.mappings.push(mapping(
                MappingSource::Parents { pivot, pattern },
                dest_abs.clone(),
                true,
            ));
            state.add_dir(&dest_abs);
            continue;
        }
        let rel = path::context_relative(&src);
        let dest_is_dir = dest_dir_syntax || state.known_dirs.contains(&dest_abs);
        if contains_wildcards(&src) {
            plan.mappings.push(mapping(
                MappingSource::Glob(rel),
                dest_abs.clone(),
                dest_is_dir,
            ));
            if dest_is_dir {
                state.add_dir(&dest_abs);
            }
            continue;
        }
        match d.context.kind(&rel) {
            None => skip(
                plan,
                "not in the build context (the build would fail here)".to_string(),
            ),
            Some(EntryKind::File) if !rel.is_empty() && d.ignore.matches(&rel) => {
                skip(
                    plan,
                    "left out of the build context by .dockerignore".to_string(),
                );
            }
            Some(EntryKind::Dir) => {
                plan.mappings
                    .push(mapping(MappingSource::Dir(rel), dest_abs.clone(), true));
                state.add_dir(&dest_abs);
            }
            Some(EntryKind::File) => {
                let container = if dest_is_dir {
                    path::join(&dest_abs, path::base(&rel))
                } else {
                    dest_abs.clone()
                };
                state.add_dir(&path::dir(&container));
                plan.mappings
                    .push(mapping(MappingSource::File(rel), container, dest_is_dir));
            }
        }
    }
    Ok(())
}
