//! Moving content from one endpoint to the other while the receiving side applies changes. A
//! thread reads from the source, in the order the transition will need the content, while the
//! receiving side writes, verifies and places it: reading and writing overlap (on two cores a
//! copy of many small files costs about what its slower half costs). Between them, a bounded
//! channel of chunks: memory stays at [`DEPTH`] × [`CHUNK`] whatever the file sizes.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};

use ferry_core::RelPath;

use crate::endpoint::{Endpoint, Feed, Wanted};

/// The largest piece of a file sent at once.
const CHUNK: usize = 128 * 1024;
/// Chunks in flight between the reader and the writer.
const DEPTH: usize = 256;

/// Content to copy: what the receiver wants, and where the source has it.
pub struct Item {
    pub want: Wanted,
    pub path: RelPath,
}

enum Piece {
    Data(Vec<u8>),
    /// The item's bytes are all sent (or the source ended early: the receiver sees a short copy).
    End,
    Failed(String),
}

/// Runs `work` (the receiving side's transition) with a [`Feed`] of `items` read from `src` on
/// another thread, in order; reading stops early when `stop` is set or `work` returns. Returns
/// the bytes `work` took from the feed, and what `work` returned. `progress` hears of every
/// chunk taken.
pub fn stream<R>(
    src: &mut dyn Endpoint,
    items: &[Item],
    stop: &AtomicBool,
    progress: &dyn Fn(u64),
    work: impl FnOnce(&mut dyn Feed) -> R,
) -> (u64, R) {
    let (tx, rx) = sync_channel::<Piece>(DEPTH);
    std::thread::scope(|s| {
        s.spawn(move || {
            for it in items {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if send_item(src, it, &tx).is_err() {
                    // The receiving side is done: nothing more to do.
                    break;
                }
            }
        });
        let mut feed = ChannelFeed {
            rx: &rx,
            items: items.iter(),
            cur: None,
            moved: 0,
            stopped: false,
            progress,
        };
        let out = work(&mut feed);
        if let Some(r) = feed.cur.take() {
            feed.moved += r.n;
        }
        let moved = feed.moved;
        // Dropping the receiver ends a reader still at work (its next send fails).
        drop(feed);
        drop(rx);
        (moved, out)
    })
}

/// The receiving end: one item after another, as `Read`s over the channel.
struct ChannelFeed<'a> {
    rx: &'a Receiver<Piece>,
    items: std::slice::Iter<'a, Item>,
    cur: Option<PieceReader<'a>>,
    moved: u64,
    /// The reader stopped: no more items will come.
    stopped: bool,
    progress: &'a dyn Fn(u64),
}

impl Feed for ChannelFeed<'_> {
    fn next(&mut self) -> Option<(Wanted, &mut dyn Read)> {
        if let Some(mut r) = self.cur.take() {
            // The receiver may have stopped reading an item early (a refused copy).
            r.drain();
            self.moved += r.n;
            self.stopped |= r.stopped;
        }
        if self.stopped {
            return None;
        }
        let it = self.items.next()?;
        let r = self.cur.insert(PieceReader {
            rx: self.rx,
            cur: Vec::new(),
            pos: 0,
            done: false,
            stopped: false,
            n: 0,
            progress: self.progress,
        });
        Some((it.want, r as &mut dyn Read))
    }
}

/// Sends one item's pieces; `Err` only when the receiver is gone.
fn send_item(
    src: &mut dyn Endpoint,
    it: &Item,
    tx: &std::sync::mpsc::SyncSender<Piece>,
) -> Result<(), ()> {
    let send = |p: Piece| tx.send(p).map_err(|_| ());
    if it.want.size == 0 {
        return send(Piece::End);
    }
    let mut r = match src.open(&it.path, &it.want.digest) {
        Ok(r) => r,
        Err(e) => return send(Piece::Failed(e.to_string())),
    };
    let mut left = it.want.size;
    while left > 0 {
        let n = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
        let mut buf = vec![0; n];
        let got = match read_full(&mut r, &mut buf) {
            Ok(g) => g,
            Err(e) => return send(Piece::Failed(e.to_string())),
        };
        buf.truncate(got);
        if got > 0 {
            send(Piece::Data(buf))?;
        }
        if got < n {
            // The source ended early: the receiver sees a short copy and says so.
            break;
        }
        left -= got as u64;
    }
    send(Piece::End)
}

/// Reads until `buf` is full or the source ends; returns how much was read.
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

/// One item's bytes as a `Read`, pulled from the channel.
struct PieceReader<'a> {
    rx: &'a Receiver<Piece>,
    cur: Vec<u8>,
    pos: usize,
    /// The item's last piece has been taken.
    done: bool,
    /// The reader stopped before the item's end.
    stopped: bool,
    n: u64,
    progress: &'a dyn Fn(u64),
}

impl PieceReader<'_> {
    /// Takes the rest of the item's pieces (the receiver may stop reading early).
    fn drain(&mut self) {
        while !self.done {
            match self.rx.recv() {
                Ok(Piece::Data(_)) => {}
                Ok(Piece::End | Piece::Failed(_)) => self.done = true,
                Err(_) => {
                    self.done = true;
                    self.stopped = true;
                }
            }
        }
    }
}

impl Read for PieceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Piece::Data(d)) => {
                    self.cur = d;
                    self.pos = 0;
                }
                Ok(Piece::End) => {
                    self.done = true;
                    return Ok(0);
                }
                Ok(Piece::Failed(m)) => {
                    self.done = true;
                    return Err(io::Error::other(m));
                }
                Err(_) => {
                    self.done = true;
                    self.stopped = true;
                    return Err(io::Error::other("stopped"));
                }
            }
        }
        let k = buf.len().min(self.cur.len() - self.pos);
        buf[..k].copy_from_slice(&self.cur[self.pos..self.pos + k]);
        self.pos += k;
        self.n += k as u64;
        (self.progress)(k as u64);
        Ok(k)
    }
}
