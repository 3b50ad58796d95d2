//! A side whose top-level names differ from the session's: `ferry up` syncs a file that a
//! Dockerfile copies under another name (`COPY nginx.conf /etc/nginx/conf.d/default.conf`), or
//! a glob match copied somewhere else, through one engine session of the two directories. The
//! session (reconcile, the archive, the other side) uses the other side's names; this wrapper
//! shows the wrapped endpoint's files under them and translates every path that crosses it.
//!
//! Only the first component of a path is renamed. The renaming is a permutation of names, so
//! that the translation is a bijection: with `a.txt` shown as `b.txt`, a `b.txt` on disk (which
//! the session's ignore rules leave out) would be shown as `a.txt`, never as a second `b.txt`.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};

use ferry_core::{Change, Digest, Entry, RelPath};

use super::{
    BaseOpener, Content, Endpoint, EndpointError, Feed, IgnoreSpec, Outcome, ScanReport,
    ScanRequest, Side, Wanted, WatchEvent,
};

/// Renames top-level names of the wrapped endpoint (see the module docs).
pub struct Renamed {
    inner: Box<dyn Endpoint>,
    side: Side,
    names: Names,
    tree: Option<Entry>,
    overflow: Arc<AtomicBool>,
}

/// A permutation of top-level names: `outer` (the session's) to `inner` (the disk's) and back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    to_inner: BTreeMap<String, String>,
    to_outer: BTreeMap<String, String>,
}

impl Names {
    /// From `(on disk, in the session)` pairs. `Err` when two pairs share a name on one side.
    pub fn new(pairs: &[(String, String)]) -> Result<Names, String> {
        let mut to_outer: BTreeMap<String, String> = BTreeMap::new();
        let mut outers = HashSet::new();
        for (inner, outer) in pairs {
            if inner == outer {
                continue;
            }
            if to_outer.insert(inner.clone(), outer.clone()).is_some() || !outers.insert(outer) {
                return Err(format!("{inner} -> {outer}: a name is renamed twice"));
            }
        }
        // Close every chain a -> b -> ... -> z (z not renamed itself) with z -> a.
        let starts: Vec<String> = to_outer
            .keys()
            .filter(|i| !outers.contains(i))
            .cloned()
            .collect();
        for start in starts {
            let mut end = start.clone();
            while let Some(next) = to_outer.get(&end) {
                end = next.clone();
            }
            to_outer.insert(end, start);
        }
        let to_inner = to_outer
            .iter()
            .map(|(i, o)| (o.clone(), i.clone()))
            .collect();
        Ok(Names { to_inner, to_outer })
    }

    /// True when nothing is renamed.
    pub fn is_empty(&self) -> bool {
        self.to_inner.is_empty()
    }

    fn map(table: &BTreeMap<String, String>, path: &RelPath) -> RelPath {
        let s = path.as_str();
        let (first, rest) = match s.split_once('/') {
            Some((f, r)) => (f, Some(r)),
            None => (s, None),
        };
        let Some(to) = table.get(first) else {
            return path.clone();
        };
        let mapped = match rest {
            Some(r) => format!("{to}/{r}"),
            None => to.clone(),
        };
        RelPath::new(&mapped).unwrap_or_else(|_| path.clone())
    }

    /// A session path as the disk names it.
    pub fn inner(&self, path: &RelPath) -> RelPath {
        Self::map(&self.to_inner, path)
    }

    /// A disk path as the session names it.
    pub fn outer(&self, path: &RelPath) -> RelPath {
        Self::map(&self.to_outer, path)
    }

    /// A watch event of the disk as the session names its paths.
    fn outer_event(&self, ev: WatchEvent) -> WatchEvent {
        match ev {
            WatchEvent::Paths(side, paths) => {
                WatchEvent::Paths(side, paths.iter().map(|p| self.outer(p)).collect())
            }
            other => other,
        }
    }

    /// A root entry's children renamed by `table` (other entries are unchanged).
    fn entry(table: &BTreeMap<String, String>, path: &RelPath, e: &Entry) -> Entry {
        match e {
            Entry::Directory(d) if path.is_root() => {
                let mut d = d.clone();
                d.children = std::mem::take(&mut d.children)
                    .into_iter()
                    .map(|(n, c)| (table.get(&n).cloned().unwrap_or(n), c))
                    .collect();
                Entry::Directory(d)
            }
            other => other.clone(),
        }
    }

    /// A gitignore pattern naming one top-level entry (`/name`, `!/name`, `/name/`, as
    /// `ferry up` writes them) for the disk; other patterns are kept.
    fn pattern(&self, p: &str) -> String {
        let (neg, body) = match p.strip_prefix('!') {
            Some(b) => ("!", b),
            None => ("", p),
        };
        let Some(name) = body.strip_prefix('/') else {
            return p.to_owned();
        };
        let (name, slash) = match name.strip_suffix('/') {
            Some(n) => (n, "/"),
            None => (name, ""),
        };
        if name.contains('/') || name.contains(['*', '?', '[']) {
            return p.to_owned();
        }
        match self.to_inner.get(&ferry_plan::scope::unescape(name)) {
            Some(to) => format!("{neg}/{}{slash}", ferry_plan::compose::escape(to)),
            None => p.to_owned(),
        }
    }
}

impl Renamed {
    /// Wraps `inner` (opened with the session's ignore rules `spec`, which are re-applied
    /// translated).
    pub fn new(
        mut inner: Box<dyn Endpoint>,
        side: Side,
        names: Names,
        spec: &IgnoreSpec,
    ) -> Result<Renamed, EndpointError> {
        let mut spec = spec.clone();
        spec.patterns = spec.patterns.iter().map(|p| names.pattern(p)).collect();
        inner.set_ignore(&spec)?;
        Ok(Renamed {
            inner,
            side,
            names,
            tree: None,
            overflow: Arc::new(AtomicBool::new(false)),
        })
    }

    fn refresh(&mut self) {
        self.tree = self
            .inner
            .tree()
            .map(|t| Names::entry(&self.names.to_outer, &RelPath::root(), t));
    }

    fn outer_outcome(&self, mut o: Outcome) -> Outcome {
        o.now = o
            .now
            .map(|e| Names::entry(&self.names.to_outer, &o.path, &e));
        o.path = self.names.outer(&o.path);
        for (p, _) in &mut o.errors {
            *p = self.names.outer(p);
        }
        for (p, _) in &mut o.backups {
            *p = self.names.outer(p);
        }
        o
    }
}

/// A feed whose deltas name their base as the disk does.
struct InnerFeed<'a> {
    feed: &'a mut dyn Feed,
    names: &'a Names,
}

impl Feed for InnerFeed<'_> {
    fn next(&mut self) -> Option<(Wanted, &mut dyn Read)> {
        self.feed.next()
    }

    fn next_content(&mut self) -> Option<(Wanted, Content<'_>)> {
        let names = self.names;
        self.feed.next_content().map(|(w, c)| match c {
            Content::Delta {
                base,
                base_digest,
                delta,
            } => (
                w,
                Content::Delta {
                    base: names.inner(&base),
                    base_digest,
                    delta,
                },
            ),
            stream => (w, stream),
        })
    }
}

impl Endpoint for Renamed {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn set_ignore(&mut self, spec: &IgnoreSpec) -> Result<(), EndpointError> {
        let mut spec = spec.clone();
        spec.patterns = spec
            .patterns
            .iter()
            .map(|p| self.names.pattern(p))
            .collect();
        self.inner.set_ignore(&spec)
    }

    fn scan(&mut self, req: &ScanRequest) -> Result<ScanReport, EndpointError> {
        let req = match req {
            ScanRequest::Full => ScanRequest::Full,
            ScanRequest::Paths(paths) => {
                ScanRequest::Paths(paths.iter().map(|p| self.names.inner(p)).collect())
            }
        };
        let mut report = self.inner.scan(&req)?;
        for (p, _) in &mut report.notes {
            *p = self.names.outer(p);
        }
        self.refresh();
        Ok(report)
    }

    fn tree(&self) -> Option<&Entry> {
        self.tree.as_ref()
    }

    fn read_small(&mut self, path: &RelPath, limit: u64) -> Result<Option<Vec<u8>>, EndpointError> {
        let p = self.names.inner(path);
        self.inner.read_small(&p, limit)
    }

    fn stage_local(&mut self, wanted: &[Wanted]) -> Result<Vec<Digest>, EndpointError> {
        self.inner.stage_local(wanted)
    }

    fn open(
        &mut self,
        path: &RelPath,
        digest: &Digest,
    ) -> Result<Box<dyn Read + Send + '_>, EndpointError> {
        let p = self.names.inner(path);
        self.inner.open(&p, digest)
    }

    fn transition(
        &mut self,
        changes: &[Change],
        backup: &HashSet<Digest>,
        feed: &mut dyn Feed,
    ) -> Result<Vec<Outcome>, EndpointError> {
        let to_inner = &self.names.to_inner;
        let inner_changes: Vec<Change> = changes
            .iter()
            .map(|c| Change {
                path: self.names.inner(&c.path),
                old: c.old.as_ref().map(|e| Names::entry(to_inner, &c.path, e)),
                new: c.new.as_ref().map(|e| Names::entry(to_inner, &c.path, e)),
            })
            .collect();
        let mut feed = InnerFeed {
            feed,
            names: &self.names,
        };
        let outcomes = self.inner.transition(&inner_changes, backup, &mut feed)?;
        let outcomes = outcomes
            .into_iter()
            .map(|o| self.outer_outcome(o))
            .collect();
        self.refresh();
        Ok(outcomes)
    }

    fn discard_staged(&mut self) {
        self.inner.discard_staged();
    }

    fn watch(&mut self, tx: SyncSender<WatchEvent>) -> Result<(), EndpointError> {
        let (inner_tx, rx) = sync_channel::<WatchEvent>(256);
        self.inner.watch(inner_tx)?;
        let names = self.names.clone();
        let overflow = self.overflow.clone();
        std::thread::Builder::new()
            .name("ferry-renamed-watch".into())
            .spawn(move || {
                // Ends when the wrapped watcher (the only sender) is dropped.
                for ev in rx {
                    if tx.try_send(names.outer_event(ev)).is_err() {
                        overflow.store(true, Ordering::SeqCst);
                    }
                }
            })
            .map_err(|e| EndpointError::Other(format!("cannot start a thread: {e}"), "watch"))?;
        Ok(())
    }

    fn poll_watch(&mut self) -> Option<WatchEvent> {
        if let Some(ev) = self.inner.poll_watch() {
            return Some(self.names.outer_event(ev));
        }
        if self.overflow.swap(false, Ordering::SeqCst) {
            return Some(WatchEvent::Rescan(self.side));
        }
        None
    }

    fn backup_root(&self) -> PathBuf {
        self.inner.backup_root()
    }

    fn save_cache(&mut self) -> Result<(), EndpointError> {
        self.inner.save_cache()
    }

    fn is_remote(&self) -> bool {
        self.inner.is_remote()
    }

    fn name_rules(&self) -> ferry_core::NameRules {
        self.inner.name_rules()
    }

    fn signature(
        &mut self,
        path: &RelPath,
        digest: &Digest,
    ) -> Result<Option<Vec<u8>>, EndpointError> {
        let p = self.names.inner(path);
        self.inner.signature(&p, digest)
    }

    fn base_opener(&self) -> Option<BaseOpener> {
        let open = self.inner.base_opener()?;
        let names = self.names.clone();
        Some(Arc::new(move |p: &RelPath| open(&names.inner(p))))
    }

    fn connected(&self) -> bool {
        self.inner.connected()
    }

    fn reconnect(&mut self) -> Result<(), EndpointError> {
        self.inner.reconnect()
    }

    fn identity(&self) -> Option<String> {
        self.inner.identity()
    }

    fn wire_bytes(&self) -> u64 {
        self.inner.wire_bytes()
    }

    fn exec(&mut self, command: &str, done: crate::hooks::ExecDone) -> Result<(), EndpointError> {
        self.inner.exec(command, done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(s: &str) -> RelPath {
        RelPath::new(s).expect("a relative path")
    }

    fn names(pairs: &[(&str, &str)]) -> Names {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Names::new(&pairs).expect("names")
    }

    #[test]
    fn the_renaming_is_a_bijection_of_top_level_names() {
        let n = names(&[("site.conf", "default.conf")]);
        assert_eq!(n.outer(&rel("site.conf")), rel("default.conf"));
        assert_eq!(n.inner(&rel("default.conf")), rel("site.conf"));
        // The name it takes is given back: a default.conf on disk never shows twice.
        assert_eq!(n.outer(&rel("default.conf")), rel("site.conf"));
        assert_eq!(n.outer(&rel("other")), rel("other"));
        // Only the first component.
        assert_eq!(n.outer(&rel("site.conf/x")), rel("default.conf/x"));
        assert_eq!(n.outer(&rel("a/site.conf")), rel("a/site.conf"));
        // A chain and a swap stay bijections.
        let chain = names(&[("a", "b"), ("b", "c")]);
        for x in ["a", "b", "c", "d"] {
            assert_eq!(chain.inner(&chain.outer(&rel(x))), rel(x), "{x}");
        }
        let outs: HashSet<RelPath> = ["a", "b", "c"]
            .iter()
            .map(|x| chain.outer(&rel(x)))
            .collect();
        assert_eq!(outs.len(), 3);
        let swap = names(&[("a", "b"), ("b", "a")]);
        assert_eq!(swap.outer(&rel("a")), rel("b"));
        assert_eq!(swap.outer(&rel("b")), rel("a"));
        assert!(names(&[("x", "x")]).is_empty());
        assert!(Names::new(&[("a".into(), "c".into()), ("b".into(), "c".into())]).is_err());
    }

    #[test]
    fn top_level_patterns_are_translated_and_others_kept() {
        let n = names(&[("my file", "default.conf")]);
        assert_eq!(n.pattern("!/default.conf"), "!/my\\ file");
        assert_eq!(n.pattern("/default.conf/"), "/my\\ file/");
        assert_eq!(n.pattern("/*"), "/*");
        assert_eq!(n.pattern("*.conf"), "*.conf");
        assert_eq!(n.pattern("/sub/default.conf"), "/sub/default.conf");
    }
}
