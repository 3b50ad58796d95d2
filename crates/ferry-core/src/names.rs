//! Names across filesystems: case and Unicode normalization (issue 12, part 4).
//!
//! A macOS volume (or exFAT) is case-insensitive: `Readme` and `README` are one name there. A
//! macOS volume also hands back decomposed (NFD) names whatever spelling made the file, while
//! Linux keeps names as bytes and they are usually composed (NFC). So the same file can be
//! spelled differently on the two sides and in the archive, and two files one side keeps apart
//! can be one file on the other.
//!
//! [`align_names`] runs before reconcile and settles both, per directory:
//! - Names are matched by a key: the name in NFC, and lower-cased too when either side folds
//!   case. A group of names with the same key, where each side holds at most one of them, is
//!   **one file**: both sides' trees are shown to reconcile under one spelling (the archive's
//!   if it holds exactly one of them, else alpha's, else beta's), and each side keeps its own
//!   spelling on disk ([`Spellings`] translates the paths of the changes for it). So a rename
//!   that changes only normalization (or only case, between a folding side and any other) is
//!   not a delete plus a create: it is not propagated at all, and a volume that hands names
//!   back decomposed does not make ferry recreate the file every cycle.
//! - In any other group (a side holds two or more of its names, or the archive does), the names
//!   of both sides that a folding side's filesystem would merge ([`NameRules::key`]) are a
//!   **clash**, reported on that side: every one of them becomes a problem entry in both trees,
//!   so reconcile neither places nor deletes anything there (no overwrite, no retry loop)
//!   until the names are told apart. The names of the group that no side would merge (two
//!   Linux sides with `é` in NFC and NFD) sync as they are, each under its own spelling.
//!
//! New names are created under the spelling of the side they come from.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use unicode_normalization::{UnicodeNormalization, is_nfc_quick};

use crate::{Entry, RelPath};

/// How one side's filesystem compares names (learned by probing its root).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NameRules {
    /// `Readme` and `README` are one name (exFAT, macOS volumes, NTFS).
    pub fold_case: bool,
    /// `é` composed (NFC) and decomposed (NFD) are one name (macOS volumes).
    pub fold_normalization: bool,
}

impl NameRules {
    /// A filesystem that compares names byte for byte (Linux ext4, xfs, btrfs, overlay).
    pub const EXACT: NameRules = NameRules {
        fold_case: false,
        fold_normalization: false,
    };

    /// The name as this filesystem compares it: two names are one on it exactly when their
    /// keys are equal.
    pub fn key<'a>(&self, name: &'a str) -> Cow<'a, str> {
        let mut key = Cow::Borrowed(name);
        if self.fold_normalization {
            key = nfc(name);
        }
        if self.fold_case {
            key = fold_case(key);
        }
        key
    }

    /// True if the filesystem keeps every name as given.
    pub fn is_exact(&self) -> bool {
        *self == NameRules::EXACT
    }
}

fn nfc(name: &str) -> Cow<'_, str> {
    if name.is_ascii() || is_nfc_quick(name.chars()) == unicode_normalization::IsNormalized::Yes {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(name.nfc().collect())
    }
}

fn fold_case(name: Cow<'_, str>) -> Cow<'_, str> {
    if name.chars().any(char::is_uppercase) {
        Cow::Owned(name.to_lowercase())
    } else {
        name
    }
}

/// Which spellings a side's names have on disk where the session shows them under another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Spellings {
    /// Session path (every component in the session's spelling) -> the last name's spelling
    /// on disk.
    to_disk: BTreeMap<RelPath, String>,
    /// Disk path -> the last name's spelling in the session.
    to_session: BTreeMap<RelPath, String>,
}

impl Spellings {
    /// True when every name is spelled on disk as in the session.
    pub fn is_empty(&self) -> bool {
        self.to_disk.is_empty()
    }

    /// The number of names spelled differently.
    pub fn len(&self) -> usize {
        self.to_disk.len()
    }

    /// True if a name at or below `path` (in the session's spelling), or above it, is spelled
    /// differently on disk.
    pub fn touches(&self, path: &RelPath) -> bool {
        self.to_disk
            .keys()
            .any(|k| k.starts_with(path) || path.starts_with(k))
    }

    /// `path` (in the session's spelling) as it is spelled on disk.
    pub fn to_disk(&self, path: &RelPath) -> RelPath {
        translate(&self.to_disk, path)
    }

    /// `path` (as spelled on disk) in the session's spelling.
    pub fn to_session(&self, path: &RelPath) -> RelPath {
        translate(&self.to_session, path)
    }

    fn record(&mut self, session: RelPath, disk: RelPath) {
        if let (Some(s), Some(d)) = (session.name(), disk.name()) {
            let (s, d) = (s.to_owned(), d.to_owned());
            self.to_disk.insert(session, d);
            self.to_session.insert(disk, s);
        }
    }
}

fn translate(map: &BTreeMap<RelPath, String>, path: &RelPath) -> RelPath {
    if map.is_empty() {
        return path.clone();
    }
    let (mut from, mut to) = (RelPath::root(), RelPath::root());
    for name in path.components() {
        let Ok(next) = from.join(name) else {
            return path.clone();
        };
        let spelled = map.get(&next).map_or(name, String::as_str);
        let Ok(t) = to.join(spelled) else {
            return path.clone();
        };
        (from, to) = (next, t);
    }
    to
}

/// Names one side holds apart that the other side's filesystem would merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clash {
    /// The side that cannot hold them apart (`alpha` or `beta`).
    pub side: &'static str,
    /// The directory (session spelling).
    pub dir: RelPath,
    /// The names, sorted.
    pub names: Vec<String>,
}

impl Clash {
    /// The one-line report, for each of [`Clash::names`].
    pub fn message(&self) -> String {
        let list = self
            .names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{list} differ only in case or Unicode normalization: {}'s filesystem cannot keep \
             them apart, so none of them is synced until all but one are renamed",
            self.side
        )
    }
}

/// What [`align_names`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Aligned {
    /// Alpha's tree in the session's spelling, with clashes as problem entries; `None` when it
    /// is the scanned tree itself (nothing to change).
    pub alpha: Option<Option<Entry>>,
    /// The same for beta.
    pub beta: Option<Option<Entry>>,
    /// Alpha's names spelled differently on disk.
    pub alpha_spellings: Spellings,
    /// Beta's names spelled differently on disk.
    pub beta_spellings: Spellings,
    /// Names a side cannot hold apart.
    pub clashes: Vec<Clash>,
}

impl Aligned {
    /// True when the trees go to reconcile as scanned.
    pub fn is_identity(&self) -> bool {
        self.alpha.is_none() && self.beta.is_none()
    }
}

enum Edit {
    /// In the directory at `dir` (session spelling), show `from` as `to`.
    Rename {
        dir: RelPath,
        from: String,
        to: String,
    },
    /// In the directory at `dir`, show `name` as a problem.
    Mark {
        dir: RelPath,
        name: String,
        message: String,
    },
}

/// Shows alpha's and beta's trees to reconcile under one spelling and turns names a side
/// cannot hold apart into problems (see the module docs). `rules` are alpha's and beta's.
pub fn align_names(
    ancestor: Option<&Entry>,
    alpha: Option<&Entry>,
    beta: Option<&Entry>,
    rules: [NameRules; 2],
) -> Aligned {
    let mut out = Aligned::default();
    let mut edits: [Vec<Edit>; 2] = [Vec::new(), Vec::new()];
    let root = RelPath::root();
    let mut walk = Walk {
        rules,
        out: &mut out,
        edits: &mut edits,
    };
    walk.dir(&root, ancestor, [alpha, beta]);
    let [ea, eb] = edits;
    if !ea.is_empty() {
        out.alpha = Some(apply_edits(alpha, ea));
    }
    if !eb.is_empty() {
        out.beta = Some(apply_edits(beta, eb));
    }
    out
}

fn apply_edits(tree: Option<&Entry>, edits: Vec<Edit>) -> Option<Entry> {
    let mut tree = tree.cloned();
    let Some(t) = tree.as_mut() else { return tree };
    // Edits come parents first, and a directory's renames before anything below it: each
    // directory is found under the session's spelling.
    for e in edits {
        match e {
            Edit::Rename { dir, from, to } => {
                if let Some(Entry::Directory(d)) = t.get_mut(dir.as_str()) {
                    if let Some(child) = d.children.remove(&from) {
                        d.children.insert(to, child);
                    }
                }
            }
            Edit::Mark { dir, name, message } => {
                if let Some(Entry::Directory(d)) = t.get_mut(dir.as_str()) {
                    d.children.insert(name, Entry::Problem(message));
                }
            }
        }
    }
    tree
}

const SIDES: [&str; 2] = ["alpha", "beta"];

struct Walk<'a> {
    rules: [NameRules; 2],
    out: &'a mut Aligned,
    edits: &'a mut [Vec<Edit>; 2],
}

/// The names of one matching group on the ancestor, alpha and beta.
#[derive(Default)]
struct Group<'t> {
    ancestor: Vec<&'t str>,
    sides: [Vec<&'t str>; 2],
}

impl Walk<'_> {
    /// `path` is the directory's session path.
    fn dir(&mut self, path: &RelPath, ancestor: Option<&Entry>, sides: [Option<&Entry>; 2]) {
        let ac = ancestor.and_then(Entry::children);
        let sc = sides.map(|s| s.and_then(Entry::children));
        if sc.iter().all(Option::is_none) {
            return;
        }
        let folds_case = self.rules.iter().any(|r| r.fold_case);
        // Plain ASCII names never meet another name unless a side folds case: then every name
        // is its own session name (the common case, walked without building anything).
        let busy = folds_case
            || ac
                .into_iter()
                .flat_map(|c| c.keys())
                .chain(sc.iter().flatten().flat_map(|c| c.keys()))
                .any(|n| !n.is_ascii());
        if !busy {
            for (i, c) in sc.iter().enumerate() {
                for (name, e) in c.iter().flat_map(|c| c.iter()) {
                    // Each directory once: from alpha, or from beta where alpha has none there.
                    if !e.is_dir()
                        || i == 1 && sc[0].and_then(|c0| c0.get(name)).is_some_and(Entry::is_dir)
                    {
                        continue;
                    }
                    let entries = sc.map(|c| c.and_then(|c| c.get(name)));
                    let Ok(child) = path.join(name) else { continue };
                    self.dir(&child, ac.and_then(|c| c.get(name)), entries);
                }
            }
            return;
        }
        // Session name -> the name on each side's disk, for the children.
        let mut children: BTreeMap<String, [Option<&str>; 2]> = BTreeMap::new();
        let mut marked: BTreeSet<String> = BTreeSet::new();
        for (i, c) in sc.iter().enumerate() {
            for name in c.iter().flat_map(|c| c.keys()) {
                children.entry(name.clone()).or_default()[i] = Some(name);
            }
        }
        {
            let mut groups: HashMap<String, Group> = HashMap::new();
            let key = |n: &'_ str| -> String {
                let k = nfc(n);
                if folds_case {
                    fold_case(k).into_owned()
                } else {
                    k.into_owned()
                }
            };
            for n in ac.into_iter().flat_map(|c| c.keys()) {
                groups.entry(key(n)).or_default().ancestor.push(n);
            }
            for (i, c) in sc.iter().enumerate() {
                for n in c.iter().flat_map(|c| c.keys()) {
                    groups.entry(key(n)).or_default().sides[i].push(n);
                }
            }
            let mut groups: Vec<Group> = groups
                .into_values()
                .filter(|g| {
                    let mut names: BTreeSet<&str> = g.sides.iter().flatten().copied().collect();
                    names.extend(g.ancestor.iter().copied());
                    names.len() > 1
                })
                .collect();
            // Edits in a stable order (a hash map's is not).
            groups.sort_by(|a, b| a.sides.cmp(&b.sides));
            for g in groups {
                self.group(path, &g, &mut children, &mut marked);
            }
        }
        for (name, on) in children {
            if marked.contains(&name) {
                continue;
            }
            let Ok(child) = path.join(&name) else {
                continue;
            };
            let entries = [0, 1].map(|i| on[i].and_then(|n| sc[i].and_then(|c| c.get(n))));
            let below_a = ac.and_then(|c| c.get(&name));
            if !entries.iter().flatten().any(|e| e.is_dir()) {
                continue;
            }
            self.dir(&child, below_a, entries);
        }
    }

    /// Settles one group of names that match (see the module docs).
    fn group<'t>(
        &mut self,
        path: &RelPath,
        g: &Group<'t>,
        children: &mut BTreeMap<String, [Option<&'t str>; 2]>,
        marked: &mut BTreeSet<String>,
    ) {
        if g.ancestor.len() <= 1 && g.sides.iter().all(|s| s.len() <= 1) {
            // One file, spelled differently.
            let session = match (&g.ancestor[..], &g.sides[0][..], &g.sides[1][..]) {
                ([a], _, _) => *a,
                (_, [x], _) => *x,
                (_, _, [y]) => *y,
                _ => return,
            };
            for (i, s) in g.sides.iter().enumerate() {
                let Some(&own) = s.first() else { continue };
                if own == session {
                    continue;
                }
                // `own` no longer stands for itself on side i; `session` does.
                if let Some(on) = children.get_mut(own) {
                    on[i] = None;
                    if on.iter().all(Option::is_none) {
                        children.remove(own);
                    }
                }
                children.entry(session.to_owned()).or_default()[i] = Some(own);
                self.edits[i].push(Edit::Rename {
                    dir: path.clone(),
                    from: own.to_owned(),
                    to: session.to_owned(),
                });
                self.record(i, path, own, session);
            }
            return;
        }
        // Not one file per side: names that a folding side would merge clash there (its own
        // name among them, if it has one); the others sync under their own spellings.
        for (holder, rules) in self.rules.into_iter().enumerate() {
            if rules.is_exact() {
                continue;
            }
            let mut folded: BTreeMap<Cow<str>, Vec<&str>> = BTreeMap::new();
            for n in g.sides.iter().flatten() {
                folded.entry(rules.key(n)).or_default().push(n);
            }
            for (_, mut clash) in folded {
                clash.sort_unstable();
                clash.dedup();
                if clash.len() < 2 {
                    continue;
                }
                let c = Clash {
                    side: SIDES[holder],
                    dir: path.clone(),
                    names: clash.iter().map(|n| (*n).to_owned()).collect(),
                };
                let message = c.message();
                for n in &c.names {
                    if marked.insert(n.clone()) {
                        for e in self.edits.iter_mut() {
                            e.push(Edit::Mark {
                                dir: path.clone(),
                                name: n.clone(),
                                message: message.clone(),
                            });
                        }
                    }
                }
                self.out.clashes.push(c);
            }
        }
    }

    fn record(&mut self, side: usize, dir: &RelPath, own: &str, session: &str) {
        // The disk path of `dir` on this side is its session path translated so far.
        let spellings = if side == 0 {
            &mut self.out.alpha_spellings
        } else {
            &mut self.out.beta_spellings
        };
        let disk_dir = spellings.to_disk(dir);
        if let (Ok(s), Ok(d)) = (dir.join(session), disk_dir.join(own)) {
            spellings.record(s, d);
        }
    }
}
