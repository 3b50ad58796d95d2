//! The watcher of every system but Linux: the `notify` crate (FSEvents on macOS), one
//! non-recursive watch per directory. Linux runs it with `FERRY_TEST_PORTABLE=1` (through
//! notify's own inotify backend). Reads are not changes: access events are dropped, except a
//! close after writing.

use std::io;
use std::path::Path;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::Seen;

pub struct DirWatcher {
    inner: RecommendedWatcher,
}

fn to_io(e: notify::Error) -> io::Error {
    match e.kind {
        notify::ErrorKind::Io(e) => e,
        notify::ErrorKind::PathNotFound => io::Error::from(io::ErrorKind::NotFound),
        notify::ErrorKind::MaxFilesWatch => io::Error::from_raw_os_error(libc::ENOSPC),
        other => io::Error::other(format!("{other:?}")),
    }
}

impl DirWatcher {
    pub fn new(mut handler: impl FnMut(Seen) + Send + 'static) -> io::Result<DirWatcher> {
        let inner = notify::recommended_watcher(move |res: notify::Result<Event>| match res {
            Ok(ev) => {
                if ev.need_rescan() {
                    handler(Seen::Overflow);
                    return;
                }
                match ev.kind {
                    EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
                    EventKind::Access(_) => return,
                    _ => {}
                }
                for p in ev.paths {
                    handler(Seen::Path(p));
                }
            }
            Err(e) => handler(Seen::Failed(format!("watcher error: {e}"))),
        })
        .map_err(to_io)?;
        Ok(DirWatcher { inner })
    }

    pub fn watch(&mut self, dir: &Path) -> io::Result<()> {
        self.inner
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(to_io)
    }

    pub fn unwatch(&mut self, dir: &Path) {
        let _ = self.inner.unwatch(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    #[test]
    fn the_portable_watcher_reports_a_write_and_not_a_read() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().canonicalize().expect("canonical");
        std::fs::write(root.join("f"), "x").expect("write");
        let (tx, rx) = channel();
        let mut w = DirWatcher::new(move |s| {
            let _ = tx.send(s);
        })
        .expect("watcher");
        w.watch(&root).expect("watch");
        let _ = std::fs::read(root.join("f")).expect("read");
        std::fs::write(root.join("g"), "y").expect("write g");
        let first = loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Seen::Path(p)) => break Some(p),
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        assert_eq!(first, Some(root.join("g")), "the read of f is not a change");
        w.unwatch(&root);
    }
}
