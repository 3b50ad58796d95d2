//! The wire protocol between ferry and its agent (documented in `docs/protocol.md`).
//!
//! A connection starts with a 12-byte preface each way (`FERRYWIR` and the protocol version,
//! little-endian u32), so a version mismatch or a peer that is not an agent at all (a shell
//! greeting on an SSH channel) is told apart before anything is decoded. Then frames: a
//! 4-byte little-endian length, a flags byte and at most [`FRAME_MAX`] bytes of payload. A
//! message is one postcard-encoded [`Msg`], in one frame or, when larger, split over frames
//! flagged [`MORE`] (at most [`MESSAGE_MAX`] in all). Frames may be zstd-compressed (flag
//! [`ZSTD`]) once both sides said they can in their [`Hello`].
//!
//! Everything decoded here is untrusted: sizes are capped before anything is allocated, and
//! [`check_entry`] / [`check_outcome`] hold every tree and path from the peer to the same rules
//! as the local scanner's.

use std::io::{self, Read, Write};

use ferry_core::{
    Change, Digest, Entry, MAX_DEPTH, PERMISSION_BITS, RelPath, link_stays_inside, validate_name,
};
use serde::{Deserialize, Serialize};

use crate::copy::{Item, Piece};
use crate::endpoint::{IgnoreSpec, Outcome, Wanted};

/// Bumped whenever a message changes shape.
pub const PROTOCOL: u32 = 5;
pub const MAGIC: &[u8; 8] = b"FERRYWIR";
/// The largest frame payload (after decompression).
pub const FRAME_MAX: usize = 4 << 20;
/// The largest message (a tree of a million files is about 60 MB).
pub const MESSAGE_MAX: usize = 1 << 30;
/// Frame flags.
pub const ZSTD: u8 = 1;
pub const MORE: u8 = 2;
/// Frames smaller than this are never worth compressing.
const COMPRESS_MIN: usize = 512;

/// Feature bits of [`Hello`].
pub const FEATURE_ZSTD: u32 = 1;

/// The first message each way, right after the preface.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hello {
    /// ferry's version (`CARGO_PKG_VERSION`).
    pub version: String,
    pub features: u32,
    /// `uname -s`/`-m` style: `linux`, `x86_64`.
    pub os: String,
    pub arch: String,
}

/// How the agent's tree changed in a scan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TreeUpdate {
    /// The whole tree (after a full scan).
    Whole(Option<Entry>),
    /// What is now at each of these paths (after a scan of some paths).
    At(Vec<(RelPath, Option<Entry>)>),
}

/// Every message, both ways. Requests come from ferry; the agent answers each in order, and
/// sends [`Msg::Watch`] whenever its watcher reports something.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Msg {
    Hello(Hello),
    /// Opens the endpoint: `root` must be an existing directory, or be created when `create`
    /// (its parent must exist). `session` keys the agent's state directory.
    Open {
        root: String,
        /// Which side this is (for messages).
        alpha: bool,
        /// Create the root if missing (its parent must exist).
        create: bool,
        /// A missing root is an error (else it is an empty side, as after a reconnection).
        must_exist: bool,
        session: String,
        ignore: IgnoreSpec,
    },
    SetIgnore(IgnoreSpec),
    /// `None`: a full scan.
    Scan(Option<Vec<RelPath>>),
    ReadSmall {
        path: RelPath,
        limit: u64,
    },
    StageLocal(Vec<Wanted>),
    /// Sends the content of these files: per item, `Data`... then `End`, or `Delta`, or
    /// `Failed`; then `ReadDone`. `Cancel` stops it early (the stream still ends with `ReadDone`).
    Read(Vec<Item>),
    Cancel,
    /// The receiving side's rsync signature of the file at `path` if it still has `digest`.
    Signature {
        path: RelPath,
        digest: Digest,
    },
    /// Applies changes; the content they need follows as `Item` + `Data`... + `End` (or a
    /// single `Delta`), ended by `ItemsDone`.
    Transition {
        changes: Vec<Change>,
        backup: Vec<Digest>,
    },
    Item(Wanted),
    ItemsDone,
    DiscardStaged,
    StartWatch,
    SaveCache,

    // Answers.
    Opened {
        root: String,
        backup_root: String,
    },
    /// The endpoint cannot be opened; `usage`: the user's input is at fault (exit code 2).
    Refused {
        usage: bool,
        message: String,
    },
    Scanned {
        entries: u64,
        hashed_files: u64,
        hashed_bytes: u64,
        tree: TreeUpdate,
        /// See `ScanReport::notes`.
        notes: Vec<(RelPath, String)>,
    },
    Small(Option<Vec<u8>>),
    Missing(Vec<Digest>),
    Data(Vec<u8>),
    End,
    /// The item as an rsync delta against the receiver's file at `base`, which had `base_digest`.
    Delta {
        base: RelPath,
        base_digest: Digest,
        delta: Vec<u8>,
    },
    Failed(String),
    ReadDone,
    SignatureIs(Option<Vec<u8>>),
    Outcomes(Vec<Outcome>),
    Ok,
    /// A whole-endpoint failure (root gone, I/O).
    Error {
        root_gone: bool,
        message: String,
    },
    /// From the agent's watcher.
    Watch(WatchWire),
    /// A request: how long the opened side keeps its backups (`--keep-backups`); the agent
    /// prunes them now and then hourly. Answered with `Ok`.
    KeepBackups(crate::state::Retention),
    /// Content: this many zero bytes (at most [`HOLE_MAX`]), in place of a `Data` of zeros. A
    /// sparse file's holes cross the wire as these (issue 9 item 9).
    Hole(u64),
    /// A request: start `command` with `sh -c` in the opened root (an `--on-change` hook),
    /// answered with `Ok` once started; its end comes later as [`Msg::Exited`] with this `id`.
    Exec {
        id: u64,
        command: String,
    },
    /// From the agent, at any time after the `Ok` of an `Exec`: how the run `id` ended.
    Exited {
        id: u64,
        result: crate::hooks::ExecResult,
    },
    /// A request: one file tool operation on the directory `root`, needing no
    /// `Open` (`ferry mcp`'s file tools). Answered with `FileAnswer`.
    File {
        root: String,
        op: crate::files::FileOp,
    },
    FileAnswer(crate::files::FileAnswer),
}

/// The most zeros one [`Msg::Hole`] stands for (what one `Data` could carry).
pub const HOLE_MAX: u64 = FRAME_MAX as u64;

/// `Data` of `d`, or a `Hole` when it is all zeros.
pub fn data_or_hole(d: Vec<u8>) -> Msg {
    if !d.is_empty() && crate::fs::stage::is_zero(&d) {
        Msg::Hole(d.len() as u64)
    } else {
        Msg::Data(d)
    }
}

/// The zeros a `Hole` stands for; an error for one larger than any `Data` could be.
pub fn hole_bytes(n: u64) -> Result<Vec<u8>, String> {
    if n > HOLE_MAX {
        return Err(format!(
            "a hole of {n} bytes in one message (at most {HOLE_MAX})"
        ));
    }
    Ok(vec![0; n as usize])
}

impl From<Piece> for Msg {
    fn from(p: Piece) -> Msg {
        match p {
            Piece::Data(d) => data_or_hole(d),
            Piece::End => Msg::End,
            Piece::Failed(f) => Msg::Failed(f),
            Piece::Delta {
                base,
                base_digest,
                delta,
            } => Msg::Delta {
                base,
                base_digest,
                delta,
            },
        }
    }
}

impl Msg {
    /// The content piece this message carries, if it is one.
    pub fn into_piece(self) -> Option<Piece> {
        Some(match self {
            Msg::Data(d) => Piece::Data(d),
            Msg::Hole(n) => match hole_bytes(n) {
                Ok(z) => Piece::Data(z),
                Err(e) => Piece::Failed(e),
            },
            Msg::End => Piece::End,
            Msg::Failed(f) => Piece::Failed(f),
            Msg::Delta {
                base,
                base_digest,
                delta,
            } => Piece::Delta {
                base,
                base_digest,
                delta,
            },
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WatchWire {
    Paths(Vec<RelPath>),
    Rescan,
    Failed(String),
}

/// Why a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the peer is not a ferry agent (it sent {0:?} instead of the protocol preface)")]
    NotAgent(String),
    #[error(
        "protocol version mismatch: this ferry speaks {ours}, the agent speaks {theirs}; \
         reinstall the agent (remove ~/.ferry/agent or the container's /.ferry) or upgrade ferry"
    )]
    Version { ours: u32, theirs: u32 },
    #[error("bad frame from the peer: {0}")]
    Bad(String),
}

/// Writes the preface.
pub fn write_preface(w: &mut dyn Write) -> io::Result<()> {
    let mut p = [0u8; 12];
    p[..8].copy_from_slice(MAGIC);
    p[8..].copy_from_slice(&PROTOCOL.to_le_bytes());
    w.write_all(&p)?;
    w.flush()
}

/// Reads and checks the peer's preface.
pub fn read_preface(r: &mut dyn Read) -> Result<(), WireError> {
    let mut p = [0u8; 12];
    let mut got = 0;
    while got < p.len() {
        match r.read(&mut p[got..]) {
            Ok(0) if got == 0 => return Err(WireError::Closed),
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    if got < p.len() || &p[..8] != MAGIC {
        return Err(WireError::NotAgent(
            String::from_utf8_lossy(&p[..got]).into_owned(),
        ));
    }
    let theirs = u32::from_le_bytes([p[8], p[9], p[10], p[11]]);
    if theirs != PROTOCOL {
        return Err(WireError::Version {
            ours: PROTOCOL,
            theirs,
        });
    }
    Ok(())
}

/// Bytes gathered before they go out when messages are sent without a flush.
const BUFFER: usize = 256 * 1024;

/// Writes messages as frames.
pub struct FrameWriter<W: Write> {
    w: io::BufWriter<W>,
    compress: bool,
    buf: Vec<u8>,
    /// Payload bytes written (after compression), frame headers included.
    pub sent: u64,
}

impl<W: Write> FrameWriter<W> {
    pub fn new(w: W) -> Self {
        FrameWriter {
            w: io::BufWriter::with_capacity(BUFFER, w),
            compress: false,
            buf: Vec::new(),
            sent: 0,
        }
    }

    pub fn set_compress(&mut self, on: bool) {
        self.compress = on;
    }

    /// Encodes and sends one message, flushed: the peer sees it now.
    pub fn send(&mut self, m: &Msg) -> io::Result<()> {
        self.queue(m)?;
        self.w.flush()
    }

    /// Encodes one message into the buffer; it goes out when the buffer fills or at the next
    /// [`FrameWriter::send`] or [`FrameWriter::flush`] (for streams of many small pieces).
    pub fn queue(&mut self, m: &Msg) -> io::Result<()> {
        let mut bytes = std::mem::take(&mut self.buf);
        bytes.clear();
        let bytes = postcard::to_io(m, bytes)
            .map_err(|e| io::Error::other(format!("encoding a message: {e}")))?;
        let res = self.send_bytes(&bytes);
        self.buf = bytes;
        res
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }

    fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.len() > MESSAGE_MAX {
            return Err(io::Error::other(format!(
                "message of {} bytes is over the {MESSAGE_MAX}-byte limit",
                bytes.len()
            )));
        }
        let mut chunks = bytes.chunks(FRAME_MAX).peekable();
        if bytes.is_empty() {
            self.frame(&[], 0)?;
        }
        while let Some(c) = chunks.next() {
            let more = if chunks.peek().is_some() { MORE } else { 0 };
            self.frame(c, more)?;
        }
        Ok(())
    }

    fn frame(&mut self, payload: &[u8], flags: u8) -> io::Result<()> {
        let packed;
        let (body, flags) = if self.compress && payload.len() >= COMPRESS_MIN {
            packed = zstd::bulk::compress(payload, 1)?;
            if packed.len() < payload.len() {
                (&packed[..], flags | ZSTD)
            } else {
                (payload, flags)
            }
        } else {
            (payload, flags)
        };
        let len = u32::try_from(body.len() + 1).map_err(io::Error::other)?;
        self.w.write_all(&len.to_le_bytes())?;
        self.w.write_all(&[flags])?;
        self.w.write_all(body)?;
        self.sent += 5 + body.len() as u64;
        Ok(())
    }
}

/// Reads frames and decodes messages, refusing anything over the limits.
pub struct FrameReader<R: Read> {
    r: io::BufReader<R>,
    msg: Vec<u8>,
    frame: Vec<u8>,
    /// Bytes read off the wire, frame headers included.
    pub received: u64,
}

impl<R: Read> FrameReader<R> {
    pub fn new(r: R) -> Self {
        FrameReader {
            r: io::BufReader::with_capacity(BUFFER, r),
            msg: Vec::new(),
            frame: Vec::new(),
            received: 0,
        }
    }

    /// The next message; `Err(Closed)` at a clean end between messages.
    pub fn recv(&mut self) -> Result<Msg, WireError> {
        self.msg.clear();
        loop {
            let mut head = [0u8; 5];
            match read_full(&mut self.r, &mut head)? {
                0 if self.msg.is_empty() => return Err(WireError::Closed),
                5 => {}
                n => {
                    return Err(WireError::Bad(format!(
                        "truncated frame header ({n} of 5 bytes)"
                    )));
                }
            }
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let flags = head[4];
            if len == 0 {
                return Err(WireError::Bad("frame length 0".into()));
            }
            let body = len - 1;
            // A compressed frame's body is smaller than what it unpacks to, so the same cap holds.
            if body > FRAME_MAX {
                return Err(WireError::Bad(format!(
                    "frame of {body} bytes is over the {FRAME_MAX}-byte limit"
                )));
            }
            if flags & !(ZSTD | MORE) != 0 {
                return Err(WireError::Bad(format!("unknown frame flags {flags:#x}")));
            }
            self.frame.clear();
            self.frame.resize(body, 0);
            let got = read_full(&mut self.r, &mut self.frame)?;
            if got < body {
                return Err(WireError::Bad(format!(
                    "truncated frame ({got} of {body} bytes)"
                )));
            }
            self.received += 5 + body as u64;
            if flags & ZSTD != 0 {
                let plain = zstd::bulk::decompress(&self.frame, FRAME_MAX)
                    .map_err(|e| WireError::Bad(format!("bad compressed frame: {e}")))?;
                self.push(&plain)?;
            } else {
                let frame = std::mem::take(&mut self.frame);
                let res = self.push(&frame);
                self.frame = frame;
                res?;
            }
            if flags & MORE == 0 {
                break;
            }
        }
        let (m, rest) = postcard::take_from_bytes::<Msg>(&self.msg)
            .map_err(|e| WireError::Bad(format!("undecodable message: {e}")))?;
        if !rest.is_empty() {
            return Err(WireError::Bad(format!(
                "{} stray bytes after a message",
                rest.len()
            )));
        }
        Ok(m)
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        if self.msg.len() + bytes.len() > MESSAGE_MAX {
            return Err(WireError::Bad(format!(
                "message over the {MESSAGE_MAX}-byte limit"
            )));
        }
        self.msg.extend_from_slice(bytes);
        Ok(())
    }
}

/// Reads until `buf` is full or the stream ends; the count read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Checks a tree (or subtree at `at`) from the peer: valid names, bounded depth, permission
/// bits within `0o777`, symlinks that stay inside the root (any target with `raw_links`, the
/// session's `--symlinks raw`). The peer's scanner turns such things into problems; one that
/// sends them anyway is lying.
pub fn check_entry(at: &RelPath, e: &Entry, raw_links: bool) -> Result<(), String> {
    fn walk(path: &mut String, e: &Entry, depth: usize, raw: bool) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("tree deeper than {MAX_DEPTH} levels"));
        }
        if e.mode().is_some_and(|m| m & !PERMISSION_BITS != 0) {
            return Err(format!("mode beyond {PERMISSION_BITS:o} at '{path}'"));
        }
        match e {
            Entry::Directory(children) => {
                if !path.is_empty() {
                    RelPath::new(path).map_err(|err| format!("bad path in tree: {err}"))?;
                }
                for (name, child) in children {
                    validate_name(name).map_err(|err| format!("bad name in tree: {err}"))?;
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('/');
                    }
                    path.push_str(name);
                    walk(path, child, depth + 1, raw)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Entry::Symlink { target } => {
                let link = RelPath::new(path).map_err(|err| format!("bad path in tree: {err}"))?;
                if link.is_root() || (!raw && !link_stays_inside(&link, target)) {
                    return Err(format!(
                        "symlink {link} -> {target:?} would lead outside the root"
                    ));
                }
                Ok(())
            }
            Entry::File { .. } | Entry::Problem(_) => {
                if path.is_empty() {
                    return Ok(());
                }
                RelPath::new(path).map_err(|err| format!("bad path in tree: {err}"))?;
                Ok(())
            }
        }
    }
    let mut p = at.as_str().to_owned();
    walk(&mut p, e, at.components().count(), raw_links)
}

/// Checks the agent's answer to a transition of `changes`: one outcome per change, at the
/// change's own path, with sound entries.
pub fn check_outcomes(changes: &[Change], outs: &[Outcome], raw_links: bool) -> Result<(), String> {
    if changes.len() != outs.len() {
        return Err(format!(
            "{} outcomes for {} changes",
            outs.len(),
            changes.len()
        ));
    }
    for (ch, o) in changes.iter().zip(outs) {
        if o.path != ch.path {
            return Err(format!(
                "outcome for {} answers the change at {}",
                o.path, ch.path
            ));
        }
        if let Some(e) = &o.now {
            check_entry(&o.path, e, raw_links)?;
        }
        for (p, _) in &o.errors {
            if !p.starts_with(&ch.path) {
                return Err(format!(
                    "error reported at {p}, outside the change at {}",
                    ch.path
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(m: &Msg, compress: bool) -> Msg {
        let mut w = FrameWriter::new(Vec::new());
        w.set_compress(compress);
        w.send(m).expect("send");
        let bytes = w.w.into_inner().expect("flushed");
        let mut r = FrameReader::new(&bytes[..]);
        r.recv().expect("recv")
    }

    #[test]
    fn messages_survive_framing_split_and_compression() {
        let big = Msg::Data(vec![7u8; FRAME_MAX * 2 + 10]);
        for compress in [false, true] {
            match roundtrip(&big, compress) {
                Msg::Data(d) => assert_eq!(d.len(), FRAME_MAX * 2 + 10),
                other => panic!("got {other:?}"),
            }
            assert!(matches!(roundtrip(&Msg::Ok, compress), Msg::Ok));
        }
    }

    #[test]
    fn hook_messages_survive_framing() {
        let exec = Msg::Exec {
            id: 7,
            command: "make -j4 && echo ok".into(),
        };
        match roundtrip(&exec, true) {
            Msg::Exec { id, command } => {
                assert_eq!((id, command.as_str()), (7, "make -j4 && echo ok"));
            }
            other => panic!("got {other:?}"),
        }
        let result = crate::hooks::ExecResult {
            status: crate::hooks::ExecStatus::Exited(2),
            output: b"make: *** [all] Error 2\n".to_vec(),
            truncated: true,
        };
        match roundtrip(
            &Msg::Exited {
                id: 7,
                result: result.clone(),
            },
            false,
        ) {
            Msg::Exited { id, result: got } => assert_eq!((id, got), (7, result)),
            other => panic!("got {other:?}"),
        }
    }

    #[test]
    fn oversized_and_truncated_frames_are_refused() {
        let mut huge = ((FRAME_MAX + 2) as u32).to_le_bytes().to_vec();
        huge.push(0);
        let e = FrameReader::new(&huge[..])
            .recv()
            .expect_err("over the cap");
        assert!(e.to_string().contains("limit"), "{e}");

        let mut w = FrameWriter::new(Vec::new());
        w.send(&Msg::Data(vec![1; 100])).expect("send");
        let bytes = w.w.into_inner().expect("flushed");
        let cut = &bytes[..bytes.len() - 3];
        let e = FrameReader::new(cut).recv().expect_err("truncated");
        assert!(e.to_string().contains("truncated"), "{e}");

        let e = FrameReader::new(&[1u8, 0, 0][..])
            .recv()
            .expect_err("short header");
        assert!(e.to_string().contains("header"), "{e}");
    }

    #[test]
    fn preface_tells_version_and_strangers_apart() {
        let mut ok = Vec::new();
        write_preface(&mut ok).expect("write");
        read_preface(&mut &ok[..]).expect("same version");
        let mut other = ok.clone();
        other[8] = 9;
        let e = read_preface(&mut &other[..]).expect_err("other version");
        assert!(
            e.to_string()
                .contains(&format!("speaks {PROTOCOL}, the agent speaks 9")),
            "{e}"
        );
        let e = read_preface(&mut &b"Welcome to Ubuntu"[..]).expect_err("not an agent");
        assert!(e.to_string().contains("not a ferry agent"), "{e}");
    }

    #[test]
    fn lying_trees_are_refused() {
        let root = RelPath::default();
        let link = |t: &str| {
            Entry::Directory([("a".to_owned(), Entry::Symlink { target: t.into() })].into())
        };
        assert!(check_entry(&root, &link("b"), false).is_ok());
        assert!(check_entry(&root, &link("../etc"), false).is_err());
        assert!(check_entry(&root, &link("/etc"), false).is_err());
        for bad in ["..", ".", "a/b", "", "a\0b"] {
            let t = Entry::Directory([(bad.to_owned(), Entry::file([0; 32], 1, false))].into());
            assert!(check_entry(&root, &t, false).is_err(), "{bad:?}");
        }
    }
}
