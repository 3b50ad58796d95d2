//! `.dockerignore` with Docker's rules (moby's `patternmatcher` and `ignorefile`), which are not
//! gitignore's:
//!
//! - a pattern matches the whole path from the context root (`*.log` is only the root's logs);
//! - `*` and `?` never cross `/`; `**` matches any number of directories, and a pattern that
//!   starts with `**` and has no other wildcard matches by suffix (`**file` matches `dir/myfile`);
//! - a pattern matching a directory matches everything below it;
//! - the last matching pattern wins; `!` re-includes;
//! - lines are trimmed, `#` starts a comment only at the start of a line, patterns are cleaned
//!   like Go's `filepath.Clean` and a leading `/` is dropped.
//!
//! Why not `globset` here: globset reads `**` that is not a whole path component as `*`, while
//! moby turns it into "any directories" (`a**/*.txt` matches `a/dir/file.txt` in Docker), and
//! moby's suffix rule has no glob equivalent. The matcher below follows moby's compiled regular
//! expressions token for token; moby's own test vectors run against it in this crate's tests.

use crate::path;
use thiserror::Error;

/// A pattern Docker would refuse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("bad .dockerignore pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// A compiled list of `.dockerignore` patterns.
#[derive(Debug, Clone, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    exclusion: bool,
    dirs: usize,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Tokens(Vec<Tok>),
}

#[derive(Debug, Clone)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters but `/`.
    Star,
    /// `?`: one character but `/`.
    Any,
    /// `**` followed by more pattern: `(.*/)?`.
    DirsOpt,
    /// `**` at the end: `.*`.
    Rest,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Reads a `.dockerignore` file's lines into patterns (moby's `ignorefile.ReadAll`).
pub fn read_patterns(contents: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, line) in contents.lines().enumerate() {
        let line = if i == 0 {
            line.trim_start_matches('\u{feff}')
        } else {
            line
        };
        if line.starts_with('#') {
            continue;
        }
        let mut pattern = line.trim();
        if pattern.is_empty() {
            continue;
        }
        let invert = pattern.starts_with('!');
        if invert {
            pattern = pattern[1..].trim();
        }
        let mut cleaned = String::new();
        if !pattern.is_empty() {
            cleaned = path::clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
        }
        out.push(if invert {
            format!("!{cleaned}")
        } else {
            cleaned
        });
    }
    out
}

/// Which ignore file BuildKit reads: `<Dockerfile>.dockerignore` beside the Dockerfile wins over
/// the context's `.dockerignore`. Returns the contents to use, if any.
pub fn choose<'a>(
    beside_dockerfile: Option<&'a str>,
    in_context: Option<&'a str>,
) -> Option<&'a str> {
    beside_dockerfile.or(in_context)
}

impl DockerIgnore {
    /// Parses a `.dockerignore` file.
    pub fn parse(contents: &str) -> Result<DockerIgnore, PatternError> {
        DockerIgnore::new(read_patterns(contents))
    }

    /// Compiles patterns (moby's `patternmatcher.New`).
    pub fn new<S: AsRef<str>>(
        patterns: impl IntoIterator<Item = S>,
    ) -> Result<DockerIgnore, PatternError> {
        let mut out = Vec::new();
        for raw in patterns {
            let p = raw.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            let mut p = path::clean(p);
            let exclusion = p.starts_with('!');
            if exclusion {
                if p.len() == 1 {
                    return Err(PatternError {
                        pattern: p,
                        reason: "illegal exclusion pattern \"!\"",
                    });
                }
                p.remove(0);
            }
            let kind = compile(&p).map_err(|reason| PatternError {
                pattern: raw.as_ref().to_string(),
                reason,
            })?;
            out.push(Pattern {
                exclusion,
                dirs: p.split('/').count(),
                kind,
            });
        }
        Ok(DockerIgnore { patterns: out })
    }

    /// Whether there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `file` (slash-separated, relative to the context) is left out of the build
    /// context: moby's `MatchesOrParentMatches`, so a pattern matching a parent directory
    /// matches the file, and the last matching pattern wins.
    pub fn matches(&self, file: &str) -> bool {
        let parent = path::dir(file);
        let parent_dirs: Vec<&str> = parent.split('/').collect();
        let mut matched = false;
        for pattern in &self.patterns {
            // An inclusion cannot change a path already matched, nor an exclusion one that is not.
            if pattern.exclusion != matched {
                continue;
            }
            let mut m = pattern.matches(file);
            if !m && parent != "." {
                m = (0..parent_dirs.len()).any(|i| pattern.matches(&parent_dirs[..=i].join("/")));
            }
            if m {
                matched = !pattern.exclusion;
            }
        }
        matched
    }

    /// The number of `/`-separated parts of the longest pattern (for callers that prune walks).
    pub fn max_depth(&self) -> usize {
        self.patterns.iter().map(|p| p.dirs).max().unwrap_or(0)
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact(p) => path == p,
            Kind::Prefix(p) => path.starts_with(p.as_str()),
            Kind::Suffix(s) => {
                path.ends_with(s.as_str()) || s.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Kind::Tokens(toks) => {
                let chars: Vec<char> = path.chars().collect();
                match_tokens(toks, &chars)
            }
        }
    }
}

fn match_tokens(toks: &[Tok], s: &[char]) -> bool {
    let Some((first, rest)) = toks.split_first() else {
        return s.is_empty();
    };
    match first {
        Tok::Lit(c) => s.first() == Some(c) && match_tokens(rest, &s[1..]),
        Tok::Any => s.first().is_some_and(|c| *c != '/') && match_tokens(rest, &s[1..]),
        Tok::Star => {
            let run = s.iter().take_while(|c| **c != '/').count();
            (0..=run).any(|i| match_tokens(rest, &s[i..]))
        }
        Tok::DirsOpt => {
            // `(.*/)?`: nothing, or anything that ends with a slash.
            match_tokens(rest, s)
                || (0..s.len()).any(|i| s[i] == '/' && match_tokens(rest, &s[i + 1..]))
        }
        Tok::Rest => true,
        Tok::Class { negated, ranges } => match s.first() {
            Some(c) => {
                let inside = ranges.iter().any(|(lo, hi)| lo <= c && c <= hi);
                inside != *negated && match_tokens(rest, &s[1..])
            }
            None => false,
        },
    }
}

/// moby's `Pattern.compile`, producing tokens instead of a regular expression, plus Go's
/// `filepath.Match` syntax check (which moby runs first).
fn compile(pattern: &str) -> Result<Kind, &'static str> {
    let chars: Vec<char> = pattern.chars().collect();
    #[derive(PartialEq, Clone, Copy)]
    enum Detected {
        Exact,
        Prefix,
        Suffix,
        Regexp,
    }
    let mut detected = Detected::Exact;
    let mut toks = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < chars.len() {
        let ch = chars[pos];
        pos += 1;
        match ch {
            '*' => {
                if chars.get(pos) == Some(&'*') {
                    pos += 1;
                    if chars.get(pos) == Some(&'/') {
                        pos += 1;
                    }
                    if pos == chars.len() {
                        if detected == Detected::Exact {
                            detected = Detected::Prefix;
                        } else {
                            toks.push(Tok::Rest);
                            detected = Detected::Regexp;
                        }
                    } else {
                        toks.push(Tok::DirsOpt);
                        detected = Detected::Regexp;
                    }
                    if i == 0 {
                        detected = Detected::Suffix;
                    }
                } else {
                    toks.push(Tok::Star);
                    detected = Detected::Regexp;
                }
            }
            '?' => {
                toks.push(Tok::Any);
                detected = Detected::Regexp;
            }
            '\\' => match chars.get(pos) {
                Some(&next) => {
                    pos += 1;
                    toks.push(Tok::Lit(next));
                    detected = Detected::Regexp;
                }
                None => return Err("trailing escape"),
            },
            '[' => {
                let (tok, after) = parse_class(&chars, pos)?;
                toks.push(tok);
                pos = after;
                detected = Detected::Regexp;
            }
            ']' => {
                // Literal for Go's Match and for moby's regular expression alike.
                toks.push(Tok::Lit(']'));
                detected = Detected::Regexp;
            }
            c => toks.push(Tok::Lit(c)),
        }
        i += 1;
    }
    Ok(match detected {
        Detected::Exact => Kind::Exact(pattern.to_string()),
        Detected::Prefix => Kind::Prefix(pattern[..pattern.len() - 2].to_string()),
        Detected::Suffix => Kind::Suffix(pattern[2..].to_string()),
        Detected::Regexp => Kind::Tokens(toks),
    })
}

/// A character class after its `[` at `pos`, with Go's `filepath.Match` rules: `^` negates, `\`
/// escapes, an unescaped `-` or `]` cannot start an item, ranges must be ordered.
fn parse_class(chars: &[char], mut pos: usize) -> Result<(Tok, usize), &'static str> {
    let negated = chars.get(pos) == Some(&'^');
    if negated {
        pos += 1;
    }
    let item = |pos: &mut usize| -> Result<char, &'static str> {
        match chars.get(*pos) {
            None => Err("unclosed character class"),
            Some('-' | ']') => Err("bad character class"),
            Some('\\') => {
                *pos += 1;
                let c = chars.get(*pos).copied().ok_or("unclosed character class")?;
                *pos += 1;
                Ok(c)
            }
            Some(&c) => {
                *pos += 1;
                Ok(c)
            }
        }
    };
    let mut ranges = Vec::new();
    loop {
        if chars.get(pos) == Some(&']') && !ranges.is_empty() {
            return Ok((Tok::Class { negated, ranges }, pos + 1));
        }
        let lo = item(&mut pos)?;
        let mut hi = lo;
        if chars.get(pos) == Some(&'-') {
            pos += 1;
            hi = item(&mut pos)?;
            if hi < lo {
                return Err("character class range out of order");
            }
        }
        ranges.push((lo, hi));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_patterns_follows_ignorefile() {
        // moby/patternmatcher ignorefile_test.go TestReadAll.
        let content = "test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ";
        assert_eq!(
            read_patterns(content),
            [
                "test1",
                "test2",
                "a/file/here",
                "lastfile",
                "!inverted/abs/path",
                "!",
                "!"
            ]
        );
    }

    #[test]
    fn bom_and_cleaning() {
        assert_eq!(
            read_patterns("\u{feff}a/../b/\n  c//d  \n/\n"),
            ["b", "c/d", "/"]
        );
    }
}
