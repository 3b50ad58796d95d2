//! Watching directories, one at a time (the scan adds and removes them as directories enter
//! and leave the tree): the seam. Linux uses inotify directly (`watch/inotify.rs`: only the
//! events that mean a change, files held back while being written); every other system uses
//! the `notify` crate (`watch/portable.rs`: FSEvents on macOS), which Linux also runs with
//! `FERRY_TEST_PORTABLE=1`.

use std::io;
use std::path::{Path, PathBuf};

#[cfg(target_os = "linux")]
mod inotify;
mod portable;

/// What the watcher reports.
#[derive(Debug)]
pub enum Seen {
    /// Something changed at this path: an entry of a watched directory, or the directory.
    Path(PathBuf),
    /// Events were lost (the kernel's queue overflowed): look at everything again.
    Overflow,
    /// The watcher cannot go on.
    Failed(String),
}

enum Inner {
    #[cfg(target_os = "linux")]
    Inotify(inotify::DirWatcher),
    Portable(portable::DirWatcher),
}

pub struct DirWatcher(Inner);

impl DirWatcher {
    /// Starts watching; `handler` hears of every change, on the watcher's own thread (it must
    /// not block for long: the kernel queue fills meanwhile).
    pub fn new(handler: impl FnMut(Seen) + Send + 'static) -> io::Result<DirWatcher> {
        #[cfg(target_os = "linux")]
        if !super::sys::portable_forced() {
            return inotify::DirWatcher::new(handler).map(|w| DirWatcher(Inner::Inotify(w)));
        }
        portable::DirWatcher::new(handler).map(|w| DirWatcher(Inner::Portable(w)))
    }

    /// Watches the directory `dir` (not its subdirectories).
    pub fn watch(&mut self, dir: &Path) -> io::Result<()> {
        match &mut self.0 {
            #[cfg(target_os = "linux")]
            Inner::Inotify(w) => w.watch(dir),
            Inner::Portable(w) => w.watch(dir),
        }
    }

    /// Stops watching `dir` (unless its watch now serves another name, after a rename).
    pub fn unwatch(&mut self, dir: &Path) {
        match &mut self.0 {
            #[cfg(target_os = "linux")]
            Inner::Inotify(w) => w.unwatch(dir),
            Inner::Portable(w) => w.unwatch(dir),
        }
    }
}
