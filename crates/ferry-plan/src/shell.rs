//! BuildKit's shell-word processing (`frontend/dockerfile/shell/lex.go`), ported.
//!
//! A Dockerfile word (a COPY source or destination, a WORKDIR, an ARG or ENV value) goes through
//! this before it means anything: quotes are removed, the escape character escapes, and `$VAR`,
//! `${VAR}`, `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`, `${VAR?msg}`,
//! `${VAR#pat}`, `${VAR%pat}` and `${VAR/pat/repl}` expand against the build's environment.
//! The reference is BuildKit's own test data (`envVarTest`, `wordsTest`), run in this crate's
//! tests; where BuildKit and a POSIX shell disagree, BuildKit wins, since it does the build.

use thiserror::Error;

/// Why a word could not be processed (the build fails the same way).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct ShellError {
    /// What went wrong, in BuildKit's words where it has some.
    pub message: String,
}

fn err<T>(message: impl Into<String>) -> Result<T, ShellError> {
    Err(ShellError {
        message: message.into(),
    })
}

/// The variables a word expands against: build args and ENV, in the order they were set.
///
/// A name set twice takes the later value, as BuildKit's environment lists do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    /// An empty environment.
    pub fn new() -> Env {
        Env::default()
    }

    /// The value of `name`, if it is set (possibly to the empty string).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.vars.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value.to_string(),
            None => self.vars.push((name.to_string(), value.to_string())),
        }
    }

    /// The variables in the order they were first set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Env {
        let mut env = Env::new();
        for (k, v) in iter {
            env.set(k.as_ref(), v.as_ref());
        }
        env
    }
}

/// The lexer: BuildKit's `shell.Lex` with its options.
#[derive(Debug, Clone, Copy)]
pub struct Lex {
    escape: char,
    /// Keep the quote characters in the result (BuildKit's `RawQuotes`).
    pub raw_quotes: bool,
    /// Leave references to unset variables as they are (BuildKit's `SkipUnsetEnv`).
    pub skip_unset_env: bool,
}

impl Lex {
    /// A lexer whose escape character is `escape` (`\` unless the Dockerfile's `# escape=`
    /// directive says otherwise).
    pub fn new(escape: char) -> Lex {
        Lex {
            escape,
            raw_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Processes one word: quotes and escapes removed, variables expanded, spaces kept.
    /// This is what COPY sources and destinations, WORKDIR, USER and ARG/ENV values get.
    pub fn process_word(&self, word: &str, env: &Env) -> Result<String, ShellError> {
        let mut w = Word::new(*self, word, env);
        w.process_stop_on(None, false).map(|(s, _)| s)
    }

    /// Processes a word and splits the result on unquoted whitespace (after expansion).
    pub fn process_words(&self, word: &str, env: &Env) -> Result<Vec<String>, ShellError> {
        let mut w = Word::new(*self, word, env);
        w.process_stop_on(None, false).map(|(_, words)| words)
    }
}

struct Word<'a> {
    lex: Lex,
    chars: Vec<char>,
    pos: usize,
    env: &'a Env,
    raw_escapes: bool,
}

#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() && self.in_word {
            if !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else if !ch.is_whitespace() {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(std::mem::take(&mut self.buf));
        }
        self.words
    }
}

impl<'a> Word<'a> {
    fn new(lex: Lex, word: &str, env: &'a Env) -> Word<'a> {
        Word {
            lex,
            chars: word.chars().collect(),
            pos: 0,
            env,
            raw_escapes: false,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    /// Processes up to `stop` (consumed) or the end of the word. `raw_escapes` keeps escape
    /// characters in the result (used inside `${VAR#...}`, `%` and `/` patterns).
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ShellError> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let result = self.process_stop_on_inner(stop);
        self.raw_escapes = saved;
        result
    }

    fn process_stop_on_inner(
        &mut self,
        stop: Option<char>,
    ) -> Result<(String, Vec<String>), ShellError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar()?;
                    result.push_str(&tmp);
                    words.add_string(&tmp);
                }
                '<' => {
                    let tmp = self.process_possible_heredoc();
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '\'' => {
                    let tmp = self.process_single_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                '"' => {
                    let tmp = self.process_double_quote()?;
                    result.push_str(&tmp);
                    words.add_raw_string(&tmp);
                }
                _ => {
                    self.next();
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // The escape character escapes anything, except the end of the word.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        if let Some(stop) = stop {
            return err(format!(
                "unexpected end of statement while looking for matching {stop}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Result<String, ShellError> {
        // Everything up to the next ' is literal; a ' cannot be escaped inside.
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => {
                    return err(
                        "unexpected end of statement while looking for matching single-quote",
                    );
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, ShellError> {
        // Literal except `$`, and the escape character before `"`, `$` or itself.
        let mut result = String::new();
        let open = self.next();
        if self.lex.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => {
                    return err(
                        "unexpected end of statement while looking for matching double-quote",
                    );
                }
                Some('"') => {
                    self.next();
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(_) => {
                    let Some(mut ch) = self.next() else { continue };
                    if ch == self.lex.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lex.escape => {
                                self.next();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, ShellError> {
        self.next(); // the '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.env.get(&name) {
                Some(v) => v.to_string(),
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next(); // the '{'
        match self.peek() {
            None => return err("syntax error: missing '}'"),
            Some('{' | '}' | ':') => return err("syntax error: bad substitution"),
            Some(_) => {}
        }
        let name = self.process_name();
        let first = self.next();
        let mut modifier = first.map(String::from).unwrap_or_default();
        match first {
            Some('}') => Ok(match self.env.get(&name) {
                Some(v) => v.to_string(),
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            Some(c @ (':' | '+' | '-' | '?' | '#' | '%')) => {
                let null_is_unset = c == ':';
                let mut op = c;
                if null_is_unset {
                    let second = self.next();
                    modifier.extend(second);
                    op = second.unwrap_or('\0');
                }
                let raw = op == '#' || op == '%';
                if null_is_unset && raw {
                    return err(format!("unsupported modifier ({modifier}) in substitution"));
                }
                let word = match self.process_stop_on(Some('}'), raw) {
                    Ok((w, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return err("syntax error: missing '}'");
                        }
                        return Err(e);
                    }
                };
                let value = self.env.get(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{modifier}{word}}}"));
                }
                let unset_or_null = match value {
                    None => true,
                    Some(v) => null_is_unset && v.is_empty(),
                };
                match op {
                    '-' => Ok(if unset_or_null {
                        word
                    } else {
                        value.unwrap_or("").to_string()
                    }),
                    '+' => Ok(if unset_or_null { String::new() } else { word }),
                    '?' => {
                        let Some(v) = value else {
                            let m = if word.is_empty() {
                                "is not allowed to be unset"
                            } else {
                                &word
                            };
                            return err(format!("{name}: {m}"));
                        };
                        if null_is_unset && v.is_empty() {
                            let m = if word.is_empty() {
                                "is not allowed to be empty"
                            } else {
                                &word
                            };
                            return err(format!("{name}: {m}"));
                        }
                        Ok(v.to_string())
                    }
                    '#' | '%' => {
                        let mut pattern = word.as_str();
                        let greedy = pattern.starts_with(op);
                        if greedy {
                            pattern = &pattern[op.len_utf8()..];
                        }
                        let pattern = ShellPattern::parse(pattern)?;
                        let value = value.unwrap_or("");
                        Ok(if op == '#' {
                            pattern.trim_prefix(value, greedy)
                        } else {
                            pattern.trim_suffix(value, greedy)
                        })
                    }
                    _ => err(format!("unsupported modifier ({modifier}) in substitution")),
                }
            }
            Some('/') => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let pattern = match self.process_stop_on(Some('/'), true) {
                    Ok((p, _)) => p,
                    Err(e) => {
                        if self.peek().is_none() {
                            return err("syntax error: missing '/' in ${}");
                        }
                        return Err(e);
                    }
                };
                let replacement = match self.process_stop_on(Some('}'), true) {
                    Ok((r, _)) => r,
                    Err(e) => {
                        if self.peek().is_none() {
                            return err("syntax error: missing '}'");
                        }
                        return Err(e);
                    }
                };
                let value = self.env.get(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                }
                let pattern = ShellPattern::parse(&pattern)?;
                Ok(pattern.replace(value.unwrap_or(""), &replacement, replace_all))
            }
            _ => err(format!("unsupported modifier ({modifier}) in substitution")),
        }
    }

    fn process_name(&mut self) -> String {
        // A name is letters, digits and `_`; a leading digit reads all digits (positional
        // parameters, never set in a Dockerfile); a special parameter is one character.
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_numeric() {
                while let Some(d) = self.peek().filter(|c| c.is_numeric()) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    fn process_possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.next();
        let mut result = "<<".to_string();
        while let Some(ch) = self.peek().filter(|c| matches!(c, '\t' | '\r' | ' ')) {
            result.push(ch);
            self.next();
        }
        result
    }
}

/// A `${VAR#pattern}` pattern: `*` any string, `?` any character, `\` escapes `*`, `?`, `\`
/// (and `}` and `/`, which only need it to get past the `${...}` parser).
#[derive(Debug)]
struct ShellPattern {
    tokens: Vec<PatTok>,
}

#[derive(Debug, Clone, Copy)]
enum PatTok {
    Lit(char),
    Any,
    Star,
}

impl ShellPattern {
    fn parse(pattern: &str) -> Result<ShellPattern, ShellError> {
        let mut tokens = Vec::new();
        let mut it = pattern.chars().peekable();
        while let Some(ch) = it.next() {
            match ch {
                '*' => tokens.push(PatTok::Star),
                '?' => tokens.push(PatTok::Any),
                '\\' => match it.peek().copied() {
                    Some('}' | '/') => {}
                    Some(c @ ('*' | '?' | '\\')) => {
                        it.next();
                        tokens.push(PatTok::Lit(c));
                    }
                    other => {
                        let shown = other.map(String::from).unwrap_or_default();
                        return err(format!(
                            "invalid pattern ({pattern}) in substitution: invalid escape '\\{shown}'"
                        ));
                    }
                },
                c => tokens.push(PatTok::Lit(c)),
            }
        }
        Ok(ShellPattern { tokens })
    }

    fn matches(&self, s: &[char]) -> bool {
        fn m(t: &[PatTok], s: &[char]) -> bool {
            match t.split_first() {
                None => s.is_empty(),
                Some((PatTok::Star, rest)) => (0..=s.len()).any(|i| m(rest, &s[i..])),
                Some((PatTok::Any, rest)) => !s.is_empty() && m(rest, &s[1..]),
                Some((PatTok::Lit(c), rest)) => s.first() == Some(c) && m(rest, &s[1..]),
            }
        }
        m(&self.tokens, s)
    }

    fn trim_prefix(&self, value: &str, greedy: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let mut lens: Vec<usize> = (0..=chars.len()).collect();
        if greedy {
            lens.reverse();
        }
        match lens.into_iter().find(|&n| self.matches(&chars[..n])) {
            Some(n) => chars[n..].iter().collect(),
            None => value.to_string(),
        }
    }

    fn trim_suffix(&self, value: &str, greedy: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let mut starts: Vec<usize> = (0..=chars.len()).rev().collect();
        if greedy {
            starts.reverse();
        }
        match starts.into_iter().find(|&i| self.matches(&chars[i..])) {
            Some(i) => chars[..i].iter().collect(),
            None => value.to_string(),
        }
    }

    /// The leftmost, then longest, match at or after `from`.
    fn find(&self, chars: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=chars.len()).find_map(|start| {
            (start..=chars.len())
                .rev()
                .find(|&end| self.matches(&chars[start..end]))
                .map(|end| (start, end))
        })
    }

    fn replace(&self, value: &str, replacement: &str, all: bool) -> String {
        let chars: Vec<char> = value.chars().collect();
        let mut out = String::new();
        let mut at = 0;
        while let Some((start, end)) = self.find(&chars, at) {
            out.extend(&chars[at..start]);
            out.push_str(replacement);
            if end == start {
                // An empty match: keep one character and move on, as Go's ReplaceAll does.
                if let Some(c) = chars.get(start) {
                    out.push(*c);
                }
                at = start + 1;
            } else {
                at = end;
            }
            if !all || at > chars.len() {
                break;
            }
        }
        if at <= chars.len() {
            out.extend(&chars[at..]);
        }
        out
    }
}

/// Splits an ARG or ENV line into words the way BuildKit's parser does (`parseWords`): on
/// whitespace outside quotes; quotes and escapes stay in the words for [`Lex::process_word`].
pub fn split_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote(char),
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut blank_ok = false;
    let mut buf = String::new();
    let mut pos = 0;
    loop {
        let at_end = pos >= chars.len();
        let ch = chars.get(pos).copied().unwrap_or('\0');
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !buf.is_empty() {
                words.push(std::mem::take(&mut buf));
            }
            break;
        }
        match phase {
            Phase::Word => {
                if ch.is_whitespace() {
                    phase = Phase::Spaces;
                    if blank_ok || !buf.is_empty() {
                        words.push(std::mem::take(&mut buf));
                    }
                    blank_ok = false;
                    pos += 1;
                    continue;
                }
                let mut ch = ch;
                if ch == '\'' || ch == '"' {
                    phase = Phase::Quote(ch);
                    blank_ok = true;
                }
                if ch == escape {
                    if pos + 1 == chars.len() {
                        pos += 1;
                        continue;
                    }
                    buf.push(ch);
                    pos += 1;
                    ch = chars[pos];
                }
                buf.push(ch);
            }
            Phase::Quote(q) => {
                let mut ch = ch;
                if ch == q {
                    phase = Phase::Word;
                }
                if ch == escape && q != '\'' {
                    if pos + 1 == chars.len() {
                        phase = Phase::Word;
                        pos += 1;
                        continue;
                    }
                    pos += 1;
                    buf.push(ch);
                    ch = chars[pos];
                }
                buf.push(ch);
            }
            Phase::Spaces => {}
        }
        pos += 1;
    }
    words
}
