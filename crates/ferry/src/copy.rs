//! Moving content from one endpoint to the other while the receiving side applies changes. A
//! thread reads from the source, in the order the transition will need the content, while the
//! receiving side writes, verifies and places it: reading and writing overlap (on two cores a
//! copy of many small files costs about what its slower half costs). Between them, a bounded
//! channel of batches of chunks: memory stays near [`DEPTH`] × [`BATCH_BYTES`] whatever the file
//! sizes.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use std::collections::HashMap;

use ferry_core::{Change, Digest, Entry, RelPath};

use crate::delta::{self, BaseOpener};
use crate::endpoint::{Content, Endpoint, Feed, Wanted};

/// The largest piece of a file sent at once.
pub const CHUNK: usize = 128 * 1024;
/// Pieces go over the channel in batches of about this many bytes (or [`BATCH_PIECES`]
/// pieces): one hand-over between threads per batch, not per small file.
const BATCH_BYTES: usize = 1024 * 1024;
const BATCH_PIECES: usize = 128;
/// Batches in flight between the reader and the writer.
const DEPTH: usize = 16;
/// Used buffers waiting to be reused by the reader, at most.
const POOL: usize = 64;

/// Content to copy: what the receiver wants, and where the source has it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Item {
    pub want: Wanted,
    pub path: RelPath,
    /// The receiver's rsync signature of its file at `path`, which has `base_digest`: the
    /// source may send a delta against it (see [`delta`]).
    pub signature: Option<Vec<u8>>,
    pub base_digest: Option<Digest>,
}

/// The content `changes` need on one side, in the order the transition needs it (each
/// digest once, at its first use, with the number of uses and a path holding it on the
/// other side).
pub fn wanted(changes: &[Change]) -> Vec<Item> {
    let mut items: Vec<Item> = Vec::new();
    let mut index: HashMap<Digest, usize> = HashMap::new();
    for ch in changes {
        if let (Some(Entry::File { digest: od, .. }), Some(Entry::File { digest: nd, .. })) =
            (&ch.old, &ch.new)
        {
            if od == nd {
                continue;
            }
        }
        let Some(new) = &ch.new else { continue };
        new.walk(ch.path.as_str(), &mut |p, e| {
            if let Entry::File { digest, size, .. } = e {
                if let Some(it) = index.get(digest).and_then(|&i| items.get_mut(i)) {
                    it.want.uses += 1;
                } else if let Ok(path) = RelPath::new(p) {
                    index.insert(*digest, items.len());
                    items.push(Item {
                        want: Wanted {
                            digest: *digest,
                            uses: 1,
                            size: *size,
                        },
                        path,
                        signature: None,
                        base_digest: None,
                    });
                }
            }
        });
    }
    items
}

/// A piece of an item's content, from the source.
#[derive(Debug)]
pub enum Piece {
    Data(Vec<u8>),
    /// The item's bytes are all sent (or the source ended early: the receiver sees a short copy).
    End,
    Failed(String),
    /// The whole item, as a delta against the receiver's file at `base`.
    Delta {
        base: RelPath,
        base_digest: Digest,
        delta: Vec<u8>,
    },
}

/// The receiving side stopped taking content (it is done, or gone): stop reading.
#[derive(Debug)]
pub struct Gone;

/// Where a source puts the pieces of the items it reads.
pub trait Sink {
    /// Takes a piece; `Err` once the receiving side is gone (stop reading).
    fn put(&mut self, p: Piece) -> Result<(), Gone>;
    /// An empty buffer to read a chunk into (reused when possible).
    fn buffer(&mut self) -> Vec<u8> {
        Vec::new()
    }
}

/// Runs `work` (the receiving side's transition) with a [`Feed`] of `items` read from `src` on
/// another thread, in order; reading stops early when `stop` is set or `work` returns. Returns
/// the bytes `work` took from the feed, and what `work` returned. `progress` hears of every
/// chunk taken.
pub fn stream<R>(
    src: &mut dyn Endpoint,
    items: &[Item],
    base: Option<BaseOpener>,
    stop: &AtomicBool,
    progress: &(dyn Fn(u64) + Sync),
    work: impl FnOnce(&mut dyn Feed) -> R,
) -> (u64, R) {
    let (tx, rx) = sync_channel::<Vec<Piece>>(DEPTH);
    // Buffers the receiving side is done with go back to the reader: no fresh (zeroed,
    // page-faulted) memory for every chunk of a big file.
    let (pool_tx, pool_rx) = sync_channel::<Vec<u8>>(POOL);
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut out = Batcher {
                tx,
                batch: Vec::new(),
                bytes: 0,
                pool: pool_rx,
            };
            if src.read_items(items, stop, &mut out).is_ok() {
                let _ = out.flush();
            }
        });
        let mut feed = ChannelFeed {
            rx,
            batch: Vec::new().into_iter(),
            items: items.iter(),
            cur: Vec::new(),
            pos: 0,
            in_item: false,
            stopped: false,
            n: 0,
            progress,
            pool: pool_tx,
            base,
            first: None,
        };
        let out = work(&mut feed);
        // Dropping the feed's receiver ends a reader still at work (its next send fails).
        (feed.n, out)
    })
}

/// The receiving end: one item after another, each read through the feed itself.
struct ChannelFeed<'a> {
    rx: Receiver<Vec<Piece>>,
    /// The rest of the batch last received.
    batch: std::vec::IntoIter<Piece>,
    items: std::slice::Iter<'a, Item>,
    cur: Vec<u8>,
    pos: usize,
    /// An item is open: its last piece has not been taken yet.
    in_item: bool,
    /// The reader stopped: no more items will come.
    stopped: bool,
    /// Bytes taken.
    n: u64,
    progress: &'a (dyn Fn(u64) + Sync),
    /// Where used buffers go back to the reader.
    pool: SyncSender<Vec<u8>>,
    /// Reads the receiver's base files, to rebuild content sent as a delta.
    base: Option<BaseOpener>,
    /// The open item's first piece, looked at by `next` (is it a delta?).
    first: Option<Piece>,
}

impl ChannelFeed<'_> {
    /// The next piece from the reader; `Err` once it has stopped.
    fn recv(&mut self) -> Result<Piece, ()> {
        loop {
            if let Some(p) = self.batch.next() {
                return Ok(p);
            }
            self.batch = self.rx.recv().map_err(|_| ())?.into_iter();
        }
    }

    /// Takes the rest of the open item's pieces (the receiver may stop reading one early).
    fn drain(&mut self) {
        if let Some(p) = self.first.take() {
            if !matches!(p, Piece::Data(_)) {
                self.in_item = false;
            }
        }
        while self.in_item {
            match self.recv() {
                Ok(Piece::Data(_)) => {}
                Ok(Piece::End | Piece::Failed(_) | Piece::Delta { .. }) => self.in_item = false,
                Err(_) => {
                    self.in_item = false;
                    self.stopped = true;
                }
            }
        }
        self.cur.clear();
        self.pos = 0;
    }
}

impl ChannelFeed<'_> {
    /// Opens the next item and looks at its first piece.
    fn open_next(&mut self) -> Option<Wanted> {
        self.drain();
        if self.stopped {
            return None;
        }
        let it = self.items.next()?;
        self.in_item = true;
        match self.recv() {
            Ok(p) => self.first = Some(p),
            Err(()) => {
                self.in_item = false;
                self.stopped = true;
            }
        }
        Some(it.want)
    }
}

impl Feed for ChannelFeed<'_> {
    fn next(&mut self) -> Option<(Wanted, &mut dyn Read)> {
        let want = self.open_next()?;
        if let Some(Piece::Delta {
            base,
            base_digest: _,
            delta,
        }) = self.first.take_if(|p| matches!(p, Piece::Delta { .. }))
        {
            // Rebuilt here from the receiver's own file; the receiver verifies the result.
            let rebuilt = match &self.base {
                Some(open) => open(&base).and_then(|b| delta::apply(&b, &delta, want.size)),
                None => Err(io::Error::other(
                    "a delta came, but this side has no base files",
                )),
            };
            match rebuilt {
                Ok(content) => {
                    self.cur = content;
                    self.pos = 0;
                    self.first = Some(Piece::End);
                }
                Err(e) => self.first = Some(Piece::Failed(e.to_string())),
            }
        }
        Some((want, self as &mut dyn Read))
    }

    fn next_content(&mut self) -> Option<(Wanted, Content<'_>)> {
        let want = self.open_next()?;
        if let Some(Piece::Delta {
            base,
            base_digest,
            delta,
        }) = self.first.take_if(|p| matches!(p, Piece::Delta { .. }))
        {
            self.in_item = false;
            self.n += want.size;
            (self.progress)(want.size);
            return Some((
                want,
                Content::Delta {
                    base,
                    base_digest,
                    delta,
                },
            ));
        }
        Some((want, Content::Stream(self as &mut dyn Read)))
    }
}

impl Read for ChannelFeed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if !self.in_item {
                return Ok(0);
            }
            let next = match self.first.take() {
                Some(p) => Ok(p),
                None => self.recv(),
            };
            match next {
                Ok(Piece::Data(d)) => {
                    let used = std::mem::replace(&mut self.cur, d);
                    // A full pool means enough buffers are about: this one is dropped.
                    let _ = self.pool.try_send(used);
                    self.pos = 0;
                }
                Ok(Piece::End) => {
                    self.in_item = false;
                    return Ok(0);
                }
                Ok(Piece::Failed(m)) => {
                    self.in_item = false;
                    return Err(io::Error::other(m));
                }
                Ok(Piece::Delta { .. }) => {
                    self.in_item = false;
                    return Err(io::Error::other("a delta in the middle of a file"));
                }
                Err(_) => {
                    self.in_item = false;
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

/// Gathers pieces into batches for the channel.
struct Batcher {
    tx: SyncSender<Vec<Piece>>,
    batch: Vec<Piece>,
    bytes: usize,
    /// Buffers back from the receiving side, for reuse.
    pool: Receiver<Vec<u8>>,
}

impl Batcher {
    /// Adds a piece, sending the batch when it is full; `Err` only when the receiver is gone.
    fn send(&mut self, p: Piece) -> Result<(), Gone> {
        if let Piece::Data(d) = &p {
            self.bytes += d.len();
        }
        self.batch.push(p);
        if self.bytes >= BATCH_BYTES || self.batch.len() >= BATCH_PIECES {
            return self.flush();
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Gone> {
        self.bytes = 0;
        if self.batch.is_empty() {
            return Ok(());
        }
        self.tx
            .send(std::mem::take(&mut self.batch))
            .map_err(|_| Gone)
    }
}

impl Sink for Batcher {
    fn put(&mut self, p: Piece) -> Result<(), Gone> {
        self.send(p)
    }

    fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.pool.try_recv().unwrap_or_default();
        b.clear();
        b
    }
}

/// Reads `items` from `src` one file at a time (see `Endpoint::read_items`): whole, or as a
/// delta when the item carries the receiver's signature. `Err` only when the receiver is gone.
pub fn read_by_open<E: Endpoint + ?Sized>(
    src: &mut E,
    items: &[Item],
    stop: &AtomicBool,
    out: &mut dyn Sink,
) -> Result<(), Gone> {
    for it in items {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        send_item(src, it, out)?;
    }
    Ok(())
}

/// Sends one item's pieces; `Err` only when the receiver is gone.
fn send_item<E: Endpoint + ?Sized>(src: &mut E, it: &Item, out: &mut dyn Sink) -> Result<(), Gone> {
    if it.want.size == 0 {
        return out.put(Piece::End);
    }
    let mut r = match src.open(&it.path, &it.want.digest) {
        Ok(r) => r,
        Err(e) => return out.put(Piece::Failed(e.to_string())),
    };
    if let (Some(sig), Some(base_digest)) = (&it.signature, it.base_digest) {
        if delta::worth_it(it.want.size) {
            let mut data = Vec::new();
            if let Err(e) = (&mut r).take(it.want.size).read_to_end(&mut data) {
                return out.put(Piece::Failed(e.to_string()));
            }
            if let Some(d) = delta::encode(sig, &data) {
                return out.put(Piece::Delta {
                    base: it.path.clone(),
                    base_digest,
                    delta: d,
                });
            }
            for c in data.chunks(CHUNK) {
                out.put(Piece::Data(c.to_vec()))?;
            }
            return out.put(Piece::End);
        }
    }
    let mut left = it.want.size;
    while left > 0 {
        let n = left.min(CHUNK as u64);
        let mut buf = out.buffer();
        // Room for the whole chunk up front: `read_to_end` into a buffer without room starts
        // with tiny probe reads and grows it step by step.
        buf.reserve_exact(CHUNK.min(usize::try_from(n).unwrap_or(CHUNK)));
        // Reads into the buffer's spare room: nothing is zeroed first.
        let got = match (&mut r).take(n).read_to_end(&mut buf) {
            Ok(g) => g as u64,
            Err(e) => return out.put(Piece::Failed(e.to_string())),
        };
        if got > 0 {
            out.put(Piece::Data(buf))?;
        }
        if got < n {
            // The source ended early: the receiver sees a short copy and says so.
            break;
        }
        left -= got;
    }
    out.put(Piece::End)
}
