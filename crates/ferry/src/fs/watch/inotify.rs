//! Linux's watcher, inotify: one watch per directory (the scan adds and removes them
//! as directories enter and leave the tree), asking the kernel only for the events that mean a
//! change. Never opens or reads: every scan of ferry's own, every build and every `grep -r`
//! would otherwise flood the queue (notify 8 asks for `IN_OPEN` on every watch, with no way to
//! turn it off), and a full queue means a full rescan.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ::inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

use super::Seen;

/// How long a file written and not closed is kept back before it is reported anyway (a log
/// that never closes still syncs every few seconds).
const HOLD_CAP: Duration = Duration::from_secs(3);

/// Changes to entries, and a watched directory itself going away.
fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
        | WatchMask::DONT_FOLLOW
        | WatchMask::EXCL_UNLINK
}

#[derive(Default)]
struct Maps {
    by_wd: HashMap<WatchDescriptor, PathBuf>,
    by_path: HashMap<PathBuf, WatchDescriptor>,
}

#[derive(Default)]
struct Shared {
    maps: Mutex<Maps>,
    stopped: AtomicBool,
}

impl Shared {
    fn maps(&self) -> MutexGuard<'_, Maps> {
        // A panic while holding the lock leaves plain maps behind: still usable.
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct DirWatcher {
    watches: Watches,
    shared: Arc<Shared>,
}

impl DirWatcher {
    /// Starts the reading thread; `handler` hears of every change, on that thread (it must not
    /// block for long: the kernel queue fills meanwhile).
    pub fn new(mut handler: impl FnMut(Seen) + Send + 'static) -> io::Result<DirWatcher> {
        let mut inotify = Inotify::init()?;
        let watches = inotify.watches();
        let shared = Arc::new(Shared::default());
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("ferry-watch".into())
            .spawn(move || {
                use std::os::fd::AsRawFd;
                let mut buf = vec![0u8; 64 * 1024];
                // Files written and not closed yet, and since when (see `HOLD_CAP`).
                let mut writing: HashMap<PathBuf, Instant> = HashMap::new();
                loop {
                    // Wait for events, or until a held file's cap is up.
                    let now = Instant::now();
                    let wait = writing
                        .values()
                        .map(|t| (*t + HOLD_CAP).saturating_duration_since(now))
                        .min()
                        .map_or(-1, |d| d.as_millis().min(60_000) as libc::c_int + 1);
                    let mut pfd = libc::pollfd {
                        fd: inotify.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd for the duration of the call.
                    let rc = unsafe { libc::poll(&mut pfd, 1, wait) };
                    if rc < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        if !sh.stopped.load(Ordering::SeqCst) {
                            handler(Seen::Failed(format!("watcher error: {e}")));
                        }
                        return;
                    }
                    if sh.stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    // A file that keeps being written (a log) is still seen every few seconds.
                    let now = Instant::now();
                    writing.retain(|p, since| {
                        if now >= *since + HOLD_CAP {
                            handler(Seen::Path(p.clone()));
                            return false;
                        }
                        true
                    });
                    if rc == 0 {
                        continue;
                    }
                    let events = match inotify.read_events(&mut buf) {
                        Ok(ev) => ev,
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                            ) =>
                        {
                            continue;
                        }
                        Err(e) => {
                            if !sh.stopped.load(Ordering::SeqCst) {
                                handler(Seen::Failed(format!("watcher error: {e}")));
                            }
                            return;
                        }
                    };
                    if sh.stopped.load(Ordering::SeqCst) {
                        return;
                    }
                    for ev in events {
                        if ev.mask.contains(EventMask::Q_OVERFLOW) {
                            handler(Seen::Overflow);
                            continue;
                        }
                        if ev.mask.contains(EventMask::IGNORED) {
                            // The watch is gone (its directory was removed, or unwatched).
                            let mut m = sh.maps();
                            if let Some(p) = m.by_wd.remove(&ev.wd) {
                                if m.by_path.get(&p) == Some(&ev.wd) {
                                    m.by_path.remove(&p);
                                }
                            }
                            continue;
                        }
                        let dir = sh.maps().by_wd.get(&ev.wd).cloned();
                        let Some(dir) = dir else { continue };
                        let path = match ev.name {
                            Some(name) => dir.join(name),
                            None => dir,
                        };
                        // A file being written is seen once its writer closes it: not as every
                        // partial version on the way (a single save is a write then a close,
                        // milliseconds apart).
                        let file = !ev.mask.contains(EventMask::ISDIR);
                        if file && ev.mask.contains(EventMask::CLOSE_WRITE) {
                            writing.remove(&path);
                        } else if file
                            && (ev.mask.contains(EventMask::MODIFY)
                                || (ev.mask.contains(EventMask::CREATE)
                                    && std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file())))
                        {
                            writing.entry(path).or_insert(now);
                            continue;
                        } else if ev
                            .mask
                            .intersects(EventMask::DELETE | EventMask::MOVED_FROM)
                        {
                            writing.remove(&path);
                        }
                        handler(Seen::Path(path));
                    }
                }
            })?;
        Ok(DirWatcher { watches, shared })
    }

    /// Watches the directory `dir` (not its subdirectories).
    pub fn watch(&mut self, dir: &Path) -> io::Result<()> {
        let wd = self.watches.add(dir, mask())?;
        let mut m = self.shared.maps();
        // A renamed directory keeps its inode, hence its descriptor: the new name takes it over.
        if let Some(old) = m.by_wd.insert(wd.clone(), dir.to_path_buf()) {
            if old != dir && m.by_path.get(&old) == Some(&wd) {
                m.by_path.remove(&old);
            }
        }
        m.by_path.insert(dir.to_path_buf(), wd);
        Ok(())
    }

    /// Stops watching `dir` (unless its watch now serves another name, after a rename).
    pub fn unwatch(&mut self, dir: &Path) {
        let mut m = self.shared.maps();
        let Some(wd) = m.by_path.remove(dir) else {
            return;
        };
        if m.by_wd.get(&wd).is_some_and(|p| p == dir) {
            m.by_wd.remove(&wd);
            drop(m);
            let _ = self.watches.remove(wd);
        }
    }
}

impl Drop for DirWatcher {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Removing the watches queues IN_IGNORED events, which wake the reading thread.
        let wds: Vec<WatchDescriptor> = self.shared.maps().by_wd.keys().cloned().collect();
        for wd in wds {
            let _ = self.watches.remove(wd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{Receiver, channel};
    use std::time::Duration;

    fn next_path(rx: &Receiver<Seen>) -> Option<PathBuf> {
        loop {
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Seen::Path(p)) => return Some(p),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    #[test]
    fn reports_changes_not_reads_and_follows_renamed_directories() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().to_path_buf();
        std::fs::create_dir(root.join("d")).expect("mkdir");
        std::fs::write(root.join("d/f"), "x").expect("write");
        let (tx, rx) = channel();
        let mut w = DirWatcher::new(move |s| {
            let _ = tx.send(s);
        })
        .expect("watcher");
        w.watch(&root).expect("watch root");
        w.watch(&root.join("d")).expect("watch d");
        // Reading and listing are not changes.
        let _ = std::fs::read(root.join("d/f")).expect("read");
        let _ = std::fs::read_dir(root.join("d")).expect("list").count();
        std::fs::write(root.join("d/g"), "y").expect("write g");
        assert_eq!(
            next_path(&rx),
            Some(root.join("d/g")),
            "first event is the write"
        );
        // A renamed directory: its watch now reports under the new name once watched there.
        std::fs::rename(root.join("d"), root.join("e")).expect("rename");
        w.unwatch(&root.join("d"));
        w.watch(&root.join("e")).expect("watch e");
        while let Ok(s) = rx.recv_timeout(Duration::from_millis(200)) {
            assert!(matches!(s, Seen::Path(_)), "unexpected {s:?}");
        }
        std::fs::write(root.join("e/h"), "z").expect("write h");
        let mut seen = Vec::new();
        while let Some(p) = next_path(&rx) {
            seen.push(p.clone());
            if p == root.join("e/h") {
                break;
            }
        }
        assert_eq!(
            seen.last(),
            Some(&root.join("e/h")),
            "events after the rename: {seen:?}"
        );
    }
}
