//! The file tools' work (`ferry mcp`'s `list_files`, `read_file`, `write_file`) on one side of
//! a session: the settings and the sensitive-file deny list (pure), the operations on a root
//! ([`apply`], run by the daemon for a local side and by the agent for a remote one), and the
//! daemon's `file` request ([`serve`]).
//!
//! Confinement: every path has passed [`RelPath::new`] (relative, no `..`, no NUL) and is then
//! opened beneath the root's descriptor with no symlink followed ([`crate::fs::beneath`]), never
//! by comparing path strings (how the reference MCP filesystem server got CVE-2025-53110 and
//! CVE-2025-53109).

use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_core::RelPath;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::daemon::SessionSpec;
use crate::fs::beneath::{self, Root};
use crate::remote::Location;

/// Writes larger than this are refused unless the settings say otherwise.
pub const DEFAULT_MAX_WRITE: u64 = 10 << 20;
/// Files larger than this are not read unless the settings say otherwise.
pub const DEFAULT_MAX_READ: u64 = 1 << 20;
/// How long `write_file` waits for the other side to have the file.
pub const DEFAULT_SYNC_TIMEOUT: u64 = 60;

/// The sensitive-file deny list (gitignore syntax; a pattern without `/` matches at any depth).
pub const DEFAULT_DENY: &[&str] = &[
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "id_rsa*",
    "id_ed25519*",
    ".ssh/",
    ".aws/",
    ".gnupg/",
    ".netrc",
    ".npmrc",
    ".pypirc",
    ".git-credentials",
    "**/.docker/config.json",
    "**/.kube/config",
    "secrets.*",
    "credentials*",
];

/// Refused whatever the settings say: the settings file itself (its usual place).
const GUARDED: &[&str] = &["**/ferry/mcp.conf"];

/// The settings file's name under `$XDG_CONFIG_HOME/ferry/` (or `~/.config/ferry/`).
pub const CONFIG_NAME: &str = "mcp.conf";

/// `ferry mcp`'s settings, as read from its settings file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub max_write: u64,
    pub max_read: u64,
    /// Seconds `write_file` waits for the other side.
    pub sync_timeout: u64,
    /// Whether [`DEFAULT_DENY`] applies.
    pub defaults: bool,
    /// The user's rules, in order, gitignore syntax: `deny = P` is `P`, `allow = P` is `!P`.
    pub rules: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_write: DEFAULT_MAX_WRITE,
            max_read: DEFAULT_MAX_READ,
            sync_timeout: DEFAULT_SYNC_TIMEOUT,
            defaults: true,
            rules: Vec::new(),
        }
    }
}

impl Config {
    /// Parses a settings file: `key = value` lines, `#` comments. Keys: `max-write` and
    /// `max-read` (sizes: `10MiB`), `sync-timeout` (seconds), `deny` and `allow` (one pattern
    /// each, repeatable, later lines win), `defaults = off` (drops the built-in deny list).
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut c = Config::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {n}: expected KEY = VALUE, got '{line}'"));
            };
            let (key, value) = (key.trim(), value.trim());
            let size = || {
                crate::cli::parse_size(value)
                    .ok_or_else(|| format!("line {n}: {key}: bad size '{value}' (e.g. 10MiB)"))
            };
            match key {
                "max-write" => c.max_write = size()?,
                "max-read" => c.max_read = size()?,
                "sync-timeout" => {
                    c.sync_timeout = value
                        .parse()
                        .map_err(|_| format!("line {n}: sync-timeout: bad seconds '{value}'"))?
                }
                "defaults" => {
                    c.defaults = match value {
                        "on" | "true" => true,
                        "off" | "false" => false,
                        _ => return Err(format!("line {n}: defaults: expected on or off")),
                    }
                }
                "deny" | "allow" if value.is_empty() || value.starts_with('!') => {
                    return Err(format!("line {n}: {key}: bad pattern '{value}'"));
                }
                "deny" => c.rules.push(value.to_owned()),
                "allow" => c.rules.push(format!("!{value}")),
                _ => {
                    return Err(format!(
                        "line {n}: unknown setting '{key}' (max-write, max-read, sync-timeout, \
                         defaults, deny, allow)"
                    ));
                }
            }
        }
        Ok(c)
    }

    /// The settings file: `FERRY_MCP_CONFIG`, else `$XDG_CONFIG_HOME/ferry/mcp.conf`, else
    /// `~/.config/ferry/mcp.conf`.
    pub fn path() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("FERRY_MCP_CONFIG") {
            return Some(PathBuf::from(p));
        }
        let base = match std::env::var_os("XDG_CONFIG_HOME") {
            Some(d) if Path::new(&d).is_absolute() => PathBuf::from(d),
            _ => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
        };
        Some(base.join("ferry").join(CONFIG_NAME))
    }

    /// Reads the settings file (none: the defaults).
    pub fn load() -> Result<Config, String> {
        let Some(path) = Config::path() else {
            return Ok(Config::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }
}

/// The deny list, built: which rule (if any) refuses a path to the file tools.
pub struct DenyList {
    rules: Gitignore,
    guarded: Gitignore,
}

fn build(lines: impl IntoIterator<Item = String>) -> Result<Gitignore, String> {
    let mut b = GitignoreBuilder::new("/");
    for l in lines {
        b.add_line(None, &l)
            .map_err(|e| format!("bad deny pattern '{l}': {e}"))?;
    }
    b.build().map_err(|e| format!("bad deny list: {e}"))
}

impl DenyList {
    pub fn new(c: &Config) -> Result<DenyList, String> {
        let defaults = DEFAULT_DENY
            .iter()
            .filter(|_| c.defaults)
            .map(|s| s.to_string());
        Ok(DenyList {
            rules: build(defaults.chain(c.rules.iter().cloned()))?,
            guarded: build(GUARDED.iter().map(|s| s.to_string()))?,
        })
    }

    /// The rule refusing `path` (a directory when `is_dir`), or `None`. A rule on a directory
    /// refuses everything below it.
    pub fn denied(&self, path: &RelPath, is_dir: bool) -> Option<String> {
        if path.is_root() {
            return None;
        }
        for g in [&self.guarded, &self.rules] {
            let m = g.matched_path_or_any_parents(path.as_str(), is_dir);
            if m.is_ignore() {
                let rule = m
                    .inner()
                    .map(|g| g.original().to_owned())
                    .unwrap_or_default();
                return Some(rule);
            }
        }
        None
    }
}

/// A file operation on one side, as the daemon and the agent take it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    /// The entries of the directory `path` (the root when empty).
    List { path: RelPath },
    /// The text of `path`, at most `max` bytes.
    Read { path: RelPath, max: u64 },
    /// Puts `content` at `path` atomically (parents made as needed), at most `max` bytes.
    Write {
        path: RelPath,
        content: String,
        max: u64,
    },
    /// Size and digest of the file at `path`, if one is there.
    Stat { path: RelPath },
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
}

/// A file's size and BLAKE3 digest (hex).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    pub size: u64,
    pub digest: String,
}

/// What a [`FileOp`] gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileAnswer {
    Listing(Vec<FileInfo>),
    Text(String),
    Written(FileStat),
    Stat(Option<FileStat>),
    /// Refused or failed: one line saying why.
    Refused(String),
}

/// A one-line reason for an I/O error at `path`, naming the confinement rule where it is the
/// cause.
fn io_refusal(path: &RelPath, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ELOOP | libc::EXDEV) => format!(
            "refused: '{path}' goes through a symbolic link (rule: file tools never follow \
             links, they stay beneath the session's root)"
        ),
        Some(libc::ENOTDIR) => format!("'{path}': a parent is not a directory"),
        Some(libc::ENOENT) => format!("'{path}' does not exist"),
        _ => format!("'{path}': {e}"),
    }
}

fn kind(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_file() {
        "file"
    } else if t.is_dir() {
        "dir"
    } else if t.is_symlink() {
        "symlink"
    } else {
        "other"
    }
}

/// Runs `op` on the directory `root` (an absolute path on this machine).
pub fn apply(root: &Path, op: &FileOp) -> FileAnswer {
    let r = match Root::open(root) {
        Ok(r) => r,
        Err(e) => return FileAnswer::Refused(format!("cannot open {}: {e}", root.display())),
    };
    let res = match op {
        FileOp::List { path } => list(&r, path).map(FileAnswer::Listing),
        FileOp::Read { path, max } => read(&r, path, *max).map(FileAnswer::Text),
        FileOp::Write { path, content, max } => {
            write(&r, path, content, *max).map(FileAnswer::Written)
        }
        FileOp::Stat { path } => stat(&r, path).map(FileAnswer::Stat),
    };
    res.unwrap_or_else(FileAnswer::Refused)
}

fn list(r: &Root, path: &RelPath) -> Result<Vec<FileInfo>, String> {
    let dir = r.dir(path).map_err(|e| io_refusal(path, &e))?;
    let names = dir.names().map_err(|e| io_refusal(path, &e))?;
    let mut out = Vec::new();
    for name in names {
        let Some(name) = name.to_str().map(str::to_owned) else {
            continue;
        };
        let Ok(m) = dir.place(&name).and_then(|p| p.lstat()) else {
            continue;
        };
        out.push(FileInfo {
            kind: kind(&m).into(),
            size: if m.is_file() { m.len() } else { 0 },
            mtime: m.mtime(),
            name,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The file at `path`, opened for reading (never through a link), with its metadata.
fn open_file(r: &Root, path: &RelPath) -> Result<(std::fs::File, std::fs::Metadata), String> {
    if path.is_root() {
        return Err("'.' is the session's root, a directory (give a file's path)".into());
    }
    let place = r.place(path).map_err(|e| io_refusal(path, &e))?;
    let f = place
        .open(libc::O_RDONLY | libc::O_NONBLOCK, 0)
        .map_err(|e| io_refusal(path, &e))?;
    let m = f.metadata().map_err(|e| io_refusal(path, &e))?;
    if !m.is_file() {
        return Err(format!("'{path}' is a {}, not a file", kind(&m)));
    }
    Ok((f, m))
}

fn read(r: &Root, path: &RelPath, max: u64) -> Result<String, String> {
    let (f, m) = open_file(r, path)?;
    if m.len() > max {
        return Err(format!(
            "refused: '{path}' is {} bytes, over the read limit of {max} bytes (rule: max-read)",
            m.len()
        ));
    }
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io_refusal(path, &e))?;
    if buf.len() as u64 > max {
        return Err(format!(
            "refused: '{path}' grew over the read limit of {max} bytes (rule: max-read)"
        ));
    }
    if buf.contains(&0) {
        return Err(format!(
            "refused: '{path}' is binary (it holds NUL bytes); read_file returns text only"
        ));
    }
    String::from_utf8(buf).map_err(|_| {
        format!("refused: '{path}' is binary (not valid UTF-8); read_file returns text only")
    })
}

fn stat(r: &Root, path: &RelPath) -> Result<Option<FileStat>, String> {
    let (mut f, m) = match open_file(r, path) {
        Ok(x) => x,
        Err(_) if matches!(r.place(path).and_then(|p| p.lstat_opt()), Ok(None)) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mut h = blake3::Hasher::new();
    io::copy(&mut f, &mut h).map_err(|e| io_refusal(path, &e))?;
    Ok(Some(FileStat {
        size: m.len(),
        digest: h.finalize().to_hex().to_string(),
    }))
}

/// Temporary names of writes in flight (never synced: ferry ignores its own temporaries).
static TEMPS: AtomicU64 = AtomicU64::new(0);

fn write(r: &Root, path: &RelPath, content: &str, max: u64) -> Result<FileStat, String> {
    if content.len() as u64 > max {
        return Err(format!(
            "refused: {} bytes to write, over the write limit of {max} bytes (rule: max-write)",
            content.len()
        ));
    }
    let Some(parent) = path.parent() else {
        return Err("'.' is the session's root, a directory (give a file's path)".into());
    };
    // Missing parents are made one at a time, each beneath the root with no link followed.
    let mut cur = RelPath::root();
    for name in parent.components() {
        cur = cur.join(name).map_err(|e| e.to_string())?;
        match r.place(&cur).and_then(|p| p.mkdir(0o755)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_refusal(&cur, &e)),
        }
    }
    let place = r.place(path).map_err(|e| io_refusal(path, &e))?;
    let mode = match place.lstat_opt().map_err(|e| io_refusal(path, &e))? {
        Some(m) if m.file_type().is_symlink() => {
            return Err(io_refusal(path, &io::Error::from_raw_os_error(libc::ELOOP)));
        }
        Some(m) if !m.is_file() => {
            return Err(format!("'{path}' is a {}, not a file", kind(&m)));
        }
        Some(m) => m.mode() & 0o7777,
        None => 0o644,
    };
    let n = TEMPS.fetch_add(1, Ordering::Relaxed);
    let tmp = place
        .sibling(&format!(
            "{}mcp-{}-{n}",
            crate::fs::ignore::TEMP_PREFIX,
            std::process::id()
        ))
        .map_err(|e| io_refusal(path, &e))?;
    let written = (|| {
        let mut f = tmp.create_new(0o600)?;
        f.write_all(content.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_data()?;
        beneath::rename(&tmp, &place, crate::fs::sys::RenameHow::Plain)
    })();
    if let Err(e) = written {
        let _ = tmp.unlink();
        return Err(io_refusal(path, &e));
    }
    Ok(FileStat {
        size: content.len() as u64,
        digest: blake3::hash(content.as_bytes()).to_hex().to_string(),
    })
}

/// The daemon's `file` request: `{"name", "side": "alpha"|"beta", "file": FileOp}` on session
/// `spec`; answers `{"answer": FileAnswer}`. A local side is served here, a remote one by an
/// agent started for the request.
pub fn serve(spec: &SessionSpec, req: &Value) -> Result<Value, (String, bool)> {
    let side = req.get("side").and_then(Value::as_str).unwrap_or("");
    let endpoint = match side {
        "alpha" => &spec.alpha,
        "beta" => &spec.beta,
        _ => return Err((format!("bad side '{side}' (alpha or beta)"), true)),
    };
    let op: FileOp = req
        .get("file")
        .cloned()
        .ok_or_else(|| "file: no operation given".to_owned())
        .and_then(|v| serde_json::from_value(v).map_err(|e| format!("file: {e}")))
        .map_err(|e| (e, true))?;
    let answer = match Location::parse(side, endpoint).map_err(|e| (e, true))? {
        Location::Local(p) => apply(Path::new(&p), &op),
        remote => crate::remote::client::file_op(&remote, &op).map_err(|e| (e, false))?,
    };
    Ok(json!({ "answer": answer }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).expect("rel")
    }

    fn deny(c: &Config) -> DenyList {
        DenyList::new(c).expect("deny list")
    }

    #[test]
    fn the_default_deny_list_names_its_rule() {
        let d = deny(&Config::default());
        let cases: &[(&str, bool, Option<&str>)] = &[
            (".env", false, Some(".env")),
            ("app/.env", false, Some(".env")),
            (".env.local", false, Some(".env.*")),
            ("certs/server.pem", false, Some("*.pem")),
            ("tls.key", false, Some("*.key")),
            ("a.p12", false, Some("*.p12")),
            ("a.pfx", false, Some("*.pfx")),
            ("id_rsa", false, Some("id_rsa*")),
            ("home/id_rsa.pub", false, Some("id_rsa*")),
            ("id_ed25519", false, Some("id_ed25519*")),
            (".ssh/config", false, Some(".ssh/")),
            (".ssh", true, Some(".ssh/")),
            ("u/.aws/config", false, Some(".aws/")),
            (".gnupg/x", false, Some(".gnupg/")),
            (".netrc", false, Some(".netrc")),
            (".npmrc", false, Some(".npmrc")),
            (".pypirc", false, Some(".pypirc")),
            (".git-credentials", false, Some(".git-credentials")),
            (".docker/config.json", false, Some("**/.docker/config.json")),
            (
                "me/.docker/config.json",
                false,
                Some("**/.docker/config.json"),
            ),
            (".kube/config", false, Some("**/.kube/config")),
            ("secrets.yaml", false, Some("secrets.*")),
            ("credentials.json", false, Some("credentials*")),
            ("src/main.rs", false, None),
            ("README.md", false, None),
            ("environment.txt", false, None),
            (".envrc", false, None),
            ("keys/readme", false, None),
            (".docker/other.json", false, None),
            ("", true, None),
        ];
        for (p, is_dir, want) in cases {
            assert_eq!(d.denied(&rel(p), *is_dir).as_deref(), *want, "{p}");
        }
    }

    #[test]
    fn settings_extend_and_override_the_list() {
        let c = Config::parse(
            "# mine\nmax-write = 1MiB\nmax-read = 2k\nsync-timeout = 5\ndeny = *.sqlite\n\
             allow = .env.example\n",
        )
        .expect("parse");
        assert_eq!(c.max_write, 1 << 20);
        assert_eq!(c.max_read, 2000);
        assert_eq!(c.sync_timeout, 5);
        let d = deny(&c);
        assert_eq!(
            d.denied(&rel("db.sqlite"), false).as_deref(),
            Some("*.sqlite")
        );
        assert_eq!(d.denied(&rel(".env.example"), false), None);
        assert_eq!(
            d.denied(&rel(".env.prod"), false).as_deref(),
            Some(".env.*")
        );
        let off = deny(&Config::parse("defaults = off\n").expect("parse"));
        assert_eq!(off.denied(&rel(".env"), false), None);
    }

    #[test]
    fn the_settings_file_stays_refused_whatever_the_settings() {
        let c =
            Config::parse("defaults = off\nallow = **/ferry/mcp.conf\nallow = *\n").expect("parse");
        let d = deny(&c);
        assert!(d.denied(&rel(".config/ferry/mcp.conf"), false).is_some());
        assert!(d.denied(&rel("ferry/mcp.conf"), false).is_some());
    }

    #[test]
    fn bad_settings_are_one_line_errors() {
        for bad in [
            "max-write = lots",
            "colour = red",
            "nonsense",
            "deny =",
            "allow = !x",
        ] {
            let e = Config::parse(bad).expect_err(bad);
            assert!(e.starts_with("line 1:") && !e.contains('\n'), "{e}");
        }
    }

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("app");
        std::fs::create_dir_all(root.join("src")).expect("mkdir");
        std::fs::write(root.join("src/a.txt"), "hello").expect("write");
        (t, root)
    }

    #[test]
    fn write_read_list_and_stat_on_a_root() {
        let (_t, root) = tree();
        let w = apply(
            &root,
            &FileOp::Write {
                path: rel("new/dir/b.txt"),
                content: "bee".into(),
                max: 10,
            },
        );
        let FileAnswer::Written(st) = w else {
            panic!("{w:?}")
        };
        assert_eq!(
            std::fs::read_to_string(root.join("new/dir/b.txt")).expect("read"),
            "bee"
        );
        assert_eq!(
            apply(
                &root,
                &FileOp::Stat {
                    path: rel("new/dir/b.txt")
                }
            ),
            FileAnswer::Stat(Some(st))
        );
        assert_eq!(
            apply(
                &root,
                &FileOp::Read {
                    path: rel("src/a.txt"),
                    max: 100
                }
            ),
            FileAnswer::Text("hello".into())
        );
        let FileAnswer::Listing(l) = apply(
            &root,
            &FileOp::List {
                path: RelPath::root(),
            },
        ) else {
            panic!("listing")
        };
        let names: Vec<_> = l
            .iter()
            .map(|e| (e.name.as_str(), e.kind.as_str()))
            .collect();
        assert_eq!(names, [("new", "dir"), ("src", "dir")]);
        assert_eq!(
            apply(&root, &FileOp::Stat { path: rel("nope") }),
            FileAnswer::Stat(None)
        );
        // No temporary is left behind.
        let left: Vec<_> = std::fs::read_dir(root.join("new/dir"))
            .expect("ls")
            .collect();
        assert_eq!(left.len(), 1);
    }

    #[test]
    fn reads_refuse_binary_and_big_files_and_writes_refuse_big_content() {
        let (_t, root) = tree();
        std::fs::write(root.join("bin"), b"a\0b").expect("write");
        std::fs::write(root.join("latin1"), b"caf\xe9").expect("write");
        let refused = |op: FileOp| match apply(&root, &op) {
            FileAnswer::Refused(m) => m,
            other => panic!("{op:?} gave {other:?}"),
        };
        assert!(
            refused(FileOp::Read {
                path: rel("bin"),
                max: 100
            })
            .contains("binary")
        );
        assert!(
            refused(FileOp::Read {
                path: rel("latin1"),
                max: 100
            })
            .contains("UTF-8")
        );
        assert!(
            refused(FileOp::Read {
                path: rel("src/a.txt"),
                max: 3
            })
            .contains("max-read")
        );
        let m = refused(FileOp::Write {
            path: rel("x"),
            content: "four".into(),
            max: 3,
        });
        assert!(m.contains("max-write"), "{m}");
        assert!(!root.join("x").exists());
        assert!(
            refused(FileOp::Read {
                path: rel("src"),
                max: 9
            })
            .contains("not a file")
        );
    }

    #[test]
    fn regression_cve_2025_53109_a_symlink_out_of_the_root_is_refused() {
        let (t, root) = tree();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        std::fs::write(outside.join("secret.txt"), "s").expect("write");
        std::os::unix::fs::symlink(&outside, root.join("out")).expect("ln");
        std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("s.txt")).expect("ln");
        for op in [
            FileOp::Read {
                path: rel("out/secret.txt"),
                max: 9,
            },
            FileOp::Read {
                path: rel("s.txt"),
                max: 9,
            },
            FileOp::List { path: rel("out") },
            FileOp::Write {
                path: rel("out/w.txt"),
                content: "w".into(),
                max: 9,
            },
            FileOp::Write {
                path: rel("s.txt"),
                content: "w".into(),
                max: 9,
            },
        ] {
            match apply(&root, &op) {
                FileAnswer::Refused(m) => assert!(m.contains("symbolic link"), "{op:?}: {m}"),
                other => panic!("{op:?} gave {other:?}"),
            }
        }
        assert_eq!(
            std::fs::read_to_string(outside.join("secret.txt")).expect("r"),
            "s"
        );
        assert_eq!(std::fs::read_dir(&outside).expect("ls").count(), 1);
    }
}
